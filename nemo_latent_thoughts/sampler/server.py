"""`ServerBackend`: sampling, and with vLLM scoring, through an OpenAI-compatible /v1/completions server.

Request fields per `estep.server.kind`, read from each server's request schema (vLLM 0.32
`entrypoints/openai/completion/protocol.py`, SGLang `srt/entrypoints/openai/protocol.py`,
TensorRT-LLM `serve/openai_protocol.py`, which refuses unknown fields):
- every kind: `prompt` as token ids, `n: 1`, `seed`, `temperature` (estep.temperature), `top_p: 1`, `max_tokens`,
  `stop_token_ids`; `finish_reason: "stop"` marks a sample that ended at the stop token;
- top-k off: `top_k: 0` (vLLM, trtllm-serve), `top_k: -1` (SGLang, which refuses 0);
- the generated ids: `return_token_ids: true` (vLLM, SGLang) or `detokenize: false` (trtllm-serve),
  in `choices[0].token_ids`; vLLM and SGLang keep the stop token there, dropped here;
- scoring: only vLLM returns prompt log-probs from /v1/completions (`prompt_logprobs: 0`: a list,
  null first, then {token id: {"logprob": ...}} per prompt token); SGLang and trtllm-serve samples
  are scored by HFBackend (`estep.scorer`).
The K samples of a prompt are K requests, each with its own seed (`request_seed`), as the in-process
engines draw them, so a vLLM server's samples equal `VLLMBackend`'s. Requests run concurrently
through the teacher's client (retries, backoff, Retry-After); a prompt whose request fails for good
soft-fails: all its K samples come back `failed` (the E-step keeps its chunk raw and counts it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections import Counter
from typing import Any, Optional, Sequence

from nemo_latent_thoughts.config import EStepServerConfig
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.sampler.backend import Sample, check_spans, request_seed, require_unit_temperature

log = logging.getLogger(__name__)

TOP_K_OFF = {"vllm": 0, "sglang": -1, "trtllm": 0}
TOKEN_IDS = {"vllm": {"return_token_ids": True}, "sglang": {"return_token_ids": True},
             "trtllm": {"detokenize": False}}
WHAT = "estep.server"


def check_sampled(data: Any) -> tuple[list[int], Optional[str]]:
    """(token ids, finish_reason) of a completions response; ValueError if malformed."""
    try:
        choice = data["choices"][0]
        ids, finish = choice["token_ids"], choice.get("finish_reason")
    except (KeyError, IndexError, TypeError):
        raise ValueError("not a completions response with token_ids") from None
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
        raise ValueError("token_ids is not a list of token ids")
    return ids, finish


def check_scored(data: Any) -> list:
    """The `prompt_logprobs` of a vLLM completions response; ValueError if malformed."""
    try:
        scores = data["choices"][0]["prompt_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("not a completions response with prompt_logprobs") from None
    if not isinstance(scores, list):
        raise ValueError("prompt_logprobs is not a list")
    return scores


def served_models(cfg: EStepServerConfig, timeout_s: float = 10.0) -> list[str]:
    """The model names BASE_URL/models lists; OSError or ValueError while the server is not up."""
    from nemo_latent_thoughts.teacher.llm import api_key

    key = api_key(cfg, WHAT)
    request = urllib.request.Request(cfg.base_url.rstrip("/") + "/models",
                                     headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data = json.loads(response.read())
    try:
        return [m["id"] for m in data["data"]]
    except (KeyError, TypeError):
        raise ValueError("not an OpenAI /models answer") from None


def wait_ready(cfg: EStepServerConfig, process=None, log_path=None) -> list[str]:
    """Wait until the server lists its models (at most estep.server.ready_timeout_s); its model names.

    `process` (a server we started) ends the wait at once if it exits."""
    deadline, last = time.monotonic() + cfg.ready_timeout_s, "no answer"
    log.info("estep: waiting for the server at %s (up to %.0f s)", cfg.base_url, cfg.ready_timeout_s)
    while True:
        if process is not None and process.poll() is not None:
            raise NLTError(f"{WHAT}: the {cfg.kind} server exited with code {process.returncode} before it was "
                           f"ready; its log: {log_path}")
        try:
            models = served_models(cfg)
            if models:
                return models
            last = "it lists no model"
        except (OSError, ValueError) as e:
            last = str(getattr(e, "reason", None) or e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if time.monotonic() > deadline:
            where = f"its log: {log_path}" if log_path else "start it (README: the E-step on a server) or fix the URL"
            raise NLTError(f"{WHAT}.base_url {cfg.base_url}: not ready after {cfg.ready_timeout_s:.0f} s "
                           f"({last}); {where}")
        time.sleep(1.0)


class ServerBackend:
    """A running server (estep.server) as an E-step backend; `failures` counts soft-failed requests by reason."""

    capabilities = frozenset({"batched"})

    def __init__(self, cfg: EStepServerConfig, seed: int = 0):
        from nemo_latent_thoughts.teacher.llm import api_key

        self._key = api_key(cfg, WHAT)  # a missing key is a one-line error before any wait
        models = wait_ready(cfg)
        self.cfg, self.seed = cfg, seed
        self.model = cfg.model or models[0]
        if self.model not in models:
            raise NLTError(f"{WHAT}.model '{self.model}': {cfg.base_url} serves {', '.join(models)}; set "
                           f"{WHAT}.model to the one that holds estep.model's weights")
        self.failures: Counter = Counter()

    def sample(self, prompts: Sequence[Sequence[int]], num_samples: int, max_new_tokens: int,
               stop_token_id: int, seeds: Sequence[int], temperature: float = 1.0) -> list[list[Sample]]:
        kind = self.cfg.kind
        bodies = [{"model": self.model, "prompt": [int(t) for t in prompt], "n": 1, "seed": request_seed(seed, k),
                   "temperature": temperature, "top_p": 1.0, "top_k": TOP_K_OFF[kind], "max_tokens": max_new_tokens,
                   "stop_token_ids": [stop_token_id], "skip_special_tokens": False, **TOKEN_IDS[kind]}
                  for prompt, seed in zip(prompts, seeds) for k in range(num_samples)]
        answers = self._post(bodies, check_sampled)
        if None in answers:
            self._require_alive()
        rows = []
        for i in range(len(prompts)):
            mine = answers[i * num_samples:(i + 1) * num_samples]
            if any(a is None for a in mine):  # soft-fail the prompt: none of its samples is used
                rows.append([Sample([], False, failed=True) for _ in mine])
                continue
            row = []
            for ids, finish in mine:
                stopped = finish == "stop"
                row.append(Sample(ids[:-1] if ids and ids[-1] == stop_token_id else ids, stopped))
            rows.append(row)
        return rows

    def score(self, sequences: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]],
              temperature: float = 1.0) -> list[float]:
        require_unit_temperature(temperature, f"{WHAT}.kind={self.cfg.kind}")
        if self.cfg.kind != "vllm":
            raise NLTError(f"{WHAT}.kind={self.cfg.kind}: the server gives no prompt log-probs; set estep.scorer=hf")
        check_spans(sequences, spans)
        bodies = [{"model": self.model, "prompt": [int(t) for t in seq], "max_tokens": 1, "prompt_logprobs": 0,
                   "temperature": 1.0} for seq in sequences]
        answers = self._post(bodies, check_scored)
        if None in answers:
            self._require_alive()
            raise NLTError(f"{WHAT}: scoring requests to {self.cfg.base_url} failed after {self.cfg.max_retries} "
                           f"retries ({self._reasons()}); the finished parts are kept: rerun to continue")
        return [sum(float(scores[t][str(seq[t])]["logprob"]) for t in range(start, end))
                for seq, (start, end), scores in zip(sequences, spans, answers)]

    def _require_alive(self) -> None:
        """Requests failed for good: soft-fail them if the server still answers, else stop (nothing written)."""
        try:
            served_models(self.cfg)
        except (OSError, ValueError):
            raise NLTError(f"{WHAT}: {self.cfg.base_url} stopped answering ({self._reasons()}); the E-step's "
                           "finished parts are kept: restart the server and rerun to continue") from None

    def _reasons(self) -> str:
        return ", ".join(f"{reason} {n}" for reason, n in sorted(self.failures.items()))

    def _post(self, bodies: list[dict], check) -> list:
        """check(response) per body, in order; None where a request failed for good."""
        return asyncio.run(self._post_all(bodies, check))

    async def _post_all(self, bodies: list[dict], check) -> list:
        from nemo_latent_thoughts.teacher.client import OpenAIClient, RequestFailed

        gate = asyncio.Semaphore(self.cfg.concurrency)
        client = OpenAIClient(self.cfg, self._key, seed=self.seed, path="/completions", check=check, what=WHAT)
        async with client:
            async def one(body):
                async with gate:
                    try:
                        return check(await client.complete(body))
                    except RequestFailed as e:
                        self.failures[e.reason] += 1
                        return None
            return await asyncio.gather(*(one(b) for b in bodies))

    def close(self) -> None:
        if self.failures:
            log.warning("estep: %d requests to %s failed for good (%s)", sum(self.failures.values()),
                        self.cfg.base_url, self._reasons())
