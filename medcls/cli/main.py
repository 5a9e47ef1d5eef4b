"""The command line's parser, its training and run commands, and ``main``.

Every TrainConfig option is a ``train`` flag, generated from the config's own
fields and help text, so the CLI, the app form and the saved JSON never drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..atomic import disk_full_message, is_disk_full
from ..config import (
    ConfigError,
    OptionSpec,
    TrainConfig,
    applies_text,
    format_value,
    option_table,
)
from ..data.imageio import IMAGE_FORMATS
from ..data.spec import DataError, class_word
from ..models import model_entry
from ..runs.naming import clean_run_name
from ..runs.records import RecordError, RunMeta, member_word
from . import store_commands  # noqa: F401  (registers runs, stop, rename and delete)
from .commands import COMMANDS, command, ctrl_c_stops, open_store
from .teach import add_teach_parsers

if TYPE_CHECKING:
    from ..analysis.metrics import SplitMetrics
    from ..runs.results import CrossValidation
    from ..runs.store import RunStore

__all__ = ["main", "build_parser", "COMMANDS"]

log = logging.getLogger("medcls.cli")

MIN_DEMO_SIZE, MAX_DEMO_SIZE, MAX_DEMO_IMAGES = 32, 1024, 20_000


def _default_text(spec: OptionSpec) -> str:
    if not spec.is_model_option:
        return f"default: {format_value(spec.default)}"
    per_model = {m: getattr(model_entry(m).make_options(), spec.name) for m in spec.models}
    if len(set(map(repr, per_model.values()))) == 1:
        return f"default: {format_value(next(iter(per_model.values())))}; option of {', '.join(spec.models)}"
    return "default: " + "; ".join(f"{format_value(v)} for {m}" for m, v in per_model.items())


def _names_itself(label: str, help_text: str) -> bool:
    """Whether a help text opens with its own name for the option, so the label in front would repeat it:
    "Learning rate: how big…" for "Learning rate", "Random seed: …" for "Seed". "With 0 folds: …" is not a name
    for "Ensemble for small datasets" (no word in common), so that one keeps its label."""
    words = lambda text: set(re.findall(r"[a-z0-9]+", text.lower()))  # noqa: E731
    head, colon, _ = help_text.partition(":")
    if help_text.lower().startswith(label.lower()):
        return True
    return bool(colon) and len(head) <= 40 and bool(words(head) & words(label))


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per declared option, in its form group, with its help, bounds and when it applies."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, spec in option_table().items():
        opt = spec.option
        group = groups.setdefault(opt.group, parser.add_argument_group(f"{opt.group.lower()} options"))
        flags = list(opt.flags) or [f"--{name.replace('_', '-')}"]
        extra = [_default_text(spec)]
        if opt.bounds_text():
            extra.append(opt.bounds_text())
        if opt.applies is not None:
            extra.append(f"only {applies_text(opt.applies)}")
        help_text = f"{'' if _names_itself(opt.label, opt.help) else opt.label + ': '}{opt.help} ({'; '.join(extra)})"
        kwargs: dict = {"dest": name, "default": None, "help": help_text.replace("%", "%%")}
        if spec.base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(spec.base) is tuple:
            kwargs["nargs"] = "*"
            kwargs["metavar"] = "VALUE"
        else:
            kwargs["type"] = str  # TrainConfig converts and checks, with the option's own message
            if opt.allowed():
                kwargs["metavar"] = "{" + ",".join(map(str, opt.allowed())) + "}"
        group.add_argument(*flags, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig.load(args.config) if getattr(args, "config", None) else TrainConfig()
    given = {name: getattr(args, name) for name in option_table() if getattr(args, name, None) is not None}
    return cfg.with_options(**given)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m medcls", description="Train, compare and try image "
                                     "classifiers on medical images, fast on a CPU.")
    parser.add_argument("--runs-dir", default=None, help="Run store folder (default: $MEDCLS_RUNS_DIR or ./runs).")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show library log messages.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="Train a model and write a run (no data option: the built-in synthetic data).")
    p.add_argument("--config", help="Start from a config JSON file (e.g. a run's config.json); flags override it.")
    p.add_argument("--run-id", help="Id of the run folder (default: time-model-random).")
    p.add_argument("--name", dest="run_name", default=None,
                   help="A readable name for the run (default: made from the data, model, imbalance fix and size).")
    p.add_argument("--print-config", action="store_true", help="Print the resolved config and exit.")
    _add_config_flags(p)

    p = sub.add_parser("evaluate", help="Evaluate a run's kept checkpoint on its test split or on other data.")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("--data", help="Another dataset (folder, manifest or .npz); default: the run's own data.")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"],
                   help="Which split of that data to evaluate (default: test).")
    p.add_argument("--class-aliases", nargs="*", default=None, help="Class aliases for --data, alias=class.")
    p.add_argument("--json", help="Also write the metrics to this JSON file.")

    p = sub.add_parser("predict", help="Class probabilities for images, from a run's kept checkpoint.")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("images", nargs="+", help=f"Image files ({IMAGE_FORMATS}).")
    p.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")

    sub.add_parser("runs", help="List the runs in the store.")

    p = sub.add_parser("stop", help="Stop a run, whoever started it: a queued run is cancelled, a training one stops "
                                    "after its current batch (its checkpoint so far is kept and tested).")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("--wait", type=float, default=60.0, help="Seconds to wait for it to stop (0: ask and return).")

    p = sub.add_parser("rename", help="Give a run a new readable name (its id stays the same).")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("name", help="The new name.")

    p = sub.add_parser("delete", help="Delete a run's folder (a queued run is cancelled first; stop a training "
                                      "run before deleting it).")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")

    p = sub.add_parser("resume", help="Continue an interrupted run from its last finished epoch (an ensemble: from its next "
                                    "model) in this process.")
    p.add_argument("run", help="Run id (see 'runs').")

    p = sub.add_parser("report", help="Export a finished run as one self-contained HTML run card (opens offline).")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("-o", "--output", help="HTML file to write (default: run_card.html in the run folder).")

    p = sub.add_parser("demo-data", help="Write the built-in synthetic phantom dataset to a folder.")
    p.add_argument("dir", help="Target folder (created).")
    p.add_argument("--images", type=int, default=None,
                   help=f"Number of images, 1 to {MAX_DEMO_IMAGES:,} (default: the built-in size).")
    p.add_argument("--size", type=int, default=None,
                   help=f"Image size in pixels, {MIN_DEMO_SIZE} to {MAX_DEMO_SIZE} (default: the built-in size).")
    p.add_argument("--seed", type=int, default=0, help="Random seed.")

    p = sub.add_parser("bench", help="Benchmark medcls against the seed pipeline on BUSI (prints figures, "
                                     "writes docs/benchmarks.md and a JSON file).")
    p.add_argument("--data", default=None, help="BUSI folder with split.csv (default: ../shared/datasets/busi).")
    p.add_argument("--out-dir", default="docs", help="Where benchmarks.md and benchmarks.json go (default: docs).")
    p.add_argument("--quick", action="store_true", help="Fewer batches and epochs: a smoke test of the benchmark.")
    add_teach_parsers(sub)

    return parser


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from ..jobs.torchrun import DistEnv, execute_distributed, process_group, share_run

    cfg = config_from_args(args)
    if args.print_config:
        print(cfg.to_json())
        return 0
    # Under torchrun this is one of N processes training one run together (docs/scaling.md):
    # rank 0 creates and records the run and prints; the other ranks only compute.
    env = DistEnv.detect()
    if env.distributed and (cfg.folds or cfg.bagged_models):  # every rank refuses alike, so none waits for the others
        flag = "--folds" if cfg.folds else "--bagged-models"
        raise ConfigError(f"An ensemble ({flag}) trains its models one after another in one process; run it "
                          f"without torchrun, or with {flag} 0.")
    with process_group(env):
        store = open_store(args) if env.is_writer else None
        meta = RunMeta(name=clean_run_name(args.run_name or ""))
        chosen = _size_chosen(cfg) if env.is_writer and not env.distributed else None
        run_id, cfg = share_run(store, cfg, args.run_id, env, meta, name_from=chosen)
        if store is not None:
            ranks = f" ({env.world_size} processes)" if env.distributed else ""
            print(f"run {run_id} ({store.summary(run_id).name}) in {store.path(run_id)}{ranks}")
            print(f"data: {cfg.data.source or 'built-in synthetic phantoms'} | model {cfg.model} | "
                  f"{f'{cfg.image_size} px' if cfg.image_size else 'image size chosen for the data'} | "
                  f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''} | imbalance {cfg.imbalance}")
        # Image size 0 may choose bagged models for the data: their lines say "bagged model", not "fold".
        progress = _console_progress(store, run_id, member_word(bool((chosen or cfg).bagged_models)))
        with ctrl_c_stops() as interrupted:
            outcome = execute_distributed(store, run_id, cfg, env, should_cancel=interrupted.is_set,
                                          callbacks=[progress] if env.is_writer else [])
    if store is None:  # a rank other than 0: torchrun reports its exit code
        return 0 if outcome.state == "finished" else 1
    return _report_outcome(store, run_id, outcome, shown_notes=progress.shown_notes)


def _size_chosen(cfg: TrainConfig) -> TrainConfig | None:
    """The config with *Image size* 0 chosen as the run will choose it, to name the run after that size from its
    first line on ("… · 192 px", as the Train page names it); None when the data cannot be listed yet (the run
    then reports why, and its worker names it once it has chosen)."""
    from ..data.sources import load_dataset
    from ..training.autoplan import size_for_data

    if cfg.image_size:
        return None
    try:
        return size_for_data(cfg, load_dataset(cfg.data))[0]
    except (DataError, ConfigError, OSError):
        return None


def _console_progress(store, run_id: str, member: str):
    """Epoch lines and, before the first epoch, the notes the run has so far (ranks other than 0: no store);
    ``member`` names one model of an ensemble."""
    from ..training.callbacks import ConsoleProgress

    return ConsoleProgress(notes=(lambda: store.status(run_id).notes) if store is not None else None, member=member)


def _report_outcome(store, run_id: str, outcome, shown_notes: Sequence[str] = ()) -> int:
    report = store.data_report(run_id)
    if report.skipped:
        n = len(report.skipped)
        print(f"skipped {'1 file' if n == 1 else f'{n} files'}:")
        for s in report.skipped:
            print(f"  {s.path}: {s.reason}")
    for warning in report.warnings:  # what the Data explorer shows in its report: tiny classes, mixed modes, ...
        print(f"warning: {warning}")
    for note in report.notes:  # how the data was read: the manifest's columns, the split made, ...
        print(f"data: {note}")
    for note in store.status(run_id).notes:
        if note not in shown_notes:  # the others were written before the first epoch
            print(f"note: {note}")
    cv = store.cross_validation(run_id)
    if cv is not None:
        record = store.model_record(run_id)
        _print_cross_validation(cv, record.focus_class if record else "")
    elif (record := _bagged_record(store, run_id)) is not None:
        print(f"bagged: {record.folds} models, each trained on every train + val image (no validation images); "
              "the test metrics below are their ensemble")
    if outcome.state != "finished":
        print(f"run {run_id} {outcome.state}: {outcome.error}", file=sys.stderr)
        if outcome.metrics.get("test") is not None:
            _print_metrics(outcome.metrics["test"])
            _print_copies(store, run_id)
        return 1
    _print_metrics(outcome.metrics.get("test"))
    _print_headline(store, run_id)
    _print_copies(store, run_id)
    # The name again: a run queued as "… · auto size" (its data not listed then) is named after its size by now.
    print(f"run {run_id} ({store.meta(run_id).name}) finished: {store.path(run_id)}")
    return 0


def _bagged_record(store, run_id: str):
    """The run's model record when it saved an ensemble of bagged models (None otherwise, or when damaged)."""
    try:
        record = store.model_record(run_id)
    except (RecordError, OSError):
        return None
    return record if record is not None and record.bagged else None


