"""`nlt launch` on a real Slurm (`make test-slurm` starts the local two-node cluster first)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nemo_latent_thoughts.config import save_config
from nemo_latent_thoughts.estep import run_estep
from nemo_latent_thoughts.launch import sacct
from nemo_latent_thoughts.launch.slurm import unfinished_estep_tasks
from nemo_latent_thoughts.train.trainer import train
from test_estep import estep_cfg, shard_bytes
from test_trainer import final_weights, training_cfg

pytestmark = [pytest.mark.slurm, pytest.mark.nemo]

CLUSTER = Path(__file__).parent.parent / "examples" / "cluster_local.yaml"


def launch_command(job, cfg, directory, *flags) -> list[str]:
    """`nlt launch JOB` on a recipe written for `cfg`."""
    recipe = save_config(cfg, directory)
    return [sys.executable, "-m", "nemo_latent_thoughts.cli", "launch", job, str(recipe), "--cluster", str(CLUSTER),
            "-C", f"python={sys.executable}", "-C", f"job_dir={directory / 'nemorun_home'}", *flags]


def nlt_launch(job, cfg, directory, *flags):
    """Run `nlt launch JOB` on a recipe written for `cfg`; returns (returncode, stdout + stderr)."""
    out = subprocess.run(launch_command(job, cfg, directory, *flags), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=900)
    return out.returncode, out.stdout + out.stderr


def launch_and_wait_while(job, cfg, directory, fault) -> tuple[int, str]:
    """`nlt launch JOB --wait` with `fault()` run while it waits; returns (returncode, stdout + stderr)."""
    with subprocess.Popen(launch_command(job, cfg, directory, "--wait"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL) as proc:
        try:
            fault()
            out, _ = proc.communicate(timeout=900)
        finally:
            proc.kill()
    return proc.returncode, out


def processes(**env) -> list[int]:
    """PIDs of `python -m nemo_latent_thoughts.cli` processes (not the `srun` that starts them) whose
    environment holds every `env` item (e.g. SLURMD_NODENAME="n2")."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text(
                errors="replace").split("\0") if "=" in item)
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if (Path(argv[0].decode(errors="replace")).name.startswith("python") and b"nemo_latent_thoughts.cli" in argv
                and all(environ.get(k) == v for k, v in env.items())):
            found.append(int(pid))
    return found


def wait_until(condition, timeout: float = 300, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def one_error_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith("nlt launch: error:")]
    assert len(lines) == 1, out[-3000:]
    return lines[0]


def small_estep(written_run, trained_model, out):
    """The E-step settings of test_estep, smaller: these tests run it three times on 2 cores."""
    return estep_cfg(written_run, trained_model, out, num_samples=2, max_new_tokens=12)


@pytest.fixture(scope="module")
def reference(written_run, trained_model, tmp_path_factory):
    return run_estep(small_estep(written_run, trained_model, tmp_path_factory.mktemp("estep") / "ref"))


def test_killed_array_task_is_all_a_relaunch_runs(reference, written_run, trained_model, tmp_path):
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
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")  # returns when the array has ended
    assert rc == 0, out[-3000:]
    again = re.search(rf"submitted job (\d+) \(array {','.join(map(str, left))}\)", out).group(1)
    assert all(f"{again}_{t} COMPLETED" in out for t in left), out[-2000:]
    assert shard_bytes(tmp_path / "estep") == shard_bytes(reference)  # the same bytes as a local run
    assert {n: (tmp_path / "estep" / n).stat().st_mtime_ns for n in finished} == finished  # not redone
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")
    assert rc == 0 and "estep: complete; nothing to submit" in out


def test_an_estep_task_that_fails_twice_is_reported_each_time_and_a_relaunch_finishes(reference, written_run,
                                                                                    trained_model, tmp_path):
    cfg = small_estep(written_run, trained_model, tmp_path / "estep")

    def crash_task_1():  # the process of array task 1 dies (kill -9), as a crash or the OOM killer would do it
        wait_until(lambda: processes(SLURM_ARRAY_TASK_ID="1"), what="array task 1")
        for pid in processes(SLURM_ARRAY_TASK_ID="1"):
            os.kill(pid, signal.SIGKILL)

    for attempt, array in enumerate(["0-3", "1"]):
        rc, out = launch_and_wait_while("estep", cfg, tmp_path, crash_task_1)
        job = re.search(rf"submitted job (\d+) \(array {array}\)", out).group(1)
        line = one_error_line(out)
        assert rc == 2 and f"estep: job {job}: 1 of {4 if attempt == 0 else 1} tasks did not complete ({job}_1 " in line
        assert "logs in /" in line and "rerun the same `nlt launch` to resume" in line
        assert unfinished_estep_tasks(cfg, 4) == [1]
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait")
    assert rc == 0 and "(array 1)" in out, out[-3000:]
    assert shard_bytes(tmp_path / "estep") == shard_bytes(reference)


VLLM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"


