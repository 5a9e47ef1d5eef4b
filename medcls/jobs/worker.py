"""The entry point of a training worker process: ``python -m medcls.jobs.worker STORE RUN_ID``.

Runs in a fresh process (never a fork of a multi-threaded server):
lowers its own priority so the app stays responsive, sets torch's threads (given,
or every core, one fewer while other processes keep a core busy, checked every second), logs
into the run folder, and trains the run. If the process that started it dies
(the app server was killed or restarted) the worker marks the run interrupted
and exits instead of training on as an orphan nobody can see.

With ``--standby`` instead of a run id, the process pays a training process's
one-time costs first (importing torch, scikit-learn and medcls, torch's first
optimizer step, the first metrics: about 5 s on a 2-core CPU) and then waits
for a run id on its standard input. The app keeps one such process ready, so
that *Start training* does not wait for them (:class:`medcls.jobs.local.LocalBackend`).
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
import threading
import time

__all__ = ["run_worker", "READY", "STANDBY_FLAG"]

PARENT_CHECK_S = 1.0
READY = "ready"  # what a standby process writes to its standard output once it is warm
STANDBY_FLAG = "--standby"  # the argument for a process that warms up, then waits for its run on stdin


def _watch_parent(store_root: str, run: dict, parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            try:
                run_id = run.get("id")
                if run_id:
                    from ..runs.store import RunStore

                    store = RunStore(store_root)
                    if store.owns(run_id, os.getpid()):
                        store.set_status(
                            run_id, "interrupted", auto_resume=True,
                            error="The app server that started this run stopped; training was interrupted. The "
                                  "history and checkpoint so far are kept, and the run continues from its last "
                                  "finished epoch when the app starts again.")
            finally:
                os._exit(3)


def _lower_priority(nice: int) -> None:
    if nice:
        try:
            os.nice(nice)  # training yields the CPU to page renders
        except OSError:
            pass


def _wait_for_run(stream) -> str | None:
    """The run id the backend hands over (one line), or None when the backend closed the pipe without one."""
    line = stream.readline()
    return line.strip() or None


def _log_into_run_folder(run_folder) -> None:
    """A standby process's output so far went to the store's standby log; from now on it goes beside its run."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(run_folder / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run_worker(store_root: str, run_id: str | None, threads: int = 0, parent_pid: int | None = None,
               nice: int = 10) -> None:
    """Train ``run_id``; with ``run_id`` None, warm up first, say so, and train the run id read from stdin."""
    _lower_priority(nice)  # before the imports, so that a standby's warm-up yields to the app too
    run: dict = {"id": run_id}
    if parent_pid:
        threading.Thread(target=_watch_parent, args=(store_root, run, parent_pid), daemon=True,
                         name="parent-watch").start()
    # Imports happen here, in the child, so the parent never pays for them twice.
    from ..runs.store import RunStore
    from ..training.hardware import configure_threads, usable_cores
    from ..training.warmup import warm_up
    from .execute import execute_run

    store = RunStore(store_root)
    if run_id is None:
        warm_up(run_waiting=lambda: bool(select.select([sys.stdin], [], [], 0)[0]))
        try:
            print(READY, flush=True)
        except OSError:  # nobody listens any more; the run id may still come
            pass
        run_id = _wait_for_run(sys.stdin)
        if run_id is None:
            return
        _log_into_run_folder(store.path(run_id))
        run["id"] = run_id
    handler = logging.FileHandler(store.path(run_id) / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Not fixed: start with every core. A reading taken now mostly sees the page redrawing after the click on
    # Start (a burst, not a load); the run's ThreadBudget takes a thread away once a load has lasted two seconds.
    chosen = configure_threads(threads or usable_cores())
    logging.getLogger(__name__).info("training with %d thread(s)%s", chosen, "" if threads else
                                     " (fewer while other processes keep a core busy; checked every second)")
    outcome = execute_run(store, run_id, adapt_threads=not threads)
    logging.getLogger(__name__).info("run %s ended: %s %s", run_id, outcome.state, outcome.error)
    handler.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medcls.jobs.worker", description="Train one stored run.")
    parser.add_argument("store", help="Run store folder.")
    parser.add_argument("run_id", nargs="?", default=None,
                        help="The run to train (its config.json is in the store); leave out with --standby.")
    parser.add_argument(STANDBY_FLAG, action="store_true",
                        help="Warm up, print 'ready', then train the run id given on standard input.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the cores free now, "
                                                                "checked again every second).")
    parser.add_argument("--parent-pid", type=int, default=None, help="Stop (interrupted) when this process dies.")
    parser.add_argument("--nice", type=int, default=10, help="Lower the worker's CPU priority by this much.")
    args = parser.parse_args(argv)
    if (args.run_id is None) != args.standby:
        parser.error("give either a run id or --standby")
    run_worker(args.store, args.run_id, args.threads, args.parent_pid, args.nice)


if __name__ == "__main__":
    main()
