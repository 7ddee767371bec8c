"""The `nemo` extra installs a working NeMo 2 LLM collection beside our core dependencies."""

import subprocess
import sys

import pytest


@pytest.mark.nemo
def test_nemo_llm_collection_imports_with_our_package():
    code = ("import nemo_latent_thoughts.config, megatron.core; from nemo.collections import llm; "
            "import nemo_run as run; print(callable(llm.pretrain), hasattr(run, 'SlurmExecutor'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "True True"
