"""Warm-start latents from an OpenAI-compatible chat-completions server.

Every response is cached on disk (`cache.sqlite`, keyed by the full request) the moment it arrives,
so a rerun after any crash sends only what was never answered. Requests go out with bounded
concurrency; usage fields feed the cost report. The same requests can instead be written as Batch API
files, and the batch's output read back into the cache.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from nemo_latent_thoughts.config import TeacherConfig
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.seeding import stable_seed
from nemo_latent_thoughts.teacher import batch
from nemo_latent_thoughts.teacher.cache import ResponseCache, request_key
from nemo_latent_thoughts.teacher.client import OpenAIClient, RequestFailed, check_response
from nemo_latent_thoughts.teacher.prompt import load_template, parse_answer, render

CACHE = "cache.sqlite"
NOT_ANSWERED = "not_answered"  # offline (after --batch-read) and not in the cache


def api_key(cfg: TeacherConfig, what: str = "teacher") -> Optional[str]:
    """The key from the environment variable the config section `what` names (never from the config itself)."""
    if cfg.api_key_env is None:
        return None
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise NLTError(f"{what}.api_key_env: the environment variable {cfg.api_key_env} is not set; export it, "
                       f"or set {what}.api_key_env=null for a server that needs no key")
    return key


class LLMTeacher:
    """Latents for chunk items (`run.TeacherItem`) from `cfg.base_url`, cached in `out_dir/cache.sqlite`."""

    def __init__(self, cfg: TeacherConfig, out_dir: Path, seed: int):
        self.cfg, self.seed = cfg, seed
        self.source = f"teacher:{cfg.model}"
        self.template = load_template(cfg.prompt_template)
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.cache = ResponseCache(out_dir / CACHE)
        self.live = True
        self.sent, self.cache_hits = 0, 0
        self.retries: Counter = Counter()
        self.usage: dict[str, Counter] = {"live": Counter(), "batch": Counter()}
        self.batch_import: Counter = Counter()

    def body(self, item) -> dict:
        """The chat-completions request for one chunk (its seed makes servers that honour it repeatable)."""
        return {"model": self.cfg.model, "temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens,
                "seed": stable_seed(self.seed, "teacher", item.doc_id, item.chunk_idx) % 2**31,
                "messages": [{"role": "user", "content": render(self.template, item.prefix, item.suffix)}]}

    def request(self, item) -> tuple[str, dict]:
        """(cache key, body) of one chunk's request."""
        body = self.body(item)
        return request_key(self.url, body), body

    def run(self, items: Sequence, progress) -> list[tuple[Optional[str], Optional[str]]]:
        """(latent_text, None) or (None, failure reason) per item, in order."""
        key = api_key(self.cfg) if self.live else None
        return asyncio.run(self._run(items, key, progress))

    async def _run(self, items, key, progress):
        results: list = [None] * len(items)
        pending = iter(enumerate(items))
        async with OpenAIClient(self.cfg, key, seed=self.seed) as client:
            async def worker():
                for i, item in pending:  # one shared iterator: each item goes to exactly one worker
                    results[i] = await self._one(client, item)
                    progress.update()
            await asyncio.gather(*(worker() for _ in range(min(self.cfg.concurrency, len(items)) or 1)))
            self.sent, self.retries = client.sent, client.retries
        return results

    async def _one(self, client: OpenAIClient, item):
        key, body = self.request(item)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache_hits += 1
            response, via = cached
        elif not self.live:
            return None, NOT_ANSWERED
        else:
            try:
                response, via = await client.complete(body), "live"
            except RequestFailed as e:
                return None, e.reason
            self.cache.put(key, response, via)
        content, finish, usage = check_response(response)
        self.usage[via].update({k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens")})
        return parse_answer(content, finish, self.cfg.max_latent_chars)

    def write_batch(self, items: Sequence, directory: Path) -> list[Path]:
        """Batch API request files for the items not answered yet."""
        requests = {}
        for item in items:
            key, body = self.request(item)
            if self.cache.get(key) is None:
                requests[key] = body
        return batch.write_requests(directory, requests.items())

    def read_batch(self, items: Sequence, paths: Sequence[str]) -> None:
        """Put the answers of Batch API output files into the cache; then answer only from the cache."""
        wanted = {self.request(item)[0] for item in items}
        for path in paths:
            for key, response, failure in batch.read_responses(path):
                if key not in wanted:
                    self.batch_import["unmatched"] += 1
                elif failure is not None:
                    self.batch_import[failure] += 1
                else:
                    try:
                        check_response(response)
                    except ValueError:
                        self.batch_import["malformed"] += 1
                        continue
                    self.cache.put(key, response, "batch")
                    self.batch_import["imported"] += 1
        self.live = False

    def report(self) -> dict:
        """Server, traffic and cost figures for the manifest (never the key)."""
        c = self.cfg
        cost = {via: (u["prompt_tokens"] * c.price_prompt_per_mtok + u["completion_tokens"] * c.price_completion_per_mtok)
                / 1e6 * (c.batch_discount if via == "batch" else 1.0) for via, u in self.usage.items()}
        report = {"base_url": c.base_url, "model": c.model, "requests_sent": self.sent, "cache_hits": self.cache_hits,
                  "retries": dict(sorted(self.retries.items())),
                  "usage": {via: dict(u) for via, u in self.usage.items()},
                  "cost_usd": round(sum(cost.values()), 6),
                  "prices_per_mtok": {"prompt": c.price_prompt_per_mtok, "completion": c.price_completion_per_mtok,
                                      "batch_discount": c.batch_discount}}
        if self.batch_import:
            report["batch_import"] = dict(sorted(self.batch_import.items()))
        return report

    def close(self) -> None:
        self.cache.close()
