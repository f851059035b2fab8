"""Checks for notebook 12 (performance): the FLOP count, the forward's arithmetic intensity, and
which launch configurations fit in shared memory."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

import kernels
from kernels.iocost import A100_SXM, H100_SXM, flash2_kernels_io
from kernels.iocost import flops as flops_per_head

from . import Mismatch, describe, exercise, expect_close

MODES = ("fwd", "bwd", "fwd_bwd")
#: The committed H100 sweep of launch configurations (benchmarks/tune_attention.py).
RESULTS = Path(kernels.__file__).resolve().parents[1] / "benchmarks" / "results"
TUNE_CSV = RESULTS / "h100" / "tune_attention.csv"


def reference_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode) -> float:
    """The FlashAttention papers' count, from kernels.iocost.flops (per head) times batch x heads."""
    fwd = flops_per_head(seqlen_q, head_dim, N_k=seqlen_k, causal=causal)
    bwd = flops_per_head(seqlen_q, head_dim, N_k=seqlen_k, causal=causal, backward=True)
    return batch * heads * {"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[mode]


@exercise("12.attention_flops")
def _attention_flops(attention_flops) -> str:
    """attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode) -> float."""
    cases = [dict(batch=1, heads=1, seqlen_q=1, seqlen_k=1, head_dim=1),
             dict(batch=16, heads=32, seqlen_q=1024, seqlen_k=1024, head_dim=64),
             dict(batch=1, heads=16, seqlen_q=16384, seqlen_k=16384, head_dim=128),
             dict(batch=3, heads=5, seqlen_q=7, seqlen_k=13, head_dim=40),  # seqlen_q != seqlen_k
             dict(batch=2, heads=4, seqlen_q=1, seqlen_k=4096, head_dim=128)]  # one decoding query
    for case in cases:
        for causal in (False, True):
            for mode in MODES:
                got = attention_flops(**case, causal=causal, mode=mode)
                expect_close(f"{describe(case)}, causal={causal}, mode={mode!r}", got,
                             reference_flops(**case, causal=causal, mode=mode), rtol=1e-12)
    return f"{len(cases)} shapes (seqlen_q != seqlen_k, one query) x causal or not x fwd, bwd, fwd_bwd"


def reference_intensity(seqlen, head_dim, block_m, dtype_bytes) -> float:
    """FLOPs of the forward over the bytes of kernels.iocost's model of the forward kernel."""
    traffic = flash2_kernels_io(seqlen, head_dim, block_m=block_m, block_n=64)["_attn_fwd"]
    return flops_per_head(seqlen, head_dim) / traffic.bytes(dtype_bytes)


@exercise("12.forward_intensity")
def _forward_intensity(forward_intensity) -> str:
    """forward_intensity(seqlen, head_dim, block_m, dtype_bytes) -> FLOP per byte, one head."""
    cases = [dict(seqlen=1, head_dim=1, block_m=16), dict(seqlen=7, head_dim=3, block_m=64),
             dict(seqlen=100, head_dim=64, block_m=64), dict(seqlen=1000, head_dim=40, block_m=128),
             dict(seqlen=4096, head_dim=128, block_m=128), dict(seqlen=16384, head_dim=64, block_m=64)]
    for case in cases:
        for dtype_bytes in (2, 4):
            got = forward_intensity(**case, dtype_bytes=dtype_bytes)
            expect_close(f"{describe(case)}, dtype_bytes={dtype_bytes}", got,
                         reference_intensity(**case, dtype_bytes=dtype_bytes), rtol=1e-9)
    return f"{len(cases)} shapes, ragged last Q blocks, 2- and 4-byte elements"


def reference_fits(block_m, block_n, head_dim, num_stages, dtype_bytes=2,
                   smem_bytes=H100_SXM.smem_bytes) -> bool:
    """The Q tile once, num_stages K tiles and as many V tiles, within smem_bytes."""
    return (block_m + 2 * num_stages * block_n) * head_dim * dtype_bytes <= smem_bytes


def _sweep_launches() -> list[tuple[dict, bool]]:
    """The forward configurations of the committed sweep, and whether each one launched."""
    if not TUNE_CSV.exists():
        return []
    from benchmarks.results_csv import read_csv  # the checkout's reader (benchmarks/ is not installed)

    _, rows, _ = read_csv(TUNE_CSV)
    return [(dict(block_m=int(r["BLOCK_M"]), block_n=int(r["BLOCK_N"]), head_dim=int(r["head_dim"]),
                  num_stages=int(r["num_stages"])), math.isfinite(float(r["ms"])))
            for r in rows if r["kernel"] == "fwd"]


@exercise("12.fits_in_smem")
def _fits_in_smem(fits_in_smem) -> str:
    """fits_in_smem(block_m, block_n, head_dim, num_stages, dtype_bytes, smem_bytes) -> bool."""
    launches = _sweep_launches()
    for case, launched in launches:
        got = fits_in_smem(**case, dtype_bytes=2, smem_bytes=H100_SXM.smem_bytes)
        if not isinstance(got, bool | np.bool_):
            raise Mismatch(f"{describe(case)}: expected True or False, got {got!r}")
        if bool(got) != launched:
            raise Mismatch(f"{describe(case)}, bf16, H100: you say {'fits' if got else 'does not fit'}, but "
                           f"it {'launched' if launched else 'failed to launch'} in the committed sweep")
    a100 = A100_SXM.smem_bytes  # 163 KiB
    exact = (128 + 2 * 2 * 64) * 64 * 2  # a budget met to the byte fits
    h100 = H100_SXM.smem_bytes
    cases = [dict(block_m=256, block_n=128, head_dim=128, num_stages=3, dtype_bytes=2, smem_bytes=h100),
             dict(block_m=128, block_n=64, head_dim=128, num_stages=3, dtype_bytes=4, smem_bytes=h100),
             dict(block_m=64, block_n=32, head_dim=128, num_stages=4, dtype_bytes=4, smem_bytes=h100),
             dict(block_m=128, block_n=128, head_dim=128, num_stages=3, dtype_bytes=2, smem_bytes=a100),
             dict(block_m=128, block_n=64, head_dim=128, num_stages=3, dtype_bytes=2, smem_bytes=a100),
             dict(block_m=128, block_n=64, head_dim=64, num_stages=2, dtype_bytes=2, smem_bytes=exact),
             dict(block_m=128, block_n=64, head_dim=64, num_stages=2, dtype_bytes=2, smem_bytes=exact - 1),
             dict(block_m=16, block_n=16, head_dim=256, num_stages=1, dtype_bytes=2, smem_bytes=h100)]
    for case in cases:
        got = fits_in_smem(**case)
        want = reference_fits(**case)
        if bool(got) != want:
            tiles = case["block_m"] + 2 * case["num_stages"] * case["block_n"]
            need = tiles * case["head_dim"] * case["dtype_bytes"]
            raise Mismatch(f"{describe(case)}: got {got!r}, expected {want} (the tiles need {need:,} bytes)")
    seen = f"all {len(launches)} forward configurations of the committed H100 sweep, and " if launches else ""
    return f"{seen}{len(cases)} more (fp32, an A100's 163 KiB, a budget met to the byte)"
