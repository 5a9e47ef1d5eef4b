"""``python -m medcls lesson {list,run}``: the Lessons page's ready-made experiments on the command line.

``lesson run`` trains the lesson's runs one after another in this process (like
``train``), in the same run store and with the same group records as the page, then
prints the runs side by side and the conclusion computed from their results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import _ctrl_c_stops, _store, command

__all__ = ["add_lesson_parsers"]


def add_lesson_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lesson", help="Ready-made experiments (rare classes, networks, resolution, augmentation).")
    lesson_sub = p.add_subparsers(dest="lesson_command", required=True)
    q = lesson_sub.add_parser("list", help="List the lessons.")
    q.add_argument("--lessons", help="A lessons TOML file (default: medcls/experiments/lessons.toml).")
    q = lesson_sub.add_parser("run", help="Train a lesson's runs here, one after another, and print the conclusion.")
    q.add_argument("name", help="The lesson's name (see 'lesson list').")
    q.add_argument("--data", default="", help="Dataset folder, manifest or .npz (default: the built-in data).")
    q.add_argument("--lessons", help="A lessons TOML file (default: medcls/experiments/lessons.toml).")


@command("lesson")
def cmd_lesson(args: argparse.Namespace) -> int:
    from .config import DataConfig, format_value, label
    from .experiments.lessons import get_lesson, lesson_conclusion, load_lessons, submit_lesson

    lessons = load_lessons(args.lessons)
    if args.lesson_command == "list":
        for lesson in lessons:
            runs = " | ".join(f"{r.label}" for r in lesson.runs)
            print(f"{lesson.name:<14} {lesson.title}\n{'':<14} runs: {runs}")
        return 0
    from .jobs.execute import execute_run
    from .training.callbacks import ConsoleProgress

    lesson = get_lesson(args.name, lessons)
    store = _store(args)
    data = DataConfig(source=str(Path(args.data).resolve()) if args.data else "")

    def create(config, *, meta, group) -> str:
        run_id = store.create(config, meta=meta)
        store.write_group(run_id, group)
        return run_id

    queued = submit_lesson(store, create, lesson, data)
    print(f"lesson {lesson.name}: {lesson.title}\n{lesson.question}\n")
    with _ctrl_c_stops() as interrupted:
        for entry, run in zip(queued.runs, lesson.runs):
            if interrupted.is_set():
                store.set_status(entry["run_id"], "cancelled", error="Stopped from the command line.")
                continue
            shown = ", ".join(f"{label(k)} {format_value(v, k)}" for k, v in run.settings.items())
            print(f"--- {run.label} ({shown}): run {entry['run_id']}")
            execute_run(store, entry["run_id"], should_cancel=interrupted.is_set, callbacks=[ConsoleProgress()])
    results, conclusion = lesson_conclusion(store, queued, lesson)
    print(f"\n{'run':<20} {'state':<10} {conclusion.words:>18}  95% interval  test images")
    for r in results:
        value = "-" if r.estimate is None else f"{r.estimate:.2f}"
        interval = "-" if r.low is None else f"{r.low:.2f}-{r.high:.2f}"
        print(f"{r.label[:20]:<20} {r.outcome:<10} {value:>18}  {interval:<12}  {r.images or '-'}")
    print()
    for sentence in [conclusion.status, *conclusion.sentences, conclusion.summary]:
        if sentence:
            print(sentence)
    return 0 if conclusion.complete else 1
