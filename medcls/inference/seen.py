"""Did this run learn from this image? A right answer on an image a model trained on shows memory, not skill.

Try it answers any image. When the image is one of the run's own training images (picked from the dataset, or
the same file uploaded again), its answer says little about new patients, and the page says so. The run's
``split.csv`` lists the files it learned from; an upload is compared byte for byte with those of the same size
(a stat of each file is all that is read beforehand, so a large dataset costs no reading).

A near copy counts too: public datasets hold the same scan twice (re-exported, cropped a little, with or
without calipers), and BUSI's fixed split puts copies of 36 of its test images in train. So an image that is
neither gets compared with the fingerprints of the run's training and validation images (perceptual hash and
thumbnail, :mod:`medcls.data.fingerprints`, cached by contents), with the Data explorer's rule for a copy:
within ``DEFAULT_MAX_DISTANCE`` bits, and closer than two unrelated images of that data could be by chance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..analysis.copies import LEARNING_SPLITS, MAX_CHECKED_IMAGES, learning_splits
from ..data.digests import readable_digest
from ..data.fingerprints import HashTable, fingerprint_pixels, image_hashes
from ..data.health import DEFAULT_MAX_DISTANCE
from ..data.imageio import NPZ_MARK, open_image, to_uint8
from ..data.similarity import ChanceLevels, chance_levels, confirm_pairs
from ..data.spec import item_name
from ..runs.records import RecordError
from ..runs.store import RunStore

__all__ = ["LearnedFrom", "learned_from", "seen_sentence", "NearCopy", "Lookalikes", "lookalikes",
           "near_copy_sentence"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnedFrom:
    """The files a run learned from: path -> split, and the paths of the readable ones by their size in bytes."""

    splits: dict[str, str]
    by_size: dict[int, tuple[str, ...]]
    folds: int  # 0: one model
    labels: dict[str, str] | None = None  # path -> class name, as the run's split.csv filed it
    learning: tuple[str, ...] = LEARNING_SPLITS  # the splits it learned from (copies.learning_splits)
    chose_epoch: bool = True  # it kept its best validation epoch (False: its last)
    bagged: bool = False  # its ``folds`` models are bagged: each learned from every train + val image
    trained: int | None = None  # the models it holds, when it was stopped before all ``folds`` were trained

    def learning_paths(self) -> list[str]:
        """The items of the splits it learned from, in the split file's order."""
        return [path for path, split in self.splits.items() if split in self.learning]

    def split_of(self, path: str | None = None, data: bytes | None = None) -> tuple[str, str] | None:
        """(path, split) of the run's training or validation file that is this path, or has exactly these bytes: an
        upload, or a dataset item read from elsewhere (a copied folder, an .npz uploaded that the run read from its
        path)."""
        if path is not None:
            if path in self.splits:  # one of its own items (a copy of another among them is a near copy's case)
                return (path, self.splits[path]) if self.splits[path] in self.learning else None
            if NPZ_MARK in path:
                return self._npz_twin(path)
            try:  # only a file as large as one the run learned from can be one: a stat, then perhaps a read
                data = Path(path).read_bytes() if Path(path).stat().st_size in self.by_size else None
            except OSError:
                return None
        for candidate in self.by_size.get(len(data), ()) if data is not None else ():
            try:
                if Path(candidate).read_bytes() == data:
                    return candidate, self.splits[candidate]
            except OSError:  # moved or deleted since: it cannot be the upload's twin any more
                continue
        return None

    def _npz_twin(self, path: str) -> tuple[str, str] | None:
        """The same member of an .npz the run learned from whose bytes equal ``path``'s file (one file, two places)."""
        file, _, member = path.partition(NPZ_MARK)
        if (digest := readable_digest(file)) is None:
            return None
        for container in {p.partition(NPZ_MARK)[0] for p in self.splits if NPZ_MARK in p}:
            twin = f"{container}{NPZ_MARK}{member}"
            if self.splits.get(twin) in self.learning and readable_digest(container) == digest:
                return twin, self.splits[twin]
        return None


