"""`nlt em run --cluster`: the whole EM run as Slurm jobs on the local two-node cluster (`make test-slurm`)."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_em import TINY
from test_slurm import CLUSTER, wait_until

from nemo_latent_thoughts.em.queue import job_state, load_jobs

pytestmark = [pytest.mark.slurm, pytest.mark.nemo]

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "demo_cpu.yaml"
# `make demo`'s recipe with one EM round, reduced to seconds a stage: every kind of stage, 24 jobs (a base
# model, a warm start, both baselines); two micro-batches per global batch, one per rank on two nodes.
SMALL_DEMO = [str(DEMO), "synthetic.num_docs=12", "warmstart.synthetic_docs=8", "base.synthetic_docs=20",
              "base.max_tokens=20000", "tokenizer.vocab_size=320", "training.seq_length=64",
              "training.micro_batch_size=2", "training.epochs=2", "training.save_every=10", "training.eval_every=10",
              "estep.max_new_tokens=8", "estep.num_samples=2", "em.synthetic_eval_examples=4", "eval.seeds=[0]",
              "eval.max_new_tokens=8", "eval.elbo_chunks=2", "eval.elbo_samples=2", "eval.max_prompt_tokens=96",
              "em.num_rounds=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the jobs' own setting (below): the same arithmetic here


def nlt(*args: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "nemo_latent_thoughts.cli", *args]


def on_cluster(tmp_path: Path, python: str = sys.executable) -> list[str]:
    return ["--cluster", str(CLUSTER), "-C", f"python={python}", "-C", f"job_dir={tmp_path / 'nemorun_home'}",
            "-C", "env.OMP_NUM_THREADS=1"]


def run(args: list[str]) -> tuple[int, str]:
    out = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=ENV, timeout=900)
    return out.returncode, out.stdout + out.stderr


def outputs(run_dir: Path) -> dict[str, bytes]:
    """The artefacts: data, latents, weights, eval predictions (paths in them written as RUN)."""
    patterns = ["**/data/**/*.bin", "**/data/**/*.idx", "**/estep/shard_*.jsonl", "**/teacher/latents.jsonl",
                "**/mstep/hf/model.safetensors", "**/eval/predictions_*.jsonl"]
    found = {p for pattern in patterns for p in run_dir.glob(pattern)}
    return {str(p.relative_to(run_dir)): p.read_bytes().replace(str(run_dir).encode(), b"RUN") for p in found}


def job_ids(run_dir: Path) -> dict[str, str]:
    return {stage: job.job_id for stage, job in load_jobs(run_dir).items()}


def slurm_jobs() -> set[str]:
    """Every job id Slurm's accounting knows (array tasks as their job)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID", "-S", "2020-01-01"], capture_output=True,
                         text=True, check=True).stdout.split()
    return {job.split("_")[0] for job in out}


@pytest.mark.timeout(1200)
def test_an_em_run_on_the_cluster_equals_a_local_run_and_reruns_resubmit_nothing(tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    rc, out = run(nlt("em", "run", *SMALL_DEMO, f"run_dir={local}"))
    assert rc == 0, out[-3000:]
    before = slurm_jobs()
    args = nlt("em", "run", *SMALL_DEMO, f"run_dir={cluster}", *on_cluster(tmp_path))
    rc, out = run([*args, "--detach"])
    assert rc == 0 and "stages queued or running on the cluster" in out, out[-3000:]
    submitted = job_ids(cluster)
    assert len(submitted) == 24
    rc, out = run([*args, "--detach"])  # nothing is resubmitted while it is queued or running
    assert rc == 0 and job_ids(cluster) == submitted, out[-3000:]

    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV) as driver:
        wait_until(lambda: (cluster / "round_00" / "mstep" / "done.json").exists(), timeout=600, what="round 0")
        driver.send_signal(signal.SIGKILL)  # the driver dies mid-run; the queue goes on
    rc, out = run(args)
    assert rc == 0 and "EM run complete" in out, out[-3000:]
    assert job_ids(cluster) == submitted and slurm_jobs() - before == set(submitted.values())  # each stage once

    assert outputs(cluster) == outputs(local) and len(outputs(local)) >= 30
    for mstep in ("round_00", "round_01", "baselines/raw_tokens", "baselines/flops"):
        assert json.loads((cluster / mstep / "mstep" / "done.json").read_text())["world_size"] == 2
    for stage in ("round 0 mstep", "round 1 mstep", "baseline flops mstep"):
        nodes = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "NodeList,NNodes", "-j", submitted[stage]],
                               capture_output=True, text=True).stdout.split()
        assert nodes == ["n[1-2]|2"], stage
    rc, out = run(nlt("em", "status", str(cluster), "--jobs"))
    assert rc == 0 and re.search(rf"round 1 mstep +done +job {submitted['round 1 mstep']}\n", out), out


