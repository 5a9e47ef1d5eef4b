"""A finished run as one .zip that another medcls installation can import, then compare and try.

The zip holds one folder named after the run id with the run's record files
(config, status, meta, history, model, data, metrics, predictions, split, the
best weights, the feature reference, ...); the files of a run in progress
(heartbeat, progress, resume checkpoint, stop requests) stay behind.

An imported zip is untrusted. It goes through the dataset uploads' checks
(:mod:`medcls.data.archive`: sizes, compression ratios, names, no absolute paths,
no '..', no links), and then through the run store's own rules:

- exactly one run folder, whose name is a valid run id, holding only the file
  names a run folder holds (a stray ``.pkl``, ``.py`` or hidden file is refused);
- every record parses as its typed record (:mod:`medcls.runs.records`), the
  config as a :class:`~medcls.config.TrainConfig`, the predictions as a table;
- the weights load with ``weights_only=True`` (no code can run) and fit the model
  the config describes; the feature reference loads without pickles;
- only finished or stopped runs with weights and test results are accepted;
- on a server that limits the folders datasets may come from (exposed, or ``MEDCLS_DATA_ROOTS``), a run
  whose data or image paths name existing files outside those folders is refused: the Compare page shows
  a run's test images, and an import must not become a way to look at other files on the server. Paths
  that do not exist here (the exporting machine's) are fine: those images are simply not shown.

It is unpacked into a hidden folder inside the store, checked there, and only
then renamed into place, so a refused import leaves nothing behind. A run id that
exists already is imported under a new id; the status loses the exporting
machine's process details and gains a note saying where the run came from.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..atomic import read_json
from ..config import ConfigError, TrainConfig
from ..data.archive import MAX_RATIO, ArchiveError, extract_checked, open_checked
from ..data.imageio import NPZ_MARK
from ..settings import PathNotAllowedError, allowed_data_roots, check_allowed_path
from .lifecycle import CheckpointError, InvalidRunIdError
from .naming import claim_id, unique_name
from .records import DataRecord, EpochRecord, GroupMembership, ModelRecord, RecordError, RunMeta, RunStatus
from .results import CrossValidation, RunMetrics
from .store import RunStore

__all__ = ["RunImportError", "RUN_FILES", "REQUIRED_FILES", "MAX_RUN_BYTES", "export_run_zip", "import_run_zip",
           "can_export"]

log = logging.getLogger(__name__)

# The files a finished run folder can hold and an exported zip carries (see store.py's layout).
RUN_FILES = ("config.json", "status.json", "meta.json", "history.jsonl", "best.pt", "model.json", "data.json",
             "metrics.json", "cv.json", "predictions.csv", "split.csv", "data_report.json", "env.json",
             "group.json", "novelty.npz", "plan.json")
REQUIRED_FILES = ("config.json", "status.json", "best.pt", "model.json", "metrics.json", "predictions.csv")
IMPORTABLE_STATES = ("finished", "cancelled")
MAX_RUN_BYTES = 1 << 30      # a ResNet-18 run is about 50 MB
MAX_RUN_FILES = 64


class RunImportError(ArchiveError):
    """The zip is not a run medcls can import safely; the message says which file and why."""


def can_export(store: RunStore, run_id: str) -> str:
    """'' when the run can be exported, else why not (in words)."""
    status = store.status(run_id)
    if status.state not in IMPORTABLE_STATES:
        return f"Only finished or stopped runs can be exported (this one is {status.state})."
    missing = [name for name in REQUIRED_FILES if not store.file(run_id, name).is_file()]
    if missing:
        return f"This run has no {', '.join(missing)} (it was not tested), so there is nothing to export."
    return ""


def export_run_zip(store: RunStore, run_id: str) -> bytes:
    """The run's record files as a .zip holding one folder ``<run_id>/``."""
    reason = can_export(store, run_id)
    if reason:
        raise RunImportError(f"Run {run_id!r}: {reason}")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in RUN_FILES:
            path = store.file(run_id, name)
            if name == "group.json":
                continue  # its sweep or lesson does not travel with it
            if path.is_file() and not path.is_symlink():
                archive.write(path, f"{run_id}/{name}")
    return buffer.getvalue()


