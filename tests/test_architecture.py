"""The library stays independent of Streamlit: no imports in the source, none at run time."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medcls"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value))
    return names


def test_the_scanner_sees_streamlit_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import streamlit as st\nfrom streamlit.runtime import x\n"
                      "def f():\n    import importlib\n    importlib.import_module('streamlit')\n")
    assert {"streamlit", "streamlit.runtime"} <= _imported_modules(sample)


def test_no_library_module_imports_streamlit():
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    offenders = {}
    for path in sources:
        bad = sorted(m for m in _imported_modules(path) if m == "streamlit" or m.startswith("streamlit."))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_importing_every_library_module_does_not_load_streamlit():
    script = """
import importlib, json, pkgutil, sys
import medcls
failed = {}
for info in pkgutil.walk_packages(medcls.__path__, "medcls."):
    if info.name.endswith("__main__"):
        continue
    try:
        importlib.import_module(info.name)
    except ImportError as exc:  # an optional extra (e.g. a cluster backend) that is not installed
        failed[info.name] = str(exc)
print(json.dumps({"streamlit": sorted(m for m in sys.modules if m == "streamlit" or m.startswith("streamlit.")),
                  "failed": failed, "imported": sorted(m for m in sys.modules if m.startswith("medcls"))}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["streamlit"] == []
    expected = {"medcls.training.pipeline", "medcls.jobs.manager", "medcls.figures.training", "medcls.cli"}
    assert expected <= set(result["imported"])
    assert not any("streamlit" in msg for msg in result["failed"].values())
    core = {"medcls.training.pipeline", "medcls.runs.store", "medcls.inference.predictor", "medcls.data.sources",
            "medcls.models.resnet"}
    assert not core & set(result["failed"]), result["failed"]


def _sources(*folders: str) -> list[Path]:
    return [p for folder in folders for p in (ROOT / folder).rglob("*.py")] + [ROOT / "streamlit_app.py"]


def test_only_the_settings_module_reads_environment_variables():
    offenders = [str(p.relative_to(ROOT)) for p in _sources("medcls", "app", "app_pages")
                 if p != PACKAGE / "settings.py" and re.search(r"os\.environ|os\.getenv|getenv\(", p.read_text())]
    assert offenders == []


def test_the_library_is_grouped_by_concern():
    top_level = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__", "__main__", "atomic", "settings"]
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert packages == ["analysis", "bench", "cli", "config", "data", "experiments", "figures", "inference", "jobs",
                        "models", "runs", "training"]
    names = [p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"]
    assert "utils.py" not in names
    assert max(len((p.read_text()).splitlines()) for p in PACKAGE.rglob("*.py")) < 500  # one concept per module


def test_pages_live_outside_a_pages_folder_so_streamlit_never_runs_them_alone():
    # A folder named pages/ beside the entry file would make Streamlit run a page without the navigation.
    assert not (ROOT / "pages").exists()
    assert "app_pages/" in (ROOT / "streamlit_app.py").read_text()


def test_pages_and_the_app_index_no_raw_run_files():
    offenders = [str(p.relative_to(ROOT)) for p in _sources("app", "app_pages")
                 if re.search(r"read_json|\.json\"|metrics\.json|model\.json|history\.jsonl", p.read_text())]
    assert offenders == []
