"""Kubetune trainer: the training and export entrypoints that run inside the Jobs."""
