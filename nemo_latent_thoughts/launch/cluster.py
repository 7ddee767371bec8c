"""The cluster YAML of `nlt launch`: where and how jobs run (examples/cluster_*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from nemo_latent_thoughts.config import SERVER_KINDS, _at_least, _require


@dataclass(kw_only=True)
class JobResources:
    """Resources of one kind of job."""

    nodes: int = 1
    """Nodes of the job (M-step: data-parallel over all of them; E-step: per array task)."""
    tasks_per_node: int = 1
    """Processes per node (M-step: one per GPU)."""
    gpus_per_node: Optional[int] = None
    """GPUs per node to request (--gpus-per-node); unset: none."""
    cpus_per_task: Optional[int] = None
    """CPUs per process (--cpus-per-task); unset: Slurm's default."""
    time: str = "04:00:00"
    """Wall-clock limit (--time)."""

    def check(self) -> None:
        _at_least(self, 1, "nodes", "tasks_per_node")


@dataclass(kw_only=True)
class ClusterConfig:
    """A Slurm cluster and the jobs `nlt launch` submits to it (through NeMo-Run's SlurmExecutor)."""

    account: str
    """Slurm account (--account)."""
    partition: Optional[str] = None
    """Slurm partition (--partition); unset: the cluster's default."""
    container_image: Optional[str] = None
    """Container image (pyxis/enroot --container-image); unset: run on the host."""
    container_mounts: list[str] = field(default_factory=list)
    """Container mounts SRC:DST (run directories, data, models)."""
    python: str = "python"
    """Python interpreter (inside the container, if any) that has nemo-latent-thoughts installed."""
    workdir: Optional[str] = None
    """Directory the jobs start in (--chdir), e.g. where relative recipe paths resolve; unset: the
    directory `nlt launch` runs in."""
    job_dir: str = ""
    """Where NeMo-Run keeps experiments (sbatch scripts, job logs) on a shared filesystem; empty:
    $NEMORUN_HOME (~/.nemo_run). No "/nemo_run" in it: NeMo-Run rewrites that string in job paths."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables of every job."""
    mstep: JobResources = field(default_factory=lambda: JobResources(nodes=2, tasks_per_node=8, gpus_per_node=8))
    """The M-step job (multi-node)."""
    mstep_command: str = "mstep-nemo"
    """nlt subcommand of the M-step: mstep-nemo (NeMo 2 on GPUs, containers <= 26.02), mstep-bridge
    (Megatron-Bridge on GPUs, one task per GPU, containers >= 26.04) or train (the embedded trainer, CPU)."""
    estep: JobResources = field(default_factory=lambda: JobResources(gpus_per_node=1))
    """One E-step array task (one shard group per GPU)."""
    estep_tasks: int = 16
    """E-step array tasks (`--num-shards`): task i takes every estep_tasks-th chunk shard from the i-th."""
    estep_server: Optional[str] = None
    """`nlt em run --cluster`: each E-step array task serves the round's model with this server (vllm,
    sglang, trtllm) and samples through it; unset: estep.backend in process."""
    stage: JobResources = field(default_factory=lambda: JobResources(gpus_per_node=1))
    """`nlt em run --cluster`: the one-process heavy stages (eval, the base model, the teacher)."""
    light: JobResources = field(default_factory=lambda: JobResources(time="01:00:00"))
    """`nlt em run --cluster`: the light stages (setup, prepare, data, recipe, report) as jobs."""
    light_stages: str = "job"
    """`nlt em run --cluster`: run the light stages as small jobs (job: the queue holds whole rounds) or
    in the driver itself (local: the driver submits past them only once they have run)."""
    poll_seconds: float = 30.0
    """Seconds between sacct polls while waiting."""

    def check(self) -> None:
        _require(bool(self.account), "account", "must be set (the Slurm account to charge)")
        _require(self.mstep_command in ("mstep-nemo", "mstep-bridge", "train"), "mstep_command",
                 "must be mstep-nemo, mstep-bridge or train")
        _require("/nemo_run" not in self.job_dir, "job_dir",
                 "must not contain '/nemo_run' (NeMo-Run replaces it in every job path); rename that directory")
        _at_least(self, 1, "estep_tasks")
        _require(self.light_stages in ("job", "local"), "light_stages", "must be job or local")
        _require(self.estep_server in (None, *SERVER_KINDS), "estep_server", f"must be one of {', '.join(SERVER_KINDS)}")
        _require(self.poll_seconds > 0, "poll_seconds", "must be > 0")
