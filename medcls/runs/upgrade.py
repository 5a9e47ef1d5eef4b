"""Records written by an older medcls, brought up to date when the store reads them.

Until 2026-12-07 a run's data fingerprint hashed its images' paths, so the same ``.npz`` trained from its path and
uploaded in the app counted as two datasets. It now hashes their contents
(:meth:`medcls.data.spec.DatasetSpec.fingerprint`). An older run's record is recomputed from the run's own exact
split (``split.csv``) and its files, and written back, so that its data still reads as the data it trained on. When
its files are no longer where it read them, the record is left as it is: no data on this machine is the same.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING

from .records import FINGERPRINT_FORMAT, DataRecord

if TYPE_CHECKING:
    from .store import RunStore

__all__ = ["upgraded_data_record"]

log = logging.getLogger(__name__)


def upgraded_data_record(store: "RunStore", run_id: str, record: DataRecord) -> DataRecord:
    """``record`` with its fingerprint as this medcls computes it (written back); unchanged when it already is, or
    when the run's split or any of its files cannot be read."""
    if record.fingerprint_format >= FINGERPRINT_FORMAT or not record.fingerprint:
        return record
    from ..data.imageio import NPZ_MARK
    from ..data.spec import DatasetSpec, Item

    index = {name: i for i, name in enumerate(record.classes)}
    rows = store.split_rows(run_id)
    items = [Item(path, index[label], split) for path, label, split in rows if label in index]
    files = {item.path.partition(NPZ_MARK)[0] for item in items}
    if not items or len(items) != len(rows) or not all(os.path.isfile(file) for file in files):
        return record
    spec = DatasetSpec(record.root, record.layout, list(record.classes), items, synthetic=record.synthetic)
    upgraded = replace(record, fingerprint=spec.fingerprint(), fingerprint_format=FINGERPRINT_FORMAT)
    try:
        store.write_data_record(run_id, upgraded)
    except OSError as exc:  # a read-only store: upgraded again next time
        log.info("Run %s: its data record could not be upgraded on disk (%s)", run_id, exc)
    return upgraded
