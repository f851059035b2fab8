"""Linear against softmax attention: time versus sequence length, and where the curves cross.

The number of tokens per batch is fixed (``--tokens``, ``batch = tokens / N``), so the work of
causal softmax attention per token grows as N while that of linear attention stays flat: on a
log-log plot softmax rises with slope 1 and linear stays level, until they cross. Providers:

* ``flash``: this repository's FlashAttention kernel (``kernels.flash_attention``, causal);
* ``sdpa-flash``: PyTorch's ``scaled_dot_product_attention`` with its flash backend, causal
  (the reference point measured in the same run);
* ``linear``: the chunked Triton kernel (``kernels.linear_attention``) in the RetNet form
  (``feature_map=None``, a decay): the kernel alone. The decay is passed as a float, the same for
  every head: a per-head tensor costs the same in the kernel, but checking its values costs a
  host sync per call, which would be timed too;
* ``linear-elu1``: the same with ``feature_map="elu1"`` and its normaliser (an extra value
  column, and a few PyTorch element-wise ops around the kernel).

Times are ``triton.testing.do_bench`` medians after warm-up, forward and forward+backward, bf16,
on fresh random inputs. Before timing, every softmax provider's output is checked against SDPA's,
and the linear kernel's output and gradients against its parallel form (``linear_attention_parallel``,
float32) at a small N. The CSV also records the linear kernel's number of programs
(``batch x heads x value blocks``): each walks its sequence chunk after chunk, so when there are
fewer programs than SMs (long N, small batch) the GPU is partly idle; see ``kernels/linear_attn.py``.

Usage (GPU only, about 2 minutes on an H100):
``python -m benchmarks.bench_linear --out benchmarks/results/<device>``;
``--plot-only CSV`` redraws the figure from a CSV written earlier (no GPU needed).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

import kernels
from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv
from kernels.linear_attn import kernel_config

SEQLENS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
TOKENS = 65536  # batch = TOKENS // seqlen: the same number of tokens at every length
HEADS = 4
MODES = ("fwd", "fwd_bwd")
PROVIDERS = ("flash", "sdpa-flash", "linear", "linear-elu1")
CHECK_SEQLEN = 1024  # the linear kernel is checked against its (quadratic) parallel form here
CSV_NAME = "linear_vs_softmax.csv"


DECAY = 1 - 2.0 ** -5  # RetNet's first head: a memory of ~32 tokens


def make_providers():
    from torch.nn.attention import SDPBackend, sdpa_kernel


    def sdpa_flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return {
        "flash": lambda q, k, v: kernels.flash_attention(q, k, v, causal=True),
        "sdpa-flash": sdpa_flash,
        "linear": lambda q, k, v: kernels.linear_attention(q, k, v, decay=DECAY, feature_map=None),
        "linear-elu1": lambda q, k, v: kernels.linear_attention(q, k, v, feature_map="elu1"),
    }


def check_linear(head_dim: int, heads: int, dtype) -> list[str]:
    """The chunked kernel against the parallel form (float32, on the same bf16 inputs), output and
    gradients, in both forms (with RetNet's per-head decays ``1 - 2^(-5 - h)``); raises if any
    relative error exceeds 2e-2."""
    g = 1 - 2.0 ** (-5 - torch.arange(heads, dtype=torch.float32, device="cuda"))
    lines = []
    for feature_map, decay in ((None, g), ("elu1", None)):
        torch.manual_seed(head_dim)
        q, k, v = (torch.randn(2, heads, CHECK_SEQLEN, head_dim, device="cuda", dtype=dtype)
                   for _ in range(3))
        do = torch.randn_like(q)
        results = []
        for fn, cast in ((kernels.linear_attention, dtype),
                         (kernels.linear_attention_parallel, torch.float32)):
            qi, ki, vi = (x.detach().to(cast).requires_grad_() for x in (q, k, v))
            out = fn(qi, ki, vi, decay=decay, feature_map=feature_map)
            out.backward(do.to(cast))
            results.append((out, qi.grad, ki.grad, vi.grad))
        errs = [kernels.rel_err(a, b) for a, b in zip(*results)]
        line = (f"check d={head_dim} feature_map={feature_map}: rel err out {errs[0]:.1e}, dq {errs[1]:.1e}, "
                f"dk {errs[2]:.1e}, dv {errs[3]:.1e} (N={CHECK_SEQLEN}, against the parallel form in fp32)")
        print(line)
        if not max(errs) < 2e-2:
            raise RuntimeError(f"linear kernel differs from its parallel form: {line}")
        lines.append(line)
    return lines


def time_mode(fn, q, k, v, mode) -> float:
    from triton.testing import do_bench

    if mode == "fwd":
        with torch.no_grad():
            return do_bench(lambda: fn(q, k, v), warmup=25, rep=100, return_mode="median")
    do = torch.randn_like(q)
    return do_bench(lambda: fn(q, k, v).backward(do), warmup=25, rep=100, grad_to_none=[q, k, v],
                    return_mode="median")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for the CSV and PNG (not needed with --plot-only)")
    p.add_argument("--seqlens", type=int, nargs="+", default=SEQLENS)
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--tokens", type=int, default=TOKENS, help="batch x seqlen, fixed [%(default)s]")
    p.add_argument("--heads", type=int, default=HEADS, help="heads per sequence [%(default)s]")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=PROVIDERS)
    p.add_argument("--plot-only", type=Path, metavar="CSV", help="redraw the figure from this CSV and exit")
    args = p.parse_args(argv)
    if args.plot_only is not None:
        meta, rows, _ = read_csv(args.plot_only)
        out = args.out or args.plot_only.parent
        out.mkdir(parents=True, exist_ok=True)
        for path in plot(rows, meta, out):
            print(f"wrote {path}")
        summary(rows)
        return
    start_gpu_run(p, args.out, "bench_linear", "--plot-only")
    dtype = torch.bfloat16
    meta = run_meta()
    print(", ".join(f"{k}={v}" for k, v in meta.items()))
    providers = make_providers()
    providers = {n: providers[n] for n in args.providers}
    checks = [line for d in args.head_dims for line in check_linear(d, args.heads, dtype)] \
        if any(n.startswith("linear") for n in providers) else []

    rows = []
    for head_dim in args.head_dims:
        for seqlen in args.seqlens:
            batch = max(1, args.tokens // seqlen)
            torch.manual_seed(seqlen * head_dim)
            q, k, v = (torch.randn(batch, args.heads, seqlen, head_dim, device="cuda", dtype=dtype,
                                   requires_grad=True) for _ in range(3))
            with torch.no_grad():
                ref = providers["sdpa-flash"](q, k, v) if "sdpa-flash" in providers else None
            # programs of the linear kernel's forward: (batch x heads) x blocks of value columns
            block_v = kernel_config(head_dim, head_dim)["BLOCK_V"]
            programs = batch * args.heads * math.ceil(head_dim / block_v)
            for name, fn in providers.items():
                try:
                    with torch.no_grad():
                        out = fn(q, k, v)
                    if not torch.isfinite(out).all():
                        raise RuntimeError("non-finite output")
                    err = ""
                    if ref is not None and not name.startswith("linear"):
                        e = kernels.rel_err(out, ref)
                        if not e < 2e-2:
                            raise RuntimeError(f"output differs from SDPA: rel err {e:.2e}")
                        err = f"{e:.1e}"
                    for mode in args.modes:
                        ms = time_mode(fn, q, k, v, mode)
                        rows.append(dict(provider=name, dtype="bf16", head_dim=head_dim, seqlen=seqlen,
                                         batch=batch, heads=args.heads, mode=mode, ms=f"{ms:.4f}",
                                         us_per_token=f"{ms * 1e3 / (batch * seqlen):.5f}",
                                         linear_programs=programs, rel_err_vs_sdpa=err))
                        print(f"d={head_dim} N={seqlen:>6} B={batch:>4} {mode:>7} {name:>12}: {ms:9.3f} ms",
                              flush=True)
                except (RuntimeError, torch.OutOfMemoryError) as e:
                    print(f"{name} skipped at N={seqlen} d={head_dim}: {str(e)[:120]}")
                torch.cuda.empty_cache()
            del q, k, v, ref

    path = args.out / CSV_NAME
    write_csv(path, meta, rows, comments=checks)
    print(f"wrote {path}")
    for png in plot(rows, meta, args.out):
        print(f"wrote {png}")
    summary(rows)


def series(rows, provider, head_dim, mode):
    """``(seqlens, ms)`` of one curve, sorted by seqlen."""
    pts = sorted((int(r["seqlen"]), float(r["ms"])) for r in rows
                 if (r["provider"], int(r["head_dim"]), r["mode"]) == (provider, head_dim, mode))
    return [n for n, _ in pts], [t for _, t in pts]


def crossover(rows, head_dim, mode, fast="linear", slow="flash"):
    """The first N at which ``fast`` is no slower than ``slow``, interpolated on the log-log plot
    between the two measured lengths around it; None if it never is, N_min if it always is."""
    n_a, t_a = series(rows, fast, head_dim, mode)
    n_b, t_b = series(rows, slow, head_dim, mode)
    common = sorted(set(n_a) & set(n_b))
    ratio = [math.log(t_a[n_a.index(n)] / t_b[n_b.index(n)]) for n in common]  # < 0: fast is faster
    for i, r in enumerate(ratio):
        if r <= 0:
            if i == 0:
                return common[0]
            x0, x1, r0 = math.log(common[i - 1]), math.log(common[i]), ratio[i - 1]
            return math.exp(x0 + (x1 - x0) * r0 / (r0 - r))
    return None


def plot(rows, meta, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    providers = list(dict.fromkeys(r["provider"] for r in rows))
    styles = {"flash": "o-", "sdpa-flash": "s--", "linear": "^-", "linear-elu1": "v:"}
    for head_dim in sorted({int(r["head_dim"]) for r in rows}):
        fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            for name in providers:
                n, t = series(rows, name, head_dim, mode)
                if n:
                    ax.plot(n, t, styles.get(name, "o-"), label=name)
            n_x = crossover(rows, head_dim, mode)
            if n_x is not None:
                ax.axvline(n_x, color="gray", ls=":", lw=1)
                ax.annotate(f"linear = flash\nat N ~ {n_x:,.0f}", (n_x, 0.5),
                            xycoords=("data", "axes fraction"), xytext=(6, 0), textcoords="offset points",
                            fontsize=8, color="gray")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length N (batch x N fixed)")
            ax.set_ylabel("time per call (ms, median)")
            ax.set_title("forward" if mode == "fwd" else "forward + backward")
            ax.grid(alpha=0.3, which="both")
        axes[0][0].legend()
        heads = rows[0]["heads"] if rows else "?"
        tokens = int(rows[0]["batch"]) * int(rows[0]["seqlen"]) if rows else "?"
        fig.suptitle(f"causal attention, bf16, head_dim {head_dim}, {heads} heads, {tokens:,} tokens per "
                     f"batch - {meta.get('device', '?')}, {meta.get('date', '?')}", fontsize=10)
        fig.tight_layout()
        path = out / f"linear_vs_softmax_d{head_dim}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def summary(rows):
    """Per (head_dim, mode): where linear attention catches up with the flash kernel, and the
    speed ratio at the longest N."""
    print(f"\n{'d':>4} {'mode':>8} {'crossover N (linear = flash)':>30} {'flash / linear at N_max':>26}")
    for head_dim in sorted({int(r["head_dim"]) for r in rows}):
        for mode in MODES:
            n_f, t_f = series(rows, "flash", head_dim, mode)
            n_l, t_l = series(rows, "linear", head_dim, mode)
            if not (n_f and n_l):
                continue
            n_x = crossover(rows, head_dim, mode)
            where = "never (in range)" if n_x is None else f"~{n_x:,.0f}"
            ratio = t_f[-1] / t_l[-1] if n_f[-1] == n_l[-1] else float("nan")
            print(f"{head_dim:>4} {mode:>8} {where:>30} {ratio:>20.1f}x at {n_f[-1]}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
