"""Who may do what with a run, and the order in which people's queued runs start: a classroom on one server.

There is no account system. A person is an :class:`Identity`: a stable, unguessable key (from the operator's
OpenID Connect login, or a random token kept in the browser) and a display name. The run records who started
it (``RunMeta.owner``); runs without an owner were started by the local operator (the command line, or
before identities existed).

- Everyone sees and compares every run, unless the operator sets ``MEDCLS_OWN_RUNS_ONLY=1``.
- Only the run's owner or an instructor may stop, resume, rename or delete it; a refusal says why
  (:class:`PermissionDenied`). The instructor role comes from a secret the operator sets
  (``MEDCLS_INSTRUCTOR_SECRET``), checked in constant time. The command line is the local operator and may
  do everything.
- Queued runs start round-robin across people (:func:`fair_order`), and one person may have at most
  ``MEDCLS_QUEUE_LIMIT`` runs waiting (:func:`check_queue_room`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..settings import instructor_secret, own_runs_only, queue_limit

__all__ = ["Identity", "OPERATOR", "PermissionDenied", "QueueLimitError", "QueuedRun", "browser_identity",
           "check_instructor_secret", "can_manage", "require_manage", "can_see", "visible", "fair_order",
           "check_queue_room", "owner_words"]


class PermissionDenied(PermissionError):
    """This person may not do this to this run; the message says why and who may."""


class QueueLimitError(ValueError):
    """This person already has as many runs waiting as the server allows; the message says how to go on."""


@dataclass(frozen=True)
class Identity:
    """One person. ``key`` is what runs record as their owner ('' = the local operator); ``name`` is how they
    want to be called; ``instructor`` may manage everyone's runs."""

    key: str
    name: str = ""
    instructor: bool = False

    @property
    def operator(self) -> bool:
        """The local operator: the command line on the server (and runs from before identities existed)."""
        return self.key == ""

    @property
    def manages_all(self) -> bool:
        return self.operator or self.instructor

    def words(self) -> str:
        """How messages name this person."""
        if self.operator:
            return "the local operator"
        return self.name or "an unnamed visitor"


OPERATOR = Identity(key="", name="local operator")


def browser_identity(token: str, name: str = "", instructor: bool = False) -> Identity:
    """The identity of a browser holding ``token`` (its random secret). Runs record a hash of the token, never
    the token itself, so seeing a run's owner does not let anyone act as that person."""
    if len(token) < 16:
        raise ValueError("A browser token must be at least 16 characters of randomness.")
    digest = hashlib.sha256(token.encode()).hexdigest()[:24]
    return Identity(key=f"browser:{digest}", name=name, instructor=instructor)


def check_instructor_secret(given: str, secret: str | None = None) -> bool:
    """Whether ``given`` is the instructor secret (``MEDCLS_INSTRUCTOR_SECRET`` unless ``secret`` is passed).

    Compared in constant time (``hmac.compare_digest`` over digests of equal length), so the time taken does not
    tell how much of a guess was right. Without a configured secret nobody is an instructor."""
    secret = instructor_secret() if secret is None else secret
    if not secret or not given:
        return False
    want = hashlib.sha256(secret.encode()).digest()
    got = hashlib.sha256(given.encode()).digest()
    return hmac.compare_digest(want, got)


def owner_words(owner: str, owner_name: str) -> str:
    """Who started a run, in words: their display name, or 'the local operator'."""
    if not owner:
        return "the local operator"
    return owner_name or "an unnamed visitor"


def can_manage(identity: Identity, owner: str) -> bool:
    """Whether ``identity`` may stop, resume, rename or delete a run whose owner key is ``owner``."""
    return identity.manages_all or (bool(owner) and hmac.compare_digest(identity.key, owner))


def require_manage(identity: Identity, owner: str, owner_name: str, action: str) -> None:
    """Raise :class:`PermissionDenied` saying why, unless ``identity`` may ``action`` ('stop', 'rename',
    'delete', 'resume') a run of ``owner``."""
    if can_manage(identity, owner):
        return
    raise PermissionDenied(f"You cannot {action} this run: it was started by {owner_words(owner, owner_name)}. "
                           f"Only the person who started a run, or an instructor, can {action} it.")


def can_see(identity: Identity, owner: str, own_only: bool | None = None) -> bool:
    """Whether ``identity`` sees a run of ``owner``: always, unless the operator chose "own runs only"
    (``MEDCLS_OWN_RUNS_ONLY``); then only their own runs (instructors and the operator see every run)."""
    own_only = own_runs_only() if own_only is None else own_only
    return not own_only or can_manage(identity, owner)


def visible(identity: Identity, run_owners: Iterable[tuple[str, str]], own_only: bool | None = None) -> list[str]:
    """The run ids ``identity`` sees, from (run id, owner) pairs, in the given order."""
    return [run_id for run_id, owner in run_owners if can_see(identity, owner, own_only)]


@dataclass(frozen=True)
class QueuedRun:
    run_id: str
    owner: str
    created: tuple  # sorts in submission order (created time, nanoseconds, id)


def fair_order(queued: Sequence[QueuedRun], running_owners: Iterable[str] = (),
               last_started: Mapping[str, str] | None = None) -> list[str]:
    """The order in which queued runs start: round-robin across people, not first come first served.

    A person's k-th waiting run is in round k + (their runs training now): someone with a run training already
    waits behind everyone who has none. Within a round, the person served longest ago goes first (by when their
    last run started, ``last_started``: owner -> ISO time; never served goes first), then the one who has waited
    longest. So after a 12-run sweep by A and then one run by B: A's first run, then B's, then the rest of A's.
    """
    last_started = last_started or {}
    running: dict[str, int] = defaultdict(int)
    for owner in running_owners:
        running[owner] += 1
    per_owner: dict[str, list[QueuedRun]] = defaultdict(list)
    for run in sorted(queued, key=lambda r: r.created):
        per_owner[run.owner].append(run)
    keyed = []
    for owner, runs in per_owner.items():
        first = runs[0].created
        for k, run in enumerate(runs):
            keyed.append(((running[owner] + k, last_started.get(owner, ""), first, run.created), run.run_id))
    return [run_id for _, run_id in sorted(keyed)]


def check_queue_room(identity: Identity, queued_owners: Iterable[str], adding: int = 1,
                     limit: int | None = None) -> None:
    """Raise :class:`QueueLimitError` when ``adding`` more runs would give ``identity`` more waiting runs than
    ``MEDCLS_QUEUE_LIMIT`` (the local operator has no limit)."""
    if identity.operator:
        return
    limit = queue_limit() if limit is None else limit
    waiting = sum(1 for owner in queued_owners if owner == identity.key)
    if waiting + adding > limit:
        room = max(0, limit - waiting)
        what = "this run" if adding == 1 else f"these {adding} runs"
        raise QueueLimitError(
            f"You already have {waiting} run(s) waiting in the queue, and each person may have at most {limit} "
            f"waiting at once, so {what} cannot be queued" + (f" (there is room for {room} more)" if room else "")
            + ". Wait until some of yours start, or stop ones you no longer need.")
