"""The per-rank training program: data, metrics and the training loop of one job."""
