"""`nlt train`: the embedded CPU trainer of the M-step.

Trains a megatron-core `GPTModel` on `LatentThoughtsDataset` blends with AdamW, linear warmup +
cosine decay, gradient clipping and accumulation; data-parallel over torch.distributed (gloo on
CPU) when started by torchrun or srun. Where CUDA is visible it trains there, in float32 (the
NeMo and Bridge M-steps are the GPU trainers; this keeps `nlt train` working on a GPU host). Sample `i` of the dataset always lands in the same step,
so a run killed at any point and resumed from its last checkpoint reaches the same weights and
loss curve as an uninterrupted one. Writes `config.yaml`, `metrics.jsonl`, `checkpoints/` and, at
the end, a Hugging Face export `hf/` and `done.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts import fileio, locks, megatron_cpu
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.dataset import build_datasets
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.model.convert import export_hf, grow_vocab, import_hf, padded_vocab_size
from nemo_latent_thoughts.model.megatron import gpt_model, load_state
from nemo_latent_thoughts.model.presets import ModelShape, preset_shape
from nemo_latent_thoughts.tokens import SPECIAL_TOKENS, latent_token_ids, load_tokenizer
from nemo_latent_thoughts.train import checkpoint, distributed
from nemo_latent_thoughts.train.budget import train_steps
from nemo_latent_thoughts.train.handoff import DONE

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def base_model(cfg: Config, tokenizer) -> tuple[dict | None, ModelShape]:
    """The starting weights (None: random init) and shape, with the vocabulary fitted to `tokenizer`."""
    t = cfg.training
    vocab = padded_vocab_size(len(tokenizer), cfg.model.make_vocab_size_divisible_by)
    if t.init_from is None:
        return None, preset_shape(cfg, len(tokenizer))
    state, shape = import_hf(t.init_from, seq_length=t.seq_length)
    if not len(tokenizer) - len(SPECIAL_TOKENS) <= shape.vocab_size <= vocab:
        raise NLTError(f"training.init_from '{t.init_from}' has a vocabulary of {shape.vocab_size} but "
                       f"tokenizer '{cfg.tokenizer.path}' has {len(tokenizer)} tokens; use the tokenizer "
                       "of that model, extended with the special tokens")
    if shape.vocab_size < vocab:
        state, shape = grow_vocab(state, shape, vocab, torch.Generator().manual_seed(cfg.seed))
    return state, shape


def lr_lambda(cfg: Config, steps: int):
    """Linear warmup to training.lr, then cosine decay to training.min_lr at the last step."""
    t = cfg.training

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = min(1.0, (step - t.warmup_steps) / max(1, steps - t.warmup_steps))
        return (t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + math.cos(math.pi * progress))) / t.lr

    return factor


def optimizer_for(model, cfg: Config) -> torch.optim.AdamW:
    """Fused AdamW with weight decay on matrices only (norm weights are not decayed)."""
    t = cfg.training
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": t.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2), fused=True)


def model_state(model) -> dict[str, torch.Tensor]:
    return {k: v.cpu() for k, v in model.state_dict().items() if not k.endswith("_extra_state")}


class Trainer:
    """One training run; construct it (all checks happen here), then `run()`."""

    def __init__(self, cfg: Config):
        t = self.t = cfg.training
        self.cfg = cfg
        self.out = Path(t.out_dir)
        distributed.setup_env_from_slurm()
        megatron_cpu.initialize(seed=cfg.seed)
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        if t.global_batch_size % (t.micro_batch_size * self.world):
            raise NLTError(f"training.global_batch_size {t.global_batch_size} is not a multiple of "
                           f"micro_batch_size {t.micro_batch_size} x {self.world} processes")
        self.accum = t.global_batch_size // (t.micro_batch_size * self.world)
        self.steps = train_steps(cfg)
        self.tokenizer = load_tokenizer(cfg.tokenizer.path)
        ids = latent_token_ids(self.tokenizer)
        state, self.shape = base_model(cfg, self.tokenizer)
        eval_samples = t.eval_batches * t.micro_batch_size * self.world
        self.train_ds, self.valid_ds = build_datasets(
            [(d.path, d.weight) for d in t.train_data], [(d.path, d.weight) for d in t.valid_data],
            sequence_length=t.seq_length, seed=cfg.seed, token_ids=ids,
            train_samples=self.steps * t.global_batch_size, valid_samples=eval_samples if t.valid_data else None)
        torch.manual_seed(cfg.seed)
        self.model = gpt_model(self.shape)
        if state is not None:
            load_state(self.model, state)
        self.model.to(self.device)
        self.optimizer = optimizer_for(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.steps))
        self.mask = megatron_cpu.causal_mask(t.seq_length).to(self.device)

    def _batch(self, dataset, indices: list[int]) -> dict[str, torch.Tensor]:
        items = [dataset[i] for i in indices]
        return {k: torch.stack([item[k] for item in items]).to(self.device)
                for k in ("tokens", "labels", "loss_mask", "position_ids")}

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.model(batch["tokens"], batch["position_ids"], self.mask)
        losses = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="none")
        mask = batch["loss_mask"].flatten()
        return (losses * mask).sum() / mask.sum()

    def _micro_indices(self, step: int, micro: int) -> list[int]:
        mbs = self.t.micro_batch_size
        start = step * self.t.global_batch_size + (self.rank * self.accum + micro) * mbs
        return list(range(start, start + mbs))

    def train_step(self, step: int) -> tuple[float, float]:
        """One optimizer step; returns (mean loss over the global batch, gradient norm)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            loss = self._loss(self._batch(self.train_ds, self._micro_indices(step, micro))) / self.accum
            loss.backward()
            total += loss.detach()
        if self.world > 1:
            for p in self.model.parameters():
                if p.grad is not None:
                    distributed.all_reduce_mean(p.grad)
        clip = self.t.grad_clip if self.t.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.scheduler.step()
        return distributed.all_reduce_mean(total).item(), grad_norm.item()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over the fixed validation windows."""
        self.model.eval()
        mbs, losses = self.t.micro_batch_size, []
        for b in range(self.t.eval_batches):
            start = (self.rank * self.t.eval_batches + b) * mbs
            losses.append(self._loss(self._batch(self.valid_ds, list(range(start, start + mbs)))))
        return distributed.all_reduce_mean(torch.stack(losses).mean()).item()

    def _resume(self) -> int:
        found = checkpoint.list_checkpoints(self.out / "checkpoints")
        if not found:
            return 0
        step, path = found[-1]
        model, optimizer, trainer = checkpoint.load(path)
        load_state(self.model, model)
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(trainer["scheduler"])
        torch.set_rng_state(trainer["torch_rng"])
        if self.rank == 0:
            _truncate_metrics(self.out / METRICS, step)
        log.info("train: resumed from %s (step %d of %d)", path, step, self.steps)
        return step

    def _save(self, step: int) -> None:
        if self.rank == 0:
            checkpoint.save(self.out / "checkpoints", step, model_state(self.model), self.optimizer.state_dict(),
                            {"step": step, "scheduler": self.scheduler.state_dict(),
                             "torch_rng": torch.get_rng_state(), "shape": dataclasses.asdict(self.shape)},
                            self.t.keep_last)
        distributed.barrier()

    def run(self) -> Path:
        """Train to the end (resuming if a checkpoint exists); export and mark done.

        The first process holds `out_dir/.lock` throughout: one training run per output directory.
        """
        with locks.exclusive(self.out, what="nlt train") if self.rank == 0 else contextlib.nullcontext():
            return self._run()

    def _run(self) -> Path:
        if (self.out / DONE).exists():
            log.info("train: %s is complete; nothing to do", self.out)
            return self.out
        if self.rank == 0:
            fileio.clean_temps(self.out)  # what a killed run left here
            config_lib.save_config(self.cfg, self.out)
        start = self._resume()
        tokens_per_step = self.t.global_batch_size * self.t.seq_length
        metrics = open(self.out / METRICS, "a", encoding="utf-8") if self.rank == 0 else None
        bar = tqdm(total=self.steps, initial=start, desc="train", unit="step", disable=True if self.rank else None,
                   mininterval=1.0, dynamic_ncols=True)
        began, last_valid = time.perf_counter(), None
        for step in range(start, self.steps):
            tick, lr = time.perf_counter(), self.optimizer.param_groups[0]["lr"]
            loss, grad_norm = self.train_step(step)
            done = step + 1
            record = {"step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens": done * tokens_per_step,
                      "tokens_per_s": tokens_per_step / (time.perf_counter() - tick)}
            if self.valid_ds is not None and (done % self.t.eval_every == 0 or done == self.steps):
                record["valid_loss"] = last_valid = self.evaluate()
            if metrics and (done % self.t.log_every == 0 or "valid_loss" in record or done == self.steps):
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                log.info("train: step %d/%d loss %.4f lr %.2e %.0f tokens/s%s", done, self.steps, loss, lr,
                         record["tokens_per_s"], f" valid_loss {record['valid_loss']:.4f}" if "valid_loss" in record else "")
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
            bar.update(1)
            if done % self.t.save_every == 0 or done == self.steps:
                self._save(done)
        bar.close()
        if metrics:
            metrics.close()
        if self.rank == 0:
            export_hf(model_state(self.model), self.shape, self.tokenizer, self.out / "hf")
            fileio.write_json(self.out / DONE, {
                "steps": self.steps, "tokens": self.steps * tokens_per_step, "world_size": self.world,
                "valid_loss": last_valid, "seconds_this_session": time.perf_counter() - began,
                "shape": dataclasses.asdict(self.shape), "init_from": self.t.init_from})
            log.info("train: %d steps done; Hugging Face export in %s", self.steps, self.out / "hf")
        distributed.barrier()
        return self.out


def train(cfg: Config) -> Path:
    """Run the M-step trainer of `cfg.training`; returns its output directory."""
    return Trainer(cfg).run()


def export_checkpoint(cfg: Config, path: Path | None = None, out_dir: Path | None = None) -> Path:
    """Export a checkpoint (default: the newest of training.out_dir) as a Hugging Face directory."""
    root = Path(cfg.training.out_dir) / "checkpoints"
    if path is None:
        found = checkpoint.list_checkpoints(root)
        if not found:
            raise NLTError(f"no checkpoint under {root}; train first or pass --checkpoint")
        path = found[-1][1]
    if not (Path(path) / "trainer.pt").is_file():
        raise NLTError(f"'{path}' is not a checkpoint directory (no trainer.pt)")
    model, _, trainer = checkpoint.load(Path(path))
    out_dir = out_dir or Path(path) / "hf"
    return export_hf(model, ModelShape(**trainer["shape"]), load_tokenizer(cfg.tokenizer.path), out_dir)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics lines past `step` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError):
            break  # a line cut by the kill
    fileio.write_text(path, "".join(f"{line}\n" for line in kept))
