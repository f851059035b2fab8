"""Checks for notebook 02 (tiling): the traffic of the blocked matmul, one output tile from padded
tiles, and the softmax statistics of a row read a tile at a time."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import Mismatch, describe, exercise, expect_close

# (n, m, p, T) for A (n x m) @ B (m x p): tiles that divide, tiles that do not, a tile larger than
# the matrix, rectangles both ways
LOADS_CASES = [dict(n=256, m=256, p=256, T=64), dict(n=1, m=1, p=1, T=1), dict(n=1, m=1, p=1, T=16),
               dict(n=256, m=256, p=256, T=48), dict(n=5, m=7, p=11, T=3), dict(n=100, m=37, p=64, T=32),
               dict(n=64, m=37, p=100, T=32), dict(n=4096, m=128, p=4096, T=128),
               dict(n=1000, m=64, p=3, T=7)]


def _loads_by_enumeration(n: int, m: int, p: int, T: int) -> int:
    """What blocked_matmul loads, counted tile pair by tile pair (not from the closed form)."""
    rows = [min(T, n - i) for i in range(0, n, T)]  # heights of the row blocks of A and C
    inner = [min(T, m - k) for k in range(0, m, T)]  # widths of A's column blocks, heights of B's
    cols = [min(T, p - j) for j in range(0, p, T)]  # widths of the column blocks of B and C
    return sum(r * kk + kk * c for r in rows for c in cols for kk in inner)


@exercise("02.matmul_loads")
def _matmul_loads(matmul_loads) -> str:
    """matmul_loads(n, m, p, T) -> the elements blocked_matmul loads for (n x m) @ (m x p)."""
    for case in LOADS_CASES:
        got = matmul_loads(**case)
        want = _loads_by_enumeration(**case)
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise Mismatch(f"case {describe(case)}: expected a number of elements, got {type(got).__name__}")
        if got != want:
            raise Mismatch(f"case {describe(case)}: got {got:,}, expected {want:,} elements")
    return f"{len(LOADS_CASES)} cases: tiles that divide n and tiles that do not, rectangles, T > n"


# (n, m, p, T): edges in every direction, a tile wider than the inner dimension, a 1 x 1 matrix
TILE_CASES = [dict(n=1, m=1, p=1, T=4), dict(n=8, m=8, p=8, T=4), dict(n=5, m=7, p=3, T=2),
              dict(n=13, m=29, p=11, T=8), dict(n=10, m=3, p=17, T=16), dict(n=9, m=33, p=6, T=4)]


@exercise("02.tile_product")
def _tile_product(tile_product) -> str:
    """tile_product(A, B, i, j, T) -> the T x T tile (i, j) of A @ B, zero past C's edges."""
    rng = np.random.default_rng(2)
    for case in TILE_CASES:
        n, m, p, T = case["n"], case["m"], case["p"], case["T"]
        A, B = rng.standard_normal((n, m)), rng.standard_normal((m, p))
        padded = np.zeros((math.ceil(n / T) * T, math.ceil(p / T) * T))  # C, padded to whole tiles
        padded[:n, :p] = A @ B
        for i in range(math.ceil(n / T)):
            for j in range(math.ceil(p / T)):
                got = tile_product(A.copy(), B.copy(), i, j, T)
                want = padded[i * T:(i + 1) * T, j * T:(j + 1) * T]
                expect_close(f"case {describe(case)}, tile (i={i}, j={j})", got, want, rtol=1e-9, atol=1e-12)
    return f"{len(TILE_CASES)} cases, every tile: ragged edges in n, m and p, a tile wider than the matrix"


def _row_cases() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(3)
    rising = np.linspace(0.0, 20.0, 29)  # the max in the last tile: a max fixed too early is wrong
    masked = 2 * rng.standard_normal(20)
    masked[4:8] = -np.inf  # the second tile of 4 is fully masked
    return [("one score, tile of 1", np.array([0.3]), 1),
            ("7 scores, tiles of 3 (3 + 3 + 1)", 2 * rng.standard_normal(7), 3),
            ("29 rising scores, tiles of 8 (max in the last tile)", rising, 8),
            ("29 falling scores, tiles of 8 (max in the first tile)", rising[::-1].copy(), 8),
            ("30 scores near 800, tiles of 7 (exp(800) overflows)", 800 + 3 * rng.standard_normal(30), 7),
            ("20 scores, tiles of 4, the second tile all -inf (masked)", masked, 4),
            ("10 scores, one tile of 16", rng.standard_normal(10), 16)]


@exercise("02.softmax_stats")
def _softmax_stats(softmax_stats) -> str:
    """softmax_stats(tiles) -> (m, l): the max of a row and sum exp(x - m), reading it tile by tile."""
    cases = _row_cases()
    for what, row, T in cases:
        tiles = [row[j:j + T].copy() for j in range(0, len(row), T)]  # the last one may be shorter
        got = softmax_stats(tiles)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Mismatch(f"{what}: expected a tuple (m, l), got {type(got).__name__}")
        m = row.max()
        expect_close(f"{what}: m", got[0], m, rtol=1e-12)
        expect_close(f"{what}: l", got[1], np.exp(row - m).sum(), rtol=1e-10)
    return f"{len(cases)} rows: ragged last tiles, the max first or last, scores near 800, a masked tile"
