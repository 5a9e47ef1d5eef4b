"""The run store from the command line: ``runs`` lists the runs; ``stop``, ``rename`` and ``delete`` change them.

The command line is the local operator, who may rename and delete anyone's runs (see
:mod:`medcls.runs.permissions`); the job manager does both, as it does for the app.
"""

from __future__ import annotations

import argparse
import time

from ..runs.permissions import owner_words
from .commands import command, open_store

__all__ = ["MAX_NAME_WIDTH"]

MAX_NAME_WIDTH = 60  # the runs table's name column (a longer name is shortened in its middle)


def _operator_manager(args: argparse.Namespace):
    """The job manager as the command line uses it: no scheduling thread; the CLI acts as the local operator,
    who may rename, stop and delete anyone's runs (see medcls.runs.permissions)."""
    from ..jobs.manager import JobManager

    return JobManager(open_store(args), start=False)


@command("stop")
def cmd_stop(args: argparse.Namespace) -> int:
    """Stop any run (the app's too: whoever started it): a queued run is cancelled, a training one stops after its
    current batch, keeping and testing its checkpoint so far."""
    manager = _operator_manager(args)
    store = manager.store
    status = store.status(args.run)
    if not status.active:
        print(f"run {args.run} is {status.state}: it is not queued or training, so there is nothing to stop")
        return 1
    manager.stop(args.run)
    if status.state == "queued":
        print(f"run {args.run} cancelled before it started")
        return 0
    print(f"run {args.run} asked to stop after its current batch; its checkpoint so far is kept and tested")
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline and (status := store.status(args.run)).active:
        time.sleep(0.5)
    if status.active:
        print(f"still stopping after {args.wait:g} s; 'python -m medcls runs' shows when it has")
        return 0
    print(f"run {args.run} {status.state}: {status.error}")
    return 0


@command("rename")
def cmd_rename(args: argparse.Namespace) -> int:
    name = _operator_manager(args).rename(args.run, args.name)
    print(f"run {args.run} is now named {name!r}")
    return 0


@command("delete")
def cmd_delete(args: argparse.Namespace) -> int:
    manager = _operator_manager(args)
    summary = manager.store.summary(args.run)
    if not args.yes:
        answer = input(f"Delete run {args.run} ({summary.name}, {summary.state})? This cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return 1
    manager.delete(args.run)
    print(f"deleted run {args.run} ({summary.name})")
    return 0


@command("runs")
def cmd_runs(args: argparse.Namespace) -> int:
    store = open_store(args)
    summaries = store.list()
    if not summaries:
        print("no runs yet: try 'python -m medcls train'")
        return 0
    name_width = min(MAX_NAME_WIDTH, max(len(s.name) for s in summaries))
    owners = {s.run_id: owner_words(s.owner, s.owner_name) for s in summaries}
    owner_width = min(24, max(len(o) for o in owners.values()))
    state_width = 22 if any(s.fold for s in summaries) else 12
    print(f"{'name':<{name_width}}  {'state':<{state_width}} {'epochs':>7} {'test macro-F1':>14}  {'started by':<{owner_width}}  "
          "run id")
    for s in summaries:
        f1 = "-" if s.test_macro_f1 is None else f"{s.test_macro_f1:.3f}" + (" *" if s.stopped else "")
        state = "damaged" if s.damaged else s.state
        if s.fold:  # an ensemble: the epochs are its latest fold's (or bagged model's)
            kind = ("bagged", "model") if s.bagged else ("folds", "fold")
            state += f", {s.folds} {kind[0]}" if s.state == "finished" else f", {kind[1]} {s.fold}/{s.folds}"
        print(f"{_shortened(s.name, name_width):<{name_width}}  {state:<{state_width}} {s.epochs_done:>3}/{s.epochs:<3} {f1:>14}  "
              f"{owners[s.run_id][:owner_width]:<{owner_width}}  {s.run_id}")
        if s.damaged:
            print(f"{'':<{name_width}}  ! {s.damaged}")
        elif s.state == "interrupted" and store.resumable(s.run_id):
            print(f"{'':<{name_width}}  continue it: python -m medcls resume {s.run_id}")
    if any(s.stopped for s in summaries):
        print("* stopped before its last epoch: the metrics are of what it had trained so far (its kept checkpoint, "
              "or an ensemble's models)")
    return 0


def _shortened(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: a long one loses its middle, so that its end, which tells runs of
    the same settings apart ('… · 3 bagged (2)'), stays."""
    if len(name) <= width:
        return name
    tail = width // 3
    return name[:width - tail - 1] + "…" + name[-tail:]
