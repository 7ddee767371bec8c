"""A test-only stand-in for Transformer Engine, so that `import megatron.bridge` works on CPU.

Megatron-Bridge imports `transformer_engine.pytorch` at package import (`peft/lora_layers.py`,
which uses `te.Linear`, `te.ops.Sequential`, ... in isinstance checks and annotations). The NeMo
Framework containers ship the real TE; a CPU machine cannot install it. Every attribute of the stub
is an empty `torch.nn.Module` subclass, so those checks are simply false and nothing of TE runs.
`install()` must come after megatron-core is imported: megatron-core probes for TE at import time
and would otherwise take the stub for the real library.
"""

from __future__ import annotations

import sys
import types

import torch


class _StubModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (torch.nn.Module,), {"__module__": self.__name__})
        setattr(self, name, value)
        return value


def install() -> None:
    """Register the stub as `transformer_engine` (and `.pytorch`, `.pytorch.ops`), after megatron-core."""
    import megatron.core  # noqa: F401 - must see the real (absent) TE first
    import megatron.core.models.gpt.gpt_layer_specs  # noqa: F401
    import megatron.core.extensions  # noqa: F401

    if "transformer_engine" in sys.modules:
        return
    names = ("transformer_engine", "transformer_engine.pytorch", "transformer_engine.pytorch.ops")
    modules = {name: _StubModule(name) for name in names}
    modules["transformer_engine"].pytorch = modules["transformer_engine.pytorch"]
    modules["transformer_engine.pytorch"].ops = modules["transformer_engine.pytorch.ops"]
    for module in modules.values():
        module.__path__ = []  # a package, so submodule imports resolve to the entries above
        module.__version__ = "0.0.0+stub"
    sys.modules.update(modules)
