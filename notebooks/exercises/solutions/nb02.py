"""Solutions to notebook 02's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import math

import numpy as np


def matmul_loads(n, m, p, T):
    # each of the ceil(p / T) column blocks of C streams all of A (n x m) past it once,
    # and each of the ceil(n / T) row blocks streams all of B (m x p)
    return math.ceil(p / T) * n * m + math.ceil(n / T) * m * p


def tile_product(A, B, i, j, T):
    def load_tile(X, r, c):  # tile (r, c) of X, T x T, zero past X's edges (a masked load, other=0)
        tile = np.zeros((T, T))
        block = X[r * T:(r + 1) * T, c * T:(c + 1) * T]  # shorter than T at the bottom and right edges
        tile[:block.shape[0], :block.shape[1]] = block
        return tile

    acc = np.zeros((T, T))  # the output tile, on chip
    for k in range(math.ceil(A.shape[1] / T)):  # every tile of the inner dimension, the ragged one too
        acc += load_tile(A, i, k) @ load_tile(B, k, j)  # the zero padding adds zero products
    return acc


def softmax_stats(tiles):
    m = -math.inf
    for t in tiles:  # pass 1: the max of the row; nothing can be summed before it is known
        m = max(m, t.max())
    l = 0.0
    for t in tiles:  # pass 2: the sum, every term exp(x - m) <= 1
        l += np.exp(t - m).sum()
    return m, l


def _load_tile(X, r, c, T):
    tile = np.zeros((T, T))
    block = X[r * T:(r + 1) * T, c * T:(c + 1) * T]
    tile[:block.shape[0], :block.shape[1]] = block
    return tile


def _loads_no_ceil(n, m, p, T):
    """2 n m p / T: exact only when T divides n and p (the square case's 2n^3/T)."""
    return 2 * n * m * p // T


def _loads_floor(n, m, p, T):
    """Counts the blocks with n // T: drops the ragged blocks at the edges."""
    return (p // T) * n * m + (n // T) * m * p


def _loads_swapped(n, m, p, T):
    """Loads A once per row block and B once per column block: the wrong way round."""
    return math.ceil(n / T) * n * m + math.ceil(p / T) * m * p


def _tile_drop_ragged(A, B, i, j, T):
    """Loops over m // T inner tiles: drops the last, ragged one."""
    acc = np.zeros((T, T))
    for k in range(A.shape[1] // T):
        acc += _load_tile(A, i, k, T) @ _load_tile(B, k, j, T)
    return acc


def _tile_inner_from_rows(A, B, i, j, T):
    """Counts the inner tiles from A's rows (n), not its columns (m)."""
    acc = np.zeros((T, T))
    for k in range(math.ceil(A.shape[0] / T)):
        acc += _load_tile(A, i, k, T) @ _load_tile(B, k, j, T)
    return acc


def _tile_cropped(A, B, i, j, T):
    """Returns the tile cut to C's edge (shorter than T x T at the bottom and right)."""
    return sum(A[i * T:(i + 1) * T, k:k + T] @ B[k:k + T, j * T:(j + 1) * T] for k in range(0, A.shape[1], T))


def _stats_own_max(tiles):
    """Sums each tile against its own max and adds the sums up, without rescaling them to the row's."""
    m = max(t.max() for t in tiles)
    return m, sum(np.exp(t - t.max()).sum() for t in tiles)


def _stats_no_max(tiles):
    """Sums exp(x) with no max subtracted: overflows at scores near 800, and is e^m times too big."""
    return max(t.max() for t in tiles), sum(np.exp(t).sum() for t in tiles)


def _stats_first_tile_max(tiles):
    """One pass, with the max of the first tile standing in for the row's."""
    m = tiles[0].max()
    return m, sum(np.exp(t - m).sum() for t in tiles)


MISTAKES = {"matmul_loads": [_loads_no_ceil, _loads_floor, _loads_swapped],
            "tile_product": [_tile_drop_ragged, _tile_inner_from_rows, _tile_cropped],
            "softmax_stats": [_stats_own_max, _stats_no_max, _stats_first_tile_max]}
