"""The CSV files under ``benchmarks/results/``, written and read one way by every benchmark.

A file starts with one comment line of metadata, ``# device=..., date=..., torch=..., triton=...``
(plus what a benchmark adds), may carry further ``#`` lines of free text (checks it ran, units),
then a header and the rows. Timings from a shared machine mean little without the device, the
date and the versions beside them. The start that every measuring run shares (a GPU with
compiled kernels, an output folder) is here too.
"""

from __future__ import annotations

import csv
import datetime as dt
import sys
from pathlib import Path


def require_gpu(script: str) -> None:
    """Exit with one line unless CUDA is here and the kernels compile for it (a timing of Triton's
    interpreter would mean nothing)."""
    import torch

    import kernels

    if not torch.cuda.is_available() or kernels.INTERPRET or not kernels.HAS_TRITON:
        here = ("Triton is not installed" if not kernels.HAS_TRITON
                else "the interpreter" if kernels.INTERPRET else "no CUDA")
        sys.exit(f"{script}: needs a CUDA GPU with compiled Triton (here: {here})")


def start_gpu_run(parser, out: Path | None, script: str, alternative: str | None = None) -> None:
    """The common start of a benchmark that writes results: ``--out`` given (``alternative``
    names the flag that needs no GPU and no --out), a GPU (:func:`require_gpu`), the folder made."""
    if out is None:
        parser.error("--out is required" + (f" (unless {alternative})" if alternative else ""))
    require_gpu(script)
    out.mkdir(parents=True, exist_ok=True)


def run_meta(**extra) -> dict:
    """Device, date and versions of this run (CUDA needed), then ``extra``."""
    import torch
    import triton

    return dict(device=torch.cuda.get_device_name(), date=dt.date.today().isoformat(),
                torch=torch.__version__, triton=triton.__version__, **extra)


def write_csv(path: Path, meta: dict, rows: list[dict], comments=(), fields=None) -> None:
    """The metadata line (values must not contain ``", "``, its separator), one ``#`` line per
    comment, the header (``fields``, default the keys of the first row) and the rows."""
    with open(path, "w", newline="") as f:
        f.write("# " + ", ".join(f"{k}={v}" for k, v in meta.items()) + "\n")
        f.writelines(f"# {line}\n" for line in comments)
        writer = csv.DictWriter(f, fieldnames=list(fields or rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> tuple[dict, list[dict], list[str]]:
    """``(meta, rows, comments)`` of a file written by :func:`write_csv`; values stay strings.
    Items of the metadata line without ``=`` (older files) are left out of ``meta``."""
    lines = Path(path).read_text().splitlines()
    comments = [line[1:].strip() for line in lines if line.startswith("#")]
    meta = dict(item.split("=", 1) for item in (comments[0] if comments else "").split(", ") if "=" in item)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    return meta, rows, comments[1:]


def shape_bars(path: Path, shapes, series: dict, meta: dict, *, ylabel: str, title: str,
               ylim: float | None = None, ncol: int = 3) -> Path:
    """Grouped bars saved to ``path``: one group per ``(head_dim, causal, seqlen)`` shape (CSV
    strings), one bar per entry of ``series`` (label: a ratio per shape), 1.0 drawn, the run's
    ``meta`` written underneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.8 / len(series)
    for i, (label, ys) in enumerate(series.items()):
        ax.bar([x + (i - (len(series) - 1) / 2) * width for x in range(len(shapes))], ys, width,
               label=label)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels([f"d={d}\n{'causal' if c == '1' else 'full'}\nN={int(n) // 1024}k"
                        for d, c, n in shapes], fontsize=8)
    if ylim is not None:
        ax.set_ylim(0, ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=ncol, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.text(0.01, 0.01, ", ".join(f"{k}={v}" for k, v in meta.items()), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
