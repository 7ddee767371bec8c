"""Shared fixtures and the opt-in / requirement-based test markers."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.optional import has_nemo, has_trtllm


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-slurm", action="store_true", help="run tests marked slurm (needs a cluster)")


def _slurm_reachable() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


def pytest_collection_modifyitems(config, items):
    cuda = torch.cuda.is_available()
    reasons = {
        "gpu": None if cuda else "needs a CUDA GPU",
        "trtllm": None if cuda and has_trtllm() else "needs TensorRT-LLM and a CUDA GPU",
        "nemo": None if has_nemo() else "needs the nemo extra: pip install -e '.[nemo]'",
        "slow": None if config.getoption("--run-slow") else "slow: run with `make test-slow`",
    }
    if any("slurm" in item.keywords for item in items):
        if not config.getoption("--run-slurm"):
            reasons["slurm"] = "needs a Slurm cluster: run with `make test-slurm`"
        elif not _slurm_reachable():
            reasons["slurm"] = "no Slurm cluster answers `sinfo`; `make test-slurm` starts one"
    for item in items:
        for marker, reason in reasons.items():
            if reason and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def synthetic_docs() -> list[dict]:
    """A small synthetic corpus (40 documents)."""
    return testing.generate_corpus(SyntheticConfig(num_docs=40, seed=7))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, synthetic_docs):
    """A BPE tokenizer trained on the synthetic corpus, saved as a Hugging Face directory."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    texts = [d["text"] for d in synthetic_docs]
    texts += [testing.program_teacher("", d["text"]) for d in synthetic_docs]
    testing.train_tokenizer(texts, path, vocab_size=384)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from nemo_latent_thoughts.tokens import load_tokenizer

    return load_tokenizer(tokenizer_dir)
