"""Where the varlen forward loses time against the dense one: the storage layout or the varlen
logic.

The dense API takes ``(batch, heads, seqlen, head_dim)`` tensors; packed sequences are
``(total, heads, head_dim)``. The same forward kernel serves both, so a gap between them comes
from the memory layout or from the varlen logic (offsets read from ``cu_seqlens``, its launch
configuration); this script separates the two on equal-length batches (16k tokens, model width
2048, as ``bench_attention.py``):

* ``dense``: ``kernels.flash_attention`` on contiguous ``(B, H, N, d)``: a head's rows are
  contiguous in memory;
* ``dense-bshd``: the same call on ``(B, N, H, d)`` storage (what a QKV projection writes): a
  head's rows are ``H * d`` elements apart;
* ``varlen``: ``flash_attention_varlen`` on token-major packed storage ``(B * N, H, d)``, the
  usual one (the same memory as ``dense-bshd``);
* ``varlen-hm``: ``flash_attention_varlen`` on head-major packed storage, ``(H, B * N, d)`` seen
  as ``(B * N, H, d)``: the same memory walk per head as ``dense``, so ``varlen-hm / dense`` is
  the cost of the varlen logic alone, and ``dense-bshd / dense`` that of the layout alone.

(An earlier version also launched each variant heads-first, so that the programs running at
one time were the heads of the same rows: slower everywhere, at 0.59x-0.97x of the speed;
that run is ``results/h100/varlen_layout_gridorder.csv``, and NOTES.md step 4 discusses it.)

Each variant is timed ``--rounds`` times, interleaved, and the median kept, so that the slow
drift of a shared machine hits all variants alike. Forward only, with ``check_seqlens=False``
and the offsets built once per shape (a training loop builds them once per batch).

Usage (GPU only): ``python -m benchmarks.varlen_layout --out benchmarks/results/<device>``;
``--plot-only CSV`` redraws the plot of a saved run (no GPU needed).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import kernels
from benchmarks.bench_attention import (
    MODEL_DIM,
    TOKENS,
    flops,
    packed_like,
    triton_provider,
    varlen_provider,
)
from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv

VARIANTS = ("dense", "dense-bshd", "varlen", "varlen-hm")


def inputs(batch, heads, seqlen, head_dim, dtype):
    """q, k, v in each storage, holding the same values: {variant: (q, k, v)}."""
    bhsd = [torch.randn(batch, heads, seqlen, head_dim, device="cuda", dtype=dtype)
            for _ in range(3)]
    bshd = [packed_like(t) for t in bhsd]
    token_major = [packed_like(t, varlen=True) for t in bhsd]
    head_major = [t.transpose(0, 1).reshape(heads, batch * seqlen, head_dim).transpose(0, 1)
                  for t in bhsd]
    assert head_major[0].stride() == (head_dim, batch * seqlen * head_dim, 1)
    return {"dense": bhsd, "dense-bshd": bshd, "varlen": token_major, "varlen-hm": head_major}


def runner(variant, tensors, causal, seqlen):
    """A no-argument callable that runs one forward of ``variant``: ``bench_attention``'s
    providers, so that both scripts time the same calls."""
    if variant.startswith("varlen"):
        return lambda: varlen_provider(*tensors, causal, seqlen)
    return lambda: triton_provider(*tensors, causal)


def plot(rows, meta, out: Path) -> Path:
    """Each variant's speed relative to the dense kernel, one bar group per shape, with the
    +-10% band of the issue's varlen bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys((r["head_dim"], r["causal"], r["seqlen"]) for r in rows))
    variants = [v for v in VARIANTS[1:] if any(r["variant"] == v for r in rows)]
    ratio = {(r["variant"], r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_dense"]) for r in rows}
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * len(shapes)), 4))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(shapes))]
        ax.bar(xs, [ratio.get((variant, *shape), float("nan")) for shape in shapes], width,
               label=variant)
    ax.axhspan(0.9, 1.1, color="grey", alpha=0.15, label="within 10% of dense")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels([f"d{d} {'c' if int(c) else 'f'}\n{n}" for d, c, n in shapes], fontsize=8)
    ax.set_ylim(0.5, 1.2)
    ax.set_ylabel("speed / dense kernel (forward)")
    ax.set_title(f"Varlen and layout vs the dense kernel, {meta.get('dtype', '')} "
                 f"(d = head dim, c causal / f full, N) - {meta['device']}, {meta['date']}", fontsize=9)
    ax.legend(fontsize=8, ncol=len(variants) + 1, loc="lower center")
    fig.tight_layout()
    path = out / "varlen_layout.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for the CSV and PNG (unless --plot-only)")
    p.add_argument("--plot-only", type=Path, metavar="CSV", help="redraw the plot of a CSV and exit")
    p.add_argument("--seqlens", type=int, nargs="+", default=[512, 1024, 4096, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--causal", nargs="+", default=["0", "1"], choices=["0", "1"])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.plot_only:
        meta, rows, _ = read_csv(args.plot_only)
        print(f"wrote {plot(rows, meta, args.plot_only.parent)}")
        return
    start_gpu_run(p, args.out, "varlen_layout", "--plot-only")
    from triton.testing import do_bench

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    meta = run_meta(dtype=args.dtype, tokens=TOKENS, model_dim=MODEL_DIM)
    rows = []
    for head_dim in args.head_dims:
        for causal in (c == "1" for c in args.causal):
            for seqlen in args.seqlens:
                batch, heads = max(1, TOKENS // seqlen), MODEL_DIM // head_dim
                torch.manual_seed(seqlen + head_dim)
                storage = inputs(batch, heads, seqlen, head_dim, dtype)
                ref = kernels.flash_attention(*storage["dense"], causal=causal).float()
                fns = {}
                for variant in VARIANTS:
                    fn = runner(variant, storage[variant], causal, seqlen)
                    out = fn()
                    if variant.startswith("varlen"):
                        out = out.view(batch, seqlen, heads, head_dim).transpose(1, 2)
                    err = kernels.rel_err(out, ref)
                    if not err < 1e-2:  # the same kernel (other blocks for packed causal)
                        raise RuntimeError(f"{variant}: differs from dense by {err:.1e}")
                    fns[variant] = fn
                times = {name: [] for name in fns}
                for _ in range(args.rounds):
                    for name, fn in fns.items():
                        times[name].append(do_bench(fn, warmup=25, rep=100, return_mode="median"))
                f = flops(batch, heads, seqlen, head_dim, causal, "fwd")
                base = statistics.median(times["dense"])
                for name, ts in times.items():
                    ms = statistics.median(ts)
                    rows.append(dict(variant=name, head_dim=head_dim, causal=int(causal),
                                     seqlen=seqlen, batch=batch, heads=heads, ms=f"{ms:.4f}",
                                     tflops=f"{f / ms * 1e-9:.1f}", vs_dense=f"{base / ms:.3f}",
                                     spread=f"{(max(ts) - min(ts)) / ms:.3f}"))
                print(f"d={head_dim} causal={int(causal)} N={seqlen:>5}: " + "  ".join(
                    f"{r['variant']} {r['vs_dense']}" for r in rows[-len(times):]), flush=True)
                write_csv(args.out / "varlen_layout.csv", meta, rows,
                          comments=["forward only; vs_dense = dense time / variant time (same run, "
                                    "median of rounds); spread = (max - min) / median over rounds"])
    print(f"wrote {args.out / 'varlen_layout.csv'} and {plot(rows, meta, args.out)}")


if __name__ == "__main__":
    main()
