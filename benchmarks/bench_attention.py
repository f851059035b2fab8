"""The project's FlashAttention kernel against PyTorch's attention backends, in one run.

Measures TFLOP/s of forward, backward and forward+backward for:

* ``triton``: this repository's kernel (``kernels.flash_attention``);
* ``sdpa-flash``, ``sdpa-cudnn``, ``sdpa-efficient``, ``sdpa-math``: PyTorch's
  ``scaled_dot_product_attention`` with each backend forced;
* ``flex``: PyTorch's FlexAttention compiled by ``torch.compile`` (Triton-generated), one
  compilation per shape (``--flex``; compiling costs tens of seconds per shape).

FLOPs are counted as the FlashAttention papers do: ``4 B H N^2 d`` forward, 2.5 times that
backward, half of each when causal. Times are ``triton.testing.do_bench`` medians after warm-up,
on fresh random inputs, and every provider's output is checked against SDPA's before it is timed.
Speed is reported as TFLOP/s and as a ratio to SDPA's flash backend measured in the same run.

Usage (GPU only): ``python benchmarks/bench_attention.py --out benchmarks/results/<device>``
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import kernels  # noqa: E402

TOKENS = 16384  # batch = TOKENS // seqlen, as in the FlashAttention papers
MODEL_DIM = 2048  # heads = MODEL_DIM // head_dim
MODES = ("fwd", "bwd", "fwd_bwd")
SDPA_BACKENDS = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}
MATH_MAX_SEQLEN = 4096  # the math path materialises (B, H, N, N): slow and large beyond this


def flops(batch, heads, seqlen, head_dim, causal, mode):
    f = 4 * batch * heads * seqlen * seqlen * head_dim
    f = {"fwd": f, "bwd": 2.5 * f, "fwd_bwd": 3.5 * f}[mode]
    return f / 2 if causal else f


def sdpa_provider(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def fn(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def flex_provider():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.config.cache_size_limit = 256  # one compiled graph per shape, no eager fallback
    compiled = torch.compile(flex_attention, dynamic=False)
    masks = {}

    def causal_mod(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def fn(q, k, v, causal):
        block_mask = None
        if causal:
            key = (q.shape[2], k.shape[2])
            if key not in masks:
                masks[key] = create_block_mask(causal_mod, None, None, *key, device=q.device)
            block_mask = masks[key]
        return compiled(q, k, v, block_mask=block_mask)
    return fn


def triton_provider(q, k, v, causal):
    return kernels.flash_attention(q, k, v, causal=causal)


def time_mode(fn, q, k, v, causal, mode):
    from triton.testing import do_bench

    do = torch.randn_like(q)
    if mode == "fwd":
        return do_bench(lambda: fn(q, k, v, causal), warmup=25, rep=100, return_mode="median")
    if mode == "bwd":
        out = fn(q, k, v, causal)
        return do_bench(lambda: out.backward(do, retain_graph=True), warmup=25, rep=100,
                        grad_to_none=[q, k, v], return_mode="median")
    return do_bench(lambda: fn(q, k, v, causal).backward(do), warmup=25, rep=100,
                    grad_to_none=[q, k, v], return_mode="median")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for CSV and PNG files")
    p.add_argument("--seqlens", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    p.add_argument("--causal", nargs="+", default=["0", "1"], choices=["0", "1"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--providers", nargs="+",
                   default=["triton", *SDPA_BACKENDS], choices=["triton", *SDPA_BACKENDS, "flex"])
    args = p.parse_args(argv)
    if not torch.cuda.is_available() or kernels.INTERPRET:
        sys.exit("bench_attention: needs a CUDA GPU with compiled Triton (got the interpreter)")
    import triton

    args.out.mkdir(parents=True, exist_ok=True)
    device_name = torch.cuda.get_device_name()
    date = dt.date.today().isoformat()
    providers = {"triton": triton_provider}
    for name in args.providers:
        if name in SDPA_BACKENDS:
            providers[name] = sdpa_provider(SDPA_BACKENDS[name])
        elif name == "flex":
            providers[name] = flex_provider()
    providers = {n: providers[n] for n in args.providers}

    rows = []
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    for dtype_name in args.dtypes:
        for head_dim in args.head_dims:
            for causal in (c == "1" for c in args.causal):
                for seqlen in args.seqlens:
                    batch, heads = max(1, TOKENS // seqlen), MODEL_DIM // head_dim
                    torch.manual_seed(seqlen * head_dim)
                    q, k, v = (torch.randn(batch, heads, seqlen, head_dim, device="cuda",
                                           dtype=dtypes[dtype_name], requires_grad=True)
                               for _ in range(3))
                    with torch.no_grad():
                        ref = providers.get("sdpa-flash", sdpa_provider("FLASH_ATTENTION"))(
                            q, k, v, causal)
                    for name, fn in providers.items():
                        if name == "sdpa-math" and seqlen > MATH_MAX_SEQLEN:
                            continue
                        try:
                            with torch.no_grad():
                                out = fn(q, k, v, causal)
                            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                            if not err < 2e-2:
                                raise RuntimeError(f"output differs from SDPA: rel err {err:.2e}")
                            for mode in args.modes:
                                ms = time_mode(fn, q, k, v, causal, mode)
                                tflops = flops(batch, heads, seqlen, head_dim, causal, mode) / ms * 1e-9
                                rows.append(dict(provider=name, dtype=dtype_name, head_dim=head_dim,
                                                 causal=int(causal), seqlen=seqlen, batch=batch,
                                                 heads=heads, mode=mode, ms=f"{ms:.4f}",
                                                 tflops=f"{tflops:.1f}", rel_err=f"{err:.1e}"))
                                print(f"{dtype_name} d={head_dim} causal={int(causal)} N={seqlen:>5} "
                                      f"{mode:>7} {name:>14}: {tflops:6.1f} TFLOP/s", flush=True)
                        except (RuntimeError, torch.OutOfMemoryError) as e:
                            print(f"{name} skipped at N={seqlen} d={head_dim}: {str(e)[:120]}")
                        torch.cuda.empty_cache()

    meta = dict(device=device_name, date=date, torch=torch.__version__, triton=triton.__version__)
    path = args.out / "attention_tflops.csv"
    with open(path, "w", newline="") as f:
        f.write("# " + ", ".join(f"{k}={v}" for k, v in meta.items()) + "\n")
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    plot(rows, meta, args.out)
    summary(rows)


def plot(rows, meta, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dtype"], r["head_dim"], r["causal"]) for r in rows})
    modes = sorted({r["mode"] for r in rows}, key=MODES.index)
    for dtype_name, head_dim, causal in keys:
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            for name in dict.fromkeys(r["provider"] for r in rows):
                pts = [(r["seqlen"], float(r["tflops"])) for r in rows
                       if (r["dtype"], r["head_dim"], r["causal"], r["mode"], r["provider"])
                       == (dtype_name, head_dim, causal, mode, name)]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length N (batch = 16k / N)")
            ax.set_ylabel("TFLOP/s")
            ax.set_title(f"{mode}")
            ax.grid(alpha=0.3)
        axes[0][0].legend()
        fig.suptitle(f"{dtype_name}, head_dim {head_dim}, {'causal' if causal else 'non-causal'} "
                     f"- {meta['device']}, {meta['date']}")
        fig.tight_layout()
        fig.savefig(out / f"tflops_{dtype_name}_d{head_dim}_{'causal' if causal else 'full'}.png",
                    dpi=90)
        plt.close(fig)


def summary(rows):
    """Ratios of the project's kernel to SDPA-flash and cuDNN, last, so the reply shows them."""
    index = {(r["provider"], r["dtype"], r["head_dim"], r["causal"], r["seqlen"], r["mode"]):
             float(r["tflops"]) for r in rows}
    print(f"\n{'dtype':>5} {'d':>4} {'causal':>6} {'N':>6} {'mode':>7} {'triton':>7} "
          f"{'/flash':>7} {'/cudnn':>7}")
    for (prov, dtype_name, head_dim, causal, seqlen, mode), tf in index.items():
        if prov != "triton":
            continue
        fa = index.get(("sdpa-flash", dtype_name, head_dim, causal, seqlen, mode))
        cu = index.get(("sdpa-cudnn", dtype_name, head_dim, causal, seqlen, mode))
        print(f"{dtype_name:>5} {head_dim:>4} {causal:>6} {seqlen:>6} {mode:>7} {tf:7.1f} "
              f"{tf / fa if fa else float('nan'):7.2f} {tf / cu if cu else float('nan'):7.2f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
