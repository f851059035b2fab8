"""The fp8 (e4m3) forward against the bf16 kernel and cuDNN, in one run, and its accuracy.

Speed (``fp8_fwd.csv``): for each shape (16k tokens per batch, model width 2048, head dims 64 and
128, causal and not, N = 1k, 4k, 16k), on the same bf16 inputs, the forward time of

* ``bf16``: ``kernels.flash_attention`` (its launch table), the reference of every ratio;
* ``cudnn``: SDPA's cuDNN backend, bf16;
* ``bf16_ptr``: the bf16 table's blocks with k and v loaded through pointers instead of tensor
  descriptors (``TMA``);
* ``fp8``: ``kernels.fp8.fp8_forward`` on inputs quantised beforehand (V column-major), at each
  launch configuration of ``CONFIGS`` (the first is the forward's table for fp8; ``ptr``: through
  pointers);
* ``fp8_vrow``: the same with V quantised row-major (what Hopper's fp8 MMA does not read directly);
* ``fp8_e2e``: ``kernels.flash_attention_fp8`` on the bf16 inputs: the quantisation included.

Accuracy (``fp8_accuracy.csv``): at N = 4096 (one sequence, 4 heads), the relative error against
float64 of the fp8 and bf16 outputs, and of the float64 attention of the quantised inputs (what
rounding q, k and v alone costs), for standard-normal inputs and for inputs with 0.1% of their
entries ten times larger (outliers, as in notebook 13).

``fp8_fwd.png``: each variant's speed relative to the bf16 kernel, per shape. Usage (GPU only):
``python -m benchmarks.bench_fp8 --out benchmarks/results/h200``; ``--plot-only`` redraws the
plot from the CSV in ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_attention import MODEL_DIM, TOKENS, flops
from benchmarks.results_csv import read_csv, run_meta, shape_bars, start_gpu_run, write_csv

# Launch configurations per head dim: (BLOCK_M, BLOCK_N, warps, stages, flags), "table" for the
# forward's fp8 table with flags overriding it; TMA: k and v through tensor descriptors. An e4m3
# tile is half the bytes of a bf16 one, so wider key blocks fit in shared memory. The wider sweep
# that chose the table is benchmarks/results/h200/fp8_fwd_explore.csv (benchmarks/NOTES.md, step 7).
TMA, POINTERS = dict(TMA=True), dict(TMA=False)
CONFIGS = {
    64: [("table", {}), ("table", POINTERS), (128, 128, 4, 3, TMA), (64, 64, 4, 3, TMA)],
    128: [("table", {}), ("table", POINTERS), (128, 64, 8, 3, TMA)],
}
FIELDS = ("head_dim", "causal", "seqlen", "variant", "config", "ms", "tflops", "vs_bf16",
          "vs_cudnn", "rel_diff_bf16")


def with_outliers(shape, gen, share=1e-3, factor=10.0):
    x = torch.randn(shape, generator=gen, device="cuda")
    x[torch.rand(shape, generator=gen, device="cuda") < share] *= factor
    return x


def accuracy(meta: dict, out: Path) -> list[dict]:
    """fp8 and bf16 against float64, per head dim, mask and input kind (see the module's text)."""
    from kernels import attention_reference, flash_attention, flash_attention_fp8, quantize_fp8, rel_err

    rows = []
    gen = torch.Generator(device="cuda").manual_seed(0)
    for head_dim in (64, 128):
        for causal in (False, True):
            for kind in ("normal", "outliers"):
                shape = (1, 4, 4096, head_dim)
                q, k, v = ((with_outliers(shape, gen) if kind == "outliers"
                            else torch.randn(shape, generator=gen, device="cuda")) for _ in range(3))
                exact = attention_reference(q.double(), k.double(), v.double(), causal=causal)
                qb, kb, vb = (t.bfloat16() for t in (q, k, v))
                with torch.no_grad():
                    fp8 = flash_attention_fp8(qb, kb, vb, causal=causal)
                    bf16 = flash_attention(qb, kb, vb, causal=causal)
                deq = [x8.double() * s.double()[..., None, None]
                       for x8, s in (quantize_fp8(t) for t in (qb, kb, vb))]
                rounded = attention_reference(*deq, causal=causal)
                rows.append(dict(head_dim=head_dim, causal=int(causal), inputs=kind,
                                 fp8=f"{rel_err(fp8, exact):.3e}", bf16=f"{rel_err(bf16, exact):.3e}",
                                 inputs_rounded=f"{rel_err(rounded, exact):.3e}",
                                 p_rounding=f"{rel_err(fp8, rounded):.3e}"))
                print(rows[-1], flush=True)
                del exact, rounded, deq
    write_csv(out / "fp8_accuracy.csv", meta, rows)
    return rows


def speed(args, meta: dict) -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from kernels import flash_attention, flash_attention_fp8, quantize_fp8, rel_err
    from kernels.band import Band
    from kernels.flash_fwd import attention_forward, fwd_config
    from kernels.fp8 import E4M3, fp8_forward

    def bench(fn):
        return do_bench(fn, warmup=25, rep=100, return_mode="median")

    rows = []
    for head_dim in args.head_dims:
        for causal in (False, True):
            for n in args.seqlens:
                torch.manual_seed(n + head_dim)
                b, h = max(1, TOKENS // n), MODEL_DIM // head_dim
                q, k, v = (torch.randn(b, h, n, head_dim, device="cuda", dtype=torch.bfloat16)
                           for _ in range(3))
                band, scale = Band.from_window((-1, -1), causal), head_dim ** -0.5
                (q8, qd), (k8, kd) = quantize_fp8(q), quantize_fp8(k)
                v8c, vd = quantize_fp8(v, column_major=True)
                v8r, _ = quantize_fp8(v)
                descales = (qd, kd, vd)
                with torch.no_grad():
                    ref = flash_attention(q, k, v, causal=causal)
                    bf16_ptr = dict(fwd_config(head_dim, torch.bfloat16, causal), TMA=False)
                    variants = {"bf16": ("table", lambda: flash_attention(q, k, v, causal=causal)),
                                "bf16_ptr": ("table ptr", lambda: attention_forward(
                                    q, k, v, band, scale, config=bf16_ptr)[0])}
                    for *shape, flags in CONFIGS[head_dim]:
                        table = shape == ["table"]
                        c = dict(fwd_config(head_dim, E4M3, causal) if table else
                                 dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), shape)),
                                 **flags)
                        name = ("table" if table else "{}x{} w{} s{}".format(*shape)) + (
                            "" if table and not flags else " tma" if c.get("TMA") else " ptr")
                        variants[f"fp8 {name}"] = (name, lambda c=c: fp8_forward(
                            q8, k8, v8c, descales, band, scale, torch.bfloat16, config=c)[0])
                    variants["fp8_vrow"] = ("table", lambda: fp8_forward(
                        q8, k8, v8r, descales, band, scale, torch.bfloat16)[0])
                    variants["fp8_e2e"] = ("table", lambda: flash_attention_fp8(q, k, v, causal=causal))
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        t_cudnn = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                    times, diffs = {}, {}
                    for name, (_, fn) in variants.items():
                        try:
                            diffs[name] = rel_err(fn(), ref)
                            times[name] = bench(fn)
                        except Exception as err:  # noqa: BLE001 -- out of shared memory, say
                            print(f"  {name}: {type(err).__name__}: {str(err)[:100]}")
                    times["cudnn"], diffs["cudnn"] = t_cudnn, float("nan")
                fl = flops(b, h, n, head_dim, causal, "fwd")
                for name, t in times.items():
                    variant = name.split(" ")[0]
                    rows.append(dict(head_dim=head_dim, causal=int(causal), seqlen=n, variant=variant,
                                     config=variants[name][0] if name in variants else "",
                                     ms=f"{t:.4f}", tflops=f"{fl / t / 1e9:.1f}",
                                     vs_bf16=f"{times['bf16'] / t:.3f}", vs_cudnn=f"{t_cudnn / t:.3f}",
                                     rel_diff_bf16=f"{diffs[name]:.1e}"))
                print(f"d={head_dim} causal={int(causal)} N={n}: " + "  ".join(
                    f"{name} {times['bf16'] / t:.2f}x" for name, t in times.items()) + "  (vs bf16)",
                    flush=True)
                write_csv(args.out / "fp8_fwd.csv", meta, rows, fields=FIELDS)
                torch.cuda.empty_cache()
    return rows


