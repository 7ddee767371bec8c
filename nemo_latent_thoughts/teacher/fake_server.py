"""A local OpenAI-compatible chat-completions server for tests, benchmarks and dry runs.

It answers deterministically (the latent depends only on the prompt) and can be told to misbehave:
a share of prompts gets 429 (with Retry-After), 500, malformed JSON, a slow answer or a body cut
short on its first attempts, or always fails, or is answered empty, over-long or cut at the token
limit. Run it in a thread (`FakeServer(...).start()`) or as a process:

    python -m nemo_latent_thoughts.teacher.fake_server --port 8000 --delay-s 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from aiohttp import web

TRANSIENT = ("429", "500", "malformed", "slow", "truncated")  # on the first `fault_attempts` attempts
PERMANENT = ("always_500", "empty", "long", "cut_off")  # on every attempt


@dataclass
class Behaviour:
    """What the server does; fault shares are of prompts (chosen by a hash of the prompt)."""

    faults: dict[str, float] = field(default_factory=dict)
    fault_attempts: int = 1
    delay_s: float = 0.0
    slow_s: float = 2.0
    retry_after_s: float = 0.05
    api_key: Optional[str] = None


def _unit(*parts) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(b: Behaviour, key: str, kinds: tuple[str, ...]) -> Optional[str]:
    u, edge = _unit(key, "fault"), 0.0
    for kind in (*TRANSIENT, *PERMANENT):
        edge += b.faults.get(kind, 0.0)
        if u < edge:
            return kind if kind in kinds else None
    return None


def answer(prompt: str) -> str:
    """The deterministic answer to a prompt: a few "steps" derived from its hash, in a wrapper."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()
    steps = " ".join(f"Step {i + 1}: note {digest[8 * i:8 * i + 8]}." for i in range(4))
    return f"<thinking>\n{steps}\n</thinking>"


class FakeServer:
    """`url = FakeServer(Behaviour(...)).start()`; `.requests` counts requests per prompt key."""

    def __init__(self, behaviour: Behaviour = Behaviour(), port: int = 0):
        self.behaviour, self.port = behaviour, port
        self.requests: Counter = Counter()
        self.outcomes: Counter = Counter()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        b = self.behaviour
        auth = request.headers.get("Authorization", "")
        if b.api_key is not None and auth != f"Bearer {b.api_key}":
            return web.json_response({"error": {"message": "invalid key"}}, status=401)
        try:
            body = await request.json()
            prompt = body["messages"][-1]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return web.json_response({"error": {"message": "expected a chat-completions request"}}, status=400)
        key = hashlib.sha256(prompt.encode()).hexdigest()
        attempt = self.requests[key]
        self.requests[key] += 1
        fault = _pick(b, key, TRANSIENT) if attempt < b.fault_attempts else None
        fault = _pick(b, key, PERMANENT) or fault
        self.outcomes[fault or "ok"] += 1
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": str(b.retry_after_s)})
        if fault in ("500", "always_500"):  # a careless server that echoes the request's headers
            return web.json_response({"error": {"message": f"internal error; headers: {dict(request.headers)}"}},
                                     status=500)
        await asyncio.sleep(b.slow_s if fault == "slow" else b.delay_s)
        content = {"empty": "<thinking></thinking>", "long": f"<thinking>{'and so on ' * 5000}</thinking>"}.get(
            fault, answer(prompt))
        payload = json.dumps({
            "id": f"chatcmpl-{key[:12]}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "length" if fault == "cut_off" else "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split()),
                      "total_tokens": len(prompt.split()) + len(content.split())}}).encode()
        if fault == "malformed":
            return web.Response(body=payload[: len(payload) // 2], content_type="application/json")
        if fault == "truncated":  # promise the whole body, send half, hang up
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            request.transport.close()
            return response
        return web.Response(body=payload, content_type="application/json")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        return app

    def start(self) -> str:
        """Serve in a daemon thread; returns the base URL (`http://127.0.0.1:PORT/v1`)."""
        ready = threading.Event()

        def serve():
            self._loop = asyncio.new_event_loop()
            runner = web.AppRunner(self.app(), access_log=None)
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=1024)
            self._loop.run_until_complete(site.start())
            self.port = runner.addresses[0][1]
            self._runner = runner
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(30)
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay-s", type=float, default=0.0, help="latency of every answer")
    parser.add_argument("--api-key", help="require this bearer key")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND=SHARE",
                        help=f"share of prompts with a fault; kinds: {', '.join(TRANSIENT + PERMANENT)}")
    args = parser.parse_args(argv)
    faults = {kind: float(share) for kind, share in (f.split("=", 1) for f in args.fault)}
    server = FakeServer(Behaviour(faults=faults, delay_s=args.delay_s, api_key=args.api_key))
    print(f"serving on http://127.0.0.1:{args.port}/v1", flush=True)
    web.run_app(server.app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
