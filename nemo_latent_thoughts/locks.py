"""One writer per output: an advisory `fcntl.flock` on a lock file beside the outputs.

`nlt em run` holds `run_dir/.lock`, `nlt prepare` and `nlt write` their output directory's, `nlt
train` its `out_dir`'s (first process only), and an E-step each shard's while it samples it, so Slurm
array tasks of one E-step never block each other. A second writer gets a one-line error naming the
holder. The kernel drops the lock with its holder's last open descriptor: a killed process never
leaves a stale lock. The lock file stays; its text (PID, host, command) is only for messages.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Iterator

from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

LOCK = ".lock"
_held: set[Path] = set()  # the locks this process holds: taking one again is a no-op


@contextlib.contextmanager
def exclusive(directory: str | os.PathLike, name: str = LOCK, what: str = "", wait: bool = False) -> Iterator[None]:
    """Hold the lock `directory/name` for the block; if another process holds it, a one-line error, or
    with `wait` a log line naming the holder and a wait until it lets go."""
    path = (Path(directory) / name).resolve()
    if path in _held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(directory, name) or "another process"
            if not wait:
                raise NLTError(f"{path}: held by {who}; one writer at a time: wait for it to finish or stop it "
                               "(a killed holder releases it at once)") from None
            log.info("%s: held by %s; waiting for it", path, who)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {what or ' '.join(sys.argv)}\n".encode())
        _held.add(path)
        yield
    finally:
        _held.discard(path)
        os.close(fd)


def holder(directory: str | os.PathLike, name: str = LOCK) -> str | None:
    """Who holds `directory/name` ("PID 123 on host (command)"), or None when nobody does."""
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, host, command = (os.read(fd, 4096).decode(errors="replace").split(maxsplit=2) + ["?"] * 3)[:3]
            return f"PID {pid} on {host} ({command.strip()})"
        return None
    finally:
        os.close(fd)


def remove_stale_temps(root: str | os.PathLike) -> None:
    """Remove the `.tmp-*` leftovers of killed atomic writes under `root`, except below a directory
    whose lock another live process holds (its writes may be in flight)."""
    root = Path(root).resolve()
    for tmp in sorted(root.rglob(".tmp-*")):
        if tmp.exists() and not _held_elsewhere(tmp.parent, root):
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()


def _held_elsewhere(directory: Path, root: Path) -> bool:
    """Whether another process holds a lock in `directory` or in a directory above it up to `root`."""
    for d in [directory, *directory.parents]:
        if any(lock.resolve() not in _held and holder(d, lock.name) for lock in d.glob(".lock*")):
            return True
        if d == root:
            return False
    return False