def plot(out: Path) -> Path:
    """Per shape: the fastest fp8 configuration, the table's with and without TMA, the bf16 kernel
    without TMA, fp8 with V row-major and with the quantisation included, and cuDNN, as speed
    relative to the bf16 kernel (``fp8_fwd.png`` in ``out``)."""
    meta, rows, _ = read_csv(out / "fp8_fwd.csv")
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    picks = {
        "fp8, fastest configuration": lambda r: r["variant"] == "fp8",
        "fp8, launch table": lambda r: r["variant"] == "fp8" and r["config"] == "table",
        "fp8, launch table through pointers": lambda r: (r["variant"] == "fp8"
                                                         and r["config"] == "table ptr"),
        "bf16, k and v through pointers": lambda r: r["variant"] == "bf16_ptr",
        "fp8, V row-major": lambda r: r["variant"] == "fp8_vrow",
        "fp8, quantisation included": lambda r: r["variant"] == "fp8_e2e",
        "cuDNN, bf16": lambda r: r["variant"] == "cudnn",
    }
    series = {label: [max((float(r["vs_bf16"]) for r in rows
                           if (r["head_dim"], r["causal"], r["seqlen"]) == s and pick(r)),
                          default=float("nan")) for s in shapes]
              for label, pick in picks.items()}
    return shape_bars(out / "fp8_fwd.png", shapes, series, meta,
                      ylabel="forward speed / our bf16 kernel's (same run)",
                      title="fp8 (e4m3) forward, 16k tokens per batch")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the CSVs and the PNG")
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    p.add_argument("--plot-only", action="store_true", help="redraw fp8_fwd.png from the CSV in --out")
    p.add_argument("--no-accuracy", action="store_true", help="time only")
    args = p.parse_args(argv)
    if not args.plot_only:
        start_gpu_run(p, args.out, "benchmarks.bench_fp8")
        meta = run_meta()
        if not args.no_accuracy:
            accuracy(meta, args.out)
        speed(args, meta)
    print(f"wrote {plot(args.out)}")


if __name__ == "__main__":
    main()
