"""Where medcls keeps things, and which folders it may read.

All locations can be moved with environment variables, which is how tests,
CI and servers isolate themselves:

- ``MEDCLS_RUNS_DIR``: the run store (default ``./runs``).
- ``MEDCLS_CACHE_DIR``: decoded images, the synthetic dataset (default ``~/.cache/medcls``).
- ``MEDCLS_DATA_DIR``: where the app extracts uploaded datasets (default ``./data``).
- ``MEDCLS_DATA_ROOTS``: optional list of folders (``os.pathsep``-separated). When set,
  datasets outside them are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["runs_dir", "cache_dir", "data_dir", "allowed_data_roots", "check_allowed_path", "PathNotAllowedError"]


class PathNotAllowedError(PermissionError):
    """A dataset path lies outside the folders this server may read."""


def runs_dir() -> Path:
    return Path(os.environ.get("MEDCLS_RUNS_DIR") or "runs").expanduser()


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medcls"
    return Path(os.environ.get("MEDCLS_CACHE_DIR") or default).expanduser()


def data_dir() -> Path:
    return Path(os.environ.get("MEDCLS_DATA_DIR") or "data").expanduser()


def allowed_data_roots() -> list[Path]:
    """The folders datasets may come from; empty means no restriction."""
    raw = os.environ.get("MEDCLS_DATA_ROOTS", "")
    roots = [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]
    if roots:
        # The app's own upload folder and the synthetic data are always allowed.
        roots += [data_dir().resolve(), cache_dir().resolve()]
    return roots


def check_allowed_path(path: Path | str) -> Path:
    """Resolve ``path`` and refuse it when it lies outside the allowed data roots."""
    resolved = Path(path).expanduser().resolve()
    roots = allowed_data_roots()
    if roots and not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots[:-2])
        raise PathNotAllowedError(
            f"{path} is outside the folders this server may read ({shown}). "
            "Copy the data under one of them, or ask the administrator to extend MEDCLS_DATA_ROOTS.")
    return resolved
