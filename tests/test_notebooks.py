"""The notebook series stays diffable, paired with its sources, and in reading order.

Each notebook lives twice in ``notebooks/``: a jupytext ``py:percent`` source (``NN_name.py``, what a
reviewer reads in a diff) and the ``.ipynb`` that Jupyter opens, committed without outputs. Edit
either one and run ``jupytext --sync notebooks/NN_name.py`` (it keeps the cell ids) to update the
other. These tests check the files only; executing the notebooks is ``pytest --nbmake notebooks/``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
NAME = re.compile(r"(\d{2})_[a-z0-9]+(_[a-z0-9]+)*")  # 01_naive_attention


def _id(path: Path) -> str:
    return path.name


def test_series_exists():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_committed_without_outputs(path):
    """Outputs (embedded PNGs above all) make huge, unreviewable diffs: commit notebooks stripped."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}: cell {i} has outputs; clear them before committing"
        assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_id)
def test_notebook_matches_its_percent_source(path):
    """The .ipynb and its py:percent source hold the same cells, so a diff of the .py is the truth."""
    source = path.with_suffix(".py")
    assert source.exists(), f"{path.name}: no paired {source.name}; create it with " \
                            f"`jupytext --set-formats ipynb,py:percent {path}`"
    nb = nbformat.read(path, as_version=4)
    text = jupytext.read(source)
    cells_nb = [(c.cell_type, c.source) for c in nb.cells]
    cells_py = [(c.cell_type, c.source) for c in text.cells]
    assert len(cells_nb) == len(cells_py), \
        f"{path.name}: {len(cells_nb)} cells, {source.name}: {len(cells_py)}; run `jupytext --sync {source}`"
    for i, (a, b) in enumerate(zip(cells_nb, cells_py)):
        assert a == b, f"{path.name} and {source.name} differ at cell {i}; run `jupytext --sync {source}`"


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_every_source_has_its_notebook(source):
    assert source.with_suffix(".ipynb").exists(), \
        f"{source.name}: no {source.with_suffix('.ipynb').name}; run `jupytext --to ipynb {source}`"


def test_numbered_in_reading_order():
    """Names are NN_snake_case, numbered 01, 02, ... with no gap and no repeat."""
    numbers = []
    for path in NOTEBOOKS:
        match = NAME.fullmatch(path.stem)
        assert match, f"{path.name}: expected a name like 01_naive_attention.ipynb"
        numbers.append(int(match.group(1)))
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)), f"notebook numbers {numbers}"


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_figures_stay_inline(source):
    """nbmake embeds figures through the inline backend; forcing Agg in a notebook would hide them."""
    text = source.read_text()
    assert "matplotlib.use(" not in text and "MPLBACKEND" not in text, \
        f"{source.name}: leave the matplotlib backend alone"