@pytest.mark.timeout(900)
def test_a_scancelled_mstep_resumes_from_its_checkpoint_when_the_run_is_rerun(tmp_path):
    from nemo_latent_thoughts.train.checkpoint import list_checkpoints

    recipe = [*TINY, "training.max_steps=300", "training.save_every=20", "training.keep_last=100",
              "em.num_rounds=0", "em.baselines=[]", "em.eval=false"]
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    rc, out = run(nlt("em", "run", f"run_dir={local}", *recipe))
    assert rc == 0, out[-3000:]
    args = nlt("em", "run", f"run_dir={cluster}", *recipe, *on_cluster(tmp_path))
    rc, out = run([*args, "--detach"])
    assert rc == 0, out[-3000:]
    mstep = load_jobs(cluster)["round 0 mstep"]
    checkpoints = cluster / "round_00" / "mstep" / "checkpoints"
    wait_until(lambda: list_checkpoints(checkpoints), timeout=600, what="the M-step's first checkpoint")
    subprocess.run(["scancel", mstep.job_id], check=True)
    wait_until(lambda: job_state(mstep) == (True, "CANCELLED"), timeout=120, what="the M-step to be cancelled")
    kept = {p.name: p.stat().st_mtime_ns for _, p in list_checkpoints(checkpoints)}

    rc, out = run(args)
    assert rc == 0 and "EM run complete" in out, out[-3000:]
    again = load_jobs(cluster)["round 0 mstep"]
    assert again.job_id != mstep.job_id and again.tries == 1
    assert f"job {mstep.job_id} ended CANCELLED without finishing; resubmitting (try 2 of 3)" in out, out[-3000:]
    log = next(Path(again.log_dir).glob(f"log-*_{again.job_id}_*.out")).read_text()
    assert "train: resumed from" in log, log[-3000:]
    assert {n: (checkpoints / n).stat().st_mtime_ns for n in kept} == kept  # resumed, not redone
    assert outputs(cluster) == outputs(local)


@pytest.mark.timeout(600)
def test_a_stage_that_keeps_failing_stops_the_run_with_one_line_after_em_retries_tries(tmp_path):
    python = tmp_path / "bin" / "python"  # every job's interpreter fails, as a broken container would
    python.parent.mkdir()
    python.write_text("#!/bin/sh\necho 'a failing stage' >&2\nexit 3\n")
    python.chmod(0o755)
    run_dir = tmp_path / "run"
    args = nlt("em", "run", f"run_dir={run_dir}", *TINY, "em.retries=1", *on_cluster(tmp_path, str(python)),
               "-C", "light_stages=local")  # setup, prepare and raw data run in the driver: the teacher job fails
    rc, out = run([*args, "--detach"])
    assert rc == 0 and "em: 1 stages queued or running" in out, out[-3000:]
    assert (run_dir / "setup.json").exists() and list(load_jobs(run_dir)) == ["round 0 teacher"]
    rc, out = run(nlt("em", "cancel", str(run_dir)))  # what is still queued goes; its end is no failed try
    assert rc == 0 and "em: cancelled" in out, out
    wait_until(lambda: all(job_state(job)[0] for job in load_jobs(run_dir).values()), timeout=60,
               what="the cancelled jobs to end")

    rc, out = run(args)
    errors = [line for line in out.splitlines() if line.startswith("nlt em: error:")]
    assert rc == 2 and len(errors) == 1, out[-3000:]
    teacher = load_jobs(run_dir)["round 0 teacher"]
    found = re.fullmatch(rf"nlt em: error: stage 'round 0 teacher' failed 2 times \(last: job {teacher.job_id} FAILED\); "
                         r"log: (\S+); fix the cause and rerun `nlt em run \.\.\. --cluster` to continue", errors[0])
    assert found and "a failing stage" in Path(found.group(1)).read_text(), errors[0]
    rc, out = run(nlt("em", "status", str(run_dir)))
    assert rc == 0 and re.search(rf"round 0 teacher +failed \(FAILED\) +job {teacher.job_id}, log {re.escape(found.group(1))}\n",
                                 out), out
