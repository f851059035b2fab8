"""Checks for notebook 05 (the FlashAttention forward): the tiled forward with a sliding causal
window, and which tiles the kernel skips, masks or runs unmasked."""

from __future__ import annotations

import math

import torch

from kernels import attention_mask, attention_reference

from . import Mismatch, describe, exercise, expect_close

# (queries, keys, head dim, window left, blocks, scale): one query and one key; fewer queries than
# keys and more (the first rows then see no key); primes and ragged last blocks on both sides; a
# window of 0 (the diagonal key only); a block wider than the sequence. No scale is 1/sqrt(d).
FORWARD_CASES = [
    dict(nq=1, nk=1, d=4, left=-1, bm=16, bn=16, scale=0.7),
    dict(nq=7, nk=13, d=5, left=-1, bm=4, bn=4, scale=1.3),
    dict(nq=13, nk=7, d=3, left=-1, bm=4, bn=3, scale=0.8),
    dict(nq=29, nk=31, d=8, left=5, bm=8, bn=4, scale=0.3),
    dict(nq=20, nk=20, d=6, left=0, bm=8, bn=8, scale=1.1),
    dict(nq=37, nk=23, d=4, left=9, bm=16, bn=8, scale=2.0),
]


@exercise("05.flash_forward_local")
def _flash_forward_local(flash_forward_local) -> str:
    """flash_forward_local(q, k, v, softmax_scale, window_left, block_m, block_n) -> (out, lse):
    one head, causal (bottom-right) with a window of ``window_left`` keys before the diagonal."""
    gen = torch.Generator().manual_seed(5)
    for case in FORWARD_CASES:
        nq, nk, d = case["nq"], case["nk"], case["d"]
        q = torch.randn(nq, d, generator=gen, dtype=torch.float64)
        # later keys score higher, so a row's running max grows from block to block
        growth = torch.linspace(0.5, 4.0, nk, dtype=torch.float64)[:, None]
        k = torch.randn(nk, d, generator=gen, dtype=torch.float64) * growth
        v = torch.randn(nk, d, generator=gen, dtype=torch.float64)
        got = flash_forward_local(q, k, v, case["scale"], case["left"], case["bm"], case["bn"])
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Mismatch("expected a tuple (out, lse)")
        out, lse = attention_reference(q[None, None], k[None, None], v[None, None], causal=True,
                                       softmax_scale=case["scale"], window_size=(case["left"], 0),
                                       return_lse=True)
        where = f"case {describe(case)}"
        expect_close(f"{where}: lse", got[1], lse[0, 0], rtol=1e-9, atol=1e-12)
        expect_close(f"{where}: out", got[0], out[0, 0], rtol=1e-9, atol=1e-12)
    return (f"{len(FORWARD_CASES)} cases: one key, fewer and more queries than keys (rows that see no key), "
            "windows of 0, 5 and 9 keys, ragged last blocks, scales other than 1/sqrt(d)")


# Every tile of these shapes, causal and not: lengths 1, primes, multiples of a block and not,
# fewer and more queries than keys; square and oblong tiles.
TILE_SHAPES = [(nq, nk) for nq in (1, 5, 8, 13, 32) for nk in (1, 7, 8, 16, 21)]
TILE_BLOCKS = [(4, 4), (8, 4), (4, 8), (16, 16)]


def _reference_kind(mask: torch.Tensor, i: int, j: int, block_m: int, block_n: int, seqlen_k: int) -> str:
    """From the element mask: no visible score, skipped; every score visible and BLOCK_N real keys,
    full; otherwise masked (a ragged last block has padded keys, which the kernel must mask)."""
    tile = mask[i * block_m:(i + 1) * block_m, j * block_n:(j + 1) * block_n]
    if not tile.any():
        return "skip"
    return "full" if tile.all() and (j + 1) * block_n <= seqlen_k else "masked"


@exercise("05.tile_kind")
def _tile_kind(tile_kind) -> str:
    """tile_kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal) -> "skip" | "masked" | "full"."""
    tiles = 0
    for causal in (True, False):
        for nq, nk in TILE_SHAPES:
            mask = attention_mask(nq, nk, causal=causal)
            for bm, bn in TILE_BLOCKS:
                for i in range(math.ceil(nq / bm)):
                    for j in range(math.ceil(nk / bn)):
                        got = tile_kind(i, j, nq, nk, bm, bn, causal)
                        want = _reference_kind(mask, i, j, bm, bn, nk)
                        if got != want:
                            raise Mismatch(f"tile (i={i}, j={j}) of seqlen_q={nq}, seqlen_k={nk}, blocks "
                                           f"{bm} x {bn}, causal={causal}: got {got!r}, expected {want!r}")
                        tiles += 1
    return f"all {tiles} tiles of {len(TILE_SHAPES)} shapes x {len(TILE_BLOCKS)} tile sizes, causal and not"