def _print_headline(store, run_id: str) -> None:
    from ..analysis.uncertainty import run_intervals, score_headline

    metrics = store.metrics(run_id)
    if metrics and (headline := score_headline(run_intervals(store, run_id, metrics=metrics), metrics.focus_class)):
        print(headline)


def _print_copies(store, run_id: str) -> None:
    from ..analysis.copies import run_copies_sentence

    if sentence := run_copies_sentence(store, run_id):
        print(f"note: {sentence}")


def _print_cross_validation(cv: CrossValidation, focus_class: str) -> None:
    grouped = f", {kept} kept in one fold" if (kept := cv.kept_together_words()) else ""
    print(f"cross-validation: {cv.completed} of {cv.folds} folds{grouped} (each judged on the images it held out)")
    recall = f"{class_word(focus_class) if focus_class else 'focus class'} recall"
    for s in cv.scores:
        print(f"  fold {s.fold}: macro-F1 {s.macro_f1:.3f}  accuracy {s.accuracy:.3f}  {recall} "
              f"{_fmt(s.focus_recall)}  ({s.images} images, kept epoch {s.best_epoch}/{s.epochs})")
    for metric, label in (("macro_f1", "macro-F1"), ("focus_recall", recall)):
        mean, sd = cv.mean_sd(metric)
        if mean is not None:
            print(f"  {label}: {mean:.3f}" + (f" ± {sd:.3f} (mean ± standard deviation)" if sd is not None else ""))
    print("the test metrics below are the fold models' ensemble")


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


