"""Launchers that start tools/train.py on clusters (SLURM through submitit); see the README."""
