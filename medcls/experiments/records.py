"""Records of run groups (sweeps, lessons): one JSON file per group in a sub-folder of the run store.

A record lists the group's runs; it is rewritten atomically after every run queued, so it is always complete
up to its last run. Each kind names its folder, its id field and its error type; reading, writing and listing
are the same for all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_json, read_json
from ..runs.naming import claim_id
from ..runs.store import RunStore

__all__ = ["GroupRecords"]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")  # no path separators: ids name files


@dataclass(frozen=True)
class GroupRecords:
    folder: str                          # sub-folder of the run store, e.g. "sweeps"
    id_field: str                        # the record's id key, e.g. "sweep_id"
    noun: str                            # how messages name one, e.g. "sweep"
    error: type[Exception] = ValueError  # raised for a bad or missing id

    def path(self, store: RunStore, record_id: str) -> Path:
        if not isinstance(record_id, str) or not _ID.match(record_id) or ".." in record_id:
            raise self.error(f"Invalid {self.noun} id {record_id!r}.")
        return store.root / self.folder / f"{record_id}.json"

    def fresh_id(self, store: RunStore, stem: str) -> str:
        """``stem`` and random digits that no record has: two groups queued in the same second (a classroom) must
        not write over each other's record."""
        return claim_id(stem, lambda record_id: not self.path(store, record_id).exists())

    def write(self, store: RunStore, record_id: str, data: dict[str, Any]) -> None:
        atomic_write_json(self.path(store, record_id), data)

    def read(self, store: RunStore, record_id: str) -> dict[str, Any]:
        data = read_json(self.path(store, record_id), None)
        if not isinstance(data, dict):
            raise self.error(f"{self.noun.capitalize()} {record_id!r} does not exist in {store.root}.")
        return data

    def all(self, store: RunStore) -> list[dict[str, Any]]:
        """Every readable record of this kind (damaged or foreign files are skipped), in no order."""
        folder = store.root / self.folder
        if not folder.is_dir():
            return []
        records = (read_json(path, None) for path in folder.glob("*.json"))
        return [r for r in records if isinstance(r, dict) and isinstance(r.get(self.id_field), str)]
