"""`nlt em run --cluster`: the EM run's stages as Slurm jobs chained by `afterok` dependencies.

Every unfinished stage of `plan.plan(cfg)` whose inputs are done or queued is submitted with a
dependency on the jobs of the stages it reads (`Stage.after`), so the queue holds whole rounds and
the baselines run beside them. The E-step is a job array over its unfinished shards (optionally a
server per task), each M-step runs `cluster.mstep_command` on `cluster.mstep.nodes` nodes, the other
stages run `nlt em stage RUN_DIR STAGE`. Every job reads and writes only the run directory.

State: `run_dir/cluster/jobs.json` records each stage's job id, array, log folder and failed tries,
written atomically after every submission. A rerun never resubmits a stage that is done, queued or
running; a stage whose job ended without its marker is resubmitted (its dependants, cancelled by
Slurm, with it) up to `em.retries` times, then the run stops with one line naming the stage, job id
and log. A failure whose inputs were not done (a job cancelled because its dependency failed) is
not a try of its own.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from nemo_latent_thoughts import fileio, locks
from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.em.plan import Stage, plan
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.launch import sacct
from nemo_latent_thoughts.launch.cluster import ClusterConfig

log = logging.getLogger(__name__)

JOBS = Path("cluster") / "jobs.json"
LIGHT = {"setup", "prepare", "raw_data", "data", "recipe", "report"}


@dataclass
class Job:
    """A stage's newest Slurm job: its id, array spec, log folder, and how often the stage failed."""

    job_id: str
    array: Optional[str] = None
    log_dir: Optional[str] = None
    tries: int = 0
    cancelled: bool = False  # by `nlt em cancel`: its end is no failed try


def slug(name: str) -> str:
    """A stage's name as a job name and command-line word: "round 1 estep" -> "round-1-estep"."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name)


def find_stage(cfg: Config, name: str) -> Stage:
    for stage in plan(cfg):
        if name in (stage.name, slug(stage.name)):
            return stage
    raise NLTError(f"stage '{name}': no such stage in {cfg.run_dir}; `nlt em status RUN_DIR` lists them")


def load_jobs(run: Path) -> dict[str, Job]:
    path = run / JOBS
    if not path.exists():
        return {}
    try:
        return {name: Job(**job) for name, job in json.loads(path.read_text()).items()}
    except (ValueError, TypeError) as e:
        raise NLTError(f"{path}: unreadable ({e}); restore it, or remove it after `scancel`ing the run's jobs") from None


def save_jobs(run: Path, jobs: dict[str, Job]) -> None:
    fileio.write_json(run / JOBS, {name: asdict(job) for name, job in jobs.items()})


def job_state(job: Job) -> tuple[bool, str]:
    """(ended, state) of a stage's job: RUNNING or PENDING (any task) while it has not ended, then
    COMPLETED or its first other final state."""
    rows = sacct.states(job.job_id)
    if not sacct.ended(rows, sacct.array_tasks(job.array) if job.array else None):
        live = {state for state in rows.values() if state not in sacct.ENDED}
        return False, "RUNNING" if "RUNNING" in live else min(live, default="PENDING")
    return True, min((state for state in rows.values() if state != "COMPLETED"), default="COMPLETED")


def log_file(job: Job) -> str:
    """The job's log (srun's output; an array's: its folder)."""
    if job.log_dir and not job.array:
        found = sorted(Path(job.log_dir).glob(f"log-*_{job.job_id}_*.out"), key=lambda p: p.stat().st_mtime)
        if found:
            return str(found[-1])
    return job.log_dir or "?"


