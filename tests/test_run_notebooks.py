"""benchmarks/run_notebooks.py on two tiny generated notebooks, one that passes and one that fails:
the exit status, the CSV (device and date first, one row per notebook) and the log, in both modes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import run_notebooks
from benchmarks.results_csv import read_csv

ROOT = Path(__file__).resolve().parents[1]
CELLS = {"01_passes": ["x = 1 + 1\nprint('x is', x)", "assert x == 2"],
         "02_fails": ["print('before the error')", "assert 1 + 1 == 3, 'arithmetic is broken'",
                      "print('never reached')"]}
HAVE_NBCLIENT = all(importlib.util.find_spec(m) for m in ("nbclient", "nbformat", "ipykernel"))
MODES = ["script", pytest.param("nbclient", marks=pytest.mark.skipif(not HAVE_NBCLIENT,
                                                                     reason="nbclient is not installed"))]


@pytest.fixture
def notebooks(tmp_path):
    """Each notebook twice, as in notebooks/: a py:percent source and its .ipynb."""
    folder = tmp_path / "nb"
    folder.mkdir()
    for name, cells in CELLS.items():
        (folder / f"{name}.py").write_text("".join(f"# %%\n{c}\n\n" for c in cells))
        ipynb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {},
                            "outputs": [], "source": c} for i, c in enumerate(cells)],
                 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                 "nbformat": 4, "nbformat_minor": 5}
        (folder / f"{name}.ipynb").write_text(json.dumps(ipynb))
    return folder


@pytest.mark.parametrize("mode", MODES)
def test_one_passes_one_fails(notebooks, tmp_path, mode, capsys):
    out = tmp_path / "out"
    code = run_notebooks.main(["--notebooks-dir", str(notebooks), "--out", str(out), "--mode", mode, "--timeout", "60"])
    printed = capsys.readouterr().out
    print(printed)
    assert code == 1  # one notebook failed
    meta, rows, _ = read_csv(out / "run_notebooks.csv")
    assert meta["device"] and meta["date"].startswith("20") and meta["mode"] == mode
    assert [(r["notebook"], r["status"]) for r in rows] == [("01_passes", "passed"), ("02_fails", "failed")]
    assert rows[0]["error"] == "" and float(rows[0]["seconds"]) >= 0
    assert rows[1]["error"] == "AssertionError: arithmetic is broken"
    log = (out / "run_notebooks.log").read_text()
    assert "01_passes: passed" in log and "02_fails: FAILED" in log and "arithmetic is broken" in log
    assert "1 passed, 1 failed" in printed


def test_exit_status_of_the_command(notebooks, tmp_path):
    """The command line (``python -m benchmarks.run_notebooks`` from the repository root): a name's
    beginning picks one notebook; all passed is exit status 0."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.run_notebooks", "01", "--notebooks-dir",
                             str(notebooks), "--out", str(tmp_path / "out"), "--mode", "script"],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    _, rows, _ = read_csv(tmp_path / "out" / "run_notebooks.csv")
    assert [r["notebook"] for r in rows] == ["01_passes"]
    assert "1 passed, 0 failed" in result.stdout
