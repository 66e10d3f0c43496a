"""The training loop and the observers that watch it."""
