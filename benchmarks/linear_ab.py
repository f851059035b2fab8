r"""Same-run A/B of the chunked linear-attention kernel against an earlier version of it.

A change to ``kernels/linear_attn.py`` must not slow the kernel down, and timings from different
runs on a shared GPU drift: so the earlier version is loaded beside the current one and both are
timed in the same process, in interleaved rounds (``triton.testing.do_bench`` medians), forward
and forward+backward, bf16, 65,536 tokens per call, 4 heads, head dims 64/128, N = 1k/4k/16k,
RetNet form (decay 0.9) and elu1. Before timing, the two versions' outputs must be equal.

Make the earlier version from git, its relative imports pointed at the current package (for a
version from before the split of ``flash_attn.py``, such as ed7f7e5, the second expression points
its two grid helpers at ``kernels.tiles``)::

    git show REV:kernels/linear_attn.py | sed -e 's/from \.\([a-z_]*\) /from kernels.\1 /' \
        -e 's/flash_attn import _grid, _tile_ids/tiles import grid as _grid, tile_ids as _tile_ids/' > old.py
    python -m benchmarks.linear_ab --old old.py --out benchmarks/results/<device>

Prints the speed of the current version over the earlier one per shape (> 1: faster) and writes
``linear_ab.csv`` and ``linear_ab.png``. GPU only; ``--plot-only CSV`` redraws the figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch

from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv


def load(path: Path):
    spec = importlib.util.spec_from_file_location("old_linear_attn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", type=Path, help="the earlier kernels/linear_attn.py (see above)")
    p.add_argument("--plot-only", type=Path, metavar="CSV", help="redraw the figure from this CSV and exit")
    p.add_argument("--out", type=Path, help="directory for linear_ab.csv")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape [%(default)s]")
    args = p.parse_args(argv)
    if args.plot_only:
        plot(args.plot_only, args.plot_only.with_suffix(".png"))
        return
    if args.old is None:
        p.error("--old is required (unless --plot-only)")
    start_gpu_run(p, args.out, "linear_ab")
    import triton

    from kernels import linear_attention

    old = load(args.old).linear_attention
    torch.manual_seed(0)
    rows = []
    for d in (64, 128):
        for n in (1024, 4096, 16384):
            batch = 65536 // n
            for feature_map, decay in ((None, 0.9), ("elu1", None)):
                q, k, v = (torch.randn(batch, 4, n, d, device="cuda", dtype=torch.bfloat16,
                                       requires_grad=True) for _ in range(3))
                do = torch.randn_like(q)
                opts = dict(decay=decay, feature_map=feature_map)
                if not torch.equal(linear_attention(q, k, v, **opts), old(q, k, v, **opts)):
                    raise SystemExit(f"linear_ab: the two versions differ at d={d} N={n} {opts}")

                def fwd(fn):
                    return lambda: fn(q, k, v, **opts)

                def fwd_bwd(fn):
                    return lambda: torch.autograd.grad(fn(q, k, v, **opts), (q, k, v), do)

                for mode, make in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
                    ratios = []
                    for _ in range(args.rounds):
                        t_old = triton.testing.do_bench(make(old), warmup=10, rep=40)
                        t_new = triton.testing.do_bench(make(linear_attention), warmup=10, rep=40)
                        ratios.append(t_old / t_new)
                    row = dict(head_dim=d, seqlen=n, batch=batch, feature_map=feature_map or "none",
                               mode=mode, speed_new_over_old=round(statistics.median(ratios), 4),
                               lowest=round(min(ratios), 4), highest=round(max(ratios), 4))
                    rows.append(row)
                    print(", ".join(f"{key}={val}" for key, val in row.items()), flush=True)
    speeds = [r["speed_new_over_old"] for r in rows]
    summary = (f"speed of the current version over {args.old.name}: median {statistics.median(speeds):.3f}, "
               f"range {min(speeds):.3f}-{max(speeds):.3f} over {len(rows)} shapes")
    print(summary)
    write_csv(args.out / "linear_ab.csv", run_meta(old=args.old.name), rows, comments=[summary])
    plot(args.out / "linear_ab.csv", args.out / "linear_ab.png")


def plot(csv_path: Path, png: Path) -> None:
    """One bar per shape: the current version's speed over the earlier one, 1 = unchanged."""
    from matplotlib.figure import Figure

    meta, rows, _ = read_csv(csv_path)
    labels = [f"d{r['head_dim']} N{int(r['seqlen']) // 1024}k {r['feature_map']} {r['mode']}" for r in rows]
    speeds = [float(r["speed_new_over_old"]) for r in rows]
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    ax.bar(range(len(rows)), speeds, color=["tab:green" if x >= 0.97 else "tab:red" for x in speeds])
    ax.axhline(1.0, color="gray", ls="--", lw=1)
    ax.set_xticks(range(len(rows)), labels, rotation=75, fontsize=7)
    ax.set(ylabel="speed, current / earlier kernel",
           title=f"linear attention, same-run A/B against {meta.get('old', '?')} "
                 f"({meta.get('device', '?')}, {meta.get('date', '?')})")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
