"""Calibration: when the model says 90%, is it right 90% of the time?

A reliability diagram groups images by the model's confidence (0–10%, 10–20%, ...)
and compares each group's average confidence with how often the model was
actually right. The expected calibration error (ECE) is the gap between the two,
averaged over the groups and weighted by their size: 0 is perfect; 0.2 means the
stated confidences are typically 20 percentage points off.

By default the confidence is the top probability and "right" means the predicted
class is the true one (top-label calibration). With ``class_index`` the
confidence is one class's probability and "right" means the image is of that
class, which shows whether "30% malignant" means about 30% of such images are.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reliability", "expected_calibration_error", "calibration_sentence", "N_BINS"]

N_BINS = 10


def _confidence_and_outcome(y_true: np.ndarray, probs: np.ndarray,
                            class_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    if class_index is None:
        return probs.max(axis=1), (probs.argmax(axis=1) == y_true).astype(np.float64)
    return probs[:, class_index], (y_true == class_index).astype(np.float64)


def reliability(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS, class_index: int | None = None) -> dict:
    """Per confidence bin: image count, mean confidence and observed frequency; plus the ECE.

    Bins are equal-width over [0, 1] (the last one includes 1.0). Empty bins have None for
    confidence and observed frequency.
    """
    if n_bins < 1:
        raise ValueError(f"Use at least one bin (got {n_bins}).")
    confidence, outcome = _confidence_and_outcome(y_true, probs, class_index)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=n_bins)
    hit_sum = np.bincount(which, weights=outcome, minlength=n_bins)
    nonempty = count > 0
    mean_conf = np.divide(conf_sum, count, out=np.zeros(n_bins), where=nonempty)
    observed = np.divide(hit_sum, count, out=np.zeros(n_bins), where=nonempty)
    n = int(count.sum())
    ece = float((count / n * np.abs(observed - mean_conf)).sum()) if n else None
    return {
        "kind": "top-label" if class_index is None else "class",
        "class_index": class_index,
        "edges": edges.tolist(),
        "count": count.astype(int).tolist(),
        "confidence": [float(c) if e else None for c, e in zip(mean_conf, nonempty)],
        "observed": [float(o) if e else None for o, e in zip(observed, nonempty)],
        "ece": ece,
        "n": n,
        "mean_confidence": float(confidence.mean()) if n else None,
        "observed_rate": float(outcome.mean()) if n else None,
    }


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = N_BINS,
                               class_index: int | None = None) -> float | None:
    """The size-weighted average gap between confidence and observed frequency (0 = perfect)."""
    return reliability(y_true, probs, n_bins, class_index)["ece"]


def calibration_sentence(rel: dict) -> str:
    """What a reliability result means, in one or two plain sentences."""
    ece = rel.get("ece")
    if ece is None:
        return "No images, so no calibration to judge."
    gap = rel["mean_confidence"] - rel["observed_rate"]
    if ece < 0.05:
        verdict = "well calibrated: its stated confidence roughly matches how often it is right"
    elif ece < 0.15:
        verdict = "somewhat miscalibrated"
    else:
        verdict = "poorly calibrated: do not read its probabilities as real chances"
    what = "the top-class probability" if rel["kind"] == "top-label" else "this class's probability"
    text = f"Expected calibration error {ece:.3f}: the model is {verdict} (judged on {what}, {rel['n']:,} images)."
    if abs(gap) >= 0.03:
        direction = "overconfident" if gap > 0 else "underconfident"
        text += (f" On average it is {direction}: confidence {rel['mean_confidence']:.0%} against "
                 f"{rel['observed_rate']:.0%} observed.")
    text += _crowded_bin_sentence(rel)
    if rel["n"] < 100:
        text += " With under 100 images, each bin holds only a few, so the diagram is rough."
    return text


def _crowded_bin_sentence(rel: dict) -> str:
    """Why a small ECE can say little: when most images share one bin (an easy majority the model is sure of), the
    size-weighted average is mostly that bin's gap, and the few uncertain images barely move it."""
    count, edges, n = rel["count"], rel["edges"], rel["n"]
    crowded = int(np.argmax(count))
    if count[crowded] < 0.8 * n or count[crowded] == n:
        return ""
    low, high = edges[crowded], edges[crowded + 1]
    rest = n - count[crowded]
    others = "the other one is" if rest == 1 else f"the other {rest:,} are"
    text = (f" {count[crowded]:,} of {n:,} images got {low:.0%}–{high:.0%}, so the figure mostly judges those; "
            f"{others} in the diagram's other bins.")
    if rel["kind"] == "top-label":
        text += " For a rare class, judge that class's probability instead."
    return text
