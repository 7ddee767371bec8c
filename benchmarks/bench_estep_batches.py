"""HFBackend's E-step at the config's default batch sizes against larger ones, on a run's own data.

The E-step's `infer` (K samples per chunk, every sample scored, resampling) over the first chunks
of RUN_DIR's bootstrap corpus with a round's model (round 0's by default), first with
`estep.batch_size`, `score_batch_size` and `chunks_per_part` at their defaults (32 / 16 / 32, the
baseline), then at the sizes given (default 256 / 256 / 128, the toy recipes'). Prints the time of
sampling, scoring and both for each, and the ratio of the baseline's time to theirs. The two runs
sample the same latents (the seeds are per request), so the check that they chose the same ones
also guards the comparison.

    python benchmarks/bench_estep_batches.py RUN_DIR [--round 0] [--chunks 256] [--samples 4]
                                             [--sizes 256 256 128]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nemo_latent_thoughts.config import EStepConfig, load_config
from nemo_latent_thoughts.data.prepare import chunks_manifest
from nemo_latent_thoughts.estep import chunk_inputs, read_chunk_shard
from nemo_latent_thoughts.sampler.hf import HFBackend
from nemo_latent_thoughts.sampler.importance import infer
from nemo_latent_thoughts.tokens import encode_raw, latent_token_ids, load_tokenizer

from bench_estep import Timed  # this folder's E-step benchmark: sample and score calls timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--round", type=int, default=0)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs=3, default=[256, 256, 128],
                        metavar=("BATCH", "SCORE_BATCH", "CHUNKS_PER_PART"))
    args = parser.parse_args()
    cfg = load_config(args.run_dir / "config.yaml")
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    ids = latent_token_ids(tokenizer)
    shard = Path(cfg.data.chunks_dir) / chunks_manifest(cfg.data.chunks_dir)["shards"][0]["name"]
    records = read_chunk_shard(shard)[:args.chunks]
    chunks = chunk_inputs(records, encode_raw(tokenizer, [r["text"] for r in records]))
    model = args.run_dir / f"round_{args.round:02d}" / "mstep" / "hf"
    e, default = cfg.estep, EStepConfig()
    print(f"{len(chunks)} chunks of {shard} x K={args.samples}, model {model}")
    rows, chosen = {}, {}
    for label, (batch, score_batch, part) in {
            "defaults": (default.batch_size, default.score_batch_size, default.chunks_per_part),
            "given": tuple(args.sizes)}.items():
        backend = Timed(HFBackend(model, batch_size=batch, score_batch_size=score_batch))
        start, results = time.perf_counter(), []
        for first in range(0, len(chunks), part):
            results += infer(backend, ids, chunks[first:first + part], num_samples=args.samples,
                             max_new_tokens=e.max_new_tokens, max_prompt_tokens=e.max_prompt_tokens,
                             max_context_tokens=e.max_context_tokens, seed=cfg.seed, round_=1,
                             num_tokens=len(tokenizer), keep_truncated=e.on_truncated == "keep",
                             temperature=e.temperature)
        rows[label] = {"sample": backend.sample_s, "score": backend.score_s, "total": time.perf_counter() - start}
        chosen[label] = [r.latent for r in results]
        print(f"{label:>8} (batch {batch}, score batch {score_batch}, chunks per part {part}): "
              + ", ".join(f"{k} {v:.1f} s" for k, v in rows[label].items()))
    print("given / defaults speed-up: " + ", ".join(f"{k} {rows['defaults'][k] / rows['given'][k]:.2f}x"
                                                     for k in rows["given"]))
    same = sum(a == b for a, b in zip(chosen["defaults"], chosen["given"]))
    print(f"the same latent chosen for {same} of {len(chunks)} chunks (float rounding differs between batch shapes)")


if __name__ == "__main__":
    main()