class Queue:
    """One pass over the plan submits what can be submitted (`advance`); `run_until_done` repeats it."""

    def __init__(self, cfg: Config, cluster: ClusterConfig, run_dir: Path):
        self.cfg, self.cluster, self.run = cfg, cluster, run_dir
        self.jobs = load_jobs(run_dir)
        self.seen: dict[str, str] = {}  # stage -> the state last logged
        self.states: dict[str, str] = {}

    def advance(self) -> bool:
        """Submit or run every stage that can go now; True when every stage is done."""
        states = self.states = {}  # stage -> done | queued | submitted (in this pass) | blocked
        for stage in plan(self.cfg):
            states[stage.name] = self._advance(stage, states)
        return all(state == "done" for state in states.values())

    def _advance(self, stage: Stage, states: dict[str, str]) -> str:
        if stage.done:
            self._log(stage, "done")
            return "done"
        job = self.jobs.get(stage.name)
        inputs_done = all(states[d] == "done" for d in stage.after)
        if job is not None:
            ended, state = job_state(job)
            self._log(stage, state, job)
            if not ended and not any(states[d] == "submitted" for d in stage.after):
                return "queued"
            if not ended:  # it waits for a job that failed and was just replaced: it follows the new one
                subprocess.run(["scancel", job.job_id], capture_output=True)
                job.cancelled = True
            if inputs_done and not job.cancelled:  # it ran and did not write its marker
                job.tries += 1
                if job.tries > self.cfg.em.retries:
                    job.tries = 0  # a rerun after the fix starts a new count
                    save_jobs(self.run, self.jobs)
                    raise NLTError(f"stage '{stage.name}' failed {self.cfg.em.retries + 1} times (last: job "
                                   f"{job.job_id} {state}); log: {log_file(job)}; fix the cause and rerun "
                                   "`nlt em run ... --cluster` to continue")
                log.warning("em: %s: job %s ended %s without finishing; resubmitting (try %d of %d); log: %s",
                            stage.name, job.job_id, state, job.tries + 1, self.cfg.em.retries + 1, log_file(job))
        if any(states[d] == "blocked" for d in stage.after):
            return "blocked"
        local = stage.kind in LIGHT and self.cluster.light_stages == "local"
        if local:
            if not inputs_done:
                return "blocked"
            from nemo_latent_thoughts.em.driver import run_stage

            log.info("em: %s (here)", stage.name)
            run_stage(self.cfg, stage)
            return "done"
        self._submit(stage, [self.jobs[d].job_id for d in stage.after if states[d] != "done"],
                     job.tries if job else 0)
        return "submitted"

    def _submit(self, stage: Stage, after: list[str], tries: int) -> None:
        from nemo_latent_thoughts.launch import slurm

        c, run, array = self.cluster, str(self.run), None
        if stage.kind == "mstep":
            args, resources = slurm.mstep_args(c, stage.out.parent / "recipe.yaml"), c.mstep
        elif stage.kind == "estep":
            tasks = list(range(c.estep_tasks))
            if (Path(self.cfg.data.chunks_dir) / "manifest.json").exists():  # else every task: chunks come later
                tasks = slurm.unfinished_estep_tasks(self.cfg, c.estep_tasks, stage.out) or tasks
            array = slurm.array_spec(tasks, c.estep_tasks)
            serve = ["--serve", c.estep_server] if c.estep_server else []
            args = ["em", "stage", run, slug(stage.name), "--shard", "$SLURM_ARRAY_TASK_ID", "--num-shards",
                    str(c.estep_tasks), *serve]
            resources = c.estep
        else:
            args, resources = ["em", "stage", run, slug(stage.name)], c.light if stage.kind in LIGHT else c.stage
        sub = slurm.submit(slug(stage.name), args, c, resources, array=array, after=after)
        self.jobs[stage.name] = Job(sub.job_id, sub.array, sub.log_dir, tries)
        save_jobs(self.run, self.jobs)
        log.info("em: %s: submitted job %s%s%s", stage.name, sub.job_id, f" (array {array})" if array else "",
                 f" after {','.join(after)}" if after else "")
        self.seen[stage.name] = "submitted"

    def _log(self, stage: Stage, state: str, job: Optional[Job] = None) -> None:
        if self.seen.get(stage.name) not in (None, state):
            log.info("em: %s: %s", stage.name, f"job {job.job_id} {state}" if job else state)
        self.seen[stage.name] = state

    def run_until_done(self) -> None:
        while not self.advance():
            time.sleep(self.cluster.poll_seconds)


def run_on_cluster(cfg: Config, cluster: ClusterConfig, detach: bool) -> Path:
    """Submit (or continue) the EM run of `cfg` on `cluster`; without `detach`, wait until it is done."""
    run = Path(cfg.run_dir)
    queue = Queue(cfg, cluster, run)
    if queue.advance():
        print(f"EM run complete: report in {run / 'report.md'}")
    elif detach:
        queued = sum(state in ("queued", "submitted") for state in queue.states.values())
        print(f"em: {queued} stages queued or running on the cluster; `nlt em status {run}` shows them; "
              "rerun the same command to continue")
    else:
        queue.run_until_done()
        print(f"EM run complete: report in {run / 'report.md'}")
    return run


def cancel(run_dir: Path) -> list[str]:
    """scancel every queued or running job of the run in `run_dir`; returns the cancelled job ids."""
    holder = locks.holder(run_dir)
    if holder:
        raise NLTError(f"{run_dir}: its driver is running ({holder}); stop it first (Ctrl-C), then cancel")
    jobs = load_jobs(run_dir)
    live = [job for job in jobs.values() if not job_state(job)[0]]
    if live:
        out = subprocess.run(["scancel", *(job.job_id for job in live)], capture_output=True, text=True)
        if out.returncode != 0:
            raise NLTError(f"scancel failed: {out.stderr.strip() or out.returncode}")
        for job in live:
            job.cancelled = True
        save_jobs(run_dir, jobs)
    return [job.job_id for job in live]


def stage_rows(run_dir: Path) -> dict[str, tuple[str, str]]:
    """stage -> (its job's state, "job ID" with its array, and its log when it failed) for the stages
    with a job."""
    rows = {}
    for name, job in load_jobs(run_dir).items():
        ended, state = job_state(job)
        rows[name] = state, f"job {job.job_id}{f' (array {job.array})' if job.array else ''}" + (
            f", log {log_file(job)}" if ended and state != "COMPLETED" else "")
    return rows

