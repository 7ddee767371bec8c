"""Launching on Slurm through NeMo-Run: cluster YAML, multi-node M-step, E-step job arrays, sacct waits."""
