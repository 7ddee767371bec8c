"""A contract fake of vLLM's OpenAI /v1/completions server, backed by HFBackend, for the server backend's tests.

It takes the fields `ServerBackend` sends for `kind: vllm` and answers as vLLM does: `token_ids` with the
stop token kept, `finish_reason` stop or length, `prompt_logprobs` (null first, then {id: {logprob}}).
Sample k of a prompt is `HFBackend.generate` with the request's seed, so its samples are HFBackend's.
It can misbehave: `transient` (a share of requests gets 503 + Retry-After on its first attempt, or a
malformed body), `dead` (a share of prompts always gets 500). In a thread:
`FakeCompletions(model_dir).start()`; as a process (to be killed), with vLLM's
arguments (what `nlt estep --serve vllm` passes): `python tests/completions_fake.py --model M --port P`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
from collections import Counter
from typing import Optional

import torch
from aiohttp import web

from nemo_latent_thoughts.sampler.hf import HFBackend


def _unit(*parts) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") / 2**64


class FakeCompletions:
    def __init__(self, model_dir, name: str = "nlt", transient: float = 0.0, dead: float = 0.0):
        self.backend = HFBackend(model_dir)
        self.name, self.transient, self.dead = name, transient, dead
        self.requests, self.attempts = 0, Counter()
        self.url: Optional[str] = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._completions)
        return app

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _completions(self, request):
        body = await request.json()
        self.requests += 1
        key = json.dumps(body, sort_keys=True)
        self.attempts[key] += 1
        if _unit(body["prompt"], "dead") < self.dead:
            return web.json_response({"error": "always fails"}, status=500)
        if self.attempts[key] == 1 and _unit(key, "transient") < self.transient:
            if _unit(key, "which") < 0.5:
                return web.json_response({"error": "busy"}, status=503, headers={"Retry-After": "0.01"})
            return web.Response(text="{not json", content_type="application/json")
        if body.get("model") != self.name:
            return web.json_response({"error": "no such model"}, status=404)
        prompt = body["prompt"]
        if "prompt_logprobs" in body:
            return web.json_response({"choices": [{"index": 0, "token_ids": [], "finish_reason": "length",
                                                   "prompt_logprobs": self._prompt_logprobs(prompt)}]})
        stop = body["stop_token_ids"][0]
        sample = self.backend.generate([prompt], [body["seed"]], body["max_tokens"], stop)[0]
        ids = sample.token_ids + ([stop] if sample.stopped else [])
        return web.json_response({"choices": [{"index": 0, "text": "", "token_ids": ids,
                                               "finish_reason": "stop" if sample.stopped else "length"}]})

    @torch.no_grad()
    def _prompt_logprobs(self, prompt: list[int]) -> list:
        logits = self.backend.model(input_ids=torch.as_tensor(prompt)[None]).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        return [None] + [{str(t): {"logprob": logp[i, t].item(), "rank": 1}} for i, t in enumerate(prompt[1:])]

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "FakeCompletions":
        """Serve in a daemon thread; `self.url` is the base URL (…/v1) once this returns."""
        ready = threading.Event()

        async def serve():
            runner = web.AppRunner(self.app())
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            self.url = f"http://{host}:{runner.addresses[0][1]}/v1"
            ready.set()
            await asyncio.Event().wait()

        threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
        ready.wait(30)
        return self


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="nlt")
    args, _ = parser.parse_known_args()  # vLLM's other arguments (--seed, --dtype, ...) change nothing here
    web.run_app(FakeCompletions(args.model, name=args.served_model_name).app(), host=args.host, port=args.port,
                print=None)
