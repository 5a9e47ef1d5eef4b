"""Lessons: ready-made experiments, defined as data, queued on the current dataset and concluded from results.

A lesson is a few runs that differ in one thing (lessons.toml beside this module;
another file can be passed). Each run's options are checked by
:meth:`~medcls.config.TrainConfig.with_options` when the file is loaded, so a bad
lesson is refused with its name, run and the reason before anything is queued. A
queued lesson is recorded in ``<store>/lessons/<id>.json`` and each of its runs
carries its place as a group membership (``group.json``, kind ``lesson``), like
a sweep's. Results come from what every run records: its state, its test
metrics' 95% intervals (:func:`medcls.analysis.uncertainty.run_intervals`),
its history's epoch times and its model's size; the words come from
:mod:`.conclusions`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..analysis.paired import MEASURES, right_per_image
from ..config import ConfigError, DataConfig, TrainConfig, option_table
from ..runs.naming import unique_name
from ..runs.records import ACTIVE_STATES, GroupMembership, RecordError, RunMeta
from ..runs.store import RunNotFoundError, RunStore
from ..training.autoplan import train_alike
from .conclusions import METRICS, Conclusion, RunResult, conclude
from .records import GroupRecords

if TYPE_CHECKING:
    from ..data.spec import DatasetSpec

__all__ = ["lesson_data_note", "LessonError", "LessonRun", "Lesson", "QueuedLesson", "LESSONS_FILE", "load_lessons", "parse_lessons",
           "get_lesson", "lesson_configs", "submit_lesson", "list_queued", "load_queued", "lesson_results",
           "lesson_conclusion", "SHOW"]

log = logging.getLogger(__name__)
LESSONS_FILE = Path(__file__).with_name("lessons.toml")
LESSONS_DIR = "lessons"
SHOW = ("parameters", "time")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}\Z")


class LessonError(ConfigError):
    """A lesson is defined wrongly or cannot be queued; the message says which and how to fix it."""


_RECORDS = GroupRecords(LESSONS_DIR, "lesson_id", "lesson", LessonError)  # one JSON file per queued lesson


@dataclass(frozen=True)
class LessonRun:
    label: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Lesson:
    name: str                      # the id, e.g. 'rare-classes'
    title: str
    question: str                  # what the lesson asks, in plain words
    metric: str                    # a key of conclusions.METRICS
    base: dict[str, Any]
    runs: tuple[LessonRun, ...]
    show: tuple[str, ...] = ()     # extra columns: parameters, time

    def options(self, run: LessonRun) -> dict[str, Any]:
        return {**self.base, **run.settings}


def _text(entry: Mapping, key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise LessonError(f"{where}: '{key}' must be a non-empty text.")
    return " ".join(value.split())


def _settings(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise LessonError(f"{where}: settings must be a table of option = value, e.g. {{ imbalance = \"none\" }}.")
    table = option_table()
    for name in value:
        if name in table and table[name].section == "data":
            raise LessonError(f"{where}: {table[name].label} ({name}) is a data option; a lesson runs on whatever "
                              "dataset is chosen, so leave it out.")
    return dict(value)


def _lesson(entry: Any, index: int) -> Lesson:
    if not isinstance(entry, Mapping):
        raise LessonError(f"Lesson {index + 1} is not a table ([[lesson]]).")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise LessonError(f"Lesson {index + 1}: 'name' must be a short id of lower-case letters, digits and '-' "
                          f"(e.g. rare-classes); got {name!r}.")
    where = f"Lesson {name!r}"
    metric = entry.get("metric", "macro_f1")
    if metric not in METRICS:
        raise LessonError(f"{where}: metric {metric!r} is unknown; use one of {', '.join(METRICS)}.")
    show = entry.get("show", [])
    if not isinstance(show, list) or any(s not in SHOW for s in show):
        raise LessonError(f"{where}: 'show' may list {', '.join(SHOW)}; got {show!r}.")
    base = _settings(entry.get("base"), where)
    runs_in = entry.get("run")
    if not isinstance(runs_in, list) or len(runs_in) < 2:
        raise LessonError(f"{where}: a lesson needs at least two runs ([[lesson.run]]) to compare.")
    runs = []
    for i, run in enumerate(runs_in):
        if not isinstance(run, Mapping):
            raise LessonError(f"{where}: run {i + 1} is not a table.")
        label = _text(run, "label", f"{where}, run {i + 1}")
        runs.append(LessonRun(label, _settings(run.get("settings"), f"{where}, run {label!r}")))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        raise LessonError(f"{where}: every run needs its own label (got {', '.join(labels)}).")
    lesson = Lesson(name, _text(entry, "title", where), _text(entry, "question", where), metric, base,
                    tuple(runs), tuple(show))
    configs = lesson_configs(lesson, DataConfig())  # checks every run's options now, before anything is queued
    for (a, ca), (b, cb) in ((x, y) for i, x in enumerate(zip(labels, configs)) for y in
                             list(zip(labels, configs))[i + 1:]):
        if ca.to_dict() == cb.to_dict():
            raise LessonError(f"{where}: the runs {a!r} and {b!r} have the same settings, so they would differ in "
                              "nothing. Change what sets them apart.")
    return lesson


def parse_lessons(text: str, source: str = "lessons") -> list[Lesson]:
    """Lessons from TOML text (``[[lesson]]`` tables); raises LessonError saying what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LessonError(f"{source} is not valid TOML: {exc}.") from None
    entries = data.get("lesson", [])
    if not isinstance(entries, list) or not entries:
        raise LessonError(f"{source} defines no lessons: add [[lesson]] tables.")
    lessons = [_lesson(entry, i) for i, entry in enumerate(entries)]
    names = [lesson.name for lesson in lessons]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise LessonError(f"{source}: two lessons are named {duplicate!r}; names must differ.")
    return lessons


