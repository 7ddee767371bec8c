"""The NeMo 2 adapter: data module, recipes (NeMo-Run factories), round YAML -> recipe, export.

`data`, `recipes` and `mstep` import NeMo / NeMo-Run at their top: import them only where the
`nemo` extra is installed (`export` needs megatron-core only). `import nemo_latent_thoughts`
never imports this package.
"""

import contextlib
import sys


@contextlib.contextmanager
def stderr_with_a_descriptor():
    """Lend `sys.stderr` the process's own stream while NeMo's LLM collection is imported.

    That import reaches megatron-core's inference coordinator, which calls `faulthandler.enable()`:
    it needs a `sys.stderr` with a file descriptor, and captured output (pytest's capsys, a
    notebook's stream) has none.
    """
    saved = sys.stderr
    try:
        saved.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        sys.stderr = sys.__stderr__ or saved
    try:
        yield
    finally:
        sys.stderr = saved
