"""Execute the notebooks top to bottom; log each one's wall time, pass or fail, and its error.

CI executes every notebook on a CPU (``pytest --nbmake``), where the kernels run in Triton's
interpreter at small sizes. On a GPU the same notebooks take other branches (larger sizes, live
timings, claims asserted for a GPU), which CI never reaches: after changing a notebook that calls a
kernel, run this on a GPU. It needs no GPU itself, so it runs (and is tested) on a CPU too.

Each notebook runs in one of two ways (``--mode``; ``auto`` takes the first that is installed):

* ``nbclient``: the ``.ipynb`` in a ``python3`` Jupyter kernel, with the notebook's folder as the
  working directory and a timeout per cell, as Jupyter and nbmake run it;
* ``script``: the py:percent source (``NN_name.py``; the code cells of the ``.ipynb`` where there is
  none) run by this Python in the notebook's folder, with ``MPLBACKEND=Agg`` since no display is
  there. The source is executed from ``python -c``, not as ``python NN_name.py``: a script's
  ``__main__`` has a file, which processes started by ``spawn`` (the ranks of notebook 11) import,
  so they would run the whole notebook again; the ``__main__`` of a Jupyter kernel has none, nor
  has that of ``python -c``. The time limit is the per-cell timeout times the number of code cells.

Writes, to ``--out`` (default ``benchmarks/results/<device>/``, the device named as ``make bench``
names it: ``h100``, ``h200``, ``cpu``), ``run_notebooks.log`` (per notebook: status, seconds, and
for a failure the end of its traceback), ``run_notebooks.csv`` (through ``results_csv.write_csv``:
device, date and versions first) and ``notebooks/NN_name.txt`` (the text the notebook printed:
what a reader on that machine sees, figures left out), all rewritten after every notebook; prints
a summary table. Exits with status 1 if any notebook failed.

Usage: ``python -m benchmarks.run_notebooks`` (every notebook in ``notebooks/``), or with names:
``python -m benchmarks.run_notebooks 01 10_linear_attention notebooks/11_beyond_one_gpu.ipynb
--out /tmp/nbrun``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.results_csv import run_meta, write_csv

ROOT = Path(__file__).resolve().parents[1]

NOTEBOOKS = ROOT / "notebooks"
LOG_NAME, CSV_NAME = "run_notebooks.log", "run_notebooks.csv"
OUTPUT_DIR = "notebooks"  # under --out: what each notebook printed, NN_name.txt
FIELDS = ["notebook", "mode", "status", "seconds", "error"]
TRACEBACK_LINES = 40  # of a failure's output, in the log
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the colours of IPython's tracebacks
# Run in the notebook's folder by `python -c`: the source executes in the real __main__ module,
# which has no __file__ (see the module docstring), as in a Jupyter kernel.
SCRIPT_RUNNER = ("import sys, __main__; path = sys.argv[1]; sys.argv = [path]; "
                 "exec(compile(open(path, encoding='utf-8').read(), path, 'exec'), __main__.__dict__)")


@dataclass(frozen=True)
class Notebook:
    name: str  # the stem, 01_naive_attention
    folder: Path  # where it runs
    ipynb: Path | None
    source: Path | None  # the paired py:percent source


@dataclass(frozen=True)
class Result:
    notebook: str
    mode: str
    passed: bool
    seconds: float
    error: str = ""  # the error's last line
    details: str = ""  # the end of the traceback or of the output, for the log
    output: str = ""  # what the notebook printed (text only)


# ----------------------------------------------------------------------------------------------
# Which notebooks
# ----------------------------------------------------------------------------------------------
def _notebook(folder: Path, stem: str) -> Notebook:
    ipynb, source = folder / f"{stem}.ipynb", folder / f"{stem}.py"
    return Notebook(stem, folder, ipynb if ipynb.is_file() else None, source if source.is_file() else None)


def find_notebooks(names: list[str], folder: Path) -> list[Notebook]:
    """Every notebook of ``folder`` (an ``.ipynb``, or a py:percent source without one), or those
    named: a path, a stem, or a stem's beginning (``01``) that matches one notebook of ``folder``."""
    stems = sorted({p.stem for p in folder.glob("*.ipynb")}
                   | {p.stem for p in folder.glob("*.py") if _is_percent_source(p)})
    if not names:
        return [_notebook(folder, stem) for stem in stems]
    found = []
    for name in names:
        path = Path(name)
        if path.suffix in (".ipynb", ".py") and path.is_file():
            found.append(_notebook(path.resolve().parent, path.stem))
            continue
        matches = [s for s in stems if s == path.stem] or [s for s in stems if s.startswith(path.stem)]
        if len(matches) != 1:
            raise SystemExit(f"run_notebooks: {name!r} matches {len(matches)} notebooks of {folder} "
                             f"({', '.join(matches) or 'none'}); name one of: {', '.join(stems)}")
        found.append(_notebook(folder, matches[0]))
    return found


