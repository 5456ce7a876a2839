"""Cells, grids, the runner, protocols, the training loop, metrics and the result store."""
