"""An asynchronous client for OpenAI-compatible servers (chat completions, completions), with retries.

Retries 408/409/429/5xx answers, timeouts, broken connections, truncated bodies and malformed JSON,
with exponential backoff and jitter, honouring `Retry-After` (or `retry-after-ms`). 401/403/404
stop the run with one line: they are configuration errors, not bad luck. The API key goes only into
the Authorization header; no message or log line here contains a response body or a header.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Optional

import aiohttp

from nemo_latent_thoughts.config import TeacherConfig
from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
FATAL = {401: "check the key in {what}.api_key_env", 403: "check the key's permissions for {what}.model",
         404: "check {what}.base_url (it should end in /v1) and {what}.model"}


class RequestFailed(Exception):
    """A request that failed for good; `reason` is its counted name (e.g. http_429, timeout)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_response(data: Any) -> tuple[Optional[str], Optional[str], dict]:
    """(content, finish_reason, usage) of a chat-completions response; ValueError if malformed."""
    try:
        choice = data["choices"][0]
        content, finish = choice["message"].get("content"), choice.get("finish_reason")
        usage = data.get("usage") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ValueError("not a chat-completions response") from None
    if not (content is None or isinstance(content, str)) or not isinstance(usage, dict):
        raise ValueError("not a chat-completions response")
    return content, finish, usage


def retry_after(headers: Mapping[str, str]) -> Optional[float]:
    """Seconds the server asks us to wait (`retry-after-ms`, or `Retry-After` in seconds or as a date)."""
    headers = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            value = headers["retry-after"]
            try:
                return max(0.0, float(value))
            except ValueError:
                return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
    except (ValueError, TypeError):
        pass
    return None


class OpenAIClient:
    """`async with OpenAIClient(cfg, api_key) as c: response = await c.complete(body)`.

    `cfg` has the teacher's connection fields (base_url, concurrency, timeout_s, max_retries, backoff_s,
    max_backoff_s, under the config section `what`); `path` is the endpoint under base_url and `check`
    validates its responses (ValueError: malformed, retried).
    """

    def __init__(self, cfg: TeacherConfig, api_key: Optional[str], seed: int = 0, path: str = "/chat/completions",
                 check: Callable[[Any], Any] = check_response, what: str = "teacher"):
        self.cfg, self.check, self.what = cfg, check, what
        self.url = cfg.base_url.rstrip("/") + path
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._rng = random.Random(seed)
        self.sent = 0
        self.retries: Counter = Counter()

    async def __aenter__(self) -> "OpenAIClient":
        self._http = aiohttp.ClientSession(headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_s),
                                           connector=aiohttp.TCPConnector(limit=self.cfg.concurrency))
        return self

    async def __aexit__(self, *exc) -> None:
        await self._http.close()

    async def complete(self, body: dict) -> dict:
        """The server's validated response JSON for `body`; RequestFailed after the last retry."""
        attempt = 0
        while True:
            data, reason, wait = await self._attempt(body)
            if data is not None:
                return data
            if attempt == self.cfg.max_retries:
                raise RequestFailed(reason)
            self.retries[reason] += 1
            if wait is None:
                cap = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2 ** attempt)
                wait = cap * self._rng.uniform(0.5, 1.0)
            log.debug("%s: %s, retry %d in %.2f s", self.what, reason, attempt + 1, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def _attempt(self, body: dict) -> tuple[Optional[dict], Optional[str], Optional[float]]:
        """(response, None, None) on success, else (None, failure reason, server-requested wait)."""
        self.sent += 1
        try:
            async with self._http.post(self.url, json=body) as response:
                status, headers = response.status, response.headers
                payload = await response.read()
        except asyncio.TimeoutError:
            return None, "timeout", None
        except aiohttp.ClientPayloadError:  # the body was cut short
            return None, "truncated", None
        except aiohttp.ClientError:  # refused, reset, closed
            return None, "connection", None
        if status in FATAL:
            hint = FATAL[status].format(what=self.what)
            raise NLTError(f"{self.what}: {self.url} answered {status} {response.reason}; {hint}")
        if status in RETRYABLE:
            return None, f"http_{status}", retry_after(headers)
        if status != 200:
            raise RequestFailed(f"http_{status}")
        try:
            data = json.loads(payload)
            self.check(data)
        except ValueError:  # invalid UTF-8 or JSON, or not a response of this endpoint
            return None, "malformed", None
        return data, None, None
