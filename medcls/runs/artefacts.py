"""The run store's part about what training and testing leave in a run folder: the best weights (``best.pt``),
the exact split (``split.csv``) and the tested checkpoint's predictions (``predictions.csv``).

:class:`RunArtefacts` is a base of :class:`medcls.runs.store.RunStore`, like :class:`~.lifecycle.RunLifecycle`;
it finds its files through the store's ``file`` and ``path``, which validate run ids.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Iterable

from ..atomic import atomic_write_text, atomic_write_with
from .lifecycle import CheckpointError, RunNotFoundError
from .records import RecordError
from .results import Predictions

if TYPE_CHECKING:
    import numpy as np

__all__ = ["RunArtefacts"]


class RunArtefacts:
    """Weights, split and predictions of a run (a base of RunStore, which provides ``file`` and ``path``)."""

    # --- weights --------------------------------------------------------------------
    def save_weights(self, run_id: str, state_dict: dict) -> None:
        import torch  # keep the store importable without torch for light readers

        atomic_write_with(self.file(run_id, "best.pt"), lambda handle: torch.save(state_dict, handle))

    def load_weights(self, run_id: str) -> dict:
        import torch

        path = self.file(run_id, "best.pt")
        if not path.is_file():
            raise RunNotFoundError(f"Run {run_id!r} has no saved weights yet (it has not finished an epoch).")
        if not path.resolve().is_relative_to(self.path(run_id).resolve()):
            raise CheckpointError(f"Run {run_id!r}: best.pt links to a file outside the run store; refused.")
        try:
            # weights_only: a checkpoint can never run code, even if someone swapped the file.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged, truncated, or a pickle that is more than plain tensors
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"Run {run_id!r}: its checkpoint best.pt cannot be loaded safely ({detail}). "
                                  "Train the run again.") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"Run {run_id!r}: best.pt does not hold model weights (a state dict).")
        return state

    def has_weights(self, run_id: str) -> bool:
        try:
            return self.file(run_id, "best.pt").is_file()
        except RunNotFoundError:
            return False

    def weights_version(self, run_id: str) -> int:
        """Changes whenever best.pt is rewritten (for caches of loaded models)."""
        return self.file(run_id, "best.pt").stat().st_mtime_ns

    # --- split and predictions ------------------------------------------------------------
    def write_split(self, run_id: str, rows: Iterable[tuple[str, str, str]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
        atomic_write_text(self.file(run_id, "split.csv"), buf.getvalue())

    def split_rows(self, run_id: str) -> list[tuple[str, str, str]]:
        """The run's exact split as (path, class name, split) rows; empty when it has none (not trained yet)."""
        path = self.file(run_id, "split.csv")
        if not path.is_file():
            return []
        with open(path, newline="", encoding="utf-8") as handle:
            return [(row["path"], row.get("label") or "", row["split"]) for row in csv.DictReader(handle)
                    if row.get("path") and row.get("split")]

    def write_predictions(self, run_id: str, split_names: list[str], paths: list[str], y_true: "np.ndarray",
                          probs: "np.ndarray", classes: list[str]) -> None:
        import numpy as np

        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["split", "path", "true", "pred"] + [f"p_{c}" for c in classes])
        for split, path, t, p in zip(split_names, paths, y_true, probs):
            # The shortest digits that read back as the same number: intervals and curves recomputed from this file
            # (runs from before they were stored) then equal the ones computed when the run ended.
            writer.writerow([split, path, classes[int(t)], classes[int(np.argmax(p))]]
                            + [np.format_float_positional(v, trim="-") for v in p])
        atomic_write_text(self.file(run_id, "predictions.csv"), buf.getvalue())

    def predictions(self, run_id: str, split: str = "test") -> Predictions:
        """One split's predictions of the tested checkpoint (empty when the run has none for that split)."""
        import numpy as np

        path = self.file(run_id, "predictions.csv")
        if not path.is_file():
            raise RunNotFoundError(f"Run {run_id!r} has no predictions (it was not tested).")
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, ["split", "path", "true", "pred"])
            classes = [h[2:] for h in header[4:]]
            rows = [r for r in reader if r and r[0] == split]
        index = {c: i for i, c in enumerate(classes)}
        try:
            y_true = np.array([index[r[2]] for r in rows], dtype=np.int64)
            probs = np.array([[float(v) for v in r[4:]] for r in rows], dtype=np.float64).reshape(len(rows),
                                                                                                  len(classes))
        except (KeyError, ValueError, IndexError) as exc:
            raise RecordError(f"Run {run_id!r}: predictions.csv is damaged ({exc}).") from None
        return Predictions(split, [r[1] for r in rows], y_true, probs, classes)
