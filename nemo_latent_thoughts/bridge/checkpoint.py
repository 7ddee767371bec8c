"""Bridge checkpoints in and out: an HF base model as `checkpoint.pretrained_checkpoint`, and a
trained `torch_dist` checkpoint as the Hugging Face directory the E-step reads.

Export needs megatron-core only: Bridge saves the `GPTModel`'s sharded state dict (no key prefix)
under `iter_NNNNNNN/`; our preset's model loads it (TE and local layers share sharded keys) and
leaves through `model.convert.export_hf`, the exporter every trainer uses. Import grows the base
model's vocabulary for the latent-thought tokens (as `nlt train` does), writes it as an HF
directory, and converts that with Bridge's own `AutoBridge.import_ckpt`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

BRIDGE_DIR = "bridge"
"""Sub-directory of training.out_dir where a Bridge M-step writes checkpoints, logs and its base."""
_ITER = re.compile(r"iter_(\d{7})")


def bridge_dir(cfg: Config) -> Path:
    return Path(cfg.training.out_dir) / BRIDGE_DIR


def base_checkpoint(cfg: Config) -> Path:
    """Where `training.init_from` goes as a Bridge checkpoint (`checkpoint.pretrained_checkpoint`)."""
    return bridge_dir(cfg) / "init_from"


def latest_checkpoint(root: str | Path) -> Path:
    """The newest complete Bridge checkpoint (`iter_NNNNNNN/` with its metadata) under `root`."""
    found = [p for p in Path(root).glob("iter_*") if _ITER.fullmatch(p.name) and (p / "metadata.json").is_file()]
    if not found:
        raise NLTError(f"no Bridge checkpoint (iter_NNNNNNN/metadata.json) under '{root}'; run `nlt mstep-bridge` "
                       "first or pass --checkpoint")
    return max(found, key=lambda p: int(p.name[5:]))


def export_bridge_checkpoint(cfg: Config, checkpoint: Optional[str | Path] = None,
                             out_dir: Optional[str | Path] = None) -> Path:
    """Export a Bridge M-step checkpoint of `cfg` (default: the newest) to `training.out_dir/hf`."""
    from megatron.core import dist_checkpointing

    from nemo_latent_thoughts.model.convert import export_hf
    from nemo_latent_thoughts.model.megatron import load_dist_checkpoint
    from nemo_latent_thoughts.model.presets import preset_shape
    from nemo_latent_thoughts.tokens import load_tokenizer

    checkpoint = Path(checkpoint) if checkpoint else latest_checkpoint(bridge_dir(cfg) / "checkpoints")
    if not (checkpoint / "metadata.json").is_file():
        raise NLTError(f"'{checkpoint}' is not a torch_dist checkpoint (no metadata.json); pass an iter_NNNNNNN directory")
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    # The vocabulary as Bridge padded it (a multiple of make_vocab_size_divisible_by x TP size).
    embedding = dist_checkpointing.load_tensors_metadata(str(checkpoint))["embedding.word_embeddings.weight"]
    shape = dataclasses.replace(preset_shape(cfg, len(tokenizer)), vocab_size=embedding.global_shape[0])
    out = export_hf(load_dist_checkpoint(checkpoint, shape), shape, tokenizer,
                    out_dir or Path(cfg.training.out_dir) / "hf")
    log.info("export-bridge: %s -> %s", checkpoint, out)
    return out


def grown_base(cfg: Config) -> Path:
    """`training.init_from` with its vocabulary grown to the tokenizer's, as an HF directory
    (`bridge/init_hf`, written once): the model `AutoBridge.import_ckpt` converts."""
    from nemo_latent_thoughts.model.convert import export_hf
    from nemo_latent_thoughts.model.presets import preset_shape
    from nemo_latent_thoughts.tokens import load_tokenizer
    from nemo_latent_thoughts.train.trainer import base_model

    out = bridge_dir(cfg) / "init_hf"
    if (out / "config.json").is_file():
        return out
    tokenizer = load_tokenizer(cfg.tokenizer.path)
    state, shape = base_model(cfg, tokenizer)
    expected = preset_shape(cfg, len(tokenizer))
    if shape != expected:
        raise NLTError(f"training.init_from '{cfg.training.init_from}' does not have the shape of model.preset "
                       f"'{cfg.model.preset}' ({shape} vs {expected}); choose the preset of that model")
    return export_hf(state, shape, tokenizer, out)


def import_base(cfg: Config) -> Path:
    """The Bridge checkpoint of `training.init_from` (`bridge/init_from`, converted once)."""
    from megatron.bridge import AutoBridge

    out = base_checkpoint(cfg)
    if not any(out.glob("iter_*")):
        hf = grown_base(cfg)
        log.info("mstep-bridge: converting %s to a Bridge checkpoint in %s", hf, out)
        AutoBridge.import_ckpt(str(hf), str(out))
    return out
