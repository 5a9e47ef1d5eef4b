"""``make test`` runs two test processes with ``--dist loadgroup``: the browser tests (and the modules that train
one run in a module fixture) must each stay in one process. pytest 9.2 silently broke that grouping in
pytest-xdist 3.8 (pytest-xdist issue 1386: tests spread over both processes, two app servers and browsers
competing); this checks that the pinned pair still groups."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("xdist", reason="pytest-xdist is not installed")


@pytest.mark.slow  # starts pytest and its two worker processes
def test_an_xdist_group_runs_in_one_test_process(tmp_path):
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent("""
        import os
        import pytest

        pytestmark = pytest.mark.xdist_group("together")

        @pytest.mark.parametrize("i", range(6))
        def test_one(i):
            print("worker", os.environ["PYTEST_XDIST_WORKER"])
    """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p",
                           "no:cacheprovider", "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    workers = re.findall(r"\[(gw\d)\] .*PASSED", done.stdout)
    assert len(workers) == 6, done.stdout
    assert len(set(workers)) == 1, f"one group ran in several processes: {sorted(set(workers))}\n{done.stdout}"