def _print_metrics(m: SplitMetrics | None, split: str = "test") -> None:
    """``split``: which images the metrics are of ('test', 'train', 'val' or 'all'), as the first word says."""
    words = "all splits" if split == "all" else split
    if m is None or not m.n:
        print(f"no {words} images: no {words} metrics")
        return
    print(f"{words}: accuracy {_fmt(m.accuracy)}  balanced accuracy {_fmt(m.balanced_accuracy)}  "
          f"macro-F1 {m.macro_f1:.3f}  (n={m.n})")
    print(f"{'class':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'AP':>6} {'n':>5}")
    for name, c in m.per_class.items():
        print(f"{name:<20} {_fmt(c.precision):>9} {_fmt(c.recall):>7} {_fmt(c.f1):>6} "
              f"{_fmt(c.average_precision):>6} {c.support:>5}")
    print("confusion matrix (rows: true, columns: predicted):")
    width = max(len(c) for c in m.classes) + 2
    print(" " * width + "".join(f"{c:>{width}}" for c in m.classes))
    for name, row in zip(m.classes, m.confusion_matrix):
        print(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))


@command("evaluate")
def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..inference.evaluate import evaluate_run, on_runs_data

    store = open_store(args)
    metrics = evaluate_run(store, args.run, data_source=args.data, split=args.split,
                           class_aliases=args.class_aliases)
    ours = not args.data or on_runs_data(store, args.run, args.data, args.class_aliases)  # its own, from elsewhere
    if args.split != "test" and ours and (learned := _learned_from(store, args.run, args.split)):
        print(f"note: this run learned from its {learned} images: a right answer on one shows what the model "
              "remembers, not how it does on new images")
    if note := _unfinished_note(store, args.run):
        print(note)
    _print_metrics(metrics, args.split)
    if args.json:
        Path(args.json).write_text(json.dumps(metrics.to_dict(), indent=2))
    return 0


