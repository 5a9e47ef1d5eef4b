"""The board of background probes: asked while a run trains, it answers later and never makes the asker wait."""

from __future__ import annotations

import threading

import pytest

from medcls.training.probe_board import ProbeBoard, ProbePending


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answer_after(release: threading.Event, value, calls: list):
    def measure(stop: threading.Event):
        calls.append(stop)
        assert release.wait(10)
        return value
    return measure


def test_a_probe_is_started_once_and_its_answer_given_when_ready():
    board, release, calls = ProbeBoard(ttl_s=60), threading.Event(), []
    with pytest.raises(ProbePending) as first:
        board.ask("a", answer_after(release, 1.5, calls))
    with pytest.raises(ProbePending) as second:  # another session asks meanwhile: the same probe
        board.ask("a", answer_after(release, 9.9, calls))
    assert first.value.stop is second.value.stop and board.pending("a")
    release.set()
    assert board.wait(5) and not board.pending("a")
    assert board.ask("a", answer_after(release, 9.9, calls)) == 1.5
    assert len(calls) == 1


def answer(board: ProbeBoard, key: str, measure):
    """What a page gets on its redraws until the probe has answered (an instant probe may answer at once)."""
    for _ in range(3):
        try:
            return board.ask(key, measure)
        except ProbePending:
            assert board.wait(5)
    raise AssertionError("no answer")


def test_an_answer_is_measured_again_after_its_time_to_live():
    clock, calls = Clock(), []
    board = ProbeBoard(ttl_s=600, clock=clock)
    measure = lambda value: lambda stop: calls.append(value) or value  # noqa: E731
    assert answer(board, "a", measure(1)) == 1
    clock.now = 599
    assert answer(board, "a", measure(2)) == 1
    clock.now = 601
    assert answer(board, "a", measure(2)) == 2 and calls == [1, 2]


def test_answers_past_their_time_to_live_are_forgotten_whoever_asks():
    clock = Clock()
    board = ProbeBoard(ttl_s=600, clock=clock)
    for key in ("a", "b", "c"):
        answer(board, key, lambda stop, key=key: key)
    clock.now = 601
    assert answer(board, "d", lambda stop: "d") == "d"
    assert list(board._entries) == ["d"]  # a, b and c, never asked for again, are not kept for the app's life


def test_an_error_is_raised_once_and_the_next_ask_measures_again():
    board = ProbeBoard(ttl_s=60)

    def broken(stop):
        raise RuntimeError("probe failed")

    with pytest.raises(RuntimeError, match="probe failed"):
        answer(board, "a", broken)
    assert answer(board, "a", lambda stop: 7) == 7  # forgotten: a new probe
    assert answer(board, "a", lambda stop: 8) == 7


def test_probes_run_one_at_a_time_and_stop_all_ends_them():
    board, order = ProbeBoard(ttl_s=60), []

    def until_stopped(name):
        def measure(stop):
            order.append(f"{name} started")
            assert stop.wait(10)
            order.append(f"{name} stopped")
            raise RuntimeError("stopped")
        return measure

    for key in ("a", "b"):
        with pytest.raises(ProbePending):
            board.ask(key, until_stopped(key))
    assert not board.wait(0.3) and order == ["a started"]  # b waits for a: they would share the free core
    board.stop_all()
    assert board.wait(5)
    assert order == ["a started", "a stopped", "b started", "b stopped"]
    board.shutdown()


def test_a_probe_stopped_before_it_answered_is_measured_again_not_raised():
    board, calls = ProbeBoard(ttl_s=60), []

    def stopped_then_answers(stop):
        calls.append(stop)
        if len(calls) == 1:
            assert stop.wait(10)
            raise RuntimeError("stopped")
        return 5

    with pytest.raises(ProbePending):
        board.ask("a", stopped_then_answers)
    board.stop_all()
    assert answer(board, "a", stopped_then_answers) == 5 and len(calls) == 2
    board.stop_all()  # nothing runs: an answer given stays
    assert board.ask("a", stopped_then_answers) == 5 and len(calls) == 2


def test_a_pending_probe_knows_how_many_run_or_wait_before_it_and_how_long_the_last_took():
    board, release, calls = ProbeBoard(ttl_s=60), threading.Event(), []
    assert board.queue("a").ahead == 0 and board.queue("a").last_took_s is None  # never asked
    for key in ("a", "b", "c"):
        with pytest.raises(ProbePending):
            board.ask(key, answer_after(release, key, calls))
    assert [board.queue(key).ahead for key in ("a", "b", "c")] == [0, 1, 2]  # a runs; b and c wait, in turn
    board._entries["b"].stop.set()  # a stopped probe ends at once when its turn comes: it is no wait
    assert board.queue("c").ahead == 1
    release.set()
    assert board.wait(5)
    done = board.queue("c")
    assert done.ahead == 0 and done.last_took_s is not None and 0 <= done.last_took_s < 10


def until_released_or_stopped(release: threading.Event, value):
    def measure(stop: threading.Event):
        while not release.is_set():
            if stop.wait(0.01):
                raise RuntimeError("stopped")
        return value
    return measure


def test_a_probe_no_one_waits_for_any_more_is_stopped_and_a_new_ask_measures_afresh():
    """In a classroom each change of an option asks for a new probe; the old ones, if no one else waits for them,
    must not hold up everyone's turn."""
    board, release = ProbeBoard(ttl_s=60), threading.Event()
    with pytest.raises(ProbePending) as a:
        board.ask("a", until_released_or_stopped(release, "a"), asker="ana")
    with pytest.raises(ProbePending):
        board.ask("a", until_released_or_stopped(release, "a"), asker="ben")
    with pytest.raises(ProbePending):
        board.ask("b", until_released_or_stopped(release, "b"), asker="ana")  # Ana changed an option
    assert not a.value.stop.is_set()  # Ben still waits for a
    with pytest.raises(ProbePending):
        board.ask("c", until_released_or_stopped(release, "c"), asker="ben")
    assert a.value.stop.is_set() and board.queue("c").ahead == 1  # no one waits for a: stopped, and no wait
    with pytest.raises(ProbePending) as again:  # someone asks for a later: measured afresh, not the stopped probe
        board.ask("a", until_released_or_stopped(release, "a again"), asker="cleo")
    assert again.value.stop is not a.value.stop and not again.value.stop.is_set()
    release.set()
    assert board.wait(5)
    assert [board.ask(key, lambda stop: "never") for key in ("a", "b", "c")] == ["a again", "b", "c"]
    assert board._waiting == {}  # their probes have answered: no one waits, and no session is kept


def test_asking_for_an_answered_key_does_not_stop_the_probe_the_asker_waits_for():
    """A lesson's page asks for each run's timing in turn on every redraw: the first, answered, then the second,
    pending. Asking for the first again must not count as leaving the second."""
    board, release = ProbeBoard(ttl_s=60), threading.Event()
    assert answer(board, "first run", lambda stop: 1) == 1
    with pytest.raises(ProbePending) as second:
        board.ask("second run", until_released_or_stopped(release, 2), asker="ana")
    assert board.ask("first run", lambda stop: 9, asker="ana") == 1  # the next redraw
    with pytest.raises(ProbePending):
        board.ask("second run", until_released_or_stopped(release, 2), asker="ana")
    assert not second.value.stop.is_set()
    release.set()
    assert answer(board, "second run", lambda stop: 9) == 2
