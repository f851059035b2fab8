"""Checks for notebook 13 (what Hopper adds): the dK/dV kernel's shared memory against the
compiler's reports, the backward at the dQ kernel's rate per matrix product, how FlashAttention-3
shares the register file between its producer and consumer warpgroups, and the idle share of a
kernel's last wave."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import kernels

from . import Mismatch, describe, exercise, expect_close

RESULTS = Path(kernels.__file__).resolve().parents[1] / "benchmarks" / "results" / "h200"
#: ptxas's shared memory may exceed the tiles' bytes by this much (scratch the compiler adds)
SCRATCH_BYTES = 1024
MATMULS = {"_attn_bwd_dkdv": 4, "_attn_bwd_dq": 3}


def _read(name: str) -> list[dict]:
    path = RESULTS / name
    if not path.exists():
        return []
    from benchmarks.results_csv import read_csv  # the checkout's reader (benchmarks/ is not installed)

    return read_csv(path)[1]


def reference_smem(block_m, block_n, head_dim, num_stages, dtype_bytes=2) -> int:
    """K and V (block_n x head_dim) once; one Q and one dO tile (block_m x head_dim) per stage."""
    return (2 * block_n + 2 * num_stages * block_m) * head_dim * dtype_bytes


def _ptxas_reports() -> list[tuple[dict, int]]:
    """The default-loop dK/dV configurations of the committed sweeps, with the shared memory
    ptxas reported for each (bf16, head dim 128)."""
    seen = {}
    for name in ("bwd_sweep_1.csv", "bwd_sweep_2.csv"):
        for r in _read(name):
            stats = dict(re.findall(r"([a-z]+) (\d+)", r["dkdv_stats"]))
            if stats and r["kv_b"] == "0":
                case = dict(block_m=int(r["block_m"]), block_n=int(r["block_n"]), head_dim=int(r["head_dim"]),
                            num_stages=int(r["stages"]))
                seen[tuple(case.values())] = (case, int(stats["shared"]))
    return list(seen.values())


@exercise("13.dkdv_smem_bytes")
def _dkdv_smem_bytes(dkdv_smem_bytes) -> str:
    """dkdv_smem_bytes(block_m, block_n, head_dim, num_stages, dtype_bytes) -> bytes."""
    reports = _ptxas_reports()
    for case, shared in reports:
        got = dkdv_smem_bytes(**case, dtype_bytes=2)
        if not isinstance(got, int | float | np.integer | np.floating):
            raise Mismatch(f"{describe(case)}: expected a number of bytes, got {got!r}")
        if not 0 <= shared - got <= SCRATCH_BYTES:
            raise Mismatch(f"{describe(case)}, bf16: you count {got:,.0f} bytes; ptxas reported {shared:,} "
                           f"for the compiled kernel (the tiles plus at most {SCRATCH_BYTES} bytes of "
                           "scratch)")
    cases = [dict(block_m=64, block_n=128, head_dim=128, num_stages=1, dtype_bytes=2),
             dict(block_m=16, block_n=64, head_dim=64, num_stages=4, dtype_bytes=2),
             dict(block_m=128, block_n=32, head_dim=40, num_stages=2, dtype_bytes=4),  # fp32, Q larger than K
             dict(block_m=32, block_n=32, head_dim=256, num_stages=3, dtype_bytes=1),  # fp8
             dict(block_m=1, block_n=1, head_dim=1, num_stages=1, dtype_bytes=2)]
    for case in cases:
        expect_close(describe(case), dkdv_smem_bytes(**case), reference_smem(**case), rtol=0, atol=0.5)
    seen = (f"the {len(reports)} default-loop configurations whose shared memory ptxas reported "
            "(within its scratch), and ") if reports else ""
    return f"{seen}{len(cases)} more (one stage, fp32 and fp8 elements, block_m > block_n)"


def _kernel_times() -> dict[tuple, dict[str, dict[str, float]]]:
    """{(head_dim, causal, seqlen): {variant: {kernel: ms}}} of the committed profile."""
    out: dict = {}
    for r in _read("bwd_kernels.csv"):
        shape = (int(r["head_dim"]), int(r["causal"]), int(r["seqlen"]))
        out.setdefault(shape, {}).setdefault(r["variant"], {})[r["kernel"]] = float(r["ms"])
    return out


def reference_at_dq_rate(kernel_ms: dict[str, float]) -> float:
    per_matmul = kernel_ms["_attn_bwd_dq"] / MATMULS["_attn_bwd_dq"]
    dkdv = per_matmul * MATMULS["_attn_bwd_dkdv"]
    return kernel_ms["_attn_bwd_preprocess"] + dkdv + kernel_ms["_attn_bwd_dq"]


@exercise("13.backward_at_dq_rate")
def _backward_at_dq_rate(backward_at_dq_rate) -> str:
    """backward_at_dq_rate({kernel name: ms}) -> ms of the backward if dK/dV ran at dQ's rate."""
    made_up = [{"_attn_bwd_preprocess": 0.0, "_attn_bwd_dkdv": 1.0, "_attn_bwd_dq": 3.0},
               {"_attn_bwd_preprocess": 2.0, "_attn_bwd_dkdv": 9.0, "_attn_bwd_dq": 0.3},
               {"_attn_bwd_preprocess": 0.5, "_attn_bwd_dkdv": 4.0, "_attn_bwd_dq": 3.0}]
    for ms in made_up:
        expect_close(f"kernel times {ms}", backward_at_dq_rate(dict(ms)), reference_at_dq_rate(ms), rtol=1e-9)
    profile = _kernel_times()
    over_flex, over_cudnn = [], []
    for (d, causal, n), variants in sorted(profile.items()):
        ours = variants["ours"]
        want = reference_at_dq_rate(ours)
        expect_close(f"bwd_kernels.csv, ours at d={d} causal={causal} N={n}", backward_at_dq_rate(dict(ours)),
                     want, rtol=1e-9)
        if d == 128:
            over_flex.append(sum(variants["flex"].values()) / want)
            over_cudnn.append(sum(variants["cudnn"].values()) / want)
    if not over_flex:
        return f"{len(made_up)} made-up profiles"
    return (f"{len(made_up)} made-up profiles and the {len(profile)} shapes of bwd_kernels.csv. At the dQ "
            f"kernel's rate, our backward at head dim 128 would run at {min(over_flex):.2f}x-"
            f"{max(over_flex):.2f}x FlexAttention's speed and {min(over_cudnn):.2f}x-"
            f"{max(over_cudnn):.2f}x cuDNN's (kernel times summed, same run)")