def _unfinished_note(store: RunStore, run_id: str) -> str:
    """'note: this run did not finish (cancelled at epoch 6 of 20 in bagged model 2 of 3): the 2 bagged models
    trained so far answer together' ('' for a finished run), as Try it says."""
    summary = store.summary(run_id)
    if summary.state == "finished":
        return ""
    return f"note: this run did not finish ({summary.state} at epoch {summary.epochs_words()}): " \
           f"{summary.kept_words('answers', store.model_record(run_id))}"


def _learned_from(store: RunStore, run_id: str, split: str) -> str:
    """Which of the evaluated split's images the run learned from, in words ('' for none)."""
    from ..analysis.copies import learning_splits

    learning = learning_splits(store.summary(run_id).folds, keeps_last=store.trained_config(run_id).keeps_last())
    shown = [s for s in learning if split in (s, "all")]
    return " and ".join("training" if s == "train" else "validation" for s in shown)


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    from ..analysis.metrics import probability_percent
    from ..data.explore import detail_note
    from ..data.imageio import ImageReadError
    from ..inference.predictor import load_predictor

    store = open_store(args)
    predictor = load_predictor(store, args.run)
    if note := _unfinished_note(store, args.run):
        print(note, file=sys.stderr)  # stderr: --json prints one JSON line an image
    record = store.data_record(args.run)
    status = 0
    for image in args.images:
        if record and (detail := detail_note(image, record.typical_side, predictor.image_size)):
            print(f"{image}: note: {detail}", file=sys.stderr)
        try:
            pixels = predictor.pixels(image)
        except ImageReadError as exc:
            print(f"{image}: error: {exc.reason}", file=sys.stderr)
            status = 1
            continue
        pred = predictor.prediction(predictor.probabilities(pixels))
        novelty = predictor.novelty(pixels)  # as Try it checks: is the image like the ones the model learned from?
        if args.json:
            print(json.dumps({"image": image, "label": pred.label, "probabilities": pred.probabilities,
                              "low_confidence": pred.low_confidence,
                              "unlike_training_images": novelty.unusual if novelty else None}))
        else:
            probs = "  ".join(f"{c} {probability_percent(p)}" for c, p in pred.probabilities.items())
            flags = (["low confidence"] if pred.low_confidence else []) + (
                [f"unlike the training images ({novelty.ratio:.0f}x as far as a typical {novelty.basis} image): "
                 "do not trust this answer"] if novelty and novelty.unusual else [])
            print(f"{image}: {pred.label}  [{probs}]" + "".join(f"  ({flag})" for flag in flags))
    return status


