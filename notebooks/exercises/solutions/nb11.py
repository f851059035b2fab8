"""Solutions to notebook 11's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import numpy as np
import torch

from kernels.ring import merge_partials

#: The ring's step is the package's own merge (kernels/ring.py): show_solution prints its source.
ring_merge = merge_partials


def causal_work(world_size, layout):
    W = world_size

    def chunks(rank):  # the two of the 2W chunks a rank holds
        return (2 * rank, 2 * rank + 1) if layout == "contiguous" else (rank, 2 * W - 1 - rank)

    work = np.zeros((W, W))
    for r in range(W):
        for s in range(W):
            src = (r - s) % W  # the rank whose key/value chunks r holds at step s
            for i in chunks(r):  # query chunk
                for j in chunks(src):  # key chunk
                    work[r, s] += 1.0 if j < i else 0.5 if j == i else 0.0  # past, diagonal, future
    return work


def _merge_average(out, lse, out_b, lse_b):
    """Averages the two outputs, ignoring how much probability mass each part holds."""
    return (out + out_b) / 2, torch.logaddexp(lse, lse_b)


def _merge_nan_when_empty(out, lse, out_b, lse_b):
    """Right for rows with keys; exp(-inf - (-inf)) = NaN for a row that has seen no key yet."""
    new = torch.logaddexp(lse, lse_b)
    return torch.exp(lse - new)[..., None] * out + torch.exp(lse_b - new)[..., None] * out_b, new


def _merge_not_renormalised(out, lse, out_b, lse_b):
    """Weights each part by exp(lse - max) but never divides by their sum: the output drifts."""
    m = torch.maximum(lse, lse_b)
    m = torch.where(m == -torch.inf, 0.0, m)
    w_a, w_b = torch.exp(lse - m), torch.exp(lse_b - m)
    return w_a[..., None] * out + w_b[..., None] * out_b, torch.logaddexp(lse, lse_b)


def _merge_max_lse(out, lse, out_b, lse_b):
    """Right output, but keeps the larger lse instead of log(e^lse + e^lse_b)."""
    return merge_partials(out, lse, out_b, lse_b)[0], torch.maximum(lse, lse_b)


def _work_diagonal_full(world_size, layout):
    """Counts the diagonal chunk (a query chunk against its own keys) as a full pair, not half."""
    work = causal_work(world_size, layout)
    for r in range(world_size):
        work[r, 0] += 1.0  # step 0 is the rank's own chunks: its two diagonals, 0.5 -> 1 each
    return work


def _work_wrong_direction(world_size, layout):
    """Receives from the next rank instead of the previous one: holds (r + s) mod W at step s."""
    work = causal_work(world_size, layout)
    return work[:, [(-s) % world_size for s in range(world_size)]]


def _work_zigzag_shifted(world_size, layout):
    """Zigzag as chunks r and W + r (one from each half, not mirrored): rank r then computes
    W + 2r + 1 chunk pairs, still lopsided."""
    if layout == "contiguous":
        return causal_work(world_size, layout)
    W = world_size
    work = np.zeros((W, W))
    for r in range(W):
        for s in range(W):
            src = (r - s) % W
            for i in (r, W + r):
                for j in (src, W + src):
                    work[r, s] += 1.0 if j < i else 0.5 if j == i else 0.0
    return work


MISTAKES = {"ring_merge": [_merge_average, _merge_nan_when_empty, _merge_not_renormalised, _merge_max_lse],
            "causal_work": [_work_diagonal_full, _work_wrong_direction, _work_zigzag_shifted]}
