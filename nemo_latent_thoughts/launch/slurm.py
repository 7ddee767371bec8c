"""`nlt launch`: the M-step as a multi-node job and the E-step as a job array, via NeMo-Run.

Jobs are `python -m nemo_latent_thoughts.cli ...` scripts submitted by NeMo-Run's
`SlurmExecutor` (local tunnel: run on the cluster's login node). A dry run writes and returns
the sbatch scripts without submitting. NeMo-Run cannot wait for job arrays (its sacct parsing
skips `ID_TASK` rows), so waiting polls `sacct` itself (`launch.sacct`). The E-step array holds
only the tasks whose chunk shards are unfinished, so relaunching resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from nemo_latent_thoughts.config import Config
from nemo_latent_thoughts.data.prepare import chunks_manifest
from nemo_latent_thoughts.errors import NLTError
from nemo_latent_thoughts.estep import shard_output_name
from nemo_latent_thoughts.launch import sacct
from nemo_latent_thoughts.launch.cluster import ClusterConfig, JobResources

log = logging.getLogger(__name__)


@dataclass
class Submission:
    """What `launch` did: the job's name, sbatch script, Slurm job id (None: dry run) and array."""

    name: str
    script: str
    job_id: Optional[str] = None
    array: Optional[str] = None

    @property
    def log_dir(self) -> Optional[str]:
        """Where the job's logs go (the folder of the script's `#SBATCH --output`)."""
        found = re.search(r"^#SBATCH --output=(\S+)", self.script, re.MULTILINE)
        return str(Path(found.group(1)).parent) if found else None


def _executor(cluster: ClusterConfig, resources: JobResources, array: Optional[str] = None,
              after: Sequence[str] = ()):
    """NeMo-Run's SlurmExecutor for one job; `after`: Slurm job ids it starts after (afterok), and a
    job whose dependency fails is cancelled by Slurm instead of pending forever."""
    import nemo_run as run

    workdir = cluster.workdir or os.getcwd()
    return run.SlurmExecutor(
        account=cluster.account, partition=cluster.partition, time=resources.time, nodes=resources.nodes,
        ntasks_per_node=resources.tasks_per_node, gpus_per_node=resources.gpus_per_node,
        cpus_per_task=resources.cpus_per_task, array=array, container_image=cluster.container_image,
        container_mounts=list(cluster.container_mounts), env_vars=dict(cluster.env),
        additional_parameters={"chdir": workdir, **({"kill_on_invalid_dep": "yes"} if after else {})},
        dependencies=[f"slurm://job/{job_id}" for job_id in after],  # NeMo-Run reads the id after the host
        poll_estimated_start_time=False,
        srun_args=["--container-workdir" if cluster.container_image else "--chdir", workdir],  # over NeMo-Run's
        tunnel=run.LocalTunnel(job_dir=""), packager=run.Packager())  # "": $NEMORUN_HOME/experiments


@contextlib.contextmanager
def _own_logging() -> Iterator[None]:
    """Keep the root logger's handlers and level: a NeMo-Run Experiment replaces them with its own
    (rich, wrapped at 80 columns) and removes them on exit, which silenced our logs after a submission."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def submit(name: str, args: Sequence[str], cluster: ClusterConfig, resources: JobResources,
           array: Optional[str] = None, after: Sequence[str] = (), dryrun: bool = False) -> Submission:
    """Submit `nlt ARGS` as one Slurm job (`array`: a job array) through a NeMo-Run experiment, or
    only write its sbatch script (`dryrun`). `name`: the job's name ([A-Za-z0-9_-])."""
    import nemo_run as run
    from nemo_run.config import set_nemorun_home

    task = run.Script(path="nemo_latent_thoughts.cli", args=list(args), entrypoint=cluster.python, m=True)
    executor = _executor(cluster, resources, array, after)
    if cluster.job_dir:  # a local tunnel only works in NeMo-Run's home (its job_dir must stay "")
        set_nemorun_home(cluster.job_dir)
    with _own_logging(), run.Experiment(name, executor=executor, log_level="WARN", clean_mode=True,
                                        enable_goodbye_message=False) as exp:
        exp.add(task, name=name)
        if dryrun:
            exp.dryrun(log=False, delete_exp_dir=False)
        else:
            try:
                exp.run(detach=True)
            except Exception as e:  # invoke's UnexpectedExit carries sbatch's own message
                result = getattr(e, "result", None)
                why = (getattr(result, "stderr", "") or str(e)).strip().splitlines()[-1:] or [type(e).__name__]
                raise NLTError(f"sbatch of the {name} job failed: {why[0]}; check the cluster YAML") from None
        script_path = next(Path(exp._exp_dir).glob(f"**/*{name}_sbatch.sh"))
        job_id = None if dryrun else exp.jobs[0].handle.rsplit("/", 1)[-1]
    return Submission(name, script_path.read_text(encoding="utf-8"), job_id, executor.array)