def _is_percent_source(path: Path) -> bool:
    head = path.read_text(encoding="utf-8", errors="replace")[:2000]
    return "format_name: percent" in head or "\n# %%" in head


# ----------------------------------------------------------------------------------------------
# Running one
# ----------------------------------------------------------------------------------------------
def last_line(text: str) -> str:
    lines = [line.strip() for line in ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def tail(text: str, n: int = TRACEBACK_LINES) -> str:
    return "\n".join(ANSI.sub("", text).rstrip().splitlines()[-n:])


def run_nbclient(nb: Notebook, timeout: int) -> Result:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    if nb.ipynb is not None:
        notebook = nbformat.read(nb.ipynb, as_version=4)
    else:  # only the py:percent source
        import jupytext

        notebook = jupytext.read(nb.source)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(nb.folder)}})
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:  # a cell raised: its traceback ends in the exception's line
        seconds = time.perf_counter() - t0
        failed = next((i for i, c in enumerate(code_cells, 1)
                       if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = f"code cell {failed} of {len(code_cells)}" if failed else "a cell"
        return Result(nb.name, "nbclient", False, seconds, last_line(str(e)), f"in {where}:\n{tail(str(e))}",
                      printed(code_cells))
    except Exception as e:  # noqa: BLE001 -- a timeout, a dead kernel, a kernel that never started
        seconds = time.perf_counter() - t0
        message = f"{type(e).__name__}: {e}"
        return Result(nb.name, "nbclient", False, seconds, last_line(message), tail(message),
                      printed(code_cells))
    return Result(nb.name, "nbclient", True, time.perf_counter() - t0, output=printed(code_cells))


def printed(code_cells) -> str:
    """The text outputs of the executed cells (streams, plain-text results, tracebacks)."""
    parts = []
    for i, cell in enumerate(code_cells, 1):
        texts = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                texts.append(o.get("text", ""))
            elif o.get("output_type") == "error":
                texts.append("\n".join(o.get("traceback", [])) + "\n")
            elif "text/plain" in o.get("data", {}) and "image/png" not in o.get("data", {}):
                texts.append(o["data"]["text/plain"] + "\n")
        if texts:
            parts.append(f"# --- code cell {i} ---\n" + ANSI.sub("", "".join(texts)))
    return "".join(parts)


def script_code(nb: Notebook) -> tuple[str, int]:
    """The code to run and its number of code cells: the py:percent source as it is (the markdown
    cells are comments), else the code cells of the .ipynb."""
    if nb.source is not None:
        text = nb.source.read_text(encoding="utf-8")
        cells = sum(1 for line in text.splitlines()
                    if line.startswith("# %%") and "[markdown]" not in line and "[md]" not in line)
        return text, max(cells, 1)
    cells = [c for c in json.loads(nb.ipynb.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells]
    return "\n\n".join(sources) + "\n", max(len(cells), 1)


def run_script(nb: Notebook, timeout: int) -> Result:
    code, n_cells = script_code(nb)
    limit = timeout * n_cells
    with tempfile.TemporaryDirectory() as tmp:
        path = nb.source if nb.source is not None else Path(tmp) / f"{nb.name}.py"
        if nb.source is None:
            path.write_text(code, encoding="utf-8")
        # its own process group: on a timeout the notebook's own children (ranks, workers) go too
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT_RUNNER, str(path)], cwd=nb.folder,
                                env={**os.environ, "MPLBACKEND": "Agg"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        t0 = time.perf_counter()
        try:
            stdout, stderr = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            seconds = time.perf_counter() - t0
            message = f"timed out after {limit} s ({n_cells} code cells x {timeout} s)"
            return Result(nb.name, "script", False, seconds, message, tail(stdout + stderr),
                          both(stdout, stderr))
    seconds = time.perf_counter() - t0
    if proc.returncode == 0:
        return Result(nb.name, "script", True, seconds, output=both(stdout, stderr))
    error = last_line(stderr) or f"exit status {proc.returncode}"
    return Result(nb.name, "script", False, seconds, error,
                  f"exit status {proc.returncode}; the end of stderr:\n{tail(stderr)}", both(stdout, stderr))


def both(stdout: str, stderr: str) -> str:
    return stdout + (f"\n# --- stderr ---\n{stderr}" if stderr.strip() else "")


# ----------------------------------------------------------------------------------------------
# Where, and what was found
# ----------------------------------------------------------------------------------------------
def machine() -> tuple[dict, str]:
    """The CSV's metadata (device, date, versions) and the short device name of the default
    folder, as ``make bench`` names it (NVIDIA H200 -> h200; cpu without CUDA)."""
    import torch

    if torch.cuda.is_available():
        meta = run_meta()
        return meta, meta["device"].split()[1].lower()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    meta = dict(device=f"cpu ({platform.machine()})", date=dt.date.today().isoformat(),
                torch=torch.__version__, triton=triton_version)
    return meta, "cpu"


def pick_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    have = all(importlib.util.find_spec(m) is not None for m in ("nbclient", "nbformat", "ipykernel"))
    return "nbclient" if have else "script"


def write_results(out: Path, meta: dict, results: list[Result], comments: list[str]) -> None:
    rows = [dict(notebook=r.notebook, mode=r.mode, status="passed" if r.passed else "failed",
                 seconds=f"{r.seconds:.1f}", error=r.error) for r in results]
    write_csv(out / CSV_NAME, meta, rows, comments=comments, fields=FIELDS)
    lines = ["# " + ", ".join(f"{k}={v}" for k, v in meta.items()), *(f"# {c}" for c in comments)]
    for r in results:
        lines.append(f"{r.notebook}: {'passed' if r.passed else 'FAILED'} in {r.seconds:.1f} s ({r.mode})")
        if not r.passed:
            lines.append(f"    error: {r.error}")
            lines.extend("    | " + line for line in r.details.splitlines())
    (out / LOG_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / OUTPUT_DIR).mkdir(exist_ok=True)
    for r in results:
        (out / OUTPUT_DIR / f"{r.notebook}.txt").write_text(r.output, encoding="utf-8")


def summary(results: list[Result]) -> str:
    width = max([len("notebook")] + [len(r.notebook) for r in results])
    lines = [f"{'notebook':<{width}}  {'mode':<8}  {'status':<6}  {'seconds':>8}  error"]
    for r in results:
        lines.append(f"{r.notebook:<{width}}  {r.mode:<8}  {'passed' if r.passed else 'FAILED':<6}  "
                     f"{r.seconds:>8.1f}  {r.error[:100]}")
    failed, seconds = sum(not r.passed for r in results), sum(r.seconds for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed in {seconds:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*",
                        help="notebooks to run: paths, names or their beginnings (01); default all")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS,
                        help=f"where names are looked up (default {NOTEBOOKS.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the log and the CSV (default benchmarks/results/<device>)")
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds per cell (default 600, as the test suite's --nbmake-timeout)")
    parser.add_argument("--mode", choices=("auto", "nbclient", "script"), default="auto",
                        help="auto: nbclient where nbclient and ipykernel are installed, else script")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.notebooks, args.notebooks_dir.resolve())
    if not notebooks:
        parser.error(f"no notebooks in {args.notebooks_dir}")
    mode = pick_mode(args.mode)
    meta, short = machine()
    meta["mode"] = mode
    out = args.out if args.out is not None else ROOT / "benchmarks" / "results" / short
    out.mkdir(parents=True, exist_ok=True)
    comments = [f"python {platform.python_version()}; timeout {args.timeout} s per cell; "
                f"python -m benchmarks.run_notebooks {' '.join(args.notebooks) or '(all)'}"]
    print(f"{len(notebooks)} notebooks, {mode} mode, on {meta['device']}; log and CSV in {out}", flush=True)

    run = run_nbclient if mode == "nbclient" else run_script
    results = []
    for nb in notebooks:
        print(f"{nb.name} ...", end=" ", flush=True)
        if mode == "nbclient" and nb.ipynb is None and importlib.util.find_spec("jupytext") is None:
            result = Result(nb.name, mode, False, 0.0, f"no {nb.name}.ipynb to run (and no jupytext to read "
                                                       f"{nb.name}.py)")
        else:
            result = run(nb, args.timeout)
        results.append(result)
        print(f"{'passed' if result.passed else 'FAILED'} in {result.seconds:.1f} s"
              + ("" if result.passed else f": {result.error}"), flush=True)
        write_results(out, meta, results, comments)
    print(summary(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
