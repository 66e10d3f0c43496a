"""Launchers that start tools/train.py on clusters (SLURM through submitit).

The SLURM launcher issue fills this package; tools/train.py already reads SLURM's variables.
"""
