"""Atomic training checkpoints: `checkpoints/step_NNNNNNN/{model,optimizer,trainer}.pt`.

A checkpoint directory appears only once all its files are written (temp dir + rename), so a
kill at any point leaves the previous checkpoints intact and never a half-written one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from nemo_latent_thoughts import fileio

_NAME = re.compile(r"^step_(\d{7})$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, path) of every complete checkpoint under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return sorted(found)


def save(root: Path, step: int, model_state: dict, optimizer_state: dict, trainer_state: dict[str, Any],
         keep_last: int) -> Path:
    """Write checkpoint `step` atomically, then delete all but the newest `keep_last`."""
    fileio.clean_temps(root)
    with fileio.atomic_path(checkpoint_dir(root, step)) as tmp:
        tmp.mkdir()
        for name, state in (("model.pt", model_state), ("optimizer.pt", optimizer_state),
                            ("trainer.pt", trainer_state)):
            _torch_save(state, tmp / name)
    for _, old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old)
    return checkpoint_dir(root, step)


class _WriteRecorder:
    """The file torch.save writes through: keeps the OSError (a full disk) that torch reports only as
    "unexpected pos"."""

    def __init__(self, f):
        self.f, self.name, self.error = f, f.name, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        recorder = _WriteRecorder(f)
        try:
            torch.save(obj, recorder)
        except RuntimeError as e:
            if recorder.error is None:
                raise
            raise recorder.error from e


def load(path: Path) -> tuple[dict, dict, dict]:
    """(model state, optimizer state, trainer state) of a checkpoint directory."""
    return tuple(torch.load(path / name, map_location="cpu", weights_only=False)
                 for name in ("model.pt", "optimizer.pt", "trainer.pt"))
