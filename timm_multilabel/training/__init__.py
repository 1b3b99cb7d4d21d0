"""Pieces of train.py that are worth importing on their own: argument parsing, checkpoints,
evaluation, run summaries and plots."""
