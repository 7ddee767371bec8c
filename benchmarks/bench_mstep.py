"""`nlt train` tokens/s against a plain PyTorch training loop over the same model and data.

Both train the same network (the `tiny` preset unless --preset) from the same initial weights on
the same LatentThoughtsDataset windows, with AdamW and the same batch, for the same number of
steps, in one run. The plain loop is the textbook one over megatron-core's stock GPTModel (local
layer spec, `DotProductAttention`), with no schedule, clipping, logging, evaluation or
checkpoints; `nlt train` runs as a user runs it (its layer spec computes attention with torch's
fused `scaled_dot_product_attention`; metrics, a final checkpoint and the Hugging Face export
are included in its time). The two alternate --repeats times; prints the median tokens/s
of each and the ratio (target >= 1.0).

    python benchmarks/bench_mstep.py [--steps 200] [--repeats 3] [--preset tiny]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from nemo_latent_thoughts import megatron_cpu
from nemo_latent_thoughts.config import load_config
from nemo_latent_thoughts.em.driver import run_em
from nemo_latent_thoughts.model.megatron import gpt_model
from nemo_latent_thoughts.train.trainer import Trainer


def plain_loop(trainer: Trainer, steps: int) -> float:
    """A textbook PyTorch loop on the trainer's model shape and data; returns seconds."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    torch.manual_seed(trainer.cfg.seed)
    model = gpt_model(trainer.shape, spec=get_gpt_layer_local_spec(normalization="RMSNorm"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer.t.lr, betas=(0.9, 0.95), weight_decay=0.01)
    seq, mbs = trainer.t.seq_length, trainer.t.micro_batch_size
    mask = megatron_cpu.causal_mask(seq)
    start = time.perf_counter()
    for step in range(steps):
        optimizer.zero_grad()
        for micro in range(trainer.accum):
            first = (step * trainer.accum + micro) * mbs
            items = [trainer.train_ds[i] for i in range(first, first + mbs)]
            tokens = torch.stack([x["tokens"] for x in items])
            labels = torch.stack([x["labels"] for x in items])
            positions = torch.stack([x["position_ids"] for x in items])
            logits = model(tokens, positions, mask)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten()) / trainer.accum
            loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cfg = load_config(None, [f"run_dir={run_dir}", f"model.preset={args.preset}", f"training.max_steps={args.steps}",
                                 "training.valid_data=[]", f"training.save_every={args.steps}",
                                 f"training.log_every={args.steps}", "write.out_dir=${run_dir}/round_00/data"])
        run_em(cfg, until="round 0 data")  # corpus, tokenizer and latent-augmented data
        tokens = args.steps * cfg.training.global_batch_size * cfg.training.seq_length

        plain_times, ours_times = [], []
        for rep in range(args.repeats):  # alternate, and compare medians: no warm-up or drift advantage
            trainer = Trainer(replace(cfg, training=replace(cfg.training, out_dir=f"{tmp}/mstep{rep}")))
            plain_times.append(plain_loop(trainer, args.steps))
            start = time.perf_counter()
            trainer.run()
            ours_times.append(time.perf_counter() - start)
        baseline_s, ours_s = statistics.median(plain_times), statistics.median(ours_times)

        print(f"model: {args.preset} ({sum(p.numel() for p in trainer.model.parameters()):,} parameters), "
              f"{args.steps} steps x {cfg.training.global_batch_size} x {cfg.training.seq_length} tokens")
        print(f"plain PyTorch loop: {tokens / baseline_s:10.0f} tokens/s")
        print(f"nlt train:          {tokens / ours_s:10.0f} tokens/s")
        print(f"ratio nlt train / plain loop: {baseline_s / ours_s:.2f} (target >= 1.0)")


if __name__ == "__main__":
    main()
