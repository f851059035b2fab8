"""Checks for notebook 07 (the backward pass): the gradients of one tile, then of a whole head."""

from __future__ import annotations

import math

import torch

from kernels import attention_reference

from . import Mismatch, describe, exercise, expect_close

# (queries, keys, head dim, block_m, block_n, softmax scale): one query and one key, ragged tiles
# (primes, blocks that do not divide the length), square tiles (a transpose keeps its shape
# there, so only its values can give it away), more keys than queries and the reverse
TILE_CASES = [dict(nq=1, nk=1, d=1, block_m=1, block_n=1, scale=0.7),
              dict(nq=12, nk=12, d=4, block_m=4, block_n=4, scale=1.7),
              dict(nq=7, nk=13, d=5, block_m=3, block_n=4, scale=0.3),
              dict(nq=17, nk=6, d=8, block_m=16, block_n=5, scale=1 / math.sqrt(8))]

# (queries, keys, head dim, causal, softmax scale); with causal and more queries than keys, the
# first nq - nk queries see no key (lse = -inf): their gradients are 0, not NaN
HEAD_CASES = [dict(nq=1, nk=1, d=3, causal=True, scale=0.9),
              dict(nq=7, nk=13, d=5, causal=True, scale=0.3),
              dict(nq=13, nk=7, d=4, causal=True, scale=1.3),
              dict(nq=29, nk=29, d=8, causal=True, scale=1 / math.sqrt(8)),
              dict(nq=5, nk=40, d=6, causal=False, scale=0.5),
              dict(nq=19, nk=3, d=2, causal=True, scale=2.0)]


def _head(case: dict, gen: torch.Generator):
    """Random q, k, v, dO of one head in float64, and O, lse of the forward (the reference's)."""
    q = torch.randn(case["nq"], case["d"], generator=gen, dtype=torch.float64)
    k, v = (torch.randn(case["nk"], case["d"], generator=gen, dtype=torch.float64) for _ in range(2))
    do = torch.randn(case["nq"], case["d"], generator=gen, dtype=torch.float64)
    o, lse = attention_reference(q[None, None], k[None, None], v[None, None], return_lse=True,
                                 causal=case.get("causal", False), softmax_scale=case["scale"])
    return q, k, v, do, o[0, 0], lse[0, 0]


def _autograd(case: dict, q, k, v, do):
    """dQ, dK, dV of attention_reference, by autograd, in float64: the oracle."""
    x = [t[None, None].clone().requires_grad_() for t in (q, k, v)]
    o = attention_reference(*x, causal=case.get("causal", False), softmax_scale=case["scale"])
    return [g[0, 0] for g in torch.autograd.grad(o, x, do[None, None])]


def _triple(got, what: str):
    if not (isinstance(got, tuple | list) and len(got) == 3):
        raise Mismatch(f"{what}: expected a tuple (dq, dk, dv)")
    return got


@exercise("07.backward_tile")
def _backward_tile(backward_tile) -> str:
    """backward_tile(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale) -> (dq_i, dk_j, dv_j):
    one tile's contributions; summed over all tiles they must be autograd's gradients."""
    gen = torch.Generator().manual_seed(7)
    for case in TILE_CASES:
        q, k, v, do, o, lse = _head(case, gen)
        delta = (do * o).sum(-1)  # [nq]
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        bm, bn = case["block_m"], case["block_n"]
        for i in range(0, case["nq"], bm):
            for j in range(0, case["nk"], bn):
                rows, cols = slice(i, i + bm), slice(j, j + bn)
                tiles = (t.clone() for t in (q[rows], k[cols], v[cols], do[rows], lse[rows], delta[rows]))
                got = _triple(backward_tile(*tiles, case["scale"]), f"case {describe(case)}, tile ({i}, {j})")
                for name, total, at, part in (("dq_i", dq, rows, got[0]), ("dk_j", dk, cols, got[1]),
                                              ("dv_j", dv, cols, got[2])):
                    part = torch.as_tensor(part, dtype=torch.float64)
                    if part.shape != total[at].shape:
                        raise Mismatch(f"case {describe(case)}, tile ({i}, {j}): {name} has shape "
                                       f"{tuple(part.shape)}, expected {tuple(total[at].shape)}")
                    total[at] += part
        want_dq, want_dk, want_dv = _autograd(case, q, k, v, do)
        for name, g, want in (("dv", dv, want_dv), ("dq", dq, want_dq), ("dk", dk, want_dk)):
            expect_close(f"case {describe(case)}, {name} summed over the tiles", g, want,
                         rtol=1e-9, atol=1e-11)
    return f"{len(TILE_CASES)} heads cut into tiles of 1x1 to 16x5, square and ragged, four softmax scales"


@exercise("07.attention_backward")
def _attention_backward(attention_backward) -> str:
    """attention_backward(q, k, v, o, lse, do, softmax_scale, causal) -> (dq, dk, dv) of one head,
    bottom-right causal, rows that see no key included."""
    gen = torch.Generator().manual_seed(70)
    for case in HEAD_CASES:
        q, k, v, do, o, lse = _head(case, gen)
        got = _triple(attention_backward(*(t.clone() for t in (q, k, v, o, lse, do)), case["scale"],
                                         case["causal"]), f"case {describe(case)}")
        want_dq, want_dk, want_dv = _autograd(case, q, k, v, do)
        for name, g, want in (("dv", got[2], want_dv), ("dq", got[0], want_dq), ("dk", got[1], want_dk)):
            expect_close(f"case {describe(case)}: {name}", g, want, rtol=1e-4, atol=1e-5)
    return (f"{len(HEAD_CASES)} heads: one query and one key, primes, more keys than queries and the "
            "reverse (rows with no key), causal and not, six softmax scales")
