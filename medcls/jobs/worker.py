"""The entry point of a training worker process: ``python -m medcls.jobs.worker STORE RUN_ID``.

Runs in a fresh process (never a fork of a multi-threaded server):
lowers its own priority so the app stays responsive, sets torch's threads (given,
or the cores other processes leave free, checked again every second), logs
into the run folder, and trains the run. If the process that started it dies
(the app server was killed or restarted) the worker marks the run interrupted
and exits instead of training on as an orphan nobody can see.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time

__all__ = ["run_worker"]

PARENT_CHECK_S = 1.0


def _watch_parent(store, run_id: str, parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            try:
                if store.owns(run_id, os.getpid()):
                    store.set_status(run_id, "interrupted", auto_resume=True,
                                     error="The app server that started this run stopped; training was interrupted. "
                                           "The history and best checkpoint so far are kept, and the run continues "
                                           "from its last finished epoch when the app starts again.")
            finally:
                os._exit(3)


def run_worker(store_root: str, run_id: str, threads: int = 0, parent_pid: int | None = None,
               nice: int = 10) -> None:
    # Imports happen here, in the child, so the parent never pays for them twice.
    from ..runs.store import RunStore
    from ..training.hardware import configure_threads
    from .execute import execute_run

    store = RunStore(store_root)
    handler = logging.FileHandler(store.path(run_id) / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if nice:
        try:
            os.nice(nice)  # training yields the CPU to page renders
        except OSError:
            pass
    chosen = configure_threads(threads)
    logging.getLogger(__name__).info("training with %d thread(s)%s", chosen, "" if threads else
                                     " (the cores other processes leave free; checked again every second)")
    if parent_pid:
        threading.Thread(target=_watch_parent, args=(store, run_id, parent_pid), daemon=True,
                         name="parent-watch").start()
    outcome = execute_run(store, run_id, adapt_threads=not threads)
    logging.getLogger(__name__).info("run %s ended: %s %s", run_id, outcome.state, outcome.error)
    handler.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m medcls.jobs.worker", description="Train one stored run.")
    parser.add_argument("store", help="Run store folder.")
    parser.add_argument("run_id", help="The run to train (its config.json is in the store).")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = the cores free now, "
                                                                "checked again every second).")
    parser.add_argument("--parent-pid", type=int, default=None, help="Stop (interrupted) when this process dies.")
    parser.add_argument("--nice", type=int, default=10, help="Lower the worker's CPU priority by this much.")
    args = parser.parse_args(argv)
    run_worker(args.store, args.run_id, args.threads, args.parent_pid, args.nice)


if __name__ == "__main__":
    main()
