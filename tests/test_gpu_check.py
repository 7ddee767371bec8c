"""The GPU check (benchmarks/gpu_check) without a GPU: its dry run, and its wheel list's coverage."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
CHECK = ROOT / "benchmarks" / "gpu_check"
IMAGE = {"torch", "transformers", "tokenizers", "safetensors", "numpy"}  # what the GPU image ships


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_dry_run_measures_both_steps_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = subprocess.run([sys.executable, str(CHECK / "gpu_check.py"), "--out", str(out), "--dry-run"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["gpu_tests"] is None and report["environment"]["device"] == "cpu"
    mstep, estep = report["mstep"], report["estep"]
    assert mstep["preset"] == "tiny" and mstep["tokens_per_s"] > 0 and mstep["mfu"] is None
    assert mstep["model_flops_per_s"] > 6 * mstep["params"] * mstep["tokens_per_s"] * 0.99
    assert estep["generated_tokens"] == 2 * 4 * 8  # prompts x K x new tokens (no stop token)
    assert 0 < estep["sample_and_score_tok_s"] < min(estep["sample_tok_s"], estep["score_tok_s"])


def test_without_a_gpu_the_real_check_says_so(tmp_path):
    run = subprocess.run([sys.executable, str(CHECK / "gpu_check.py"), "--out", str(tmp_path / "x.json")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2 and "no CUDA GPU" in run.stderr and not (tmp_path / "x.json").exists()


def test_wheel_list_covers_every_runtime_dependency():
    """A dependency added to pyproject.toml must reach the GPU machine (or come with its image)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = {_name(line) for line in (CHECK / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    missing = {_name(d) for d in deps} - listed - IMAGE
    assert not missing, f"add {sorted(missing)} to benchmarks/gpu_check/requirements.txt"
    assert {"pytest", "pytest-timeout"} <= listed
