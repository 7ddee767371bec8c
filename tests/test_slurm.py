"""`nlt launch` on a real Slurm (`make test-slurm` starts the local two-node cluster first)."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nemo_latent_thoughts.config import save_config
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.launch import sacct
from nemo_latent_thoughts.train.trainer import train
from test_estep import estep_cfg, shard_bytes
from test_trainer import final_weights, metrics, training_cfg

pytestmark = [pytest.mark.slurm, pytest.mark.nemo]

CLUSTER = Path(__file__).parent.parent / "examples" / "cluster_local.yaml"


def nlt_launch(job, cfg, directory, *flags):
    """Run `nlt launch JOB` on a recipe written for `cfg`; returns (returncode, stdout + stderr)."""
    recipe = save_config(cfg, directory)
    out = subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", "launch", job, str(recipe), "--cluster",
                          str(CLUSTER), "-C", f"python={sys.executable}", "-C", f"job_dir={directory / 'nemorun_home'}",
                          *flags], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=900)
    return out.returncode, out.stdout + out.stderr


def small_estep(written_run, trained_model, out):
    """The E-step settings of test_estep, smaller: these tests run it three times on 2 cores."""
    return estep_cfg(written_run, trained_model, out, num_samples=2, max_new_tokens=12)


@pytest.fixture(scope="module")
def reference(written_run, trained_model, tmp_path_factory):
    return run_estep(small_estep(written_run, trained_model, tmp_path_factory.mktemp("estep") / "ref"))


def test_estep_array_equals_a_local_run_and_wait_returns_when_it_ends(reference, written_run, trained_model,
                                                                      tmp_path):
    cfg = small_estep(written_run, trained_model, tmp_path / "estep")
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")
    assert rc == 0, out[-3000:]
    job = re.search(r"submitted job (\d+) \(array 0-3\)", out).group(1)
    assert all(f"{job}_{t} COMPLETED" in out for t in range(4)), out[-2000:]
    assert shard_bytes(tmp_path / "estep") == shard_bytes(reference)
    assert (tmp_path / "estep" / "manifest.json").read_bytes() != b""
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")
    assert rc == 0 and "estep: complete; nothing to submit" in out


def test_killed_array_task_is_all_a_relaunch_runs(reference, written_run, trained_model, tmp_path):
    from nemo_latent_thoughts.launch.slurm import unfinished_estep_tasks

    cfg = small_estep(written_run, trained_model, tmp_path / "estep")
    rc, out = nlt_launch("estep", cfg, tmp_path)
    assert rc == 0, out[-3000:]
    job = re.search(r"submitted job (\d+)", out).group(1)
    deadline = time.monotonic() + 300
    while (running := [k for k, v in sacct.states(job).items() if v == "RUNNING"]) == [] and time.monotonic() < deadline:
        time.sleep(0.2)
    victim = max(running, key=lambda k: k in (f"{job}_0", f"{job}_1"))  # tasks 0 and 1 own two shards each
    subprocess.run(["scancel", victim], check=True)
    rows = sacct.wait(job, poll_seconds=1, timeout=600, tasks={0, 1, 2, 3})
    assert rows[victim] == "CANCELLED", rows
    left = unfinished_estep_tasks(cfg, 4)
    assert int(victim.split("_")[1]) in left and len(left) < 4
    finished = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "estep").glob("shard_*.jsonl")}
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")
    assert rc == 0, out[-3000:]
    assert f"(array {','.join(map(str, left))})" in out
    assert shard_bytes(tmp_path / "estep") == shard_bytes(reference)
    assert {n: (tmp_path / "estep" / n).stat().st_mtime_ns for n in finished} == finished  # not redone


def test_two_node_job_trains_data_parallel_like_one_process(written_run, tmp_path):
    single = train(training_cfg(written_run, tmp_path / "one", max_steps=4, save_every=4))
    cfg = training_cfg(written_run, tmp_path / "two", max_steps=4, save_every=4)
    rc, out = nlt_launch("mstep", cfg, tmp_path, "--wait")
    assert rc == 0, out[-3000:]
    two = Path(cfg.training.out_dir)
    done = json.loads((two / "done.json").read_text())
    assert done["world_size"] == 2
    job = re.search(r"submitted job (\d+)", out).group(1)
    nodes = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NodeList,NNodes", "-j", job], capture_output=True,
                           text=True, check=True).stdout.split()
    assert nodes == ["n[1-2]|2"]  # one task on each node
    for a, b in zip(metrics(single), metrics(two)):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    ours, theirs = final_weights(two), final_weights(single)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)