def learned_from(store: RunStore, run_id: str) -> LearnedFrom:
    """Read the run's split and the sizes of its training and validation files still on disk.

    Files that moved or were deleted are skipped (their paths still match a pick); members of an .npz have no
    file of their own to upload, so only their paths count.
    """
    splits: dict[str, str] = {}
    labels: dict[str, str] = {}
    summary = store.summary(run_id)
    folds = summary.folds
    try:
        chose_epoch = not store.config(run_id).keeps_last()
    except (FileNotFoundError, RecordError):  # a run without a readable config: as runs were before the option
        chose_epoch = True
    learning = learning_splits(folds, keeps_last=not chose_epoch)
    for item, label, split in store.split_rows(run_id):
        splits[item] = split
        labels[item] = label
    by_size: dict[int, list[str]] = {}
    for item, split in splits.items():
        if split not in learning or NPZ_MARK in item:
            continue
        try:
            by_size.setdefault(Path(item).stat().st_size, []).append(item)
        except OSError:
            continue
    if splits and not by_size:
        log.info("Run %s: none of its training files is on this machine; uploads are matched by nothing", run_id)
    return LearnedFrom(splits, {size: tuple(paths) for size, paths in by_size.items()}, folds, labels, learning,
                       chose_epoch, summary.bagged, _models_held(store, run_id, folds))


def _models_held(store: RunStore, run_id: str, folds: int) -> int | None:
    """How many of an ensemble's ``folds`` models the run holds, when fewer (it was stopped); else None."""
    try:
        record = store.model_record(run_id)
    except RecordError:
        return None
    return record.folds if folds and record is not None and 0 < record.folds < folds else None


def seen_sentence(match: tuple[str, str], folds: int, label: str | None = None, answer: str | None = None,
                  chose_epoch: bool = True, bagged: bool = False, trained: int | None = None) -> str:
    """Why an answer on this image means little, in a sentence for the page (Markdown-free). ``label``: the class
    the run filed the image under; ``answer``: the class the run gave it; ``chose_epoch``: the run kept its best
    validation epoch (not its last); ``bagged``: its ``folds`` models are bagged, not fold models; ``trained``:
    the models it holds, when it was stopped before all ``folds`` were trained."""
    path, split = match
    sentence = (f"This is {item_name(path)}, one of the images this run learned from: "
                f"{_how_used(split, folds, chose_epoch, bagged, trained)}.")
    if missed := _missed_although_trained(split, folds, label, answer, filed="it is"):
        return f"{sentence} {missed}"
    return (f"{sentence} A right answer here shows what the model remembers, not how it does on new images; pick a "
            "test image to see that.")


def _missed_although_trained(split: str, folds: int, label: str | None, answer: str | None,
                             filed: str = "that image is") -> str:
    """A wrong answer on an image the run trained on (BUSI's hard malignant scans are such): it is worth saying,
    because people expect a model to remember what it learned from. '' when the answer is right or unknown, or
    when one model only chose its best epoch with the image."""
    if not label or not answer or answer == label or (not folds and split != "train"):
        return ""
    return (f"Yet it answers {answer}, not {label} as {filed} filed: training on an image does not make a model "
            "remember it, so this mistake is a real one.")


def _how_used(split: str, folds: int, chose_epoch: bool = True, bagged: bool = False,
              trained: int | None = None) -> str:
    held_out = "chose its best epoch with it" if chose_epoch else "was validated on it"
    if trained and trained < folds:  # stopped on request: it holds the models trained so far
        if bagged:
            return (f"the {'one bagged model' if trained == 1 else f'{trained} bagged models'} this run trained "
                    f"before it was stopped (of {folds}) learned from it")
        # Which fold holds the image out is not known here: one of the trained fold models may be that one.
        if trained == 1:
            share = {2: "half", 3: "third", 4: "quarter", 5: "fifth"}.get(folds, f"1/{folds}")
            return (f"this run was stopped after the first of its {folds} fold models, which trained on it unless the "
                    f"image is in the {share} of the images that model {held_out.removesuffix(' it')}")
        return (f"this run was stopped after {trained} of its {folds} fold models, and each of them trained on it, "
                f"except perhaps one that {held_out}")
    if bagged:  # every bagged model learns from every train + val image
        return f"all {folds} of this run's bagged models trained on it"
    if folds:  # the folds split train + val: each image is held out by one fold model, the others train on it
        return f"{folds - 1} of this run's {folds} fold models trained on it, and the other one {held_out}"
    if split == "train":
        return "this run trained on it"
    return "this run chose its best epoch by how well it did on it and the other validation images"


# --- near copies ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NearCopy:
    """A training or validation image that is a copy of the one asked about (not the same file)."""

    path: str
    split: str
    label: str   # its class in the run's split ('' when the split file has none)
    bits: int    # perceptual hashes differ in this many of 64 bits
    same_pixels: bool  # the very same picture, saved again