@command("report")
def cmd_report(args: argparse.Namespace) -> int:
    from ..figures.report import write_run_card

    path = write_run_card(open_store(args), args.run, args.output)
    print(f"run card of {args.run}: {path}")
    return 0


@command("resume")
def cmd_resume(args: argparse.Namespace) -> int:
    from ..jobs.execute import execute_run
    from ..jobs.manager import claim, requeue, scheduler_lock

    store = open_store(args)
    status = store.status(args.run)
    if status.state == "running":
        print(f"error: run {args.run} is still training (process {status.pid}); stop it first.", file=sys.stderr)
        return 2
    with scheduler_lock(store):
        requeue(store, args.run, held=True)  # this process trains it: an app sharing the store must not start it
    if why := claim(store, args.run):
        print(f"error: run {args.run} cannot continue here: {why}.", file=sys.stderr)
        return 1
    print(f"run {args.run} ({store.summary(args.run).name}): continuing from {store.resume_point(args.run)}")
    progress = _console_progress(store, args.run, member_word(bool(store.trained_config(args.run).bagged_models)))
    with ctrl_c_stops() as interrupted:
        outcome = execute_run(store, args.run, should_cancel=interrupted.is_set, callbacks=[progress])
    return _report_outcome(store, args.run, outcome, shown_notes=progress.shown_notes)


@command("demo-data")
def cmd_demo_data(args: argparse.Namespace) -> int:
    from ..data.phantoms import PhantomSpec, write_phantom_dataset

    defaults = PhantomSpec()
    images = defaults.n_images if args.images is None else args.images
    size = defaults.image_size if args.size is None else args.size
    if not 1 <= images <= MAX_DEMO_IMAGES:
        raise ValueError(f"--images {images}: write from 1 to {MAX_DEMO_IMAGES:,} images.")
    if not MIN_DEMO_SIZE <= size <= MAX_DEMO_SIZE:
        raise ValueError(f"--size {size}: images can be {MIN_DEMO_SIZE} to {MAX_DEMO_SIZE} pixels wide (the built-in "
                         f"data uses {defaults.image_size}).")
    if images * size * size > 2e9:
        raise ValueError(f"--images {images} at --size {size} would be {images * size * size / 1e9:,.0f} billion "
                         "pixels; the limit is 2 billion. Make fewer or smaller images.")
    spec = dataclasses.replace(defaults, n_images=images, image_size=size, seed=args.seed)
    root = write_phantom_dataset(Path(args.dir), spec)
    written = sum(1 for _ in Path(root).rglob("*.png"))  # tiny classes are topped up to 2 per split
    print(f"wrote {written} synthetic phantom images to {root} (see README.txt there)")
    return 0


@command("bench")
def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import default_busi_root, run_benchmark

    run_benchmark(Path(args.data) if args.data else default_busi_root(), Path(args.out_dir), quick=args.quick)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, PermissionError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away ('python -m medcls runs | head'): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except OSError as exc:  # a full disk, a folder where a file should be, ...: a message, not a traceback
        if is_disk_full(exc):
            folder = getattr(exc, "folder", None) or (Path(exc.filename).parent if exc.filename else Path.cwd())
            print(f"error: {disk_full_message(folder)}", file=sys.stderr)
        else:
            print(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
