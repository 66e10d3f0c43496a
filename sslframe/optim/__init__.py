"""Optimizers (SGD, LARS, AdamW), parameter groups and per-iteration schedules."""
