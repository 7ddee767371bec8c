"""A round's `recipe.yaml` (an nlt `Config`) as a NeMo recipe: `nlt mstep-nemo`.

The `training` section becomes the overrides of a registered `llm.pretrain` factory (by default
the one of `model.preset`): data blends and weights, sequence length, batch sizes, the token or
step budget (-> trainer.max_steps), learning-rate schedule, evaluation, checkpointing and seed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import nemo_run as run
from nemo_run.config import get_type_namespace

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.nemo import stderr_with_a_descriptor
from nemo_latent_thoughts.nemo.data import blend_paths
from nemo_latent_thoughts.nemo.export import NEMO_DIR, latest_checkpoint
from nemo_latent_thoughts.train.budget import train_steps
from nemo_latent_thoughts.train.handoff import DONE, export_and_mark_done, is_first_process

with stderr_with_a_descriptor():  # before any other import of NeMo's LLM collection
    from nemo.collections.llm.api import pretrain

log = logging.getLogger(__name__)

FACTORY_OF_PRESET = {"tiny": "nlt_tiny_bolt", "tinyllama-1.1b": "nlt_tinyllama_1b_bolt",
                     "llama3.2-1b": "nlt_llama32_1b_bolt"}


def resolve(factory: str):
    """A registered factory of `llm.pretrain` by name, found the way `nemo llm pretrain` finds it."""
    try:
        return run.cli.resolve_factory(get_type_namespace(pretrain), factory)
    except Exception:  # catalogue raises its own RegistryError
        raise NLTError(f"--factory {factory}: no llm.pretrain factory of that name; use one of "
                       f"{', '.join(FACTORY_OF_PRESET.values())} or another registered recipe") from None


def round_recipe(cfg: Config, factory: Optional[str] = None, num_nodes: int = 1,
                 num_gpus_per_node: int = 1) -> run.Partial:
    """The `llm.pretrain` partial of the M-step that `cfg.training` describes."""
    from nemo import lightning as nl

    t = cfg.training
    recipe = resolve(factory or FACTORY_OF_PRESET[cfg.model.preset])(
        dir=str(Path(t.out_dir) / NEMO_DIR), name="mstep", tokenizer_path=cfg.tokenizer.path,
        num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node)
    steps = train_steps(cfg)
    train, valid = [(d.path, d.weight) for d in t.train_data], [(d.path, d.weight) for d in t.valid_data]
    recipe.data.paths = blend_paths(train, valid)
    recipe.data.seq_length = recipe.model.config.seq_length = t.seq_length
    recipe.data.micro_batch_size, recipe.data.global_batch_size = t.micro_batch_size, t.global_batch_size
    recipe.data.seed = cfg.seed
    recipe.model.config.make_vocab_size_divisible_by = cfg.model.make_vocab_size_divisible_by
    recipe.trainer.max_steps = steps
    recipe.trainer.val_check_interval = min(t.eval_every, steps)
    recipe.trainer.limit_val_batches = t.eval_batches if valid else 0
    recipe.trainer.log_every_n_steps = t.log_every
    opt, sched = recipe.optim.config, recipe.optim.lr_scheduler
    opt.lr, opt.weight_decay, opt.adam_beta1, opt.adam_beta2 = t.lr, t.weight_decay, t.adam_beta1, t.adam_beta2
    opt.clip_grad = t.grad_clip
    sched.warmup_steps, sched.min_lr = t.warmup_steps, t.min_lr  # NeMo sets its max_steps from the trainer
    recipe.log.ckpt.every_n_train_steps, recipe.log.ckpt.save_top_k = t.save_every, t.keep_last
    recipe.log.ckpt.train_time_interval = None
    if t.init_from is not None:
        if not Path(t.init_from, "context").is_dir():
            raise NLTError(f"training.init_from '{t.init_from}' is not a NeMo checkpoint (no context/); the NeMo "
                           "M-step starts from a NeMo checkpoint: import the base model with `nemo llm import` "
                           "(after growing its vocabulary for the special tokens), or train with `nlt train`")
        recipe.resume.restore_config = run.Config(nl.RestoreConfig, path=str(t.init_from), load_optim_state=False,
                                                  load_artifacts=False)
    return recipe


def run_mstep(cfg: Config, factory: Optional[str] = None, *, dryrun: bool = False, num_nodes: int = 1,
              num_gpus: int = 1) -> Path:
    """Run (or with `dryrun` print) the round's NeMo M-step; returns training.out_dir.

    Under `srun` (one task per GPU, as `nlt launch mstep` starts it) every task runs the recipe in
    process and Lightning takes ranks from Slurm; elsewhere more than one GPU goes through torchrun.
    Then the first process exports the newest checkpoint to `hf/` and writes `done.json`, the
    outputs `nlt train` leaves, so the E-step and the EM driver treat both trainers alike.
    """
    out = Path(cfg.training.out_dir)
    recipe = round_recipe(cfg, factory, num_nodes=num_nodes, num_gpus_per_node=num_gpus)
    if dryrun:
        run.dryrun_fn(recipe)
        return out
    if (out / DONE).exists():
        log.info("mstep-nemo: %s is complete; nothing to do", out)
        return out
    direct = num_gpus == 1 or int(os.environ.get("SLURM_NTASKS", "1")) > 1
    log.info("mstep-nemo: %d steps of %s into %s", recipe.trainer.max_steps, cfg.model.preset, out / NEMO_DIR)
    run.run(recipe, executor=None if direct else run.LocalExecutor(ntasks_per_node=num_gpus, launcher="torchrun"),
            name="mstep", direct=direct)
    if is_first_process():
        export_and_mark_done(cfg, "export-nemo", {"backend": "nemo", "steps": recipe.trainer.max_steps,
                                                  "checkpoint": str(latest_checkpoint(out / NEMO_DIR))})
    return out
