"""Checks for notebook 08 (masks, lengths, decoding): the bottom-right causal mask, the sliding
window, and the split-KV merge of many partial softmaxes."""

from __future__ import annotations

import math

import numpy as np
import torch

from kernels import attention_mask

from . import Mismatch, describe, exercise, expect_close

# (seqlen_q, seqlen_k): one by one, one query against many keys (decoding), many queries against
# one key, more keys than queries and the reverse, equal lengths, primes
MASK_SHAPES = [(1, 1), (1, 7), (7, 1), (4, 10), (10, 4), (13, 13), (3, 17), (17, 3)]

# (seqlen_q, seqlen_k, left, right); -1 is unbounded
WINDOWS = [(16, 16, 3, 0), (16, 16, 2, 2), (5, 12, 0, 0), (12, 5, 2, 1), (9, 9, -1, 0), (9, 9, -1, -1),
           (7, 20, 4, -1), (20, 7, -1, 2), (1, 1, 0, 0), (11, 11, 0, 3)]


def _expect_mask(what: str, got, want: torch.Tensor) -> None:
    arr = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    if arr.dtype != np.bool_:
        raise Mismatch(f"{what}: expected a boolean mask, got dtype {arr.dtype}")
    expect_close(what + " (1: query i sees key j)", arr.astype(np.float64), want.double())


@exercise("08.causal_mask")
def _causal_mask(causal_mask) -> str:
    """causal_mask(seqlen_q, seqlen_k) -> bool [seqlen_q, seqlen_k], aligned bottom-right."""
    for nq, nk in MASK_SHAPES:
        _expect_mask(f"causal_mask({nq}, {nk})[i, j]", causal_mask(nq, nk),
                     attention_mask(nq, nk, causal=True))
    return f"{len(MASK_SHAPES)} shapes, from 1 x 1 to 17 x 3 and 3 x 17"


@exercise("08.window_mask")
def _window_mask(window_mask) -> str:
    """window_mask(seqlen_q, seqlen_k, left, right) -> bool [seqlen_q, seqlen_k]; -1 unbounded."""
    for nq, nk, left, right in WINDOWS:
        _expect_mask(f"window_mask({nq}, {nk}, left={left}, right={right})[i, j]",
                     window_mask(nq, nk, left, right), attention_mask(nq, nk, window_size=(left, right)))
    return f"{len(WINDOWS)} windows: (0, 0), one side unbounded, both, more keys than queries and the reverse"


# Split cases: rows (queries x heads flattened), keys, head dim, split boundaries; `shift` adds a
# constant to every score (lse near 1000: exp(lse) overflows even in float64); `short` gives row r
# only the first short[r] keys (a shorter cache, so its last splits are empty; 0: no key at all)
SPLIT_CASES = [dict(rows=1, n=1, d=1, bounds=(0, 1)),
               dict(rows=3, n=13, d=4, bounds=(0, 5, 10, 13)),
               dict(rows=4, n=20, d=8, bounds=(0, 8, 16, 20, 20, 20)),
               dict(rows=5, n=29, d=3, bounds=(0, 0, 7, 29), short=(29, 9, 0, 7, 1)),
               dict(rows=3, n=17, d=5, bounds=(0, 6, 12, 17), shift=1000.0),
               dict(rows=2, n=12, d=2, bounds=(0, 4, 8, 12), short=(0, 0))]


def _partials(case: dict, gen: torch.Generator):
    """The scores and values of a case, and each split's (out_s, lse_s): out_s normalised over the
    split's keys (0 where a row sees none of them), lse_s their log-sum-exp (-inf then)."""
    s = 3 * torch.randn(case["rows"], case["n"], generator=gen, dtype=torch.float64) + case.get("shift", 0.0)
    v = torch.randn(case["n"], case["d"], generator=gen, dtype=torch.float64)
    if "short" in case:
        s = s.masked_fill(torch.arange(case["n"])[None, :] >= torch.tensor(case["short"])[:, None], -math.inf)
    outs, lses = [], []
    for lo, hi in zip(case["bounds"], case["bounds"][1:]):
        lse = torch.logsumexp(s[:, lo:hi], dim=1) if hi > lo else torch.full((case["rows"],), -math.inf,
                                                                             dtype=torch.float64)
        safe = torch.where(lse == -math.inf, 0.0, lse)
        outs.append(torch.exp(s[:, lo:hi] - safe[:, None]) @ v[lo:hi])  # [rows, d]: 0 for an empty row
        lses.append(lse)
    return s, v, torch.stack(outs), torch.stack(lses)


@exercise("08.merge_splits")
def _merge_splits(merge_splits) -> str:
    """merge_splits(out_s, lse_s) -> (out, lse): num_splits partials merged into one."""
    gen = torch.Generator().manual_seed(8)
    for case in SPLIT_CASES:
        s, v, out_s, lse_s = _partials(case, gen)
        got = merge_splits(out_s.clone(), lse_s.clone())
        if not (isinstance(got, tuple | list) and len(got) == 2):
            raise Mismatch("expected a tuple (out, lse)")
        lse = torch.logsumexp(s, dim=1)  # [rows]: -inf for a row that sees no key
        safe = torch.where(lse == -math.inf, 0.0, lse)
        where = f"case {describe(case)}, num_splits={len(case['bounds']) - 1}"
        expect_close(f"{where}: lse", got[1], lse, rtol=1e-12)
        expect_close(f"{where}: out", got[0], torch.exp(s - safe[:, None]) @ v, rtol=1e-9, atol=1e-12)
    return (f"{len(SPLIT_CASES)} cases: 1 to 5 splits, empty splits, rows with a short cache or none, "
            "scores near 1000")
