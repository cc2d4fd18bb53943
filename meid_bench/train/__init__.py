"""Training: typed recipes (config), the training loop, batch streams and checkpoints."""
