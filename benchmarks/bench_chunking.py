"""Sentence splitting of one huge paragraph: windowed Punkt (ours) against Punkt over the whole paragraph.

Prints MB/s for single documents of growing size and two ratios: ours / whole-paragraph Punkt on
the largest size the baseline finishes, and ours at the largest size / ours at the smallest (1.0
means time linear in the text; above 1, fixed costs amortised). The baseline runs nltk's own
`span_tokenize` on the whole paragraph, as `nlt prepare` did before windows; newer nltk releases
bound its regex time, so it may fail on the larger sizes (printed, not raised).

    python benchmarks/bench_chunking.py [--sizes-mb 1 5 50]
"""

from __future__ import annotations

import argparse
import time

from nemo_latent_thoughts.data.chunking import _punkt, sentence_ends
from nemo_latent_thoughts.testing import english_document


def rate(split, text: str) -> float | str:
    """MB/s of `split(text)`, or the error it raised."""
    start = time.perf_counter()
    try:
        count = sum(1 for _ in split(text))
    except Exception as e:  # noqa: BLE001 - the baseline's failure is a result
        return f"{type(e).__name__}"
    assert count > 0
    return len(text) / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 5, 50])
    args = parser.parse_args()
    ours, whole = {}, {}
    for size in args.sizes_mb:
        text = english_document(int(size * 1e6), seed=int(size))
        _punkt.cache_clear(), _punkt()  # a fresh model (nothing memoised from an earlier size), loaded untimed
        ours[size] = rate(sentence_ends, text)
        _punkt.cache_clear(), _punkt()
        whole[size] = rate(lambda t: _punkt().span_tokenize(t), text)
        print(f"{size:g} MB: windowed {ours[size]:.2f} MB/s, whole paragraph "
              f"{whole[size] if isinstance(whole[size], str) else f'{whole[size]:.2f} MB/s'}")
    finished = [s for s in args.sizes_mb if not isinstance(whole[s], str)]
    if finished:
        print(f"windowed / whole paragraph at {finished[-1]:g} MB: {ours[finished[-1]] / whole[finished[-1]]:.2f}")
    print(f"windowed rate at {args.sizes_mb[-1]:g} MB / at {args.sizes_mb[0]:g} MB: "
          f"{ours[args.sizes_mb[-1]] / ours[args.sizes_mb[0]]:.2f} (1.0 = linear time, above: faster per MB)")


if __name__ == "__main__":
    main()
