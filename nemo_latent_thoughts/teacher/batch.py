"""OpenAI Batch API files: request JSONL to upload, and the output JSONL it returns.

Requests carry the cache key as `custom_id`, so answers read back land in the same response cache
as live ones. A request file holds at most 50,000 requests (the Batch API's limit per file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from nemo_latent_thoughts import fileio
from nemo_latent_thoughts.errors import NLTError

MAX_REQUESTS_PER_FILE = 50_000
ENDPOINT = "/v1/chat/completions"


def write_requests(directory: str | Path, requests: Iterable[tuple[str, dict]],
                   per_file: int = MAX_REQUESTS_PER_FILE) -> list[Path]:
    """Write `(custom_id, body)` pairs as `batch_requests_NNNNN.jsonl` files; returns their paths."""
    lines = [{"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body} for key, body in requests]
    paths = []
    for start in range(0, len(lines), per_file):
        path = Path(directory) / f"batch_requests_{start // per_file:05d}.jsonl"
        fileio.write_jsonl(path, lines[start:start + per_file])
        paths.append(path)
    return paths


def read_responses(path: str | Path) -> Iterator[tuple[str, dict | None, str | None]]:
    """`(custom_id, response body, None)` per answered line, `(custom_id, None, reason)` per failed one."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise NLTError(f"{path}: cannot read the batch output file: {e.strerror}") from None
    with f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                custom_id = record["custom_id"]
                response, error = record.get("response"), record.get("error")
            except (ValueError, KeyError, TypeError):
                raise NLTError(f"{path}:{number}: not a Batch API output line (needs custom_id, response, "
                               f"error); pass the file the batch's output_file_id downloads to") from None
            if error:
                yield custom_id, None, f"batch_{error.get('code') or 'error'}" if isinstance(error, dict) else "batch_error"
            elif not isinstance(response, dict) or response.get("status_code") != 200:
                status = response.get("status_code") if isinstance(response, dict) else None
                yield custom_id, None, f"http_{status}"
            else:
                yield custom_id, response.get("body"), None
