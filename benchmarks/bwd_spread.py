"""How much the backward's time moves from one timing to the next, and whether PDL moves it
(issue 20, NOTES.md step 14).

The final same-run sweep, timed in three rounds (``bench_attention --rounds 3``), found every
provider's backward within 2% from round to round except ours at head dim 128, causal, N = 1k:
spreads of 16% (bf16) and 33% (fp16), its median 0.95-1.08x FlexAttention's. That kernel pair is
the one place where the dK/dV grid starts during the dQ kernel's last wave and spins until its
query head's dQ programs have written delta (``PDL=2``, step 10). This times, in turns of
``--rounds`` rounds on the same inputs, the launch table, the same with ``PDL=0`` (no
programmatic launch: the two kernels in stream order), and SDPA's cuDNN backward as a reference
for the clock, at the shapes below. (The run of 2026-12-04, ``results/h200/bwd_spread.csv``, also
timed ``PDL=1``, every dK/dV program waiting for the whole dQ kernel; it stopped the GPU at the
third shape, and ``pdl_stress.py`` then showed it hangs, so it was withdrawn.)

Rows (one per variant, shape and round: ``ms`` is ``do_bench``'s median of that round) go to
``bwd_spread.csv``; ``--plot-only`` draws ``bwd_spread.png`` (each round's time over the
median of the table's) from it without a GPU.

Usage (GPU only): ``python -m benchmarks.bwd_spread --out DIR [--rounds 12]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench_attention import MODEL_DIM, TOKENS  # the sweep's batches: 16k tokens, width 2048
from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv

# (dtype, head dim, causal, N): the two spread shapes, and beside them one without the mask and
# one longer, which spread less than 6% in the sweep
SHAPES = [("bf16", 128, True, 1024), ("fp16", 128, True, 1024), ("bf16", 128, False, 1024),
          ("bf16", 128, True, 4096)]
VARIANTS = ("table", "PDL=0", "cudnn")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def backward_fns(dtype_name: str, head_dim: int, causal: bool, n: int) -> dict:
    """Each variant's backward as a function of no arguments, on one shape's inputs; ours are
    checked against the table's gradients (the same arithmetic: equal to the bit)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from kernels.band import Band
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward

    torch.manual_seed(n * head_dim)
    b, h = max(1, TOKENS // n), MODEL_DIM // head_dim
    q, k, v, do = (torch.randn(b, h, n, head_dim, device="cuda", dtype=DTYPES[dtype_name])
                   for _ in range(4))
    band, scale = Band.from_window((-1, -1), causal), head_dim ** -0.5
    out, lse = attention_forward(q, k, v, band, scale)
    table = bwd_config(head_dim, q.dtype, causal)
    fns = {}
    for name, cfg in (("table", table), ("PDL=0", dict(table, PDL=0))):
        fns[name] = (lambda cfg=cfg: attention_backward(do, q, k, v, out, lse, None, band, scale, config=cfg))
    ref = fns["table"]()
    if not all(torch.equal(a, r) for a, r in zip(fns["PDL=0"](), ref)):
        raise RuntimeError(f"PDL=0 changed the gradients at {dtype_name} d={head_dim} N={n}")
    qc, kc, vc = (t.detach().clone().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        oc = F.scaled_dot_product_attention(qc, kc, vc, is_causal=causal)

    def cudnn():
        qc.grad = kc.grad = vc.grad = None  # as do_bench's grad_to_none: no accumulation timed
        oc.backward(do, retain_graph=True)
    fns["cudnn"] = cudnn
    return fns


def measure(args) -> Path:
    from triton.testing import do_bench

    start_gpu_run(argparse.ArgumentParser(), args.out, "bwd_spread")
    meta, rows = run_meta(rounds=args.rounds), []
    for dtype_name, head_dim, causal, n in SHAPES:
        start = time.perf_counter()
        fns = backward_fns(dtype_name, head_dim, causal, n)  # compiles and checks each variant
        print(f"{dtype_name} d={head_dim} causal={int(causal)} N={n}: ready in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for r in range(args.rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for name in order:
                ms = do_bench(fns[name], warmup=25, rep=50, return_mode="median")
                rows.append(dict(variant=name, dtype=dtype_name, head_dim=head_dim, causal=int(causal),
                                 seqlen=n, round=r, ms=f"{ms:.4f}"))
        line = "  ".join(f"{name} {describe(rows, name, dtype_name, head_dim, causal, n)}"
                         for name in VARIANTS)
        print(f"{dtype_name} d={head_dim} causal={int(causal)} N={n}: {line} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        del fns
        torch.cuda.empty_cache()
        write_csv(args.out / "bwd_spread.csv", meta, rows)
    return args.out / "bwd_spread.csv"


def times(rows, name, dtype_name, head_dim, causal, n) -> list[float]:
    key = (name, dtype_name, head_dim, int(causal), n)
    return [float(r["ms"]) for r in rows
            if (r["variant"], r["dtype"], int(r["head_dim"]), int(r["causal"]), int(r["seqlen"])) == key]


def describe(rows, name, dtype_name, head_dim, causal, n) -> str:
    """``median ms [min-max]`` of one variant at one shape."""
    t = times(rows, name, dtype_name, head_dim, causal, n)
    return f"{statistics.median(t):.3f} ms [{min(t):.3f}-{max(t):.3f}]"


def plot(path: Path) -> Path:
    """Each round's time over the median of the table's at the same shape, a panel per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, rows, _ = read_csv(path)
    # a run stopped early (a time limit) has rows for its first shapes only
    shapes = [s for s in SHAPES if times(rows, "table", *s)]
    fig, axes = plt.subplots(1, len(shapes), figsize=(4 * len(shapes), 3.6), sharey=True, squeeze=False)
    axes = axes[0]
    for ax, (dtype_name, head_dim, causal, n) in zip(axes, shapes):
        base = statistics.median(times(rows, "table", dtype_name, head_dim, causal, n))
        for name in dict.fromkeys(r["variant"] for r in rows):  # a CSV's own variants
            t = times(rows, name, dtype_name, head_dim, causal, n)
            if name == "cudnn":  # a clock reference: its own median, not the table's
                ax.plot(range(len(t)), [x / statistics.median(t) for x in t], "k:",
                        label="cuDNN / its median")
            else:
                ax.plot(range(len(t)), [x / base for x in t], "o-", ms=3, label=f"{name} / table median")
        ax.axhline(1.0, color="gray", lw=0.6)
        ax.set_title(f"{dtype_name} d={head_dim} {'causal' if causal else 'full'} N={n}", fontsize=9)
        ax.set_xlabel("round")
    axes[0].set_ylabel("time / median")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"backward time per round ({meta.get('device')}, {meta.get('date')}, "
                 f"triton {meta.get('triton')})", fontsize=10)
    fig.tight_layout()
    png = path.with_suffix(".png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for bwd_spread.csv/png")
    p.add_argument("--rounds", type=int, default=12, help="rounds per shape [12]")
    p.add_argument("--plot-only", action="store_true", help="draw bwd_spread.png from the CSV in --out")
    args = p.parse_args(argv)
    path = args.out / "bwd_spread.csv" if args.plot_only else measure(args)
    if not path.exists():
        p.error(f"no {path}")
    print(f"wrote {plot(path)}")


if __name__ == "__main__":
    main()