def _layout(archive: zipfile.ZipFile) -> str:
    """The run id the zip's single folder is named after; refuses anything else in the zip."""
    tops = set()
    for info in archive.infolist():
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p]
        if info.is_dir() and len(parts) == 1:
            tops.add(parts[0])
            continue
        if len(parts) != 2 or info.is_dir():
            raise RunImportError(f"{info.filename}: a run zip holds one folder with the run's files directly inside; "
                                 "this entry is elsewhere. Export the run from medcls again.")
        if parts[1] not in RUN_FILES:
            raise RunImportError(f"{info.filename}: {parts[1]!r} is not a file a medcls run folder holds; refused "
                                 f"(allowed: {', '.join(RUN_FILES)}).")
        tops.add(parts[0])
    if len(tops) != 1:
        raise RunImportError(f"A run zip holds exactly one run folder; this one holds {len(tops)}.")
    return tops.pop()


def _json_object(folder: Path, name: str) -> dict | None:
    path = folder / name
    if not path.is_file():
        return None
    data = read_json(path, None)
    if not isinstance(data, dict):
        raise RunImportError(f"{name} is not a JSON object; the run's files are damaged.")
    return data


def _check_records(folder: Path) -> RunStatus:
    """Every record file parses as its typed record; returns the status."""
    try:
        TrainConfig.load(folder / "config.json")
        status = RunStatus.from_dict(_json_object(folder, "status.json"))
        if status.damaged:
            raise RunImportError(f"status.json cannot be read ({status.damaged}).")
        if status.state not in IMPORTABLE_STATES:
            raise RunImportError(f"The run is {status.state}; only finished or stopped runs can be imported.")
        ModelRecord.from_dict(_json_object(folder, "model.json"))
        RunMetrics.from_dict(_json_object(folder, "metrics.json"))
        for name, parse in (("data.json", DataRecord.from_dict), ("cv.json", CrossValidation.from_dict),
                            ("meta.json", RunMeta.from_dict), ("group.json", GroupMembership.from_dict)):
            data = _json_object(folder, name)
            if data is not None:
                parse(data)
        for name in ("data_report.json", "env.json", "plan.json"):
            _json_object(folder, name)
        history = folder / "history.jsonl"
        if history.is_file():
            for number, line in enumerate(history.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    EpochRecord.from_dict(json.loads(line))
        for name in ("predictions.csv", "split.csv"):
            if (folder / name).is_file():
                rows = list(csv.reader(io.StringIO((folder / name).read_text(encoding="utf-8"))))
                if not rows:
                    raise RunImportError(f"{name} is empty.")
    except ConfigError as exc:
        raise RunImportError(f"config.json is not a valid medcls config: {exc}") from None
    except (RecordError, json.JSONDecodeError) as exc:
        raise RunImportError(f"The run's records are damaged: {exc}") from None
    except UnicodeDecodeError:
        raise RunImportError("A text file of the run is not UTF-8 text; the run's files are damaged.") from None
    return status


def _named_paths(folder: Path) -> list[str]:
    """The data source and every image path the run's records name."""
    paths = [TrainConfig.load(folder / "config.json").data.source]
    data = _json_object(folder, "data.json")
    if data is not None:
        paths.append(str(data.get("root", "")))
    for name, column in (("predictions.csv", 1), ("split.csv", 0)):
        if (folder / name).is_file():
            rows = csv.reader(io.StringIO((folder / name).read_text(encoding="utf-8")))
            next(rows, None)
            paths.extend(row[column] for row in rows if len(row) > column)
    return [p.partition(NPZ_MARK)[0] for p in paths if p]


def _check_paths(folder: Path) -> None:
    if not allowed_data_roots():
        return  # this machine reads any folder: showing its own files to its own user reveals nothing
    for path in dict.fromkeys(_named_paths(folder)):
        try:
            exists = Path(path).exists()
        except (OSError, ValueError):
            exists = False
        if not exists:
            continue
        try:
            check_allowed_path(path)
        except PathNotAllowedError:
            raise RunImportError(f"The run names {path}, a file or folder on this server outside the folders it may "
                                 "read; refused, so that an import cannot show other files of the server.") from None


def _check_weights(staging: RunStore, run_id: str) -> None:
    """The weights load without running code and fit the model; the predictions and features read."""
    from ..inference.predictor import load_run_model

    try:
        load_run_model(staging, run_id)  # load_weights: torch.load(weights_only=True)
    except CheckpointError as exc:
        raise RunImportError(str(exc)) from None
    try:
        staging.predictions(run_id, "test")
    except RecordError as exc:
        raise RunImportError(str(exc)) from None
    if staging.file(run_id, "novelty.npz").is_file() and staging.feature_reference(run_id) is None:
        raise RunImportError("novelty.npz cannot be read as the run's feature reference (arrays only, no pickles).")


def import_run_zip(store: RunStore, data: bytes, name: str = "upload", *,
                   max_total_bytes: int = MAX_RUN_BYTES, owner: RunMeta | None = None) -> str:
    """Check and import a run zip into ``store``; returns the new run's id (a fresh one when the id is taken).

    The run belongs to ``owner`` (its owner fields: the person who imported it; the local operator when None)."""
    archive, files = open_checked(data, name, max_total_bytes=max_total_bytes, max_files=MAX_RUN_FILES)
    with archive:
        original = _layout(archive)
        try:
            store.path(original, must_exist=False)
        except InvalidRunIdError as exc:
            raise RunImportError(f"The zip's folder is not a run: {exc}") from None
        present = {path.parts[-1] for _, path in files}
        missing = [f for f in REQUIRED_FILES if f not in present]
        if missing:
            raise RunImportError(f"The zip's run has no {', '.join(missing)}: only tested runs with their weights "
                                 "can be imported.")
        staging_root = Path(tempfile.mkdtemp(dir=store.root, prefix=".import-"))  # hidden: never listed as a run
        try:
            extract_checked(archive, files, staging_root, max_total_bytes=max_total_bytes, max_ratio=MAX_RATIO)
            return _install(store, staging_root, original, name, owner or RunMeta())
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)


