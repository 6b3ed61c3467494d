"""Training: losses, trainer, checkpoints."""
