"""The run's feature reference (novelty.npz): what its model makes of its own training images.

A typed record like those in :mod:`medcls.runs.records`, kept apart because it holds arrays, not JSON. The run
store (:mod:`medcls.runs.store`) reads and writes it; :mod:`medcls.inference.novelty` builds and uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .records import RecordError, _str

if TYPE_CHECKING:
    import numpy as np

__all__ = ["FeatureReference"]


@dataclass(frozen=True)
class FeatureReference:
    """What the run's model makes of its own training images (novelty.npz): the "unlike the training data" check.

    See :mod:`medcls.inference.novelty`. Per level of the model's features: the (up to 2,000) training images'
    standardised vectors, the statistics that standardise them, and the distance limit measured on held-out
    images.
    """

    features: tuple["np.ndarray", ...]   # per level (M, F) float16, standardised
    centers: tuple["np.ndarray", ...]    # per level (F,): the training images' mean
    scales: tuple["np.ndarray", ...]     # per level (F,): their spread
    limits: tuple[float, ...]            # per level: distances beyond this are unlike every held-out image
    k: int                               # distance to the k-th nearest training image
    typical: float                       # a typical held-out image's score (its distance over the limit)
    basis: str = "validation"            # which held-out images measured the limits ('validation' or 'training')

    def to_arrays(self) -> dict[str, Any]:
        import json

        import numpy as np

        arrays: dict[str, Any] = {"meta": np.array(json.dumps({
            "format": 1, "levels": len(self.features), "limits": list(self.limits), "k": self.k,
            "typical": self.typical, "basis": self.basis}))}
        for i, (feats, center, scale) in enumerate(zip(self.features, self.centers, self.scales)):
            arrays[f"features_{i}"] = np.asarray(feats, np.float16)
            arrays[f"center_{i}"] = np.asarray(center, np.float32)
            arrays[f"scale_{i}"] = np.asarray(scale, np.float32)
        return arrays

    @classmethod
    def from_arrays(cls, data: Mapping[str, Any]) -> "FeatureReference":
        import json

        import numpy as np

        try:
            meta = json.loads(str(data["meta"]))
            levels = int(meta["levels"])
            features = tuple(np.asarray(data[f"features_{i}"]) for i in range(levels))
            centers = tuple(np.asarray(data[f"center_{i}"], np.float32) for i in range(levels))
            scales = tuple(np.asarray(data[f"scale_{i}"], np.float32) for i in range(levels))
            record = cls(features=features, centers=centers, scales=scales,
                         limits=tuple(float(v) for v in meta["limits"]), k=int(meta["k"]),
                         typical=float(meta["typical"]), basis=_str(meta.get("basis"), "validation"))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"novelty.npz cannot be read ({type(exc).__name__}: {exc}).") from None
        shapes_fit = all(f.ndim == 2 and len(f) > record.k and f.shape[1] == len(c) == len(s)
                         for f, c, s in zip(features, centers, scales))
        if not levels or len(record.limits) != levels or not shapes_fit \
                or not all(math.isfinite(v) and v > 0 for v in record.limits):
            raise RecordError("novelty.npz holds no usable training-image features.")
        return record
