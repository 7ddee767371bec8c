"""A persistent, crash-safe cache of teacher responses, keyed by the full request.

SQLite in WAL mode: each answer is committed as it arrives, so after a kill -9 every answer the
process had received is still there and a rerun sends nothing already answered.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, Optional


def request_key(url: str, body: dict[str, Any]) -> str:
    """Hex SHA-256 of the endpoint URL and the canonical JSON of the request body."""
    canonical = json.dumps({"url": url, "body": body}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """`key -> (response JSON, via)`; `via` says how the answer came: live or batch."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # survives kill -9 (not power loss) without an fsync per answer
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
                         "via TEXT NOT NULL)")

    def get(self, key: str) -> Optional[tuple[dict, str]]:
        row = self._db.execute("SELECT response, via FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def put(self, key: str, response: dict, via: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, json.dumps(response), via))

    def keys(self) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM responses")}

    def close(self) -> None:
        self._db.close()
