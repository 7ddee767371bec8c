"""Job and job-array states from `sacct`, and waiting until a job (every array task) has ended.

NeMo-Run's own wait never returns for arrays: its scheduler matches sacct rows to the job id and
skips the `ID_TASK` rows of array tasks (DESIGN.md 3.5). Here every row counts; pending tasks
that sacct still lists as one `ID_[2-5]` row count as not ended, and so do tasks sacct does not
list yet.

sacct can also show a job as ended while Slurm requeues it (NeMo-Run submits with `--requeue`,
so a node failure or a preemption sends the job back to the queue, and its rerun resumes from the
newest checkpoint). The controller's own view, `squeue`, therefore overrides sacct's rows: a job
that squeue still lists as pending or running has not ended.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Callable, Optional

from nemo_latent_thoughts.errors import NLTError

log = logging.getLogger(__name__)

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE", "REVOKED"}


def parse(text: str) -> dict[str, str]:
    """`sacct --parsable2 --noheader -X -o JobID,State` output as {job or array-task id: state}."""
    states = {}
    for line in text.splitlines():
        if "|" in line:
            job_id, state = line.split("|")[:2]
            states[job_id.strip()] = state.split()[0] if state.strip() else "UNKNOWN"  # "CANCELLED by 0"
    return states


def states(job_id: str) -> dict[str, str]:
    """The allocation rows of job `job_id` (one per array task) and their states: sacct's, updated
    by squeue's for the jobs the controller still holds."""
    out = subprocess.run(["sacct", "--parsable2", "--noheader", "-X", "-o", "JobID,State", "-j", str(job_id)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise NLTError(f"sacct -j {job_id} failed ({out.stderr.strip() or out.returncode}); Slurm accounting "
                       "(slurmdbd) must be enabled for `nlt launch --wait`")
    queued = subprocess.run(["squeue", "--noheader", "--array", "-o", "%i|%T", "-j", str(job_id)],
                            capture_output=True, text=True)  # fails once the controller has purged the job
    return parse(out.stdout) | (parse(queued.stdout) if queued.returncode == 0 else {})


def array_tasks(spec: str) -> set[int]:
    """The task ids of an sbatch --array spec ("0-15", "1,3,5", "0-7%2")."""
    ids = set()
    for part in spec.split("%")[0].split(","):
        first, _, last = part.partition("-")
        ids.update(range(int(first), int(last or first) + 1))
    return ids


def ended(rows: dict[str, str], tasks: Optional[set[int]] = None) -> bool:
    """True when sacct lists the job (with `tasks`: a row of each array task) and every row is final.

    Accounting lags: sacct can list a cancelled task before it lists its siblings, so an array has
    ended only once every one of its tasks has a final row (its own, or an `ID_[0-3]` row of tasks
    that never started).
    """
    if not rows or any(state not in ENDED for state in rows.values()):
        return False
    listed = set()
    for job in rows:
        suffix = job.rsplit("_", 1)[1] if "_" in job else ""
        if suffix.isdigit():
            listed.add(int(suffix))
        elif suffix.startswith("["):  # tasks cancelled before they started: one row, ID_[0-3]
            listed |= array_tasks(suffix.strip("[]"))
    return tasks is None or tasks <= listed


def requeued(before: dict[str, str], now: dict[str, str]) -> list[str]:
    """Jobs that were running (or had failed) in `before` and are back in the queue in `now`."""
    return [job for job, state in sorted(now.items())
            if state in ("REQUEUED", "PENDING") and before.get(job) not in (None, "PENDING", "REQUEUED")]


def wait(job_id: str, poll_seconds: float = 30.0, timeout: Optional[float] = None,
         query: Callable[[str], dict[str, str]] = states, tasks: Optional[set[int]] = None) -> dict[str, str]:
    """Poll until job `job_id` (each of its array `tasks`) has ended; return the final states."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last = None
    while True:
        rows = query(job_id)
        if rows != last:
            log.info("launch: job %s: %s", job_id, ", ".join(f"{k} {v}" for k, v in sorted(rows.items())) or "queued")
            for job in requeued(last or {}, rows):
                log.warning("launch: job %s was requeued by Slurm (a node failed or it was preempted); it resumes "
                            "from its newest checkpoint when it runs again", job)
            last = rows
        if ended(rows, tasks):
            return rows
        if deadline is not None and time.monotonic() > deadline:
            raise NLTError(f"job {job_id} has not ended after {timeout:.0f} s (states {rows}); "
                           "wait again with `nlt launch ... --wait` or check `squeue`")
        time.sleep(poll_seconds)
