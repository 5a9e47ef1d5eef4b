"""Readable run names: made from what sets a run apart, e.g. "busi · small_cnn · oversample · 128 px"."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Callable, Iterable

from ..settings import uploads_dir

if TYPE_CHECKING:
    from ..config import TrainConfig
    from .records import DataRecord
    from .summary import RunSummary

__all__ = ["default_run_name", "dataset_name", "uploaded_as", "unique_name", "display_names", "MAX_NAME_LENGTH",
           "clean_run_name", "claim_id"]

MAX_NAME_LENGTH = 80


# Folder and file names that say nothing of the data ("chest_xray/train", "ham10000/images"): the parent tells.
GENERIC_NAMES = frozenset({"data", "dataset", "datasets", "images", "image", "imgs", "img", "train", "training",
                           "all", "raw", "files", "pictures", "photos"})


def dataset_name(source: str) -> str:
    """A dataset's short name from its source: the folder's name (also for a manifest inside it), an .npz
    file's stem, or 'phantoms' for the built-in data; a generic one ('data', 'images', 'train') with its parent's
    ('derm/data')."""
    if not source:
        return "phantoms"
    path = _as_uploaded(PurePath(source.rstrip("/\\")))
    if path.suffix.lower() == ".csv" and path.parent.name:
        named = path.parent  # a manifest is named after its folder
    elif path.suffix.lower() in (".npz", ".csv"):
        named = path.with_suffix("")
    else:
        named = path
    if not named.name:
        return source
    if named.name.lower() in GENERIC_NAMES and named.parent.name:
        return f"{named.parent.name}/{named.name}"
    return named.name


def uploaded_as(entry: str) -> str:
    """What an entry of the uploads folder was called when uploaded: 'breast.npz' for '<content hash>-breast.npz',
    'skin' for the folder 'skin-<content hash>' that 'skin.zip' was unpacked into (see medcls.data.uploads)."""
    return entry.split("-", 1)[-1] if entry.endswith(".npz") else entry.rsplit("-", 1)[0]


def _as_uploaded(path: PurePath) -> PurePath:
    """``path`` with the uploads-folder entry it lies in named as uploaded, so that a dataset uploaded as
    'breast.npz' is called 'breast', not '3b1e3ae009f0-breast'; other paths as they are."""
    root = uploads_dir()
    try:
        rel = Path(path).resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        return path
    return PurePath(root, uploaded_as(rel.parts[0]), *rel.parts[1:]) if rel.parts else path


def default_run_name(cfg: "TrainConfig", data: "DataRecord | None" = None) -> str:
    """The data, the model, the imbalance strategy and the image size, which tell most runs apart (and bagged
    models, which a run asks for: beside the default's fold models they would read the same)."""
    dataset = "phantoms" if data is not None and data.synthetic else dataset_name(cfg.data.source)
    imbalance = "no imbalance fix" if cfg.imbalance == "none" else cfg.imbalance.replace("_", " ")
    size = f"{cfg.image_size} px" if cfg.image_size else "auto size"  # chosen for the data when the run starts
    bagged = [f"{cfg.bagged_models} bagged"] if cfg.bagged_models else []
    return " · ".join([dataset, cfg.model, imbalance, size, *bagged])


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name (2)``, ``name (3)``, ... when others already use it."""
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def display_names(summaries: Iterable["RunSummary"]) -> dict[str, str]:
    """Run id -> the name to show; runs that share a name (a copy, an import) get their id added."""
    summaries = list(summaries)
    counts = Counter(s.name for s in summaries)
    return {s.run_id: s.name if counts[s.name] == 1 else f"{s.name} · {s.run_id}" for s in summaries}


def clean_run_name(name: str) -> str:
    """A name as people typed it, made safe to store and show: one line, no control characters, not too long."""
    text = " ".join("".join(ch if ch.isprintable() else " " for ch in str(name)).split())
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"A run name can have at most {MAX_NAME_LENGTH} characters (this one has {len(text)}).")
    return text


def claim_id(stem: str, claim: Callable[[str], bool], attempts: int = 20) -> str:
    """``stem`` and 4 random hex digits, drawn again until ``claim(id)`` takes it (returns False when it is taken).

    Ids carry the second they were made in, and a sweep, a lesson or a classroom makes several in one second, so
    two can meet (16 random bits a second); a taken id is drawn again instead of overwriting what has it."""
    for _ in range(attempts):
        candidate = f"{stem}-{secrets.token_hex(2)}"
        if claim(candidate):
            return candidate
    raise FileExistsError(f"No free id for {stem!r} after {attempts} tries.")
