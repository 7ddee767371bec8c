"""Atomic writes: every output goes to a temporary name first and is renamed into place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from nemo_latent_thoughts.errors import NLTError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    Works for files and directories alike. A crash leaves at most a `.tmp-*` sibling, never a
    half-written `path`; a full disk is a one-line NLTError naming `path`, its temporary removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if target.is_file():
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        if path.is_dir() and target.is_dir():
            os.replace(path, tmp / ".old")  # a directory cannot be renamed onto a non-empty one
        os.replace(target, path)
    except Exception as e:
        if no_space(e):
            raise disk_full(path) from e
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def no_space(e: BaseException) -> bool:
    """Whether `e` reports a full disk or quota, raised directly or wrapped by a library."""
    return (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
        sign in str(e) for sign in ("No space left on device", "Disk quota exceeded", "os error 28"))


def disk_full(path: str | os.PathLike | None) -> NLTError:
    """The one-line error for a full disk while writing `path` (None: not known)."""
    where = f"{path}: no space left on device; free space in {Path(path).parent}" if path else \
        "no space left on device; free space"
    return NLTError(f"{where} and rerun (finished outputs are kept)")


def clean_temps(directory: str | os.PathLike, name: str = "*") -> None:
    """Remove what a killed writer left of `atomic_path(directory / name)` (its `.tmp-*` dirs).

    Only call it where no other process is writing the same names.
    """
    for stale in Path(directory).glob(f".tmp-{name}-*"):
        shutil.rmtree(stale, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, records: Any) -> int:
    """Write an iterable of JSON records, one per line, atomically; return how many were written."""
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
