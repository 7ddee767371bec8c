"""The project's GPU check: the `gpu` tests plus M-step and E-step throughput, as one JSON.

For a machine like the lent H200 (Python 3.12, a CUDA torch, transformers 5, no megatron-core, no
network); `run.sh` installs what is missing from `gpu_wheels/` first. Measures, each for a bounded
number of steps:
- M-step: our megatron-core `GPTModel` of a preset (default `tinyllama-1.1b`, local layers with
  fused SDPA attention, no Transformer Engine) trained in pure BF16 with fused AdamW on random
  tokens; tokens/s and MFU (model FLOPs = 6 x parameters + attention, per token) against the
  GPU's dense BF16 peak.
- E-step: `HFBackend` (the reference backend) on a randomly initialised HF model of the same
  preset: K samples per prompt (sample-only generated tok/s), then teacher-forced scoring of
  every sample's span (score-only tok/s), and the two together (sample + score tok/s).

    python benchmarks/gpu_check/gpu_check.py --out gpu_check.json            # on a GPU
    python benchmarks/gpu_check/gpu_check.py --out dry.json --dry-run        # CPU: tiny shapes, no tests

`--dry-run` runs every part but the GPU ones on CPU (the tiny preset, a few steps) so that the
check itself is tested where no GPU is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.model.presets import PRESETS, ModelShape

ROOT = Path(__file__).resolve().parents[2]
# Dense BF16 peak FLOP/s by device name (no sparsity); MFU is reported only for known devices.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "B200": 2250e12, "L40S": 362e12}


def environment() -> dict:
    versions = {}
    for name in ("torch", "transformers", "megatron-core", "megatron-bridge", "transformer-engine", "tensorrt-llm"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {"python": platform.python_version(), "versions": versions, "cuda": cuda,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "gpus": torch.cuda.device_count() if cuda else 0}


def peak_flops(device: str) -> float | None:
    return next((flops for name, flops in PEAK_BF16.items() if name in device), None)


def run_gpu_tests(timeout: int) -> dict:
    """`pytest -m gpu` in a subprocess; the counts from its summary line."""
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs"],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = proc.stdout.strip().splitlines()[-25:]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail[-1] if tail else "")}
    return {"returncode": proc.returncode, "counts": counts, "seconds": time.perf_counter() - began, "tail": tail}


def flops_per_token(shape: ModelShape, params: int) -> float:
    """Training FLOPs per token: 6 x parameters (forward + backward) + causal attention scores."""
    return 6 * params + 6 * shape.num_layers * shape.hidden_size * shape.seq_length


def measure_mstep(shape: ModelShape, micro_batch: int, steps: int, warmup: int, device: str) -> dict:
    """Pure-BF16 training steps of our megatron-core `GPTModel` on random tokens."""
    from nemo_latent_thoughts import megatron_cpu
    from nemo_latent_thoughts.model.megatron import gpt_model

    megatron_cpu.initialize(seed=0)
    model = gpt_model(shape, params_dtype=torch.bfloat16).to(device)
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.01,
                                  fused=device != "cpu")
    tokens = torch.randint(0, shape.vocab_size, (micro_batch, shape.seq_length + 1), device=device)
    positions = torch.arange(shape.seq_length, device=device).expand(micro_batch, -1)
    mask = megatron_cpu.causal_mask(shape.seq_length).to(device)

    def step():
        logits = model(tokens[:, :-1], positions, mask)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    _sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    seconds = time.perf_counter() - began
    tokens_per_s = steps * micro_batch * shape.seq_length / seconds
    return {"params": params, "micro_batch": micro_batch, "seq_length": shape.seq_length, "steps": steps,
            "seconds": seconds, "tokens_per_s": tokens_per_s, "model_flops_per_s": tokens_per_s * flops_per_token(
                shape, params), "final_loss": loss.item(),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device != "cpu" else None}


def measure_estep(shape: ModelShape, prompts: int, prompt_tokens: int, num_samples: int, new_tokens: int,
                  device: str, dtype: torch.dtype) -> dict:
    """`HFBackend` sampling K continuations per prompt, then scoring every one (random weights)."""
    from transformers import LlamaForCausalLM

    from nemo_latent_thoughts.model.presets import hf_config
    from nemo_latent_thoughts.sampler.hf import HFBackend

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        LlamaForCausalLM(hf_config(shape)).to(dtype).save_pretrained(tmp)
        backend = HFBackend(tmp, device=device, dtype=dtype, batch_size=prompts * num_samples,
                            score_batch_size=prompts * num_samples)
    generator = torch.Generator().manual_seed(1)
    batch = torch.randint(0, shape.vocab_size, (prompts, prompt_tokens), generator=generator).tolist()
    began = time.perf_counter()
    # Stop token -1 is never drawn: every continuation runs to new_tokens, so every run times the same work.
    samples = backend.sample(batch, num_samples, new_tokens, stop_token_id=-1, seeds=list(range(prompts)))
    _sync(device)
    sample_s = time.perf_counter() - began
    sequences = [p + s.token_ids for p, row in zip(batch, samples) for s in row]
    spans = [(prompt_tokens, len(seq)) for seq in sequences]
    began = time.perf_counter()
    scores = backend.score(sequences, spans)
    _sync(device)
    score_s = time.perf_counter() - began
    generated = sum(end - start for start, end in spans)
    if not all(math.isfinite(score) and score < 0 for score in scores):
        raise RuntimeError("E-step scores are not finite negative log-probabilities")
    return {"prompts": prompts, "num_samples": num_samples, "prompt_tokens": prompt_tokens,
            "max_new_tokens": new_tokens, "generated_tokens": generated, "sample_seconds": sample_s,
            "score_seconds": score_s, "sample_tok_s": generated / sample_s, "score_tok_s": generated / score_s,
            "sample_and_score_tok_s": generated / (sample_s + score_s), "dtype": str(dtype).removeprefix("torch.")}


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON of figures goes")
    parser.add_argument("--dry-run", action="store_true", help="CPU: tiny shapes, a few steps, no gpu tests")
    parser.add_argument("--preset", default="tinyllama-1.1b", help="model of both measurements")
    parser.add_argument("--mstep-steps", type=int, default=30)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--estep-prompts", type=int, default=16)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--tests-timeout", type=int, default=300)
    args = parser.parse_args(argv)

    report = {"environment": environment(), "dry_run": args.dry_run}
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not report["environment"]["cuda"]:
        print("gpu_check: no CUDA GPU is visible; use --dry-run on CPU", file=sys.stderr)
        return 2
    shape = dataclasses.replace(PRESETS["tiny" if args.dry_run else args.preset], vocab_size=32_004 if not
                                args.dry_run else 512)  # TinyLlama's vocabulary + the 4 latent-thought tokens
    steps, micro, prompts, new = ((2, 2, 2, 8) if args.dry_run else
                                  (args.mstep_steps, args.micro_batch, args.estep_prompts, args.new_tokens))

    report["gpu_tests"] = None if args.dry_run else run_gpu_tests(args.tests_timeout)
    report["mstep"] = {"preset": "tiny" if args.dry_run else args.preset,
                       **measure_mstep(shape, micro, steps, warmup=1 if args.dry_run else 3, device=device)}
    peak = peak_flops(report["environment"]["device"])
    report["mstep"]["mfu"] = report["mstep"]["model_flops_per_s"] / peak if peak else None
    report["estep"] = {"backend": "hf", **measure_estep(
        shape, prompts, 32 if args.dry_run else 256, args.num_samples, new, device,
        torch.float32 if args.dry_run else torch.bfloat16)}
    fileio.write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("mstep", "estep")}, indent=1))
    tests = report["gpu_tests"]
    return 0 if tests is None or tests["returncode"] in (0, 5) else 1


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
