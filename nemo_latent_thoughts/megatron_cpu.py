"""The few shims megatron-core 0.16 needs to run on a CPU-only machine (DESIGN.md 3.2).

`initialize()` applies them only when CUDA is absent, then sets up model parallelism of size 1.
"""

from __future__ import annotations

import contextlib
import os

import torch


class _CpuRngTracker:
    """Stands in for megatron's CUDA RNG tracker: `fork()` is a no-op, seeding goes to torch."""

    @contextlib.contextmanager
    def fork(self, name: str = "model-parallel-rng"):
        yield

    def add(self, name: str, seed: int) -> None:
        torch.manual_seed(seed)

    def reset(self) -> None:
        pass

    def is_initialized(self) -> bool:
        return True

    def get_states(self) -> dict:
        return {}

    def set_states(self, states: dict) -> None:
        pass


_TRACKER = _CpuRngTracker()


def apply_shims() -> None:
    """Patch megatron-core for CPU: RoPE's `torch.cuda.current_device()` and the RNG tracker."""
    import megatron.core.tensor_parallel as tp
    import megatron.core.tensor_parallel.random as tp_random

    torch.cuda.current_device = lambda: "cpu"
    tp.get_cuda_rng_tracker = lambda *a, **k: _TRACKER
    tp_random.get_cuda_rng_tracker = lambda *a, **k: _TRACKER


def initialize(seed: int = 0) -> None:
    """Model parallelism of size 1 for this process (a gloo group if none exists, nccl with CUDA);
    CPU shims if CUDA is absent, megatron's CUDA RNG tracker seeded if present. Safe to call more
    than once."""
    from megatron.core import parallel_state

    if not torch.cuda.is_available():
        apply_shims()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        world_size = int(os.environ.get("WORLD_SIZE", 1))
        # One process: a private address, so the environment children inherit stays untouched.
        init_method = "env://" if world_size > 1 else f"tcp://127.0.0.1:{_free_port()}"
        torch.distributed.init_process_group(backend, init_method=init_method,
                                             rank=int(os.environ.get("RANK", 0)), world_size=world_size)
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(1, 1)
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # megatron's CUDA RNG tracker, which attention forks on every forward
        from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        model_parallel_cuda_manual_seed(seed)


def causal_mask(seq_length: int) -> torch.Tensor:
    """Megatron's attention mask convention: bool `[1, 1, s, s]`, True = masked (the future)."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool), diagonal=1)[None, None]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
