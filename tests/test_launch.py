"""`nlt launch`: sbatch scripts (golden files), resumable E-step arrays, sacct waiting."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_latent_thoughts.cli import main
from nemo_latent_thoughts.config import load_config, save_config
from nemo_latent_thoughts.launch import sacct
from nemo_latent_thoughts.launch.cluster import ClusterConfig

ROOT = Path(__file__).parent.parent
GOLDEN = Path(__file__).parent / "golden"
CLUSTER = ROOT / "examples" / "cluster_slurm.yaml"


@pytest.fixture
def planned_round(tmp_path):
    """A round recipe whose prepared corpus has 32 chunk shards, 3 of them already through the E-step."""
    chunks, estep = tmp_path / "run" / "corpus", tmp_path / "run" / "round_01" / "estep"
    chunks.mkdir(parents=True)
    estep.mkdir(parents=True)
    (chunks / "manifest.json").write_text(json.dumps({"shards": [{"name": f"chunks_{i:05d}.jsonl"} for i in range(32)]}))
    for done in (0, 16, 5):  # task 0 owns shards 0 and 16; task 5 still owns shard 21
        (estep / f"shard_{done:05d}.jsonl").write_text("{}\n")
    cfg = load_config(None, [f"run_dir={tmp_path / 'run'}"])
    return save_config(cfg, tmp_path / "run" / "round_01"), cfg


def _normalised(text: str, tmp_path: Path) -> str:
    text = text.replace(str(tmp_path), "<TMP>")
    return re.sub(r"(mstep|estep)_\d{6,}", r"\1_<EXP_ID>", text)


def _dryrun(job, recipe, tmp_path, capsys, monkeypatch, *cluster_overrides):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # NeMo-Run's local tunnel (invoke) reads stdin
    assert main(["launch", job, str(recipe), "--cluster", str(CLUSTER), "--dryrun",
                 "-C", f"job_dir={tmp_path / 'nemorun_home'}", *cluster_overrides]) == 0
    return _normalised(capsys.readouterr().out, tmp_path)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NLT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review and regenerate with NLT_UPDATE_GOLDEN=1"


@pytest.mark.nemo
def test_mstep_dry_run_is_a_two_node_sbatch_script(planned_round, tmp_path, capsys, monkeypatch):
    recipe, _ = planned_round
    script = _dryrun("mstep", recipe, tmp_path, capsys, monkeypatch)
    _check_golden("sbatch_mstep_2node.sh", script)
    assert "#SBATCH --nodes=2" in script and "#SBATCH --gpus-per-node=8" in script
    assert "nemo_latent_thoughts.cli mstep-nemo <TMP>/run/round_01/config.yaml --nodes 2 --gpus 8" in script
    assert not list((tmp_path / "nemorun_home").glob("**/*.out"))  # nothing ran


@pytest.mark.nemo
def test_mstep_on_megatron_bridge_is_one_task_per_gpu(planned_round, tmp_path, capsys, monkeypatch):
    recipe, _ = planned_round
    script = _dryrun("mstep", recipe, tmp_path, capsys, monkeypatch, "-C", "mstep_command=mstep-bridge")
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=8" in script
    assert "nemo_latent_thoughts.cli mstep-bridge <TMP>/run/round_01/config.yaml\n" in script


@pytest.mark.nemo
def test_estep_dry_run_is_a_16_task_array(planned_round, tmp_path, capsys, monkeypatch):
    recipe, _ = planned_round
    (Path(str(recipe)).parent / "estep" / "shard_00000.jsonl").unlink()  # now all 16 tasks are unfinished
    script = _dryrun("estep", recipe, tmp_path, capsys, monkeypatch)
    _check_golden("sbatch_estep_16.sh", script)
    assert "#SBATCH --array=0-15" in script
    assert "--shard $SLURM_ARRAY_TASK_ID --num-shards 16" in script


@pytest.mark.nemo
def test_estep_with_a_server_per_task_starts_it_in_every_task(planned_round, tmp_path, capsys, monkeypatch):
    recipe, _ = planned_round
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    assert main(["launch", "estep", str(recipe), "--cluster", str(CLUSTER), "--dryrun", "--server", "vllm",
                 "-C", f"job_dir={tmp_path / 'nemorun_home'}"]) == 0
    assert "--shard $SLURM_ARRAY_TASK_ID --num-shards 16 --serve vllm" in capsys.readouterr().out
    assert main(["launch", "mstep", str(recipe), "--cluster", str(CLUSTER), "--dryrun", "--server", "vllm"]) == 2
    assert "--server: only the E-step runs against a server" in capsys.readouterr().err


@pytest.mark.nemo
def test_estep_relaunch_holds_only_unfinished_tasks(planned_round, tmp_path, capsys, monkeypatch):
    recipe, _ = planned_round
    script = _dryrun("estep", recipe, tmp_path, capsys, monkeypatch)
    assert "#SBATCH --array=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15" in script  # task 0 is done, 5 is not


def test_unfinished_tasks_follow_the_shard_assignment_of_nlt_estep(planned_round):
    from nemo_latent_thoughts.launch.slurm import unfinished_estep_tasks

    _, cfg = planned_round
    assert unfinished_estep_tasks(cfg, 16) == [t for t in range(16) if t != 0]
    assert unfinished_estep_tasks(cfg, 32) == [t for t in range(32) if t not in (0, 5, 16)]


@pytest.mark.parametrize("override, message", [
    ("account=", "override 'account=': account: Incompatible value 'None'"),
    ("mstep_command=srun", f"{CLUSTER}: mstep_command: must be mstep-nemo, mstep-bridge or train"),
    ("mstep.nodes=0", f"{CLUSTER}: mstep.nodes: must be >= 1"),
    ("mstep.gpus=8", "override 'mstep.gpus=8': mstep.gpus: unknown key"),
    ("job_dir=/shared/nemo_run", f"{CLUSTER}: job_dir: must not contain '/nemo_run'"),
])
def test_bad_cluster_yaml_is_a_one_line_error(planned_round, capsys, override, message):
    recipe, _ = planned_round
    assert main(["launch", "mstep", str(recipe), "--cluster", str(CLUSTER), "-C", override, "--dryrun"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_every_example_cluster_yaml_loads():
    for path in sorted((ROOT / "examples").glob("cluster_*.yaml")):
        assert load_config(path, schema=ClusterConfig).account


def test_sacct_rows_of_array_tasks_count_until_all_have_ended():
    text = "41_0|COMPLETED\n41_1|CANCELLED by 0\n41_[2-3]|PENDING\n"
    assert sacct.parse(text) == {"41_0": "COMPLETED", "41_1": "CANCELLED", "41_[2-3]": "PENDING"}
    assert not sacct.ended(sacct.parse(text)) and not sacct.ended({})
    replies = iter([{}, sacct.parse(text), {"41_0": "COMPLETED", "41_1": "CANCELLED", "41_2": "RUNNING",
                                           "41_3": "COMPLETED"}, {"41_0": "COMPLETED", "41_1": "CANCELLED",
                                                                   "41_2": "FAILED", "41_3": "COMPLETED"}])
    final = sacct.wait("41", poll_seconds=0, query=lambda job: next(replies))
    assert final["41_2"] == "FAILED" and next(replies, None) is None


def test_an_array_has_not_ended_while_sacct_lags_behind_some_of_its_tasks():
    assert sacct.array_tasks("0-3") == {0, 1, 2, 3} and sacct.array_tasks("1,5,7-8%2") == {1, 5, 7, 8}
    assert not sacct.ended({"49_3": "CANCELLED"}, {0, 1, 2, 3})  # siblings not accounted yet
    assert sacct.ended({"49_3": "CANCELLED"}, {3}) and sacct.ended({"50": "COMPLETED"})
    assert sacct.ended({"51_[0-3]": "CANCELLED"}, {0, 1, 2, 3})  # cancelled before any task started
    assert not sacct.ended({"51_[0-3]": "PENDING"}, {0, 1, 2, 3})
    done = {f"49_{t}": "COMPLETED" for t in range(3)} | {"49_3": "CANCELLED"}
    assert sacct.ended(done, {0, 1, 2, 3})


def test_a_job_requeued_after_a_node_failure_is_waited_for_until_its_rerun_ends(caplog):
    replies = iter([{"52": "RUNNING"}, {"52": "REQUEUED"}, {"52": "PENDING"}, {"52": "RUNNING"}, {"52": "COMPLETED"}])
    assert sacct.wait("52", poll_seconds=0, query=lambda job: next(replies)) == {"52": "COMPLETED"}
    assert next(replies, None) is None
    assert [r.message for r in caplog.records if "requeued" in r.message] == [
        "launch: job 52 was requeued by Slurm (a node failed or it was preempted); it resumes from its newest "
        "checkpoint when it runs again"]


def test_squeue_overrides_sacct_while_the_controller_still_holds_the_job(monkeypatch):
    replies = {"sacct": "53|NODE_FAIL\n", "squeue": "53|PENDING\n"}  # sacct's row before the requeue lands
    monkeypatch.setattr(sacct.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 0, replies[argv[0]], ""))
    assert sacct.states("53") == {"53": "PENDING"} and not sacct.ended(sacct.states("53"))
    replies["squeue"] = ""  # purged from the controller: sacct's word is final
    assert sacct.states("53") == {"53": "NODE_FAIL"}


@pytest.mark.nemo
def test_launch_overrides_reach_the_jobs_through_a_resolved_recipe(planned_round, tmp_path, capsys, monkeypatch):
    recipe, cfg = planned_round
    monkeypatch.setattr(sys, "stdin", open(os.devnull))
    assert main(["launch", "estep", str(recipe), "estep.num_samples=8", "--cluster", str(CLUSTER), "--dryrun",
                 "-C", f"job_dir={tmp_path / 'nemorun_home'}", "-C", "estep_tasks=4"]) == 0
    resolved = Path(cfg.estep.out_dir) / "launch" / "config.yaml"
    assert f"cli estep {resolved} --shard $SLURM_ARRAY_TASK_ID --num-shards 4" in capsys.readouterr().out
    assert load_config(resolved).estep.num_samples == 8


def test_wait_for_a_failed_array_task_is_a_one_line_error(monkeypatch):
    from nemo_latent_thoughts.errors import NLTError
    from nemo_latent_thoughts.launch import slurm

    rows = {"7_0": "COMPLETED", "7_1": "TIMEOUT", "7_2": "COMPLETED"}
    monkeypatch.setattr(sacct, "wait", lambda job, poll, tasks: rows if tasks == {0, 1, 2} else {})
    script = "#!/bin/bash\n#SBATCH --output=/jobs/estep/sbatch_estep_%A_%a.out\n"
    with pytest.raises(NLTError, match=r"estep: job 7: 1 of 3 tasks did not complete \(7_1 TIMEOUT\); logs in "
                                       r"/jobs/estep; rerun the same"):
        slurm.wait_for(slurm.Submission("estep", script, "7", "0-2"), 1)
    rows["7_1"] = "COMPLETED"
    assert slurm.wait_for(slurm.Submission("estep", "", "7", "0-2"), 1) == rows


@pytest.mark.nemo
def test_finished_mstep_is_not_submitted_again(planned_round, tmp_path, capsys):
    recipe, cfg = planned_round
    Path(cfg.training.out_dir).mkdir(parents=True)
    (Path(cfg.training.out_dir) / "done.json").write_text("{}")
    assert main(["launch", "mstep", str(recipe), "--cluster", str(CLUSTER), "--dryrun"]) == 0
    assert "mstep: complete; nothing to submit" in capsys.readouterr().out


def test_em_on_a_cluster_submits_each_stage_after_the_jobs_it_reads(tmp_path, monkeypatch):
    """`nlt em run --cluster`'s wiring without a cluster: the job of each stage (the M-step engine's own
    command on the M-step nodes, the E-step array serving its model), chained by `afterok` on the jobs of
    `Stage.after`; a second pass while they are queued submits nothing."""
    from nemo_latent_thoughts.em import queue
    from nemo_latent_thoughts.em.plan import plan
    from nemo_latent_thoughts.launch import slurm
    from nemo_latent_thoughts.launch.slurm import Submission

    submitted = []

    def submit(name, args, cluster, resources, array=None, after=(), dryrun=False):
        submitted.append((name, list(args), resources, array, list(after)))
        return Submission(name, "", str(100 + len(submitted)), array)

    monkeypatch.setattr(slurm, "submit", submit)
    monkeypatch.setattr(queue.sacct, "states", lambda job_id: {job_id: "PENDING"})
    cfg = load_config(None, [f"run_dir={tmp_path}", "em.num_rounds=1"])
    cluster = load_config(CLUSTER, ["mstep_command=mstep-bridge", "estep_server=vllm", "estep_tasks=3"],
                          schema=ClusterConfig)
    q = queue.Queue(cfg, cluster, tmp_path)
    assert not q.advance()
    stages = {s.name: s for s in plan(cfg)}
    assert [name for name, *_ in submitted] == [queue.slug(name) for name in stages]
    job = {name: str(101 + i) for i, name in enumerate(stages)}
    for (name, args, resources, array, after), stage in zip(submitted, stages.values()):
        assert after == [job[d] for d in stage.after], name
        if stage.kind == "mstep":
            assert args == ["mstep-bridge", str(stage.out.parent / "recipe.yaml")] and resources is cluster.mstep
        elif stage.kind == "estep":
            assert array == "0-2" and resources is cluster.estep
            assert args == ["em", "stage", str(tmp_path), "round-1-estep", "--shard", "$SLURM_ARRAY_TASK_ID",
                            "--num-shards", "3", "--serve", "vllm"]
        else:
            assert args == ["em", "stage", str(tmp_path), queue.slug(stage.name)]
            assert resources is (cluster.light if stage.kind in queue.LIGHT else cluster.stage)
    assert queue.load_jobs(tmp_path)["round 1 mstep"].job_id == job["round 1 mstep"]
    assert not q.advance() and len(submitted) == len(stages)  # queued: nothing is submitted again
