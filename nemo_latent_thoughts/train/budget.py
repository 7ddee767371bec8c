"""An M-step's length in optimizer steps, the one rule every trainer (CPU, NeMo, Bridge) follows.

`training.max_steps` if set; else `training.epochs` passes over the training blend (BoLT's budget:
about 2 passes per M-step), counted in windows of one pass (epoch 0's layouts) and rounded up to
whole steps; else the token budget `training.max_tokens`.
"""

from __future__ import annotations

import math

from nemo_latent_thoughts.config import Config


def windows_per_pass(cfg: Config) -> int:
    """Training windows (of seq_length + 1 tokens) in one pass over every train prefix."""
    from nemo_latent_thoughts.data.dataset import build_datasets
    from nemo_latent_thoughts.tokens import latent_token_ids, load_tokenizer

    t = cfg.training
    train, _ = build_datasets([(d.path, d.weight) for d in t.train_data], None, sequence_length=t.seq_length,
                              seed=cfg.seed, token_ids=latent_token_ids(load_tokenizer(cfg.tokenizer.path)),
                              train_samples=None)
    return len(train)


def train_steps(cfg: Config) -> int:
    """Optimizer steps of the M-step `cfg.training` describes."""
    t = cfg.training
    if t.max_steps is not None:
        return t.max_steps
    if t.epochs is not None:
        return max(1, math.ceil(t.epochs * windows_per_pass(cfg) / t.global_batch_size))
    return t.max_tokens // (t.global_batch_size * t.seq_length)
