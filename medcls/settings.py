"""Where medcls keeps things, and which folders it may read.

All locations can be moved with environment variables, which is how tests,
CI and servers isolate themselves:

- ``MEDCLS_RUNS_DIR``: the run store (default ``./runs``).
- ``MEDCLS_CACHE_DIR``: decoded images, the synthetic dataset (default ``~/.cache/medcls``).
- ``MEDCLS_DATA_DIR``: where the app extracts uploaded datasets (default ``./data``).
- ``MEDCLS_DATA_ROOTS``: optional list of folders (``os.pathsep``-separated). When set,
  datasets outside them are refused.
- ``MEDCLS_EXPOSED``: set (by the app, or by an operator behind a proxy) when people on other
  machines can reach the app. Then, unless ``MEDCLS_ALLOW_SERVER_FOLDERS=1``, datasets may
  only come from the upload folder and ``MEDCLS_DATA_ROOTS``, and messages shown in the app
  name folders by their setting (``DATA_DIR/...``) rather than by their full server path.
- ``MEDCLS_UPLOAD_QUOTA_MB``: how much disk uploaded datasets may use (default 2048); the
  oldest unused uploads are removed first when a new one needs room.
- ``MEDCLS_INSTRUCTOR_SECRET``: the instructor's secret (who enters it may stop, rename and delete anyone's
  runs); ``MEDCLS_OWN_RUNS_ONLY=1``: people see only their own runs; ``MEDCLS_QUEUE_LIMIT``: queued runs per
  person (see medcls/runs/permissions.py). The app loads Streamlit secrets first, whose top-level keys Streamlit puts
  into the environment, so the secret may live in ``.streamlit/secrets.toml`` instead.
- ``MEDCLS_DEBUG``: errors in the app's pages are raised after their message (development, tests).
- ``MEDCLS_MAX_CONCURRENT``, ``MEDCLS_WORKER_THREADS``, ``MEDCLS_BACKEND``, ``MEDCLS_STANDBY_WORKER`` and
  ``MEDCLS_RAY_*``: how the app's job manager runs training (see docs/scaling.md); ``MEDCLS_DIST_TIMEOUT_S`` for
  torchrun.

This is the only module that reads environment variables; everything else asks it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any, MutableMapping

__all__ = ["runs_dir", "cache_dir", "data_dir", "uploads_dir", "allowed_data_roots", "check_allowed_path",
           "PathNotAllowedError", "SettingsError", "max_concurrent", "worker_threads", "backend_name", "ray_settings",
           "dist_timeout_s", "environment", "exposed", "mark_exposed", "is_loopback", "allow_server_folders",
           "redact_paths", "describe_folder", "upload_quota_mb", "debug", "instructor_secret", "own_runs_only",
           "queue_limit"]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class PathNotAllowedError(PermissionError):
    """A dataset path lies outside the folders this server may read."""


def runs_dir() -> Path:
    return Path(os.environ.get("MEDCLS_RUNS_DIR") or "runs").expanduser()


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medcls"
    return Path(os.environ.get("MEDCLS_CACHE_DIR") or default).expanduser()


def data_dir() -> Path:
    return Path(os.environ.get("MEDCLS_DATA_DIR") or "data").expanduser()


def uploads_dir() -> Path:
    """Where uploaded datasets are kept (inside the data folder)."""
    return data_dir() / "uploads"


def _configured_roots() -> list[Path]:
    raw = os.environ.get("MEDCLS_DATA_ROOTS", "")
    return [_resolve(Path(p).expanduser()) for p in raw.split(os.pathsep) if p.strip()]


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (RuntimeError, OSError):  # a symlink loop: the path as given (it matches nothing real)
        return path.absolute()


# --- who can reach this server --------------------------------------------------------------------------

def is_loopback(address: str | None) -> bool:
    """True for addresses only this machine can connect to (127.0.0.1, ::1, localhost); empty means every
    interface, so False."""
    address = (address or "").strip().strip("[]")
    if address.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def exposed() -> bool:
    """Whether people on other machines can reach the app (``MEDCLS_EXPOSED``, set by :func:`mark_exposed`)."""
    return (os.environ.get("MEDCLS_EXPOSED") or "").strip().lower() in _TRUE


def mark_exposed(address: str | None) -> bool:
    """Called by the app with the address it listens on: anything but loopback marks the server exposed, for
    this process and the training processes it starts. An operator's MEDCLS_EXPOSED=1 stays on."""
    if not is_loopback(address):
        os.environ["MEDCLS_EXPOSED"] = "1"
    return exposed()


def allow_server_folders() -> bool:
    """The operator's explicit yes to any server folder even on an exposed server (``MEDCLS_ALLOW_SERVER_FOLDERS``)."""
    return (os.environ.get("MEDCLS_ALLOW_SERVER_FOLDERS") or "").strip().lower() in _TRUE


def allowed_data_roots() -> list[Path]:
    """The folders datasets may come from; empty means no restriction.

    ``MEDCLS_DATA_ROOTS`` when set; on an exposed server without it only the upload folder. The app's own data
    folder (uploads) and the cache (the synthetic data) are always allowed when there are roots at all."""
    roots = _configured_roots()
    if roots or (exposed() and not allow_server_folders()):
        roots += [_resolve(data_dir()), _resolve(cache_dir())]
    return roots


