"""Wrong instructor secrets are slowed down, per person and for the whole server."""

from __future__ import annotations

import pytest

from medcls.runs.attempts import FREE_TRIES, SERVER_CAP, SERVER_WINDOW_S, SecretAttempts, wait_words


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_few_typos_cost_nothing_then_each_wrong_secret_waits_twice_as_long(clock):
    attempts = SecretAttempts(clock=clock)
    for _ in range(FREE_TRIES):
        assert attempts.wait_s("ana") == 0
        attempts.failed("ana")
    assert attempts.wait_s("ana") == pytest.approx(5.0)
    clock.now += 5.0
    assert attempts.wait_s("ana") == 0
    attempts.failed("ana")
    assert attempts.wait_s("ana") == pytest.approx(10.0)
    assert attempts.wait_s("ben") == 0  # someone else is not slowed down by Ana's guesses
    for _ in range(20):
        attempts.failed("ana")
    assert attempts.wait_s("ana") == pytest.approx(300.0)  # the ceiling


def test_the_right_secret_clears_the_persons_count(clock):
    attempts = SecretAttempts(clock=clock)
    for _ in range(FREE_TRIES + 2):
        attempts.failed("ana")
    attempts.succeeded("ana")
    assert attempts.wait_s("ana") == 0


def test_fresh_identities_cannot_escape_the_server_wide_cap(clock):
    attempts = SecretAttempts(clock=clock)
    for i in range(SERVER_CAP):  # a script clearing its cookies: a new person for every guess
        assert attempts.wait_s(f"visitor-{i}") == 0
        attempts.failed(f"visitor-{i}")
        clock.now += 1.0
    assert attempts.wait_s("visitor-new") == pytest.approx(SERVER_WINDOW_S - SERVER_CAP)
    clock.now += SERVER_WINDOW_S
    assert attempts.wait_s("visitor-new") == 0  # the window passed: the old guesses are forgotten


@pytest.mark.parametrize(("seconds", "words"), [(4.2, "5 s"), (89.0, "89 s"), (125.0, "3 min")])
def test_wait_words(seconds, words):
    assert wait_words(seconds) == words
