"""sslframe: self-supervised pretraining of vision models, from a laptop CPU to SLURM clusters."""

__version__ = "0.1.0"
