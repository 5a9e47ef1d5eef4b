"""A lesson's chart: one bar per planned run, with its 95% interval; unfinished runs keep an empty place."""

from __future__ import annotations

from medcls.experiments.conclusions import RunResult
from medcls.figures.lessons import lesson_figure


def test_bars_carry_the_intervals_and_unfinished_runs_stay_empty():
    fig = lesson_figure([RunResult("no fix", "finished", 0.4, 0.1, 0.7, 5),
                         RunResult("oversampling", "pending"), RunResult("weighted loss", "failed")],
                        "malignant recall")
    bar = fig.data[0]
    assert list(bar.x) == ["no fix", "oversampling", "weighted loss"]
    assert list(bar.y) == [0.4, None, None]
    assert list(bar.error_y.array)[0] == 0.7 - 0.4 and list(bar.error_y.arrayminus)[0] == 0.4 - 0.1
    assert list(bar.text) == ["0.40", "not yet", "failed"]
    assert "malignant recall" in fig.layout.yaxis.title.text
