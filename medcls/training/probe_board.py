"""Timing probes that run in the background, one at a time, with their answers shared for a while.

While a run trains, timing new options beside it takes about 10 s on 2 cores. A page that waited for that
probe could not redraw anything else meanwhile, not even the progress of the run training. So a page asks the board
instead: it gets the answer if it is ready, and otherwise :class:`ProbePending` is raised, with the probe started
once for everyone who asks for the same key. The page shows that the options are being timed and asks again later.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class ProbePending(Exception):
    """The probe for ``key`` is still running; ``stop`` ends it (e.g. when a run is started and needs the CPU)."""

    def __init__(self, key: Hashable, stop: threading.Event) -> None:
        super().__init__(f"Still timing {key!r}.")
        self.key = key
        self.stop = stop


@dataclass(frozen=True)
class _Entry:
    future: Future
    stop: threading.Event
    started: float
    order: int      # when it was asked for, among all probes: the board's one thread runs them in this order


@dataclass(frozen=True)
class Queue:
    """Where a pending probe stands: the probes of other options that run or wait before it, and how long the
    last probe to answer took (None before any has), so that a page can say how long the wait may be."""
    ahead: int
    last_took_s: float | None


class ProbeBoard(Generic[T]):
    """Background probes by key. ``measure(stop)`` runs in the board's one thread and should end soon after
    ``stop`` is set. An answer is kept for ``ttl_s``, because the machine's load changes. An error is raised
    to the first caller to ask after it happened and is then forgotten, so that the next ask measures again; a
    probe stopped before it answered is not an error (it was stopped for a reason of its time, not this ask's):
    the next ask simply measures again."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._asked = itertools.count()
        self._waiting: dict[Hashable, Hashable] = {}  # asker -> the key it last asked for
        self._last_took_s: float | None = None
        # One probe at a time: two at once beside a training run would each time less than the core it leaves.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medcls-probe")

    def ask(self, key: Hashable, measure: Callable[[threading.Event], T], asker: Hashable | None = None) -> T:
        """The answer for ``key``; raises :class:`ProbePending` (starting the probe if none runs for ``key``)
        while it is being measured, or the error the probe raised.

        ``asker`` (a page's session) waits for one probe at a time: when it asks for another key, the probe it
        waited for is stopped if no other asker waits for it. In a classroom every change of an option asks for a
        new probe, and the probes of options no one looks at any more would otherwise hold up everyone's turn."""
        with self._lock:
            self._forget_expired()
            entry = self._entries.get(key)
            if entry is not None and self._stopped_unanswered(entry):
                # stopped before it answered (a run started, or no one waited for it): measure again, without
                # waiting for a stopped probe to end first
                entry = None
            if entry is None:
                stop = threading.Event()
                entry = _Entry(self._pool.submit(self._timed, measure, stop), stop, self._clock(), next(self._asked))
                self._entries[key] = entry
            if not entry.future.done():
                if asker is not None:  # a key already answered (a lesson's first run) changes no one's wait
                    self._wait_for(asker, key)
                raise ProbePending(key, entry.stop)
            if entry.future.exception() is not None:
                del self._entries[key]
        return entry.future.result()

    def _wait_for(self, asker: Hashable, key: Hashable) -> None:
        """Note that ``asker`` now waits for ``key``, and stop the probe it waited for before if no one else does.
        Call with the lock held."""
        before = self._waiting.get(asker)
        self._waiting[asker] = key
        if before is None or before == key or before in self._waiting.values():
            return
        if (left := self._entries.get(before)) is not None and not left.future.done():
            left.stop.set()

    def _timed(self, measure: Callable[[threading.Event], T], stop: threading.Event) -> T:
        """``measure(stop)``, noting how long it took when it answered (a stopped or failed probe says nothing of
        how long the next will take)."""
        started = time.monotonic()
        result = measure(stop)
        with self._lock:
            self._last_took_s = time.monotonic() - started
        return result

    def queue(self, key: Hashable) -> Queue:
        """Where the probe for ``key`` stands: how many probes of other keys, not stopped, run or wait before it
        (0 when it runs, has answered or was never asked)."""
        with self._lock:
            mine = self._entries.get(key)
            ahead = 0 if mine is None or mine.future.done() else sum(
                1 for e in self._entries.values()
                if e.order < mine.order and not e.future.done() and not e.stop.is_set())
            return Queue(ahead, self._last_took_s)

    def _forget_expired(self) -> None:
        """Drop finished probes older than the time to live, of every key: the board is shared by all sessions for
        the app's life, and each option set anyone timed would otherwise stay in it. Call with the lock held."""
        now = self._clock()
        for key in [k for k, e in self._entries.items() if e.future.done() and now - e.started > self._ttl_s]:
            del self._entries[key]
        # an asker whose probe has ended waits for nothing (and may have closed its page for good)
        for asker in [a for a, k in self._waiting.items() if k not in self._entries or self._entries[k].future.done()]:
            del self._waiting[asker]

    @staticmethod
    def _stopped_unanswered(entry: _Entry) -> bool:
        """Stopped, and ended (or will end) without an answer."""
        return entry.stop.is_set() and (not entry.future.done() or entry.future.exception() is not None)

    def pending(self, key: Hashable) -> bool:
        """Whether the probe for ``key`` is still running (False once it has answered, failed or was never asked)."""
        with self._lock:
            entry = self._entries.get(key)
        return entry is not None and not entry.future.done()

    def stop_all(self) -> None:
        """End every probe still running: their answers would no longer be used."""
        with self._lock:
            for entry in self._entries.values():
                if not entry.future.done():
                    entry.stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no probe runs (at most ``timeout`` s); whether none does. For tests and shutdown."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                running = [e.future for e in self._entries.values() if not e.future.done()]
            if not running:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            time.sleep(0.02 if left is None else min(0.02, left))

    def shutdown(self) -> None:
        """Stop the probes and the board's thread (when the app's cache is cleared)."""
        self.stop_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