@pytest.mark.timeout(1800)
def test_an_estep_array_with_a_vllm_server_per_task(written_run, tmp_path, monkeypatch):
    """`nlt launch estep --server vllm`: each array task serves the model with vLLM (CPU build), samples its
    shards through it and stops it."""
    from test_vllm_backend import train_small

    if not VLLM_PYTHON.exists():
        pytest.skip(".venv-vllm is missing: `make test-vllm` builds it (.ci/run runs it before test-slurm)")
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    model = train_small(written_run, tmp_path / "small")
    cfg = estep_cfg(written_run, model, tmp_path / "estep", num_samples=2, max_new_tokens=12, max_prompt_tokens=128,
                    max_context_tokens=64)
    rc, out = nlt_launch("estep", cfg, tmp_path, "--wait", "--server", "vllm", "-C", f"python={VLLM_PYTHON}",
                         "-C", "estep_tasks=2")
    assert rc == 0, out[-3000:]
    assert re.search(r"submitted job \d+ \(array 0-1\)", out), out[-3000:]
    manifest = json.loads((tmp_path / "estep" / "manifest.json").read_text())
    assert manifest["backend"] == "server" and manifest["chunks_failed"] == 0 and manifest["chunks_with_latent"] > 0
    logs = sorted(p.name for p in (tmp_path / "estep" / "logs").glob("server-*.log"))
    assert logs == ["server-0.log", "server-1.log"]
    left = subprocess.run(["pgrep", "-f", f"vllm.entrypoints.openai.api_server --model {model}"], capture_output=True)
    assert left.returncode == 1  # every task stopped its server


def slurmstepd_of(pid: int) -> int:
    """The slurmstepd that started process `pid` (its nearest such ancestor)."""
    while Path(f"/proc/{pid}/comm").read_text().strip() != "slurmstepd":
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert pid > 1, "no slurmstepd above the rank"
    return pid


def node_is(name: str, *states: str) -> bool:
    out = subprocess.run(["sinfo", "-h", "-n", name, "-o", "%T"], capture_output=True, text=True).stdout.split()
    return bool(out) and all(state.rstrip("*~#") in states for state in out)


def test_a_node_lost_during_a_two_node_mstep_requeues_the_job_and_its_rerun_resumes_from_the_checkpoint(
        written_run, tmp_path):
    from nemo_latent_thoughts.train import checkpoint

    cfg = training_cfg(written_run, tmp_path / "two", max_steps=160, save_every=10, keep_last=100)
    out_dir = Path(cfg.training.out_dir)
    slurmd_pid = int(Path("/run/slurmd.n2.pid").read_text())
    kept = {}

    def lose_node_2_until_the_job_is_requeued():
        """n2's slurmd, its job step daemon and its rank die at once, as when a node fails; once Slurm has
        marked n2 down and requeued the job (NeMo-Run submits with --requeue), the node comes back."""
        wait_until(lambda: checkpoint.list_checkpoints(out_dir / "checkpoints"), what="the first checkpoint")
        ranks = processes(SLURMD_NODENAME="n2")
        for pid in [slurmd_pid, *{slurmstepd_of(pid) for pid in ranks}, *ranks]:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: node_is("n2", "down"), timeout=120, what="Slurm to mark n2 down")
        wait_until(lambda: "PENDING" in squeue_states(), timeout=120, what="the job to be requeued")
        kept.update({p.name: p.stat().st_mtime_ns for _, p in checkpoint.list_checkpoints(out_dir / "checkpoints")})
        subprocess.run(["slurmd", "-N", "n2"], check=True)  # Slurm holds the requeued job for 2 minutes

    try:
        rc, out = launch_and_wait_while("mstep", cfg, tmp_path, lose_node_2_until_the_job_is_requeued)
    finally:  # the node is back in any case (ReturnToService=2 returns it once its slurmd registers)
        if not node_is("n2", "idle", "mixed", "allocated"):
            subprocess.run(["slurmd", "-N", "n2"])
        wait_until(lambda: node_is("n2", "idle"), timeout=120, what="node n2 to return")
    assert rc == 0, out[-3000:]
    job = re.search(r"submitted job (\d+)", out).group(1)
    assert f"job {job} was requeued by Slurm" in out and f"{job} COMPLETED" in out, out[-3000:]
    assert json.loads((out_dir / "done.json").read_text())["world_size"] == 2
    nodes = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NodeList,NNodes", "-j", job], capture_output=True,
                           text=True, check=True).stdout.split()
    assert nodes == ["n[1-2]|2"]  # one task on each node
    assert kept and len(kept) < 16
    assert {n: (out_dir / "checkpoints" / n).stat().st_mtime_ns for n in kept} == kept  # resumed, not redone
    single = train(training_cfg(written_run, tmp_path / "one", max_steps=160, save_every=160))
    ours, theirs = final_weights(out_dir), final_weights(single)
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in theirs)


def squeue_states() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True).stdout.split()
