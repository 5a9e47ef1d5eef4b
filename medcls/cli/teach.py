"""Commands for teaching and sharing: ``lesson`` (ready-made experiments), ``export`` and ``import`` (runs and
models that travel)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import command, ctrl_c_stops, open_store

__all__ = ["add_teach_parsers"]


def add_teach_parsers(sub) -> None:
    """The ``lesson``, ``export`` and ``import`` commands' flags."""
    p = sub.add_parser("lesson", help="Ready-made experiments (rare classes, networks, resolution, augmentation).")
    lesson_sub = p.add_subparsers(dest="lesson_command", required=True)
    q = lesson_sub.add_parser("list", help="List the lessons.")
    q.add_argument("--lessons", help="A lessons TOML file (default: medcls/experiments/lessons.toml).")
    q = lesson_sub.add_parser("run", help="Train a lesson's runs here, one after another, and print the conclusion.")
    q.add_argument("name", help="The lesson's name (see 'lesson list').")
    q.add_argument("--data", default="", help="Dataset folder, manifest or .npz (default: the built-in data).")
    q.add_argument("--lessons", help="A lessons TOML file (default: medcls/experiments/lessons.toml).")

    p = sub.add_parser("export", help="Export a finished run: a TorchScript model with predict.py (needs only torch, "
                                      "Pillow and numpy), or a .zip of the run for another medcls.")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("--format", choices=["torchscript", "zip"], default="torchscript",
                   help="torchscript: a folder with model.pt, classes.json and predict.py; zip: the run folder.")
    p.add_argument("--out", required=True, help="The folder (torchscript) or .zip file (zip) to write.")
    p = sub.add_parser("import", help="Import a run .zip exported by medcls (checked before anything is kept).")
    p.add_argument("zip", help="The .zip file.")


@command("lesson")
def cmd_lesson(args: argparse.Namespace) -> int:
    from ..config import DataConfig, format_value, label
    from ..experiments.lessons import get_lesson, lesson_conclusion, lesson_data_note, load_lessons, submit_lesson

    lessons = load_lessons(args.lessons)
    if args.lesson_command == "list":
        for lesson in lessons:
            runs = " | ".join(f"{r.label}" for r in lesson.runs)
            print(f"{lesson.name:<14} {lesson.title}\n{'':<14} runs: {runs}")
        return 0
    from ..jobs.execute import execute_run
    from ..jobs.manager import cancel_queued, claim, scheduler_lock
    from ..training.callbacks import ConsoleProgress

    lesson = get_lesson(args.name, lessons)
    store = open_store(args)
    data = DataConfig(source=str(Path(args.data).resolve()) if args.data else "")

    def create(config, *, meta, group, notes) -> str:
        run_id = store.create(config, meta=meta, notes=notes, held=True)  # trained here, not by an app's manager
        store.write_group(run_id, group)
        return run_id

    from ..data import load_dataset
    from ..data.explore import typical_side
    from ..training.autoplan import pool_counts

    spec = load_dataset(data)
    side = typical_side(spec)
    queued = submit_lesson(store, create, lesson, data, pool_counts=pool_counts(spec), side=side)
    print(f"lesson {lesson.name}: {lesson.title}\n{lesson.question}\n")
    if note := lesson_data_note(lesson, spec, side):
        print(f"note: {note}\n")
    with ctrl_c_stops() as interrupted:
        for entry, run in zip(queued.runs, lesson.runs):
            if interrupted.is_set():
                with scheduler_lock(store):  # unless the app cancelled or deleted it meanwhile
                    cancel_queued(store, entry["run_id"], "Stopped from the command line.")
                continue
            shown = ", ".join(f"{label(k)} {format_value(v, k)}" for k, v in run.settings.items())
            print(f"--- {run.label} ({shown}): run {entry['run_id']}")
            if why := claim(store, entry["run_id"]):  # cancelled or deleted meanwhile, e.g. in the app
                print(f"not trained: {why}")
                continue
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


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    store = open_store(args)
    out = Path(args.out)
    if args.format == "torchscript":
        from ..inference.export import export_torchscript

        folder = export_torchscript(store, args.run, out)
        print(f"wrote {folder / 'model.pt'}, classes.json and predict.py; try: python {folder / 'predict.py'} IMAGE")
        return 0
    from ..atomic import atomic_write_bytes
    from ..runs.portable import export_run_zip

    atomic_write_bytes(out, export_run_zip(store, args.run))
    print(f"wrote {out}; import it elsewhere with: python -m medcls import {out.name}")
    return 0


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    from ..runs.portable import import_run_zip

    store = open_store(args)
    run_id = import_run_zip(store, Path(args.zip).read_bytes(), Path(args.zip).name)
    print(f"imported run {run_id} ({store.summary(run_id).name}) into {store.root}")
    return 0
