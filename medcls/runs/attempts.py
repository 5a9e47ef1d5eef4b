"""Wrong guesses of the instructor secret are slowed down: a classroom server must not let a student try
thousands of secrets from a script.

Two limits, both kept in the server process:

- **per person** (the browser's identity key): the first few wrong secrets cost nothing (typos happen), after
  that each further try waits twice as long as the one before, up to a ceiling;
- **for the whole server**: a person can shed their key by clearing the browser's cookies, so wrong secrets
  from everyone together are also capped per window. When the cap is reached, everyone waits for the window
  to end; an instructor already signed in is not affected.

A right secret clears the person's own count. Nothing is written to disk: a restart forgets the counts, which
costs an attacker a server restart they cannot cause.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["SecretAttempts", "wait_words", "FREE_TRIES", "SERVER_CAP", "SERVER_WINDOW_S"]

FREE_TRIES = 5             # wrong secrets a person may enter before waiting (typos)
FIRST_WAIT_S = 5.0         # the wait after the first try beyond them; doubled for each further one
MAX_WAIT_S = 300.0         # the longest wait for one person
SERVER_CAP = 30            # wrong secrets from everyone together per window
SERVER_WINDOW_S = 600.0


@dataclass
class _Person:
    failures: int = 0
    last: float = -math.inf


@dataclass
class SecretAttempts:
    """Counts wrong instructor secrets; ``wait_s(key)`` says how long ``key`` must wait before the next try."""

    clock: Callable[[], float] = time.monotonic
    _people: dict[str, _Person] = field(default_factory=dict)
    _server: deque[float] = field(default_factory=deque)  # times of recent wrong secrets, oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        with self._lock:
            now = self.clock()
            self._forget_old(now)
            person = self._people.get(key)
            own = 0.0
            if person is not None and person.failures >= FREE_TRIES:
                wait = min(MAX_WAIT_S, FIRST_WAIT_S * 2 ** (person.failures - FREE_TRIES))
                own = max(0.0, person.last + wait - now)
            server = self._server[0] + SERVER_WINDOW_S - now if len(self._server) >= SERVER_CAP else 0.0
            return max(own, server, 0.0)

    def failed(self, key: str) -> None:
        with self._lock:
            now = self.clock()
            person = self._people.setdefault(key, _Person())
            person.failures += 1
            person.last = now
            self._server.append(now)
            self._forget_old(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._people.pop(key, None)

    def _forget_old(self, now: float) -> None:
        while self._server and self._server[0] <= now - SERVER_WINDOW_S:
            self._server.popleft()
        # A person's count lapses after a quiet window, so the map cannot grow without end.
        for key in [k for k, p in self._people.items() if p.last <= now - SERVER_WINDOW_S - MAX_WAIT_S]:
            del self._people[key]


def wait_words(seconds: float) -> str:
    """'12 s' or '3 min', rounded up: how long to wait, for a message."""
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    return f"{math.ceil(seconds / 60)} min"
