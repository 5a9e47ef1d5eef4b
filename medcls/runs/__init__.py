"""Runs on disk: the run store (one folder per run) and the typed records read from and written to it."""
