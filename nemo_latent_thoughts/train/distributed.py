"""Process-group setup from the launcher's environment: torchrun (RANK, WORLD_SIZE) or Slurm srun."""

from __future__ import annotations

import os
import subprocess

import torch


def setup_env_from_slurm() -> None:
    """Under `srun` without torchrun, derive RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR from Slurm."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ or int(os.environ.get("SLURM_NTASKS", "1")) == 1:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        hosts = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ["MASTER_ADDR"] = hosts[0]
    os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", "0")) % 1000))


def rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average `tensor` over all processes, in place (a no-op for one process)."""
    if world_size() > 1:
        torch.distributed.all_reduce(tensor)
        tensor /= world_size()
    return tensor


def barrier() -> None:
    if world_size() > 1:
        torch.distributed.barrier()
