"""The sidebar's instructor box: the right secret makes an instructor; wrong ones are slowed down."""

from __future__ import annotations

from apphelpers import new_app

from medcls.runs.attempts import FREE_TRIES


def _enter(at, secret: str):
    return at.sidebar.text_input(key="identity_secret").set_value(secret).run()


def test_the_right_secret_makes_an_instructor(app_env, monkeypatch):
    monkeypatch.setenv("MEDCLS_INSTRUCTOR_SECRET", "correct horse")
    at = _enter(new_app().run(), "correct horse")
    assert not at.exception
    assert any("· instructor" in c.value for c in at.sidebar.caption)


def test_wrong_secrets_are_slowed_down_and_a_rerun_is_not_another_guess(app_env, monkeypatch):
    monkeypatch.setenv("MEDCLS_INSTRUCTOR_SECRET", "correct horse")
    at = new_app().run()
    for i in range(FREE_TRIES):
        _enter(at, f"guess {i}")
        assert any("not the instructor secret" in e.value for e in at.sidebar.error)
    at.run()  # the same wrong guess, drawn again: still wrong, and not counted
    assert any("not the instructor secret" in e.value for e in at.sidebar.error)
    # The next guess has to wait, even the right one: it is not even checked until the wait is over.
    _enter(at, "correct horse")
    assert not at.exception
    assert any("Too many wrong secrets: try again in 5 s" in w.value for w in at.sidebar.warning), \
        [w.value for w in at.sidebar.warning]
    assert not any("· instructor" in c.value for c in at.sidebar.caption)
