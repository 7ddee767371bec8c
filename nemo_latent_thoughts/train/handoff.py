"""The end of a GPU M-step (NeMo 2 or Megatron-Bridge): export its checkpoint and mark it done.

Both leave what `nlt train` leaves (`hf/` and `done.json`, written last), so the E-step and the EM
driver treat every trainer alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.config import Config, save_config
from nemo_latent_thoughts.errors import NLTError

DONE = "done.json"
_LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def is_first_process() -> bool:
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def export_and_mark_done(cfg: Config, export_command: str, record: dict) -> None:
    """`nlt EXPORT_COMMAND` in a fresh single process (this one may hold a multi-rank process
    group), then `done.json` with `record` and the export's location."""
    out = Path(cfg.training.out_dir)
    recipe = save_config(cfg, out)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in _LAUNCHER_VARS}
    done = subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", export_command, str(recipe)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise NLTError(f"exporting the checkpoint failed: {done.stderr.strip().splitlines()[-1:]}; "
                       f"retry with `nlt {export_command} {recipe}`")
    fileio.write_json(out / DONE, {**record, "hf": str(out / "hf"), "init_from": cfg.training.init_from})