def load_lessons(path: Path | str | None = None) -> list[Lesson]:
    path = Path(path) if path is not None else LESSONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LessonError(f"The lessons file {path} cannot be read ({exc.strerror or exc}).") from None
    return parse_lessons(text, path.name)


def get_lesson(name: str, lessons: list[Lesson] | None = None) -> Lesson:
    lessons = load_lessons() if lessons is None else lessons
    for lesson in lessons:
        if lesson.name == name:
            return lesson
    raise LessonError(f"There is no lesson {name!r}. Lessons: {', '.join(lesson.name for lesson in lessons)}.")


IMBALANCE_OPTIONS = frozenset({"imbalance", "oversample"})


def lesson_data_note(lesson: Lesson, spec: DatasetSpec, side: int | None = None) -> str | None:
    """What the dataset means for the lesson when it cannot show what the lesson asks; None when it can.

    A lesson whose runs differ in how they handle class imbalance shows nothing on classes about equally common:
    the fixes have nothing to correct, so its runs differ by chance (and its conclusion would teach that). A lesson
    whose runs differ in image size asks what detail buys, which images smaller than its sizes (typically ``side``
    px on their shorter side) do not hold."""
    return _imbalance_note(lesson, spec) or _resolution_note(lesson, side)


def _imbalance_note(lesson: Lesson, spec: DatasetSpec) -> str | None:
    if not IMBALANCE_OPTIONS & {key for run in lesson.runs for key in run.settings}:
        return None
    from ..data.explore import ROUGHLY_BALANCED  # torch and scipy: only for a page that has them already
    from ..data.phantoms import PHANTOM_CLASSES, PhantomSpec

    ratio = spec.imbalance_ratio("train")
    if not 0 < ratio < ROUGHLY_BALANCED:
        return None
    phantoms = " / ".join(f"{share:.0%}" for share in PhantomSpec().class_fractions)
    how = "each has as many training images as the others" if ratio == 1 else \
        f"the largest has {ratio:.1f} times as many images as the smallest"
    return (f"On this dataset the classes are about equally common in training ({how}), so the fixes for imbalance "
            "have little or nothing to correct: expect these runs to differ by chance alone. Choose imbalanced data "
            "to see what they do, such as the built-in "
            f"phantoms ({', '.join(PHANTOM_CLASSES)}: {phantoms}).")


