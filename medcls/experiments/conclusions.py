"""A lesson's conclusion in plain words, computed from its runs' results and their uncertainty.

Pure functions over :class:`RunResult` (one per planned run of a lesson): nothing
here reads files, so every sentence can be tested against made-up results. Each
finished run is compared with the lesson's reference run (its first run that
finished) on the test images. Where the metric counts images (the focus
class's recall, accuracy) and both runs judged the same images, they are
compared image by image: McNemar's exact test on the images only one of them
got right, and p < 0.05 is called a clear difference on these test images
(BUSI's rare-classes lesson: the fixes found 6-7 malignant images that no fix
missed and missed none it found, p = 0.02-0.03, while the two runs' intervals
overlapped). Macro-F1 counts no images, so there two 95% intervals that do
not overlap are called a clear difference. Anything else "could be chance".
Neither test sees what another seed would train: a clear difference is one on
these test images, of these runs.
Runs that are still waiting or training, were stopped, failed or are missing are
counted and left out: a partial lesson concludes only on what finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..analysis.paired import change_phrase, count_words, describe_paired
from ..data.spec import class_word
from ..runs.records import member_word

__all__ = ["METRICS", "RunResult", "Conclusion", "metric_words", "conclude", "outcome_counts"]

# What a lesson can read off its runs' test images.
METRICS = {"focus_recall": "recall of the focus class", "accuracy": "accuracy", "macro_f1": "macro-F1"}
OUTCOMES = ("finished", "pending", "stopped", "failed", "missing")
_SAME = 1e-9


@dataclass(frozen=True)
class RunResult:
    """One planned run of a lesson, as far as it got."""

    label: str                      # what sets it apart, e.g. 'oversampling'
    outcome: str                    # finished, pending (queued or training), stopped, failed, missing (deleted)
    estimate: float | None = None   # the lesson's metric on all test images (finished runs)
    low: float | None = None        # its 95% interval
    high: float | None = None
    images: int = 0                 # test images the metric is computed over (the focus class's, for its recall)
    seconds: float | None = None    # training time (all epochs, of every model of an ensemble)
    parameters: int | None = None   # the weights of one model
    models: int = 1                 # an ensemble (a small dataset's default): this many fold or bagged models
    bagged: bool = False            # its models are bagged models, not fold models
    # Per test image the metric counts (its path), whether the run got it right: for a paired comparison.
    right: Mapping[str, bool] | None = None

    @property
    def usable(self) -> bool:
        return self.outcome == "finished" and self.estimate is not None


@dataclass(frozen=True)
class Conclusion:
    status: str                                        # how many runs finished, are pending, stopped, failed
    sentences: list[str] = field(default_factory=list)  # the findings, the reference run first
    summary: str = ""                                  # one closing sentence ('' when nothing can be compared)
    complete: bool = False                             # every planned run finished
    words: str = ""                                    # the metric in words, e.g. 'malignant recall'

    def text(self) -> str:
        return " ".join([self.status, *self.sentences, *([self.summary] if self.summary else [])])


def metric_words(metric: str, focus_class: str = "") -> str:
    """'malignant recall', 'accuracy', 'macro-F1'."""
    if metric == "focus_recall":
        return f"{class_word(focus_class)} recall" if focus_class else "recall of the focus class"
    if metric not in METRICS:
        raise ValueError(f"Unknown lesson metric {metric!r}; use one of {', '.join(METRICS)}.")
    return METRICS[metric]


def outcome_counts(results: list[RunResult]) -> dict[str, int]:
    return {outcome: sum(r.outcome == outcome for r in results) for outcome in OUTCOMES}


def _status(results: list[RunResult]) -> str:
    counts = outcome_counts(results)
    total = len(results)
    if counts["finished"] == total:
        return f"All {total} runs finished."
    parts = []
    if counts["pending"]:
        parts.append(f"{counts['pending']} still waiting or training")
    if counts["stopped"]:
        parts.append(f"{counts['stopped']} stopped before the end")
    if counts["failed"]:
        parts.append(f"{counts['failed']} failed")
    if counts["missing"]:
        parts.append(f"{counts['missing']} deleted")
    text = f"{counts['finished']} of {total} runs finished"
    return f"{text}; {', '.join(parts)}." if parts else f"{text}."


def _ci(r: RunResult) -> str:
    if r.low is None or r.high is None:
        return f"{r.estimate:.2f}"
    return f"{r.estimate:.2f} ({r.low:.2f}–{r.high:.2f})"


def _overlap(a: RunResult, b: RunResult) -> bool | None:
    if None in (a.low, a.high, b.low, b.high):
        return None
    return a.low <= b.high and b.low <= a.high


def _compare(ref: RunResult, r: RunResult, words: str, unit: str, found: bool = False) -> tuple[str, int]:
    """A sentence comparing ``r`` with the reference, and -1/0/+1 for a clear drop/no clear difference/clear rise."""
    change = change_phrase(ref.label, ref.estimate, r.label, r.estimate, words)
    if not change:
        return (f"{r.label} gave the same {words} as {ref.label} ({r.estimate:.2f}): no difference on these "
                f"{count_words(r.images, unit)}.", 0)
    sign = 1 if r.estimate > ref.estimate else -1
    if _paired(ref, r):
        sentence, test = describe_paired(change, ref.label, ref.right, r.label, r.right, unit, found)
        return sentence, sign if test.clear else 0
    overlap = _overlap(ref, r)
    if overlap is None:
        return (f"{change}, but without intervals for both runs nobody can tell whether that is more than "
                "chance.", 0)
    if overlap:
        return (f"{change}, but with {count_words(min(ref.images, r.images), unit)} the 95% intervals overlap "
                f"({_ci(ref)} against {_ci(r)}): this difference could be chance.", 0)
    return (f"{change}, and the 95% intervals do not overlap ({_ci(ref)} against {_ci(r)}): a clear difference on "
            f"these {count_words(min(ref.images, r.images), unit)}.", sign)


def _paired(ref: RunResult, r: RunResult) -> bool:
    """Both runs say, image by image, what they got right on the same images."""
    return bool(ref.right) and r.right is not None and set(ref.right) == set(r.right)


def _fmt_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _costs(usable: list[RunResult], show: tuple[str, ...]) -> str:
    parts = []
    for r in usable:
        bits = []
        each = f" in each of {r.models} {member_word(r.bagged, plural=True)}" if r.models > 1 else ""
        if "parameters" in show and r.parameters:
            bits.append(f"{r.parameters:,} weights{each}")
        if "time" in show and r.seconds is not None:
            bits.append(f"{_fmt_seconds(r.seconds)} of training" + (f" for all {r.models}" if r.models > 1 else ""))
        if bits:
            parts.append(f"{r.label} {' and '.join(bits)}")
    if not parts:
        return ""
    text = "Cost: " + "; ".join(parts) + "."
    timed = [r for r in usable if "time" in show and r.seconds]
    if len(timed) >= 2:
        fast, slow = min(timed, key=lambda r: r.seconds), max(timed, key=lambda r: r.seconds)
        if slow.seconds > 1.2 * fast.seconds:
            text += f" {slow.label} took {slow.seconds / fast.seconds:.1f} times as long as {fast.label}."
    return text


def conclude(results: list[RunResult], metric: str, focus_class: str = "",
             show: tuple[str, ...] = ()) -> Conclusion:
    """What the finished runs of a lesson show, in plain language; never more than their test images support."""
    words = metric_words(metric, focus_class)
    unit = f"{focus_class} test image" if metric == "focus_recall" and focus_class else "test image"
    status = _status(results)
    complete = all(r.outcome == "finished" for r in results)
    usable = [r for r in results if r.usable]
    unusable = [r for r in results if r.outcome == "finished" and r.estimate is None]
    notes = [f"{r.label} finished without a {words} on the test images (no such test images, or its results are "
             "missing), so it is left out." for r in unusable]
    if metric == "focus_recall" and not focus_class and usable:
        notes.append("The runs did not record a focus class.")
    if len(usable) < 2:
        more = "Nothing to compare yet: at least two runs must finish." if len(results) >= 2 else ""
        if usable:
            more += f" So far {usable[0].label} reached {words} {_ci(usable[0])}."
        return Conclusion(status, [*notes, more.strip()] if more.strip() else notes, "", complete, words)
    ref = usable[0]
    sentences = list(notes)
    if ref is not results[0]:
        sentences.append(f"{results[0].label} did not finish, so the runs are compared with {ref.label}.")
    verdicts = {}
    for r in usable[1:]:
        sentence, verdict = _compare(ref, r, words, unit, found=metric == "focus_recall")
        sentences.append(sentence)
        verdicts[r.label] = verdict
    if any(verdicts[r.label] and _paired(ref, r) and _overlap(ref, r) for r in usable[1:]):
        sentences.append("The 95% intervals in the chart overlap where these sentences call a difference clear: each "
                         "interval also holds the luck of which images ended up in the test split, which both runs "
                         "share, so comparing them image by image is the sharper test.")
    costs = _costs(usable, show)
    if costs:
        sentences.append(costs)
    better = [r for r in usable[1:] if verdicts[r.label] > 0]
    worse = [r for r in usable[1:] if verdicts[r.label] < 0]
    if better:
        top = max(r.estimate for r in better)
        best = [r.label for r in better if abs(r.estimate - top) < _SAME]  # a tie names every one of them
        summary = (f"In short: {' and '.join(best)} gave clearly higher {words} than {ref.label} ({top:.2f} "
                   f"against {ref.estimate:.2f}) on these test images.")
    elif worse:
        summary = (f"In short: nothing beat {ref.label} clearly, and {', '.join(r.label for r in worse)} did "
                   f"clearly worse on {words}.")
    else:
        n = min(r.images for r in usable)
        summary = (f"In short: these results do not show a real difference in {words}; with "
                   f"{count_words(n, unit)} the differences are within what chance gives. More test images, or the "
                   "same lesson with other seeds, would be needed to tell.")
    if not complete:
        summary += " This is a partial result: it uses only the runs that finished."
    return Conclusion(status, sentences, summary, complete, words)
