"""Stable seeds: the same parts always give the same 63-bit integer, in any process or order."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A well-mixed 63-bit integer from `parts` (SHA-256 of their ':'-joined text)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1
