"""`nlt estep --serve KIND`: start an inference server for estep.model, run the E-step against it, stop it.

One server per process (per Slurm array task with `nlt launch estep --server KIND`), on a free
loopback port, logging to OUT_DIR/logs/. Commands (each server's own CLI):
- vllm:   python -m vllm.entrypoints.openai.api_server --model M --host H --port P --served-model-name nlt
          --seed S  (on CPU, as estep.backend=vllm: float32, eager, a 2 GiB KV cache, no chunked prefill)
- sglang: python -m sglang.launch_server --model-path M --host H --port P --served-model-name nlt --random-seed S
- trtllm: trtllm-serve M --host H --port P --backend pytorch
then estep.server.args. estep.server.launch replaces the program part (e.g. another venv's python).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.sampler.server import wait_ready
from nemo_latent_thoughts.sampler.vllm import CPU_KV_CACHE_BYTES

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVED_NAME = "nlt"


def server_command(cfg: Config, kind: str, port: int) -> list[str]:
    """The command line that serves estep.model as `kind` on HOST:port."""
    e = cfg.estep
    if kind == "vllm":
        program = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
        args = ["--model", e.model, "--host", HOST, "--port", str(port), "--served-model-name", SERVED_NAME,
                "--seed", str(cfg.seed)]
        if e.device == "cpu":
            args += ["--dtype", "float32", "--enforce-eager", "--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES),
                     "--no-enable-chunked-prefill"]  # as VLLMBackend on CPU (sampler/vllm.py says why)
    elif kind == "sglang":
        program = [sys.executable, "-m", "sglang.launch_server"]
        args = ["--model-path", e.model, "--host", HOST, "--port", str(port), "--served-model-name", SERVED_NAME,
                "--random-seed", str(cfg.seed)]
    else:
        program = ["trtllm-serve"]
        args = [e.model, "--host", HOST, "--port", str(port), "--backend", "pytorch"]
    return [*(e.server.launch or program), *args, *e.server.args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cfg: Config, kind: str, name: str = "server") -> Iterator[Config]:
    """Serve estep.model as `kind` while the block runs; yields `cfg` pointed at that server."""
    port = free_port()
    command = server_command(cfg, kind, port)
    log_path = Path(cfg.estep.out_dir, "logs", f"{name}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("estep: starting a %s server on %s:%d (log: %s)", kind, HOST, port, log_path)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)  # its own process group: stopped whole
    try:
        server = dataclasses.replace(cfg.estep.server, kind=kind, base_url=f"http://{HOST}:{port}/v1",
                                     model=None if kind == "trtllm" else SERVED_NAME)
        wait_ready(server, process, log_path)
        log.info("estep: the %s server is ready", kind)
        yield dataclasses.replace(cfg, estep=dataclasses.replace(cfg.estep, backend="server", server=server))
    finally:
        stop(process)


def stop(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left of it after `grace_s` or once the server
    has exited: its engine processes too, even when the server itself died first (they would hold the
    host's memory as orphans)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