def _resolution_note(lesson: Lesson, side: int | None) -> str | None:
    from ..data.explore import ENLARGED
    from ..data.phantoms import PhantomSpec

    sizes = sorted({int(size) for run in lesson.runs if (size := lesson.options(run).get("image_size"))})
    if len(sizes) < 2 or not side or sizes[-1] <= side * ENLARGED:
        return None
    enlarged = [size for size in sizes if size > side * ENLARGED]
    factors = " and ".join(f"{size / side:.1f} times at {size} px" for size in enlarged)
    if len(enlarged) == len(sizes):
        what = (f"every run enlarges them ({factors}): none sees more detail than the images hold. A difference "
                "between the runs shows what enlarging the same pictures does for the network, not what more detail "
                "buys.")
    else:
        what = (f"the {enlarged[0]} px run enlarges them ({factors}) and sees no more detail than {side} px hold. A "
                f"difference between the runs shows what detail up to {side} px buys, and what enlarging does "
                "beyond it.")
    phantoms = PhantomSpec().image_size
    example = f", such as the built-in phantoms ({phantoms} px)" if phantoms >= sizes[-1] else ""
    return (f"These images are typically {side} px on their shorter side, so {what} To see what detail buys, choose "
            f"images of at least {sizes[-1]} px{example}.")


def lesson_configs(lesson: Lesson, data: DataConfig) -> list[TrainConfig]:
    """Each run's config on ``data``, checked by TrainConfig (an option with no effect is refused)."""
    configs = []
    for run in lesson.runs:
        try:
            configs.append(TrainConfig(data=data).with_options(**lesson.options(run)))
        except (ConfigError, ValueError, TypeError) as exc:
            raise LessonError(f"Lesson {lesson.name!r}, run {run.label!r}: {exc}") from None
    return configs


# --- queued lessons ----------------------------------------------------------------------------------------------

