"""A full disk during `nlt prepare`, `write`, `estep` and a checkpoint save (issue 17).

Each stage writes to a small tmpfs (root only; CI runs as root). It runs once with room to spare
(the reference), then again with only part of the room it needs: it must fail with a one-line
error, leave no partial file under a final name and no temporary behind; then, the space freed, a
rerun must finish with outputs byte-identical to the reference.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from nemo_latent_thoughts import config as config_lib
from nemo_latent_thoughts.cli import main

pytestmark = pytest.mark.faults

DISK_BYTES = 64 << 20
PAGE = 4096


@pytest.fixture
def disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk, unmounted afterwards (skips unless mounting works here)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs mounts (CI runs as root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


TIMED = {"metrics.jsonl", "done.json"}  # the trainer's: they hold tokens/s and seconds


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, except locks (they name their holder) and timed files."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock") and p.name not in TIMED}


def used_bytes(root: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) * PAGE for p in root.rglob("*") if p.is_file())


def fill(disk: Path, leave: int) -> Path:
    """Occupy `disk` with a ballast file so that about `leave` bytes stay free."""
    ballast = disk / "ballast"
    size = (shutil.disk_usage(disk).free - leave) // PAGE * PAGE
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    return ballast


def nlt(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(list(args))
    return rc, capsys.readouterr().err


def check_full_disk_then_rerun(capsys, disk: Path, out: Path, args: list[str], where: str, share: float = 0.5):
    """The reference run, the run that hits a full disk writing `where`, the rerun after space is freed."""
    assert nlt(capsys, *args)[0] == 0
    reference, need = snapshot(out), used_bytes(out)
    shutil.rmtree(out)
    ballast = fill(disk, int(need * share))
    rc, err = nlt(capsys, *args)
    lines = [line for line in err.splitlines() if line.startswith("nlt ")]
    assert rc == 2 and len(lines) == 1 and "no space left on device" in lines[0] and where in lines[0], err[-3000:]
    left = snapshot(out) if out.exists() else {}
    # a stage's finished outputs, or finished parts of an unfinished E-step shard (`.parts/`)
    partial = [name for name, data in left.items() if reference.get(name) != data
               and not (name.startswith(".parts/") and all(json.loads(line) for line in data.splitlines()))]
    assert not partial, f"files under final names that differ from the reference: {partial}"
    assert not list(out.rglob(".tmp-*")) if out.exists() else True
    assert len(left) < len(reference), "the full disk stopped nothing"
    assert not any((out / marker).exists() for marker in ("manifest.json", "done.json")), "marked finished"
    ballast.unlink()
    assert nlt(capsys, *args)[0] == 0
    assert snapshot(out) == reference
    assert not list(out.rglob(".tmp-*"))


def recipe(cfg, directory: Path, **sections) -> str:
    """Save `cfg` with sections replaced (e.g. data=...) as a recipe in `directory`; return its path."""
    return str(config_lib.save_config(replace(cfg, **sections), directory))


def test_prepare_on_a_full_disk(capsys, disk, written_run, tmp_path):
    cfg, _, _ = written_run
    out = disk / "chunks"
    args = ["prepare", recipe(cfg, tmp_path, data=replace(cfg.data, chunks_dir=str(out)))]
    check_full_disk_then_rerun(capsys, disk, out, args, where=f"{out}/chunks_")


def test_write_on_a_full_disk(capsys, disk, written_run, tmp_path):
    cfg, _, _ = written_run
    out = disk / "data"
    args = ["write", recipe(cfg, tmp_path, write=replace(cfg.write, out_dir=str(out)))]
    check_full_disk_then_rerun(capsys, disk, out, args, where=str(out))


def test_estep_on_a_full_disk(capsys, disk, written_run, trained_model, tmp_path):
    cfg, _, _ = written_run
    out = disk / "estep"
    estep = replace(cfg.estep, model=str(trained_model), out_dir=str(out), num_samples=2, max_new_tokens=16)
    check_full_disk_then_rerun(capsys, disk, out, ["estep", recipe(cfg, tmp_path, estep=estep)],
                               where=f"{out}/")


def test_checkpoint_save_on_a_full_disk(capsys, disk, written_run, tmp_path):
    cfg, _, _ = written_run
    out = disk / "mstep"
    training = replace(cfg.training, out_dir=str(out), seq_length=128, max_steps=30, valid_data=[], save_every=10,
                       keep_last=10)
    # 3 checkpoints and the export; room for about one and a half checkpoints stops the second
    check_full_disk_then_rerun(capsys, disk, out, ["train", recipe(cfg, tmp_path, training=training)],
                               where=f"{out}/checkpoints/", share=0.4)
