"""Distributed pretraining on Ray Train: typed run configs, task mixing, the worker loop, checkpoints, metrics."""
