"""Experiments made of several runs: hyperparameter sweeps."""
