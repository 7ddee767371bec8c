import os

from nemo_latent_thoughts.train import distributed


def test_srun_environment_becomes_torch_distributed_environment(monkeypatch):
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()  # a private copy: nothing leaks
                                        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")})
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("MASTER_ADDR", "node01")  # as sbatch scripts usually export it
    distributed.setup_env_from_slurm()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "node01" and os.environ["MASTER_PORT"] == "29734"


def test_torchrun_environment_wins_and_single_tasks_are_left_alone(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    distributed.setup_env_from_slurm()
    assert os.environ["RANK"] == "0"
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    distributed.setup_env_from_slurm()
    assert "RANK" not in os.environ
