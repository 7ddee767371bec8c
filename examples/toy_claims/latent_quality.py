"""How correct are the latents an EM run trained on? Checked against the program teacher's.

    python examples/toy_claims/latent_quality.py RUN_DIR [RUN_DIR ...]

For every round of each run, over the chunks that state a result (`Then a*b - a = 14.`): the share
whose latent is exactly the program teacher's (`a*b - a = 7*3 - 7 = 21 - 7 = 14.`), whose
substitution (the values after the first `=`) is right, and whose final value equals the
chunk's. Round 0 reads the teacher's latents (on its own warm-start corpus, where it has one), round
r >= 1 the E-step's resampled ones (on the bootstrap corpus).
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.data.prepare import read_chunks
from nemo_latent_thoughts.data.writer import read_latents
from nemo_latent_thoughts.em.plan import round_chunks, round_latents
from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer


def _steps(latent: str) -> list[str]:
    return [s.strip() for s in latent.strip().rstrip(".").split(" = ")]


def rightness(truth: str, latent: str) -> tuple[bool, bool]:
    """Whether a result chunk's latent has the program teacher's substitution, and its final value."""
    want, got = _steps(truth), _steps(latent)
    return len(got) > 1 and got[1] == want[1], got[-1] == want[-1]


def round_quality(chunks_dir: str, latents: dict[tuple[str, int], str]) -> dict[str, float | int]:
    """Shares of exact, right-substitution and right-value latents among result chunks."""
    counts = {"result_chunks": 0, "with_latent": 0, "exact": 0, "substitution": 0, "value": 0}
    for doc in read_chunks(chunks_dir):
        for chunk in doc:
            truth = testing.program_teacher("".join(c["text"] for c in doc[:chunk["chunk_idx"]]), chunk["text"])
            if truth.startswith(("We have", "Nothing")):
                continue
            counts["result_chunks"] += 1
            latent = latents.get((chunk["doc_id"], chunk["chunk_idx"]))
            if latent is None:
                continue
            substitution, value = rightness(truth, latent)
            counts["with_latent"] += 1
            counts["exact"] += latent.strip() == truth
            counts["substitution"] += substitution
            counts["value"] += value
    n = max(counts["result_chunks"], 1)
    return {"result_chunks": counts["result_chunks"],
            **{k: round(counts[k] / n, 3) for k in ("with_latent", "exact", "substitution", "value")}}


def run_quality(run: Path) -> dict[str, dict]:
    """Per round that has its latents (teacher's or E-step's, as the round's data stage reads them)."""
    cfg = load_config(run / "config.yaml", [f"run_dir={run.resolve()}"])
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    out = {}
    for r in range(cfg.em.num_rounds + 1):
        files = [Path(f) for pattern in round_latents(cfg, r) for f in sorted(glob.glob(pattern))]
        if not files:
            break
        latents = read_latents(files, tokenizer, ids)
        out[f"round {r}"] = round_quality(round_chunks(cfg, r), {k: tokenizer.decode(v[0]) for k, v in latents.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, nargs="+")
    for run in parser.parse_args().runs:
        print(f"{run}:")
        for name, q in run_quality(run).items():
            print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in q.items()))


if __name__ == "__main__":
    main()