def _install(store: RunStore, staging_root: Path, original: str, name: str, owner: RunMeta) -> str:
    folder = staging_root / original
    for path in folder.iterdir():
        if path.is_symlink() or not path.is_file():
            raise RunImportError(f"{path.name}: not a plain file; refused.")
    status = _check_records(folder)
    _check_paths(folder)
    staging = RunStore(staging_root)
    _check_weights(staging, original)
    # Its own id when free, else a fresh one; claimed (an empty folder) first, so that two imports of one
    # archive at once, or a run created meanwhile, never land in one folder.
    run_id = original if store.claim_folder(original) else claim_id(f"{original[:80]}-imported", store.claim_folder)
    (folder / "group.json").unlink(missing_ok=True)  # its sweep or lesson is not in this store
    try:
        os.replace(folder, store.path(run_id, must_exist=False))  # onto the claimed empty folder: the run appears whole, at once
    except OSError:
        store.path(run_id, must_exist=False).rmdir()  # give the id back
        raise
    meta = store.meta(run_id)
    taken = {store.meta(r).name for r in store.list_ids() if r != run_id}
    # Its owner was elsewhere: here it belongs to whoever imported it.
    store.set_meta(run_id, RunMeta(name=unique_name(meta.name or original, taken), owner=owner.owner,
                                   owner_name=owner.owner_name))
    source = f"Imported from {Path(name).name}" + (f" (run {original})" if run_id != original else "") + "."
    store._write(run_id, "status.json", dataclasses.replace(  # as exported: its times are the run's own
        status, pid=None, host="", auto_resume=False, notes=(*status.notes, source)).to_dict())
    log.info("Imported run %s from %s", run_id, name)
    return run_id

