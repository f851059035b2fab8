"""Sweep the launch configurations of the attention kernels on a GPU; print and save the best.

For each shape (bf16, 16k tokens, head_dim 64 and 128, causal and not, N = 4096 by default) this
times every forward configuration (BLOCK_M, BLOCK_N, warps, pipeline stages), then every dK/dV
configuration with dQ at its default, then every dQ configuration with the best dK/dV. The
results set ``fwd_config`` in ``kernels/flash_fwd.py`` and ``bwd_config`` in
``kernels/flash_bwd.py``: fixed per GPU generation, so that nobody pays for autotuning at run time.

Compiling ~400 variants one after the other takes minutes; worker processes compile them in
parallel first (Triton's on-disk cache then serves the timing process).

Usage (GPU only): ``python -m benchmarks.tune_attention --out DIR [--seqlen 4096]``;
``--plot-only CSV`` redraws the plot of a saved sweep (no GPU needed).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv
from kernels.band import Band
from kernels.flash_attn import FlashAttentionFunction
from kernels.flash_bwd import bwd_config
from kernels.flash_fwd import fwd_config

TOKENS, MODEL_DIM = 16384, 2048

FWD = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
       for bm, bn, w, s in itertools.product((64, 128), (32, 64, 128), (4, 8), (2, 3, 4))]
DKDV = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
        for bm, bn, w, s in itertools.product((32, 64, 128), (64, 128), (4, 8), (1, 2, 3))
        if bm * bn <= 64 * 128]
DQ = [dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s)
      for bm, bn, w, s in itertools.product((64, 128), (32, 64, 128), (4, 8), (1, 2, 3))
      if bm * bn <= 128 * 64]


def inputs(head_dim, seqlen, grad):
    torch.manual_seed(0)
    batch, heads = max(1, TOKENS // seqlen), MODEL_DIM // head_dim
    return [torch.randn(batch, heads, seqlen, head_dim, device="cuda", dtype=torch.bfloat16,
                        requires_grad=grad) for _ in range(3)]


def run(kind, cfg, dq_cfg, head_dim, causal, seqlen, bench):
    """A forward (kind "fwd", config ``cfg``) or a backward (kind "bwd": ``cfg`` for dK/dV and
    ``dq_cfg`` for dQ, defaults where None), timed if ``bench``."""
    from triton.testing import do_bench

    q, k, v = inputs(head_dim, seqlen, grad=kind != "fwd")
    default_fwd = fwd_config(head_dim, torch.bfloat16)
    default_bwd = bwd_config(head_dim, torch.bfloat16)
    fwd_cfg = cfg if kind == "fwd" else default_fwd
    dkdv_cfg = cfg if kind != "fwd" and cfg else {k_: v_ for k_, v_ in default_bwd.items() if k_ != "dq"}
    bwd_cfg = dict(dkdv_cfg, dq=dq_cfg or default_bwd["dq"])
    band, scale = Band.from_window(causal=causal), head_dim ** -0.5

    def attention():  # kernels.flash_attention with the launch configurations given
        return FlashAttentionFunction.apply(q, k, v, band, scale, None, fwd_cfg, bwd_cfg)[0]

    if kind == "fwd":
        attention()
        return do_bench(attention, warmup=25, rep=60, return_mode="median") if bench else 0.0
    out = attention()
    do = torch.randn_like(out)
    fn = lambda: out.backward(do, retain_graph=True)  # noqa: E731
    fn()
    return do_bench(fn, warmup=25, rep=60, grad_to_none=[q, k, v],
                    return_mode="median") if bench else 0.0


def _compile(job):
    try:
        run(*job, bench=False)
        return None
    except Exception as e:  # out of shared memory / registers: reported when timed
        return f"{type(e).__name__}"


def precompile(jobs, workers):
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        list(pool.map(_compile, jobs, chunksize=2))


def timed(job):
    try:
        return run(*job, bench=True)
    except Exception as e:
        print(f"    {job[1]}: {type(e).__name__} {str(e)[:80]}")
        return float("inf")


def plot(csv_path: Path):
    """Every configuration's TFLOP/s per shape and kernel, sorted, the best marked: how flat the
    optimum is (configurations that failed to launch, e.g. out of shared memory, are left out).
    Written beside the CSV as tune_attention.png (``--plot-only CSV`` redraws it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, rows, _ = read_csv(csv_path)
    kinds = ("fwd", "dkdv", "dq")
    shapes = sorted({(int(r["head_dim"]), int(r["causal"])) for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for d, causal in shapes:
            tf = sorted((float(r["tflops"]) for r in rows if r["kernel"] == kind and float(r["tflops"]) > 0
                         and (int(r["head_dim"]), int(r["causal"])) == (d, causal)), reverse=True)
            line, = ax.plot(range(len(tf)), tf, label=f"d={d} {'causal' if causal else 'full'}")
            ax.plot([0], tf[:1], "o", color=line.get_color())
        ax.set_title({"fwd": "forward", "dkdv": "backward, dK/dV varied",
                      "dq": "backward, dQ varied"}[kind])
        ax.set_xlabel("configuration, best first")
        ax.set_ylabel("TFLOP/s")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(", ".join(f"{k}={v}" for k, v in meta.items()), fontsize=8)
    fig.tight_layout()
    fig.savefig(csv_path.with_suffix(".png"), dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for the CSV and PNG (required unless --plot-only)")
    p.add_argument("--seqlen", type=int, default=4096)
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    p.add_argument("--plot-only", type=Path, metavar="CSV", help="redraw the plot of a saved sweep")
    args = p.parse_args(argv)
    if args.plot_only:
        return plot(args.plot_only)
    start_gpu_run(p, args.out, "tune_attention", "--plot-only CSV")
    shapes = [(d, c) for d in args.head_dims for c in (False, True)]
    t0 = time.time()
    jobs = [("fwd", c, None, d, causal, args.seqlen) for d, causal in shapes for c in FWD]
    jobs += [("bwd", c, None, d, causal, args.seqlen) for d, causal in shapes for c in DKDV]
    jobs += [("bwd", None, c, d, causal, args.seqlen) for d, causal in shapes for c in DQ]
    precompile(jobs, args.workers)
    print(f"compiled {len(jobs)} variants in {time.time() - t0:.0f} s", flush=True)

    rows, best = [], {}
    for d, causal in shapes:
        batch, heads = max(1, TOKENS // args.seqlen), MODEL_DIM // d
        fl = 4 * batch * heads * args.seqlen ** 2 * d / (2 if causal else 1)
        for kind, space in (("fwd", FWD), ("dkdv", DKDV), ("dq", DQ)):
            results = []
            for cfg in space:
                if kind == "dq":
                    ms = timed(("bwd", best[(d, causal, "dkdv")], cfg, d, causal, args.seqlen))
                else:
                    ms = timed(("fwd" if kind == "fwd" else "bwd", cfg, None, d, causal, args.seqlen))
                flops = fl * (2.5 if kind != "fwd" else 1.0)
                tf = flops / ms * 1e-9 if ms < float("inf") else 0.0
                results.append((ms, cfg))
                rows.append(dict(head_dim=d, causal=int(causal), seqlen=args.seqlen, kernel=kind,
                                 **cfg, ms=f"{ms:.4f}", tflops=f"{tf:.1f}"))
            results.sort(key=lambda r: r[0])
            best[(d, causal, kind)] = results[0][1]
            print(f"d={d} causal={int(causal)} {kind:>4}: best {results[0][1]} "
                  f"{results[0][0]:.3f} ms; next {[round(r[0], 3) for r in results[1:4]]}",
                  flush=True)
    write_csv(args.out / "tune_attention.csv", run_meta(dtype="bf16", tokens=f"{TOKENS // 1024}k"), rows)
    plot(args.out / "tune_attention.csv")
    print("\nbest per shape:")
    for key, cfg in best.items():
        print(key, cfg)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