def mstep_args(cluster: ClusterConfig, recipe: str | Path) -> list[str]:
    """The `nlt` command of an M-step job on the recipe (cluster.mstep_command on cluster.mstep)."""
    args = [cluster.mstep_command, str(recipe)]
    if cluster.mstep_command == "mstep-nemo":
        args += ["--nodes", str(cluster.mstep.nodes), "--gpus", str(cluster.mstep.tasks_per_node)]
    return args


def array_spec(tasks: list[int], num_tasks: int) -> str:
    """sbatch --array of `tasks` out of `num_tasks`."""
    return f"0-{num_tasks - 1}" if len(tasks) == num_tasks else ",".join(map(str, tasks))


def launch_mstep(cfg: Config, recipe: str | Path, cluster: ClusterConfig, dryrun: bool = False) -> Optional[Submission]:
    """Submit the round's M-step (`nlt mstep-nemo`, `mstep-bridge` or `train` of `recipe`) as one multi-node job;
    None when it is already done (both write `done.json` last)."""
    from nemo_latent_thoughts.train.handoff import DONE

    if (Path(cfg.training.out_dir) / DONE).exists():
        log.info("launch: M-step %s is complete; nothing to submit", cfg.training.out_dir)
        return None
    r = cluster.mstep
    sub = submit("mstep", mstep_args(cluster, recipe), cluster, r, dryrun=dryrun)
    log.info("launch: M-step of %s %s (%d nodes x %d tasks)", recipe, "dry run" if dryrun else f"job {sub.job_id}",
             r.nodes, r.tasks_per_node)
    return sub


def unfinished_estep_tasks(cfg: Config, num_tasks: int, out: Optional[Path] = None) -> list[int]:
    """Array tasks (of `num_tasks`) that still own a chunk shard without its E-step output in `out`
    (default: estep.out_dir)."""
    shards = len(chunks_manifest(Path(cfg.data.chunks_dir))["shards"])
    out = Path(out or cfg.estep.out_dir)
    return sorted({i % num_tasks for i in range(shards) if not (out / shard_output_name(i)).exists()})


def launch_estep(cfg: Config, recipe: str | Path, cluster: ClusterConfig, dryrun: bool = False,
                 server: Optional[str] = None) -> Optional[Submission]:
    """Submit the unfinished tasks of the E-step array; None when every shard is done. `server`: each task
    serves estep.model with that server for its own shards (`nlt estep --serve`)."""
    n = cluster.estep_tasks
    todo = unfinished_estep_tasks(cfg, n)
    if not todo:
        log.info("launch: E-step %s is complete; nothing to submit", cfg.estep.out_dir)
        return None
    array = array_spec(todo, n)
    serve = ["--serve", server] if server else []
    args = ["estep", str(recipe), "--shard", "$SLURM_ARRAY_TASK_ID", "--num-shards", str(n), *serve]
    sub = submit("estep", args, cluster, cluster.estep, array=array, dryrun=dryrun)
    log.info("launch: E-step array %s of %d tasks: %s", array, n, "dry run" if dryrun else f"job {sub.job_id}")
    return sub


def wait_for(sub: Submission, poll_seconds: float) -> dict[str, str]:
    """Wait until the job (every array task) has ended; a one-line error unless all COMPLETED."""
    rows = sacct.wait(sub.job_id, poll_seconds, tasks=sacct.array_tasks(sub.array) if sub.array else None)
    failed = {job: state for job, state in sorted(rows.items()) if state != "COMPLETED"}
    if failed:
        raise NLTError(f"{sub.name}: job {sub.job_id}: {len(failed)} of {len(rows)} tasks did not complete "
                       f"({', '.join(f'{job} {state}' for job, state in failed.items())}); logs in {sub.log_dir}; "
                       "rerun the same `nlt launch` to resume")
    return rows


def job_recipe(cfg: Config, recipe: Optional[str], overrides: list[str], out_dir: str) -> Path:
    """The recipe file the jobs read: `recipe` itself, or with overrides the resolved config
    written to `out_dir/launch/config.yaml`."""
    from nemo_latent_thoughts.config import save_config

    if recipe is None or not Path(recipe).is_file():
        raise NLTError(f"nlt launch: recipe '{recipe}' is not a file; pass the recipe YAML the jobs should run")
    if not overrides:
        return Path(recipe).absolute()
    return save_config(cfg, Path(out_dir, "launch")).absolute()
