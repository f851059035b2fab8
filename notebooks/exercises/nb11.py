"""Checks for notebook 11 (beyond one GPU): the ring's merge step, and the causal work per rank."""

from __future__ import annotations

import math

import numpy as np
import torch

from . import Mismatch, describe, exercise, expect_close

# Rings with ragged blocks: the sequence cut into blocks of these sizes, one per rank. `window`:
# query p sees keys p - window .. p (None: every earlier key); `pad`: the last `pad` positions
# are padding and see no key at all (their rows must end as out = 0, lse = -inf).
RINGS = [dict(blocks=(5,), d=3, window=None, pad=0),
         dict(blocks=(3, 1), d=1, window=None, pad=0),
         dict(blocks=(4, 7, 2), d=8, window=None, pad=1),
         dict(blocks=(1, 6, 3, 5), d=4, window=3, pad=0),
         dict(blocks=(2, 2, 9, 1, 4), d=5, window=6, pad=2)]


def _visible(n: int, window: int | None, pad: int) -> torch.Tensor:
    """[n, n] bool: query i sees key j (causal, within the window, i not padding)."""
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    seen = j <= i
    if window is not None:
        seen &= j >= i - window
    seen[n - pad:] = False
    return seen


def _partial(q, k, v, seen):
    """Attention of q over the keys k, v where `seen` [n_q, n_k] allows, float64: (out, lse);
    a row that sees none of them gets out = 0, lse = -inf. q (B, H, n_q, D), k/v (B, H, n_k, D)."""
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, H, n_q, n_k)
    s = s.masked_fill(~seen, -math.inf)
    lse = torch.logsumexp(s, dim=-1)  # -inf where the row sees nothing
    p = torch.exp(s - torch.where(lse == -math.inf, 0.0, lse)[..., None])  # 0 where unseen
    return p @ v, lse


@exercise("11.ring_merge")
def _ring_merge(ring_merge) -> str:
    """ring_merge(out, lse, out_b, lse_b) -> (out, lse): one step of the ring's running result."""
    gen = torch.Generator().manual_seed(11)
    for case in RINGS:
        sizes, d = case["blocks"], case["d"]
        world, n = len(sizes), sum(sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        q, k, v = (torch.randn(1, 2, n, d, generator=gen, dtype=torch.float64) for _ in range(3))
        k[..., ::4, :] *= 6.0  # some large scores: a merge that exponentiates lse unshifted overflows
        seen = _visible(n, case["window"], case["pad"])
        want_out, want_lse = _partial(q, k, v, seen)
        for rank in range(world):
            mine = slice(starts[rank], starts[rank + 1])
            out = torch.zeros(q[:, :, mine].shape, dtype=torch.float64)  # nothing seen yet
            lse = torch.full(q[:, :, mine].shape[:3], -math.inf, dtype=torch.float64)
            for step in range(world):  # every block, the future ones too: their rows are all -inf
                src = (rank - step) % world
                held = slice(starts[src], starts[src + 1])
                out_b, lse_b = _partial(q[:, :, mine], k[:, :, held], v[:, :, held], seen[mine, held])
                got = ring_merge(out, lse, out_b, lse_b)
                if not (isinstance(got, tuple) and len(got) == 2):
                    raise Mismatch("expected a tuple (out, lse)")
                out, lse = got
            where = f"ring {describe(case)}, rank {rank} after {world} steps"
            expect_close(f"{where}: lse", lse, want_lse[:, :, mine], rtol=1e-9)
            expect_close(f"{where}: out", out, want_out[:, :, mine], rtol=1e-9, atol=1e-12)
    return (f"{len(RINGS)} rings of 1 to 5 ranks with ragged blocks, causal with windows, rows that see "
            "none of a block, and padding rows that see no key at all")


LAYOUTS = ("contiguous", "zigzag")


def chunks_of(rank: int, world_size: int, layout: str) -> tuple[int, int]:
    """The two chunks (of 2W) that ``rank`` holds in ``layout``."""
    if layout == "contiguous":
        return 2 * rank, 2 * rank + 1
    return rank, 2 * world_size - 1 - rank


def reference_work(world_size: int, layout: str) -> np.ndarray:
    """work[r, s]: chunk pairs rank r computes at ring step s under a causal mask."""
    work = np.zeros((world_size, world_size))
    for r in range(world_size):
        for s in range(world_size):
            src = (r - s) % world_size
            for i in chunks_of(r, world_size, layout):
                for j in chunks_of(src, world_size, layout):
                    work[r, s] += 1.0 if j < i else 0.5 if j == i else 0.0
    return work


@exercise("11.causal_work")
def _causal_work(causal_work) -> str:
    """causal_work(world_size, layout) -> (W, W) array: the causal work of rank r at step s."""
    for layout in LAYOUTS:
        for world in range(1, 9):
            got = causal_work(world, layout)
            want = reference_work(world, layout)
            expect_close(f"W={world}, layout={layout!r}: work[rank, step]", got, want, rtol=0, atol=1e-12)
    pace = {layout: reference_work(8, layout).max(axis=0).sum() for layout in LAYOUTS}
    return (f"W = 1..8, both layouts. At W = 8 the ring's pace (the busiest rank of each step, summed "
            f"over steps) is {pace['contiguous']:.0f} chunk pairs contiguous, {pace['zigzag']:.0f} zigzag")