def check_allowed_path(path: Path | str) -> Path:
    """Resolve ``path`` and refuse it when it lies outside the allowed data roots."""
    path = Path(path).expanduser()
    try:
        resolved = path.resolve()
    except RuntimeError:  # Python 3.11 raises for a loop of symbolic links
        raise PathNotAllowedError(f"{path} is a loop of symbolic links (a link that leads back to itself); "
                                  "point at the real folder.") from None
    roots = allowed_data_roots()
    if roots and not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        configured = _configured_roots()
        if configured:
            shown = ", ".join(describe_folder(r) for r in configured)
            raise PathNotAllowedError(
                f"{path} is outside the folders this server may read ({shown}). "
                "Copy the data under one of them, or ask the administrator to extend MEDCLS_DATA_ROOTS.")
        raise PathNotAllowedError(
            f"{path} is outside the folders this server may read: it can be reached from other machines, so "
            "datasets come from uploads only. Upload a .zip of class folders instead, or ask the administrator to "
            "list the data folders in MEDCLS_DATA_ROOTS.")
    return resolved


# --- naming folders in messages ---------------------------------------------------------------------------

def _named_folders() -> list[tuple[Path, str]]:
    """(folder, its setting's name), longest first, each in its given and its resolved spelling."""
    named = [(runs_dir(), "RUNS_DIR"), (uploads_dir(), "DATA_DIR/uploads"), (data_dir(), "DATA_DIR"),
             (cache_dir(), "CACHE_DIR")]
    named += [(root, f"DATA_ROOT_{i + 1}") for i, root in enumerate(_configured_roots())]
    out = []
    for folder, label in named:
        for spelling in {str(folder.expanduser().absolute()), str(_resolve(folder.expanduser()))}:
            if spelling not in ("/", ""):
                out.append((spelling.rstrip("/"), label))
    return sorted(out, key=lambda item: len(item[0]), reverse=True)


_ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[^\s/'\"`<>|]+/)+(?=[^\s/'\"`<>|]*)")


def redact_paths(text: str) -> str:
    """On an exposed server, ``text`` with server paths shortened: folders of medcls's settings by their
    setting's name (``DATA_DIR/uploads/set/benign``), any other absolute path to its last part (``…/x.png``).
    Unchanged on a server only this machine can reach."""
    if not exposed():
        return text
    for spelling, label in _named_folders():
        text = re.sub(re.escape(spelling) + r"(?=/|\b|$)", label, text)
    return _ABSOLUTE.sub("…/", text)


def describe_folder(folder: Path | str) -> str:
    """'RUNS_DIR (/srv/runs)' for a folder of medcls's settings; the path itself otherwise (redacted when
    exposed)."""
    folder = Path(folder)
    text = str(_resolve(folder.expanduser()))
    for spelling, label in _named_folders():
        if text == spelling or text.startswith(spelling + "/"):
            named = label + text[len(spelling):]
            return named if exposed() else f"{named} ({text})"
    return redact_paths(text)


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
    """torch threads per training process (``MEDCLS_WORKER_THREADS``; 0 = every core, one fewer while other
    processes keep a core busy, checked every second; or a Ray run's CPUs)."""
    return _number("MEDCLS_WORKER_THREADS", 0, int, minimum=0)


def standby_worker() -> bool:
    """Whether the app's local job manager keeps a training process warmed up for the next run
    (``MEDCLS_STANDBY_WORKER``, on by default; ``0`` turns it off, which saves the waiting process's memory, about
    0.75 GB, and delays each run's first epoch by about 4 s on a 2-core CPU)."""
    raw = (os.environ.get("MEDCLS_STANDBY_WORKER") or "1").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise SettingsError(f"MEDCLS_STANDBY_WORKER={raw!r} is neither on nor off: set it to 1 or 0, or unset it.")
    return raw in _TRUE


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


def upload_quota_mb() -> float:
    """Disk space uploaded datasets may use (``MEDCLS_UPLOAD_QUOTA_MB``, default 2048)."""
    return _number("MEDCLS_UPLOAD_QUOTA_MB", 2048.0, float, minimum=1)


def image_cache_mb() -> float:
    """Disk space the decoded-image cache may use (``MEDCLS_IMAGE_CACHE_MB``, default 4096); the least recently
    used datasets are removed first when it is full."""
    return _number("MEDCLS_IMAGE_CACHE_MB", 4096.0, float, minimum=0)


def instructor_secret() -> str:
    """The instructor's secret (``MEDCLS_INSTRUCTOR_SECRET``); empty: nobody in the app is an instructor."""
    return (os.environ.get("MEDCLS_INSTRUCTOR_SECRET") or "").strip()


def own_runs_only() -> bool:
    """``MEDCLS_OWN_RUNS_ONLY=1``: each person sees only their own runs (instructors see all). Off by default:
    in a classroom everyone sees and compares every run."""
    return (os.environ.get("MEDCLS_OWN_RUNS_ONLY") or "").strip().lower() in _TRUE


def queue_limit() -> int:
    """How many queued runs one person may have waiting at once (``MEDCLS_QUEUE_LIMIT``, default 16: the
    largest sweep, 4 values x 4 values)."""
    return _number("MEDCLS_QUEUE_LIMIT", 16, int, minimum=1)


def debug() -> bool:
    """``MEDCLS_DEBUG=1``: errors in pages are raised (after their message) instead of only shown (tests, dev)."""
    return (os.environ.get("MEDCLS_DEBUG") or "").strip().lower() in _TRUE


def environment() -> MutableMapping[str, str]:
    """The process environment, for code that must pass it on (worker processes), read a launcher's variables
    (torchrun's RANK and WORLD_SIZE, Ray's own settings) or set them for a library (Ray)."""
    return os.environ
