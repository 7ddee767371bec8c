"""FAKE for tests: mirrors `tensorrt_llm.llmapi.KvCacheConfig` (tensorrt_llm/llmapi/llm_args.py)."""

from dataclasses import dataclass
from typing import Optional


@dataclass(kw_only=True)
class KvCacheConfig:
    """Mirrors tensorrt_llm/llmapi/llm_args.py `KvCacheConfig` (the fields the adapter uses)."""

    enable_block_reuse: bool = True
    free_gpu_memory_fraction: Optional[float] = 0.9
    tokens_per_block: int = 32
    max_tokens: Optional[int] = None
