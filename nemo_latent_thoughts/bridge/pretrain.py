"""Megatron-Bridge entry point: recipe -> YAML and CLI overrides (applied once) -> `pretrain`.

    python -m nemo_latent_thoughts.bridge.pretrain --recipe nlt_tiny_bolt train.train_iters=5
    torchrun --nproc-per-node 8 -m nemo_latent_thoughts.bridge.pretrain --recipe nlt_tinyllama_1b_bolt \\
        dataset.train_paths=[run/round_01/data/train] tokenizer.tokenizer_model=run/tokenizer ...
    nlt mstep-bridge run/round_01/recipe.yaml     # a round's M-step (`run_mstep`), then hf/ + done.json

Overrides use Bridge's own Hydra syntax (`key=value`, `+key=value`, `~key`); precedence is recipe
< `--config-file` YAML < command line. `--dryrun` prints the resolved config and trains nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)


def require_bridge(purpose: str) -> None:
    """A one-line error unless Megatron-Bridge imports (it imports Transformer Engine at package import)."""
    from nemo_latent_thoughts.optional import has_te

    if not has_te() and "transformer_engine" not in sys.modules:
        if not torch.cuda.is_available():
            raise NLTError(f"{purpose} needs a CUDA GPU with Transformer Engine (Megatron-Bridge imports it) and "
                           "this machine has neither; run it in a NeMo Framework container >= 26.04 on a GPU "
                           "node, or train on CPU with `nlt train`")
        raise NLTError(f"{purpose} needs Transformer Engine (Megatron-Bridge imports it), which is not installed: "
                       "use a NeMo Framework container >= 26.04 or pip install 'nemo-latent-thoughts[te]'")
    try:
        import megatron.bridge  # noqa: F401
    except ImportError as e:
        raise NLTError(f"{purpose} needs Megatron-Bridge, which does not import here ({e}); use a NeMo Framework "
                       "container >= 26.04, or pip install 'nemo-latent-thoughts[bridge]' and then "
                       "pip install --no-deps megatron-bridge (Python 3.12)") from None


def build_config(recipe_name: str, config_file: str | None = None, overrides: list[str] = ()):
    """The named recipe with a YAML file and Hydra-style overrides applied, in that order."""
    from megatron.bridge.training.utils.omegaconf_utils import process_config_with_overrides

    from nemo_latent_thoughts.bridge.recipes import recipe

    if config_file and not Path(config_file).is_file():
        raise NLTError(f"--config-file {config_file}: no such file")
    try:
        return process_config_with_overrides(recipe(recipe_name), config_filepath=config_file,
                                             cli_overrides=list(overrides))
    except NLTError:
        raise
    except Exception as e:  # Hydra's and OmegaConf's override errors
        raise NLTError(f"bad override for --recipe {recipe_name}: {type(e).__name__}: "
                       f"{str(e).strip().splitlines()[0]}") from None


def train(bridge_cfg) -> None:
    """Bridge's `pretrain` with its GPT `forward_step` (our dataset yields what it reads)."""
    if not torch.cuda.is_available():
        raise NLTError("Megatron-Bridge's pretrain needs a CUDA GPU and this machine has none "
                       "(torch.cuda.is_available() is False); run it on a GPU node, or train on CPU with `nlt train`")
    from megatron.bridge.training.gpt_step import forward_step
    from megatron.bridge.training.pretrain import pretrain  # imports nvidia-resiliency-ext (GPU containers)

    pretrain(bridge_cfg, forward_step)


def run_mstep(cfg: Config, *, dryrun: bool = False) -> Path:
    """`nlt mstep-bridge`: the round's M-step on Bridge (or with `dryrun`, its printed config).

    One process per GPU (torchrun, or `srun` as `nlt launch mstep` starts it). A base model
    (`training.init_from`) is converted once by the first process; afterwards that process exports
    the newest checkpoint to `hf/` and writes `done.json`, as every trainer does.
    """
    from nemo_latent_thoughts.bridge.checkpoint import import_base, latest_checkpoint
    from nemo_latent_thoughts.bridge.recipes import round_config
    from nemo_latent_thoughts.train import distributed
    from nemo_latent_thoughts.train.handoff import DONE, export_and_mark_done, is_first_process

    out = Path(cfg.training.out_dir)
    bridge_cfg = round_config(cfg)
    if dryrun:
        bridge_cfg.print_yaml()
        return out
    if (out / DONE).exists():
        log.info("mstep-bridge: %s is complete; nothing to do", out)
        return out
    distributed.setup_env_from_slurm()
    if cfg.training.init_from is not None and is_first_process():
        import_base(cfg)
    train(bridge_cfg)
    if is_first_process():
        checkpoint = latest_checkpoint(bridge_cfg.checkpoint.save)
        export_and_mark_done(cfg, "export-bridge", {"backend": "bridge", "steps": bridge_cfg.train.train_iters,
                                                    "checkpoint": str(checkpoint)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nemo_latent_thoughts.bridge.pretrain",
                                     description="Pretrain a BoLT recipe with Megatron-Bridge.")
    parser.add_argument("--recipe", required=True, help="nlt_tiny_bolt, nlt_tinyllama_1b_bolt or nlt_llama32_1b_bolt")
    parser.add_argument("--config-file", help="YAML merged over the recipe, before the command-line overrides")
    parser.add_argument("--dryrun", action="store_true", help="print the resolved config; train nothing")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        require_bridge("python -m nemo_latent_thoughts.bridge.pretrain")
        bridge_cfg = build_config(args.recipe, args.config_file, overrides)
        if args.dryrun:
            bridge_cfg.print_yaml()
            return 0
        train(bridge_cfg)
    except NLTError as e:
        print(f"bridge.pretrain: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