@dataclass
class QueuedLesson:
    lesson_id: str
    lesson: str                    # the lesson's name
    title: str
    created: str
    dataset: str                   # the data's source when queued ('' = the built-in data)
    runs: list[dict[str, str]] = field(default_factory=list)   # {'run_id': ..., 'label': ...}, in lesson order

    def to_dict(self) -> dict[str, Any]:
        return {"lesson_id": self.lesson_id, "lesson": self.lesson, "title": self.title, "created": self.created,
                "dataset": self.dataset, "runs": self.runs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QueuedLesson":
        runs = [r for r in data.get("runs", []) if isinstance(r, Mapping) and isinstance(r.get("run_id"), str)]
        return cls(str(data["lesson_id"]), str(data.get("lesson", "")), str(data.get("title", "")),
                   str(data.get("created", "")), str(data.get("dataset", "")),
                   [{"run_id": r["run_id"], "label": str(r.get("label", r["run_id"]))} for r in runs])


def submit_lesson(store: RunStore, submit: Callable[..., str], lesson: Lesson, data: DataConfig,
                  owner: RunMeta | None = None, pool_counts: Sequence[int] = (),
                  side: int | None = None) -> QueuedLesson:
    """Queue every run of ``lesson`` on ``data`` with ``submit(config, meta=..., group=..., notes=...)`` (e.g.
    ``JobManager.submit``), each named "<lesson title short> · <label>" and started by ``owner`` (its owner
    fields; the local operator when None). ``pool_counts``, the data's train + val images per class, and ``side``, its
    images' typical shorter side (for *Image size* 0), let the runs train alike (:func:`~medcls.training.autoplan.train_alike`)."""
    configs = lesson_configs(lesson, data)  # raises before anything is queued
    configs, alike = train_alike(configs, pool_counts, side) if pool_counts else (configs, None)
    owner = owner or RunMeta()
    now = datetime.now(timezone.utc)
    queued = QueuedLesson(_RECORDS.fresh_id(store, f"lesson-{lesson.name}-{now.strftime('%Y%m%d-%H%M%S')}"),
                          lesson.name, lesson.title, now.isoformat(timespec="seconds"), data.source)
    taken = {store.meta(r).name for r in store.list_ids()}
    short = lesson.title.split(":")[0]
    for run, config in zip(lesson.runs, configs):
        name = unique_name(f"Lesson {short} · {run.label}", taken)
        taken.add(name)
        run_id = submit(config, meta=RunMeta(name=name, owner=owner.owner, owner_name=owner.owner_name),
                        group=GroupMembership("lesson", queued.lesson_id, {"lesson": lesson.name, "label": run.label}),
                        notes=[alike] if alike else [])
        queued.runs.append({"run_id": run_id, "label": run.label})
        _RECORDS.write(store, queued.lesson_id, queued.to_dict())  # complete after every run
    log.info("Lesson %s: queued %d runs as %s", lesson.name, len(configs), queued.lesson_id)
    return queued


def list_queued(store: RunStore, lesson: str | None = None) -> list[QueuedLesson]:
    """Queued lessons of a run store (of one lesson, when named), newest first."""
    queued = [QueuedLesson.from_dict(data) for data in _RECORDS.all(store)]
    return sorted((q for q in queued if lesson is None or q.lesson == lesson),
                  key=lambda q: (q.created, q.lesson_id), reverse=True)


def load_queued(store: RunStore, lesson_id: str) -> QueuedLesson:
    return QueuedLesson.from_dict(_RECORDS.read(store, lesson_id))


def _outcome(state: str, stopped: bool) -> str:
    if state in ACTIVE_STATES:
        return "pending"
    if state == "finished":
        return "stopped" if stopped else "finished"
    return "failed" if state == "failed" else "stopped"


def _right_per_image(store: RunStore, run_id: str, metric: str, focus_class: str) -> dict[str, bool] | None:
    """Per test image the metric counts, whether the run got it right (None for macro-F1, or unreadable)."""
    if metric not in MEASURES:  # macro-F1: predictions.csv need not be read
        return None
    try:
        return right_per_image(store.predictions(run_id, "test"), metric, focus_class)
    except (RunNotFoundError, RecordError, OSError):
        return None


def lesson_results(store: RunStore, queued: QueuedLesson, metric: str) -> tuple[list[RunResult], str]:
    """Each run's result for ``metric`` on its test images (with its 95% interval), and the focus class."""
    from ..analysis.uncertainty import run_intervals

    results, focus = [], ""
    for entry in queued.runs:
        run_id, label = entry["run_id"], entry["label"]
        try:
            summary = store.summary(run_id)
        except (RunNotFoundError, FileNotFoundError, RecordError):
            results.append(RunResult(label, "missing"))
            continue
        outcome = _outcome(summary.state, summary.stopped)
        seconds = sum(h.seconds for h in store.history(run_id)) or None
        try:
            record = store.model_record(run_id)
        except RecordError:
            record = None
        models = record.models if record else 1
        parameters = record.parameters_per_model if record and record.parameters else None
        estimate = low = high = right = None
        images = 0
        if outcome == "finished" and summary.tested:
            try:
                ci = run_intervals(store, run_id)
            except (RunNotFoundError, RecordError, OSError):
                ci = {}
            focus = focus or summary.focus_class
            if metric == "focus_recall":
                per_class = ci.get("per_class", {}).get(summary.focus_class) or {}
                value, images = per_class.get("recall"), int(per_class.get("support", 0))
            else:
                value, images = ci.get(metric), int(ci.get("n", 0))
            if value:
                estimate, low, high = value["estimate"], value.get("low"), value.get("high")
                right = _right_per_image(store, run_id, metric, summary.focus_class)
        results.append(RunResult(label, outcome, estimate, low, high, images, seconds, parameters, models,
                                 bool(record and record.bagged), right))
    return results, focus


def lesson_conclusion(store: RunStore, queued: QueuedLesson, lesson: Lesson) -> tuple[list[RunResult], Conclusion]:
    results, focus = lesson_results(store, queued, lesson.metric)
    return results, conclude(results, lesson.metric, focus, lesson.show)
