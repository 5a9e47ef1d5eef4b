"""Identities, permissions, the instructor secret and the fair queue (medcls/runs/permissions.py)."""

from __future__ import annotations

import pytest

from medcls.runs.permissions import (
    OPERATOR,
    Identity,
    PermissionDenied,
    QueuedRun,
    QueueLimitError,
    browser_identity,
    can_manage,
    can_see,
    check_instructor_secret,
    check_queue_room,
    fair_order,
    require_manage,
)

ALICE = browser_identity("a" * 32, "Alice")
BOB = browser_identity("b" * 32, "Bob")
TEACHER = browser_identity("t" * 32, "Ms T", instructor=True)


def queued(owner: str, n: int, start: int = 0) -> list[QueuedRun]:
    return [QueuedRun(f"{owner}{i}", owner, (f"2026-11-30T10:{start + i:02d}:00", 0, f"{owner}{i}"))
            for i in range(n)]


def test_a_browser_identity_records_a_hash_of_its_token_never_the_token():
    token = "s3cret-token-of-a-browser-0123456789"
    me = browser_identity(token, "Ann")
    assert token not in me.key and me.key.startswith("browser:")
    assert me == browser_identity(token, "Ann") and me.key != browser_identity(token + "x").key
    with pytest.raises(ValueError, match="at least 16"):
        browser_identity("short")


def test_only_the_owner_an_instructor_or_the_operator_may_manage_a_run():
    assert can_manage(ALICE, ALICE.key)
    assert not can_manage(BOB, ALICE.key)
    assert can_manage(TEACHER, ALICE.key) and can_manage(OPERATOR, ALICE.key)
    # A run of the local operator (the command line, or from before identities) is not a visitor's.
    assert not can_manage(ALICE, "")
    assert not can_manage(Identity("browser:x"), "browser:y")


@pytest.mark.parametrize("action", ["stop", "rename", "delete"])
def test_a_refusal_says_who_started_the_run_and_who_may(action):
    with pytest.raises(PermissionDenied) as exc:
        require_manage(BOB, ALICE.key, "Alice", action)
    message = str(exc.value)
    assert f"cannot {action}" in message and "started by Alice" in message and "instructor" in message
    with pytest.raises(PermissionDenied, match="local operator"):
        require_manage(BOB, "", "", action)
    require_manage(ALICE, ALICE.key, "Alice", action)  # no error


def test_everyone_sees_every_run_unless_the_operator_chose_own_runs_only(monkeypatch):
    assert can_see(BOB, ALICE.key, own_only=False)
    assert not can_see(BOB, ALICE.key, own_only=True) and can_see(ALICE, ALICE.key, own_only=True)
    assert can_see(TEACHER, ALICE.key, own_only=True)
    monkeypatch.setenv("MEDCLS_OWN_RUNS_ONLY", "1")
    assert not can_see(BOB, ALICE.key)
    monkeypatch.delenv("MEDCLS_OWN_RUNS_ONLY")
    assert can_see(BOB, ALICE.key)


def test_the_instructor_secret_is_checked_in_constant_time(monkeypatch):
    import medcls.runs.permissions as access

    compared = []
    real = access.hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(access.hmac, "compare_digest", spy)
    monkeypatch.setenv("MEDCLS_INSTRUCTOR_SECRET", "correct horse")
    assert check_instructor_secret("correct horse")
    assert not check_instructor_secret("correct hors") and not check_instructor_secret("Correct horse")
    # Every comparison went through compare_digest, over digests of one length (no early exit on length).
    assert len(compared) == 3 and all(len(a) == len(b) == 32 for a, b in compared)
    monkeypatch.delenv("MEDCLS_INSTRUCTOR_SECRET")
    assert not check_instructor_secret("") and not check_instructor_secret("anything")  # no secret: no instructor


def test_a_sweep_of_twelve_does_not_hold_back_another_persons_single_run():
    # A queued 12 runs at 10:00-10:11; B queued one at 10:20, after all of them.
    runs = queued("A", 12) + queued("B", 1, start=20)
    order = fair_order(runs)
    assert order.index("B0") == 1, order  # second, not thirteenth
    assert order[0] == "A0" and order[2:] == [f"A{i}" for i in range(1, 12)]
    # With A's first run already training, B's run is the very next to start.
    assert fair_order(queued("A", 11, start=1) + queued("B", 1, start=20), running_owners=["A"])[0] == "B0"
    # And once it has ended: A was served, B never was, so B goes next.
    assert fair_order(queued("A", 11, start=1) + queued("B", 1, start=20),
                      last_started={"A": "2026-11-30T10:30:00"})[0] == "B0"


def test_the_queue_takes_turns_across_three_people_and_keeps_each_persons_order():
    order = fair_order(queued("A", 3) + queued("B", 2, start=10) + queued("C", 1, start=20))
    assert order == ["A0", "B0", "C0", "A1", "B1", "A2"]


def test_one_person_may_have_only_so_many_runs_waiting(monkeypatch):
    waiting = [ALICE.key] * 3 + [BOB.key] * 5
    check_queue_room(ALICE, waiting, limit=4)
    with pytest.raises(QueueLimitError) as exc:
        check_queue_room(ALICE, waiting, adding=2, limit=4)
    assert "3 run(s) waiting" in str(exc.value) and "at most 4" in str(exc.value) and "room for 1" in str(exc.value)
    check_queue_room(OPERATOR, waiting * 10, limit=4)  # the command line has no limit
    monkeypatch.setenv("MEDCLS_QUEUE_LIMIT", "5")
    with pytest.raises(QueueLimitError, match="at most 5"):
        check_queue_room(BOB, waiting)