#: FlashAttention-3's forward on Hopper (hopper/flash_fwd_kernel_sm90.h, Dao-AILab/flash-attention):
#: (consumer warpgroups, the producer's registers) -> each consumer thread's registers, as its
#: LoadRegisterRequirement and MmaRegisterRequirement set them (24 with TMA loads of K and V, 40
#: with cp.async loads, for two consumer warpgroups)
FA3_REGISTERS = {(1, 56): 256, (2, 24): 240, (2, 40): 232, (3, 32): 160}


def reference_consumer_registers(consumer_warpgroups, producer_registers) -> int:
    left = (65536 // 128 - producer_registers) // consumer_warpgroups
    return min(256, left - left % 8)


@exercise("13.consumer_registers")
def _consumer_registers(consumer_registers) -> str:
    """consumer_registers(consumer_warpgroups, producer_registers) -> registers per consumer thread."""
    for (n, p), want in FA3_REGISTERS.items():
        got = consumer_registers(n, p)
        if got != want:
            raise Mismatch(f"consumer_warpgroups={n}, producer_registers={p}: got {got!r}, expected {want} "
                           "(FlashAttention-3's hopper/flash_fwd_kernel_sm90.h)")
    cases = [(1, 24), (2, 32), (2, 56), (3, 24), (4, 24), (5, 24), (7, 24), (4, 56)]
    for n, p in cases:
        got = consumer_registers(n, p)
        want = reference_consumer_registers(n, p)
        if got != want:
            raise Mismatch(f"consumer_warpgroups={n}, producer_registers={p}: got {got!r}, expected {want}")
        if 128 * (p + n * got) > 65536 or got % 8:
            raise Mismatch(f"consumer_warpgroups={n}, producer_registers={p}: {got} per consumer thread does "
                           "not fit the register file or is not a multiple of 8")
    return (f"FlashAttention-3's {len(FA3_REGISTERS)} settings and {len(cases)} more (one to seven consumer "
            "warpgroups, the 256 cap, budgets that divide exactly)")


def reference_idle_share(programs, per_sm, sms=132) -> float:
    slots = per_sm * sms
    left = programs % slots or slots  # programs in the last wave
    return 1 - left / slots


@exercise("13.last_wave_idle")
def _last_wave_idle(last_wave_idle) -> str:
    """last_wave_idle(programs, per_sm, sms) -> share of the slots idle in the last wave."""
    cases = [(2048, 1, 132), (4096, 2, 132), (264, 2, 132), (1, 1, 132), (131, 1, 132), (133, 1, 132),
             (1000, 3, 7), (21, 3, 7), (6, 4, 2)]
    for programs, per_sm, sms in cases:
        case = f"programs={programs}, per_sm={per_sm}, sms={sms}"
        expect_close(case, last_wave_idle(programs, per_sm, sms), reference_idle_share(programs, per_sm, sms),
                     rtol=0, atol=1e-9)
    dq, dkdv = reference_idle_share(2048, 1), reference_idle_share(4096, 2)
    return (f"{len(cases)} cases (whole waves, one program, one past a wave). At N = 1k, head dim 128, the "
            f"dQ kernel leaves {dq:.0%} of the H200 idle in its last wave and the dK/dV kernel {dkdv:.0%}")
