"""The command registry, and what every command shares: the run store it works on and Ctrl-C handling."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from typing import Callable

__all__ = ["COMMANDS", "command", "open_store", "ctrl_c_stops"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    """Register a function as the handler of ``python -m medcls NAME``."""
    def wrap(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return wrap


def open_store(args: argparse.Namespace):
    """The run store the command works on (``--runs-dir``, else the settings' default)."""
    from ..runs.store import RunStore

    return RunStore(args.runs_dir)


@contextlib.contextmanager
def ctrl_c_stops():
    """The first Ctrl-C sets the yielded event (stop after this batch, keep the best checkpoint); a second aborts."""
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        print("\nstopping after this batch (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)
