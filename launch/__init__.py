"""Launchers that start tools/train.py on clusters (SLURM through submitit; the SLURM launcher issue fills this package)."""
