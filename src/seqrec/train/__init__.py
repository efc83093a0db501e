"""The training loop (one plain loop for every model) and its checkpoints."""