@dataclass(frozen=True)
class Lookalikes:
    """Fingerprints of the images a run learned from, and how alike unrelated ones of them are by chance."""

    paths: list[str]
    table: HashTable
    levels: ChanceLevels
    seen: LearnedFrom

    def near_copy(self, source: str | bytes) -> NearCopy | None:
        """The closest training or validation image that is a copy of ``source`` (a dataset item or file bytes).

        Raises :class:`medcls.data.ImageReadError` when ``source`` cannot be decoded.
        """
        if isinstance(source, str):
            row = image_hashes([source])
            if not row.ok[0]:
                return None
            phash, digest, thumb = int(row.phash[0]), row.pixels[0], row.thumbs[0].tobytes()
        else:
            phash, digest, thumb = fingerprint_pixels(to_uint8(open_image(source), "gray"))
        usable = np.flatnonzero(self.table.ok)
        if not len(usable):
            return None
        bits = np.bitwise_count(self.table.phash[usable] ^ np.uint64(phash)).astype(np.int64)
        close = np.flatnonzero(bits <= DEFAULT_MAX_DISTANCE)
        if not len(close):
            return None
        candidates, distance = usable[close], bits[close]
        # Row 0 is the asked-about image, rows 1.. the candidates: confirm_pairs compares thumbnails by index.
        thumbs = np.vstack([np.frombuffer(thumb, np.uint8)[None], self.table.thumbs[candidates]])
        same = np.array([self.table.pixels[i] == digest for i in candidates])
        keep = confirm_pairs(np.zeros(len(close), np.int64), np.arange(1, len(close) + 1), distance, thumbs,
                             same, self.levels)
        if not keep.any():
            return None
        candidates, distance, same = candidates[keep], distance[keep], same[keep]
        best = np.lexsort((~same, distance))[0]  # fewest bits first; the same pixels win a tie
        path = self.paths[int(candidates[best])]
        return NearCopy(path, self.seen.splits[path], (self.seen.labels or {}).get(path, ""), int(distance[best]),
                        bool(same[best]))


def lookalikes(seen: LearnedFrom) -> Lookalikes | None:
    """Fingerprint the run's training and validation images (cached by contents; about 1.6 ms a new file).

    None when there are none on this machine, or more than ``MAX_CHECKED_IMAGES`` (a first visit would take
    minutes); then only the same file or path is recognised.
    """
    paths = seen.learning_paths()
    if not paths or len(paths) > MAX_CHECKED_IMAGES:
        if paths:
            log.info("%d training images: not compared for near copies (more than %d)", len(paths),
                     MAX_CHECKED_IMAGES)
        return None
    table = image_hashes(paths)
    if not table.ok.any():
        return None
    return Lookalikes(paths, table, chance_levels(table.phash, table.thumbs, table.ok), seen)


def near_copy_sentence(copy: NearCopy, folds: int, label: str | None = None, answer: str | None = None,
                       chose_epoch: bool = True, bagged: bool = False, trained: int | None = None) -> str:
    """Why an answer on a copy of a training image means little; ``label``: the asked-about image's own class;
    ``answer``: the class the run gave it; ``chose_epoch``, ``bagged`` and ``trained``: as :func:`seen_sentence`."""
    what = "the same picture as" if copy.same_pixels else "a near copy of"
    kind = f"a {copy.label} image" if copy.label else "one of the images"
    sentence = (f"This image is {what} {item_name(copy.path)}, {kind} this run learned from: "
                f"{_how_used(copy.split, folds, chose_epoch, bagged, trained)}.")
    conflict = bool(copy.label) and label is not None and copy.label != label
    if conflict and answer == label:  # right for this image, and not what its copy taught: no memory, no mistake
        sentence += f" It answers {answer}, as this image is filed, not {copy.label} as that one is."
    elif conflict and answer == copy.label:
        sentence += f" It answers {answer}, as that image is filed, not {label} as this one is: it may remember that one."
    elif missed := _missed_although_trained(copy.split, folds, copy.label, answer):
        sentence += f" {missed}"
    else:
        sentence += " A right answer here may show what the model remembers rather than how it does on new images."
    if conflict:
        sentence += (f" This one is filed as {label}, that one as {copy.label}: one of the two labels is wrong, or the "
                     "case is ambiguous.")
    return sentence
