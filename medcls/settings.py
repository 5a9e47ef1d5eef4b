"""Where medcls keeps things, and which folders it may read.

All locations can be moved with environment variables, which is how tests,
CI and servers isolate themselves:

- ``MEDCLS_RUNS_DIR``: the run store (default ``./runs``).
- ``MEDCLS_CACHE_DIR``: decoded images, the synthetic dataset (default ``~/.cache/medcls``).
- ``MEDCLS_DATA_DIR``: where the app extracts uploaded datasets (default ``./data``).
- ``MEDCLS_DATA_ROOTS``: optional list of folders (``os.pathsep``-separated). When set,
  datasets outside them are refused.
- ``MEDCLS_MAX_CONCURRENT``, ``MEDCLS_WORKER_THREADS``, ``MEDCLS_BACKEND`` and ``MEDCLS_RAY_*``: how the
  app's job manager runs training (see docs/scaling.md); ``MEDCLS_DIST_TIMEOUT_S`` for torchrun.

This is the only module that reads environment variables; everything else asks it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, MutableMapping

__all__ = ["runs_dir", "cache_dir", "data_dir", "allowed_data_roots", "check_allowed_path", "PathNotAllowedError",
           "SettingsError", "max_concurrent", "worker_threads", "backend_name", "ray_settings", "dist_timeout_s",
           "environment"]


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


class SettingsError(ValueError):
    """An environment variable holds a value medcls cannot use; the message names it and a good value."""


def _number(name: str, default: float, kind: type = float, *, minimum: float | None = None) -> Any:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number; set it to e.g. "
                            f"{kind(default)!r}, or unset it.") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={raw!r} must be at least {minimum:g}.")
    return value


def max_concurrent() -> int:
    """Runs the app's local job manager trains at once (``MEDCLS_MAX_CONCURRENT``, default 1)."""
    return _number("MEDCLS_MAX_CONCURRENT", 1, int, minimum=1)


def worker_threads() -> int:
    """torch threads per training process (``MEDCLS_WORKER_THREADS``; 0 = the cores other processes leave free,
    checked again after every epoch, or a Ray run's CPUs)."""
    return _number("MEDCLS_WORKER_THREADS", 0, int, minimum=0)


def backend_name() -> str:
    """Where the app's runs train: 'local' (default) or 'ray' (``MEDCLS_BACKEND``)."""
    name = (os.environ.get("MEDCLS_BACKEND") or "local").strip().lower()
    if name not in ("local", "ray"):
        raise SettingsError(f"MEDCLS_BACKEND={name!r} is not a backend: use 'local' (the default) or 'ray'.")
    return name


def ray_settings() -> dict[str, Any]:
    """The Ray backend's settings (``MEDCLS_RAY_ADDRESS``, ``_CPUS_PER_RUN``, ``_GPUS_PER_RUN``, ``_MEMORY_MB``,
    ``_NICE`` and ``MEDCLS_WORKER_THREADS``)."""
    return {"address": (os.environ.get("MEDCLS_RAY_ADDRESS") or "").strip() or None,
            "cpus_per_run": _number("MEDCLS_RAY_CPUS_PER_RUN", 1.0),
            "gpus_per_run": _number("MEDCLS_RAY_GPUS_PER_RUN", 0.0),
            "memory_mb": _number("MEDCLS_RAY_MEMORY_MB", 0, int),
            "nice": _number("MEDCLS_RAY_NICE", 10, int),
            "threads": _number("MEDCLS_WORKER_THREADS", 0, int)}


def dist_timeout_s(default: float = 1800.0) -> float:
    """How long a torchrun rank waits for the others in one collective (``MEDCLS_DIST_TIMEOUT_S``)."""
    return _number("MEDCLS_DIST_TIMEOUT_S", default, float, minimum=1)


def environment() -> MutableMapping[str, str]:
    """The process environment, for code that must pass it on (worker processes), read a launcher's variables
    (torchrun's RANK and WORLD_SIZE, Ray's own settings) or set them for a library (Ray)."""
    return os.environ
