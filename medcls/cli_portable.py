"""``python -m medcls export`` and ``import``: a run as a TorchScript model or a .zip another medcls can import."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import _store, command

__all__ = ["add_portable_parsers"]


def add_portable_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="Export a finished run: a TorchScript model with predict.py (needs only torch, "
                                      "Pillow and numpy), or a .zip of the run for another medcls.")
    p.add_argument("run", help="Run id (see 'runs').")
    p.add_argument("--format", choices=["torchscript", "zip"], default="torchscript",
                   help="torchscript: a folder with model.pt, classes.json and predict.py; zip: the run folder.")
    p.add_argument("--out", required=True, help="The folder (torchscript) or .zip file (zip) to write.")
    p = sub.add_parser("import", help="Import a run .zip exported by medcls (checked before anything is kept).")
    p.add_argument("zip", help="The .zip file.")


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    store = _store(args)
    out = Path(args.out)
    if args.format == "torchscript":
        from .inference.export import export_torchscript

        folder = export_torchscript(store, args.run, out)
        print(f"wrote {folder / 'model.pt'}, classes.json and predict.py; try: python {folder / 'predict.py'} IMAGE")
        return 0
    from .atomic import atomic_write_bytes
    from .runs.portable import export_run_zip

    atomic_write_bytes(out, export_run_zip(store, args.run))
    print(f"wrote {out}; import it elsewhere with: python -m medcls import {out.name}")
    return 0


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    from .runs.portable import import_run_zip

    store = _store(args)
    run_id = import_run_zip(store, Path(args.zip).read_bytes(), Path(args.zip).name)
    print(f"imported run {run_id} ({store.summary(run_id).name}) into {store.root}")
    return 0
