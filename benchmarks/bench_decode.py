"""Decoding speed: split-KV (flash-decoding) against the dense kernel and SDPA.

One generation step of attention: ``batch`` sequences, one new query each, against a KV cache of
``L`` tokens (1k .. 64k). Three ways to compute it, in the same run:

* ``flash_decode``: this repository's split-KV kernel (``num_splits`` chosen automatically);
* ``flash_attention``: the dense kernel with one query, i.e. ``batch * heads`` programs that each
  walk the whole cache alone;
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (PyTorch picks the backend).

Reports tokens/s (``batch / step time``, attention of one layer) and the speed-up of split-KV over
the dense kernel. Each step is captured in a CUDA graph and timed by
``triton.testing.do_bench_cudagraph`` (medians after warm-up), as a decoding loop would run it:
without the graph, Python's launch overhead (tens of microseconds) would hide the kernels at short
cache lengths. Fresh random inputs; outputs checked against SDPA first.

Usage (GPU only): ``python -m benchmarks.bench_decode --out benchmarks/results/<device>``
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

import kernels
from benchmarks.bench_attention import plot_per_provider
from benchmarks.results_csv import run_meta, start_gpu_run, write_csv
from kernels.decode import choose_num_splits, decode_config


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache-lens", type=int, nargs="+",
                   default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads-q", type=int, default=32)
    p.add_argument("--heads-kv", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    args = p.parse_args(argv)
    start_gpu_run(p, args.out, "bench_decode")
    from triton.testing import do_bench_cudagraph

    dtype = torch.bfloat16
    b, hq, hkv, d = args.batch, args.heads_q, args.heads_kv, args.head_dim
    rows = []
    for length in args.cache_lens:
        torch.manual_seed(length)
        q = torch.randn(b, hq, 1, d, device="cuda", dtype=dtype)
        k = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        v = torch.randn(b, hkv, length, d, device="cuda", dtype=dtype)
        seqlens = torch.full((b,), length, dtype=torch.int32, device="cuda")
        tile_rows = hq // hkv  # one query per head; a group's heads share a tile
        splits = choose_num_splits(b, hkv, tile_rows, length, decode_config(d, dtype, tile_rows),
                                   q.device)
        providers = {
            "flash_decode": partial(kernels.flash_decode, q, k, v, seqlens, check_lengths=False),
            "flash_attention": partial(kernels.flash_attention, q, k, v),
            "sdpa": partial(F.scaled_dot_product_attention, q, k, v, enable_gqa=True),
        }
        ref = providers["sdpa"]()
        for name, fn in providers.items():
            err = kernels.rel_err(fn(), ref)
            assert err < 2e-2, f"{name} differs from SDPA at L={length}: {err:.2e}"
            ms = do_bench_cudagraph(fn, rep=100, return_mode="median")
            rows.append(dict(provider=name, cache_len=length, batch=b, heads_q=hq, heads_kv=hkv,
                             head_dim=d, num_splits=splits if name == "flash_decode" else 1,
                             ms=f"{ms:.4f}", tokens_per_s=f"{b / ms * 1e3:.0f}", rel_err=f"{err:.1e}"))
            print(f"L={length:>6} {name:>16}: {ms * 1e3:8.1f} us  {b / ms * 1e3:10.0f} tok/s", flush=True)

    meta = run_meta(dtype="bf16")
    write_csv(args.out / "decode.csv", meta, rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    plot_per_provider(ax, rows, ("flash_decode", "flash_attention", "sdpa"), "cache_len", "tokens_per_s",
                      xlabel="KV cache length (tokens)", ylabel="tokens/s (one attention layer)")
    ax.set_title(f"Decoding, batch {b}, {hq}/{hkv} heads, d={d}, bf16\n{meta['device']}, {meta['date']}")
    fig.tight_layout()
    fig.savefig(args.out / "decode.png", dpi=90)

    print(f"\n{'L':>6} {'splits':>6} {'decode tok/s':>13} {'/dense':>7} {'/sdpa':>7}")
    for length in args.cache_lens:
        r = {x["provider"]: x for x in rows if x["cache_len"] == length}
        t = {n: float(x["tokens_per_s"]) for n, x in r.items()}
        print(f"{length:>6} {r['flash_decode']['num_splits']:>6} {t['flash_decode']:13.0f} "
              f"{t['flash_decode'] / t['flash_attention']:7.2f} {t['flash_decode'] / t['sdpa']:7.2f}")


if __name__ == "__main__":
    main()
