"""Process groups, collectives with gradients, and checkpoints."""
