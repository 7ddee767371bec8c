"""Teacher client requests/s against a local OpenAI-compatible server: concurrency 1 vs 64.

The server (`nemo_latent_thoughts.teacher.fake_server`, its own process) answers every request
after --delay-s, like a real server's latency. The client is `nlt teacher`'s own (`LLMTeacher`:
prompt rendering, cache lookups and writes, retries, answer parsing), with a fresh cache per
measurement so every request goes out. The client must not be the bottleneck: with latency L, one
request in flight gives at most 1/L per second; 64 in flight should give >= 20x that.

    python benchmarks/bench_teacher.py [--requests 2000] [--delay-s 0.05] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import urllib.error
import urllib.request
from tqdm import tqdm

from nemo_latent_thoughts.config import TeacherConfig
from nemo_latent_thoughts.teacher.llm import LLMTeacher
from nemo_latent_thoughts.teacher.run import TeacherItem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_per_second(url: str, items: list[TeacherItem], concurrency: int) -> float:
    cfg = TeacherConfig(kind="openai", base_url=url, api_key_env=None, model="bench", concurrency=concurrency)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = LLMTeacher(cfg, Path(tmp), seed=0)
        start = time.perf_counter()
        with tqdm(total=len(items), disable=True) as progress:
            results = teacher.run(items, progress)
        elapsed = time.perf_counter() - start
        teacher.close()
    assert teacher.sent == len(items) and all(r[1] is None for r in results), "every request must be answered"
    return len(items) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests at the high concurrency")
    parser.add_argument("--delay-s", type=float, default=0.05, help="server latency per request")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "nemo_latent_thoughts.teacher.fake_server", "--port", str(port),
                               "--delay-s", str(args.delay_s)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/chat/completions", data=b"{}", timeout=1)
            except urllib.error.HTTPError:  # it answers: it is up
                break
            except OSError:
                time.sleep(0.1)
        items = [TeacherItem(f"doc-{i}", i % 7, "The text so far. " * 20, f"Chunk {i} to explain. " * 10)
                 for i in range(args.requests)]
        few = max(20, int(4 / args.delay_s))  # about 4 s at concurrency 1
        one = requests_per_second(url, items[:few], 1)
        many = requests_per_second(url, items, args.concurrency)
    finally:
        server.terminate()
        server.wait()
    print(f"server latency {args.delay_s * 1000:.0f} ms; requests/s at concurrency 1: {one:.1f} ({few} requests), "
          f"at {args.concurrency}: {many:.1f} ({args.requests} requests)")
    print(f"ratio: {many / one:.1f}x (target >= 20x; ideal {args.concurrency}x)")


if __name__ == "__main__":
    main()
