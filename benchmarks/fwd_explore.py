"""Variants of the forward kernel against its launch table and cuDNN's forward, in one run (issue 20).

For each shape (16k tokens per batch, model width 2048, head dims 128 and 64, causal and not,
bf16 and fp16 by default) this times, on the same inputs, each entry of ``STEP11`` (the launch
table first) and SDPA's cuDNN and FlashAttention-2 forwards, and checks each variant's output
against the table's. Rows go to ``fwd_step11.csv`` in ``--out``; ``fwd_step11.png`` draws each
variant's speed against the table's and the table's against cuDNN's.

Usage (GPU only): ``python -m benchmarks.fwd_explore --out DIR [--seqlens 1024 4096 16384]
[--dtypes bf16 fp16]``; ``--plot-only`` redraws the plot from the CSV in ``--out`` (no GPU).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_attention import flops
from benchmarks.results_csv import read_csv, run_meta, shape_bars, start_gpu_run, write_csv

TOKENS, MODEL_DIM = 16384, 2048
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Step 11 of NOTES.md: the scale folded into the exponent's multiply-add (FOLD_SCALE=True, an
# option the table does not take) against the table, and blocks and stages around the table's.
# Entries: None (the launch table), ("table", flags) or (BLOCK_M, BLOCK_N, warps, stages, flags).
STEP11 = {
    128: [None, ("table", dict(FOLD_SCALE=True)), (128, 128, 8, 2, dict(TMA=True)),
          (128, 64, 8, 3, dict(TMA=True))],
    64: [None, ("table", dict(FOLD_SCALE=True)), (128, 128, 8, 3, dict(TMA=True)),
         (128, 64, 4, 4, dict(TMA=True))],
}


def entry_config(entry, table: dict) -> dict:
    """The forward config of one entry of ``STEP11``."""
    if entry is None:
        return dict(table)
    if entry[0] == "table":
        return dict(table, **entry[1])
    bm, bn, w, s, flags = entry
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, **flags)


def label(entry, cfg: dict) -> str:
    """``table``, ``table`` and the entry's flags, or the blocks, warps, stages and flags."""
    if entry is None:
        return "table"
    if entry[0] == "table":
        return " ".join(["table", *(f"{k}={int(v)}" for k, v in entry[1].items())])
    flags = [f"{k}={int(v)}" for k, v in cfg.items() if k.isupper() and not k.startswith("BLOCK")]
    return " ".join(["{BLOCK_M}x{BLOCK_N} w{num_warps} s{num_stages}".format(**cfg), *flags])


def run(args) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from kernels.band import Band
    from kernels.flash_fwd import attention_forward, fwd_config

    rows = []
    for dtype_name, head_dim, causal, n in itertools.product(args.dtypes, args.head_dims, (False, True),
                                                             args.seqlens):
        dtype = DTYPES[dtype_name]
        torch.manual_seed(0)
        b, h = max(1, TOKENS // n), MODEL_DIM // head_dim
        q, k, v = (torch.randn(b, h, n, head_dim, device="cuda", dtype=dtype) for _ in range(3))
        band, scale = Band.from_window((-1, -1), causal), head_dim ** -0.5
        refs = {}
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION),
                              ("sdpa_flash", SDPBackend.FLASH_ATTENTION)):
            with sdpa_kernel(backend):
                refs[name] = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal),  # noqa: B023
                                      warmup=25, rep=100, return_mode="median")
        table = fwd_config(head_dim, dtype, causal)
        out_table, t_table = None, None
        for entry in STEP11[head_dim]:
            cfg = entry_config(entry, table)
            try:
                out, _ = attention_forward(q, k, v, band, scale, config=dict(cfg))
                t = do_bench(lambda: attention_forward(q, k, v, band, scale, config=dict(cfg)),  # noqa: B023
                             warmup=25, rep=100, return_mode="median")
            except Exception as err:  # noqa: BLE001 -- out of shared memory: a result
                print(f"  {label(entry, cfg)}: {type(err).__name__}: {str(err)[:100]}")
                continue
            if entry is None:
                out_table, t_table = out, t
            diff = (out.float() - out_table.float()).abs().max().item()
            rel = ((out.float() - out_table.float()).norm() / out_table.float().norm()).item()
            if not rel < 1e-2:  # a different answer makes the timing moot
                raise RuntimeError(f"{label(entry, cfg)}: relative difference {rel:.1e} from the table")
            rows.append(dict(dtype=dtype_name, head_dim=head_dim, causal=int(causal), seqlen=n,
                             variant=label(entry, cfg), table=int(entry is None), ms=f"{t:.4f}",
                             tflops=f"{flops(b, h, n, head_dim, causal, 'fwd') / t / 1e9:.1f}",
                             vs_table=f"{t_table / t:.3f}", vs_cudnn=f"{refs['cudnn'] / t:.3f}",
                             vs_sdpa_flash=f"{refs['sdpa_flash'] / t:.3f}", max_abs_diff=f"{diff:.1e}"))
            print(" ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
        write_csv(args.out / "fwd_step11.csv", run_meta(), rows)
    return rows


def plot(out: Path) -> Path:
    """``fwd_step11.png`` from ``fwd_step11.csv`` in ``out``: bf16, per shape, each variant's speed
    against the table's (same run), and the table's against cuDNN's."""
    meta, rows, _ = read_csv(out / "fwd_step11.csv")
    rows = [r for r in rows if r["dtype"] == "bf16"]
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    by = {(r["variant"], r["head_dim"], r["causal"], r["seqlen"]): r for r in rows}
    series = {"table / cuDNN": [float(by[("table", *s)]["vs_cudnn"]) for s in shapes]}
    series["FOLD_SCALE=1 / table"] = [float(by[("table FOLD_SCALE=1", *s)]["vs_table"]) for s in shapes]
    return shape_bars(out / "fwd_step11.png", shapes, series, meta,
                      ylabel="speed ratio (same run)", ncol=2, ylim=1.3,
                      title="Forward on the H200, bf16, 16k tokens per batch: step 11 of benchmarks/NOTES.md")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the CSV and the PNG")
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[128, 64], choices=sorted(STEP11))
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--plot-only", action="store_true", help="redraw fwd_step11.png from the CSV in --out")
    args = p.parse_args(argv)
    if not args.plot_only:
        start_gpu_run(p, args.out, "benchmarks.fwd_explore")
        run(args)
    print(f"wrote {plot(args.out)}")


if __name__ == "__main__":
    main()
