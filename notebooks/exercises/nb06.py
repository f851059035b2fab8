"""Checks for notebook 06 (the IO-cost model): the reader's traffic formulas against the simulator.

Each check runs the simulator of ``kernels/iocost`` (which moves data only through a counting
SRAM) on ragged sizes and compares its counts with the reader's formula, element for element.
"""

from __future__ import annotations

import math

import numpy as np

from kernels.iocost import simulate_flash2, simulate_standard

from . import Mismatch, describe, exercise, expect_close

#: SRAM for the checks: large, since the blocks are given (the SRAM only refuses tiles too big)
M_LARGE = 10**8


def _qkv(N: int, N_k: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N_k, d)), rng.standard_normal((N_k, d))


def _read_written(got, what: str) -> tuple:
    if not (isinstance(got, tuple | list) and len(got) == 2):
        raise Mismatch(f"{what}: expected a tuple (elements read, elements written), got {got!r}")
    return got


def _compare(what: str, got, traffic) -> None:
    reads, writes = _read_written(got, what)
    # Name the tensors, so a wrong total says where to look.
    expect_close(f"{what}: elements read ({traffic.reads})", reads, traffic.elements_read, rtol=0, atol=0.5)
    expect_close(f"{what}: elements written ({traffic.writes})", writes, traffic.elements_written,
                 rtol=0, atol=0.5)


# One row; a block wider than N; primes; N != N_k both ways; blocks that divide nothing.
STANDARD_CASES = [dict(N=1, N_k=1, d=4, block_r=1), dict(N=7, N_k=7, d=4, block_r=3),
                  dict(N=13, N_k=5, d=8, block_r=4), dict(N=5, N_k=13, d=8, block_r=2),
                  dict(N=10, N_k=10, d=4, block_r=16), dict(N=37, N_k=29, d=16, block_r=8)]


@exercise("06.standard_forward_io")
def _standard_forward_io(standard_forward_io) -> str:
    """standard_forward_io(N, N_k, d, block_r) -> (read, written): the three kernels' traffic."""
    for seed, case in enumerate(STANDARD_CASES):
        Q, K, V = _qkv(case["N"], case["N_k"], case["d"], seed)
        sim = simulate_standard(Q, K, V, M_LARGE, block_r=case["block_r"], block_c=3)
        got = standard_forward_io(case["N"], case["N_k"], case["d"], case["block_r"])
        _compare(f"case {describe(case)}", got, sim.forward)
    return f"{len(STANDARD_CASES)} cases: one row, primes, N != N_k both ways, ragged row blocks"


# (N, N_k, d, block_m, block_n): blocks that divide nothing; N != N_k both ways (45 queries and
# 20 keys: when causal, the first 25 queries see no key, so Q block 0 loads no K/V at all).
FA2_CASES = [dict(N=1, N_k=1, d=4, block_m=1, block_n=1), dict(N=7, N_k=7, d=4, block_m=3, block_n=2),
             dict(N=16, N_k=16, d=4, block_m=4, block_n=4), dict(N=37, N_k=37, d=8, block_m=8, block_n=5),
             dict(N=13, N_k=5, d=4, block_m=4, block_n=3), dict(N=5, N_k=13, d=4, block_m=2, block_n=4),
             dict(N=45, N_k=20, d=8, block_m=8, block_n=6), dict(N=20, N_k=45, d=8, block_m=16, block_n=8)]


@exercise("06.fa2_forward_io")
def _fa2_forward_io(fa2_forward_io) -> str:
    """fa2_forward_io(N, N_k, d, block_m, block_n, causal) -> (read, written) of the forward kernel."""
    for seed, case in enumerate(FA2_CASES):
        Q, K, V = _qkv(case["N"], case["N_k"], case["d"], seed)
        for causal in (False, True):
            sim = simulate_flash2(Q, K, V, M_LARGE, block_m=case["block_m"], block_n=case["block_n"],
                                  causal=causal)
            got = fa2_forward_io(case["N"], case["N_k"], case["d"], case["block_m"], case["block_n"],
                                 causal)
            _compare(f"case {describe(dict(case, causal=causal))}", got, sim.forward)
    return (f"{len(FA2_CASES)} cases, causal and not: ragged blocks, N != N_k both ways, "
            "a Q block that sees no key")


# (d, block_m, block_n, fwd_block_m): 64 x 64 backward blocks beside the forward's 128 (notebook 06's
# blocks at d = 64), then blocks that tell the two backward loops, and the forward's block, apart.
RATIO_CASES = [dict(d=64, block_m=64, block_n=64, fwd_block_m=128),
               dict(d=16, block_m=32, block_n=16, fwd_block_m=64),
               dict(d=40, block_m=16, block_n=32, fwd_block_m=16),
               dict(d=128, block_m=128, block_n=64, fwd_block_m=32)]


def _moved(case: dict, N: int, *, backward: bool, seed: int) -> int:
    """Elements the simulator's FA-2 backward (or forward) moves at N = N_k, not causal."""
    Q, K, V = _qkv(N, N, case["d"], seed)
    if backward:
        dO = np.random.default_rng(seed + 100).standard_normal((N, case["d"]))
        sim = simulate_flash2(Q, K, V, M_LARGE, block_m=case["block_m"], block_n=case["block_n"], dO=dO)
        return sim.backward.total
    sim = simulate_flash2(Q, K, V, M_LARGE, block_m=case["fwd_block_m"], block_n=case["block_n"])
    return sim.forward.total


def _n2_coefficient(case: dict, *, backward: bool, seed: int) -> float:
    """``a`` of ``T(N) = a N^2 + b N``, exact when every block divides N: (T(2L) - 2 T(L)) / (2 L^2)."""
    L = math.lcm(case["block_m"], case["block_n"], case["fwd_block_m"])
    t_1, t_2 = (_moved(case, n, backward=backward, seed=seed) for n in (L, 2 * L))
    return (t_2 - 2 * t_1) / (2 * L * L)


@exercise("06.backward_over_forward")
def _backward_over_forward(backward_over_forward) -> str:
    """backward_over_forward(d, block_m, block_n, fwd_block_m) -> the large-N ratio of elements moved."""
    for seed, case in enumerate(RATIO_CASES):
        want = (_n2_coefficient(case, backward=True, seed=seed)
                / _n2_coefficient(case, backward=False, seed=seed))
        got = backward_over_forward(case["d"], case["block_m"], case["block_n"], case["fwd_block_m"])
        expect_close(f"case {describe(case)}: backward / forward elements as N grows", got, want, rtol=1e-9)
    return f"{len(RATIO_CASES)} block choices, against the N^2 coefficients of the simulator's counts"
