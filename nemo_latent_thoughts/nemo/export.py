"""Hand-off: the NeMo checkpoint of a round's M-step -> the Hugging Face directory the E-step reads.

NeMo saves the megatron-core `GPTModel` as a distributed checkpoint (`CKPT/weights`) under the
key prefix `module.`. The model of our recipes has exactly our preset's parameters (tested), so
the weights load into our own `GPTModel` through megatron-core's `dist_checkpointing` and leave
through our exporter (`model.convert.export_hf`), the one the CPU trainer uses. NeMo's own HF
exporter needs Transformer Engine to build its config and so cannot run on a CPU machine. This
module needs megatron-core only, not NeMo.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

WEIGHTS = "weights"
PREFIX = "module."
NEMO_DIR = "nemo"
"""Sub-directory of training.out_dir where the NeMo M-step writes its logs and checkpoints."""


def latest_checkpoint(root: str | Path) -> Path:
    """The newest NeMo checkpoint (a directory with `weights/`) under `root`, preferring `*-last`."""
    found = [p.parent for p in Path(root).glob(f"**/checkpoints/*/{WEIGHTS}") if p.is_dir()]
    if not found:
        raise NLTError(f"no NeMo checkpoint (*/checkpoints/*/weights) under '{root}'; run `nlt mstep-nemo` "
                       "first or pass --checkpoint")
    return max(found, key=lambda p: (p.name.endswith("-last"), p.stat().st_mtime))


def load_weights(checkpoint: str | Path, shape) -> dict:
    """The megatron state dict of our `GPTModel(shape)` read from a NeMo checkpoint directory."""
    from nemo_latent_thoughts.model.megatron import load_dist_checkpoint

    weights = Path(checkpoint) / WEIGHTS
    if not weights.is_dir():
        raise NLTError(f"'{checkpoint}' is not a NeMo checkpoint (no {WEIGHTS}/); pass a */checkpoints/* directory")
    return load_dist_checkpoint(weights, shape, PREFIX)


def export_nemo_checkpoint(cfg: Config, checkpoint: Optional[str | Path] = None,
                           out_dir: Optional[str | Path] = None) -> Path:
    """Export a NeMo M-step checkpoint of `cfg` (default: the newest) to `training.out_dir/hf`."""
    from nemo_latent_thoughts.model.convert import export_hf
    from nemo_latent_thoughts.model.presets import preset_shape
    from nemo_latent_thoughts.tokens import load_tokenizer

    t = cfg.training
    checkpoint = Path(checkpoint) if checkpoint else latest_checkpoint(Path(t.out_dir) / NEMO_DIR)
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    shape = preset_shape(cfg, len(tokenizer))
    out = export_hf(load_weights(checkpoint, shape), shape, tokenizer, out_dir or Path(t.out_dir) / "hf")
    log.info("export-nemo: %s -> %s", checkpoint, out)
    return out
