"""Checks for notebook 03 (the online softmax): base-2 statistics, one block update, the merge."""

from __future__ import annotations

import math

import torch

from . import Mismatch, describe, exercise, expect_close

# (rows, keys, head dim, block): one key, one row, primes, a ragged last block, a block wider than n
CASES = [dict(rows=1, n=1, d=1, block=1), dict(rows=3, n=7, d=5, block=2), dict(rows=4, n=13, d=3, block=13),
         dict(rows=5, n=29, d=8, block=4), dict(rows=2, n=6, d=4, block=16)]


def _scores(case: dict, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    s = 3 * torch.randn(case["rows"], case["n"], generator=gen, dtype=torch.float64)
    s[:, ::3] += 30.0  # large scores: exp without a max subtracted overflows in float32 tests
    v = torch.randn(case["n"], case["d"], generator=gen, dtype=torch.float64)
    return s, v


@exercise("03.online_stats_base2")
def _online_stats_base2(online_stats_base2) -> str:
    """online_stats_base2(xs) -> (m2, l2): the running max and sum in base-2 units, one pass."""
    gen = torch.Generator().manual_seed(2)
    for n in (1, 2, 7, 100):
        xs = (5 * torch.randn(n, generator=gen, dtype=torch.float64)).tolist()
        got = online_stats_base2(xs)
        if not (isinstance(got, tuple) and len(got) == 2):
            raise Mismatch("expected a tuple (m2, l2)")
        x2 = torch.tensor(xs, dtype=torch.float64) * math.log2(math.e)
        expect_close(f"n={n}: m2", got[0], x2.max(), rtol=1e-12)
        expect_close(f"n={n}: l2", got[1], torch.exp2(x2 - x2.max()).sum(), rtol=1e-10)
    return "lengths 1, 2, 7, 100"


@exercise("03.online_step")
def _online_step(online_step) -> str:
    """online_step(m, l, acc, s_blk, v_blk) -> (m, l, acc): fold one block of scores into the state."""
    gen = torch.Generator().manual_seed(3)
    for case in CASES:
        s, v = _scores(case, gen)
        rows, n, d, block = case["rows"], case["n"], case["d"], case["block"]
        if rows >= 3 and n > block:
            s[1, :block] = -math.inf  # row 1's first block is fully masked: the running max stays -inf
        m = torch.full((rows,), -math.inf, dtype=torch.float64)
        l = torch.zeros(rows, dtype=torch.float64)
        acc = torch.zeros(rows, d, dtype=torch.float64)
        for start in range(0, n, block):
            got = online_step(m, l, acc, s[:, start:start + block], v[start:start + block])
            if not (isinstance(got, tuple) and len(got) == 3):
                raise Mismatch("expected a tuple (m, l, acc)")
            m, l, acc = got
        where = f"case {describe(case)}, after the last block"
        lse = torch.logsumexp(s, dim=1)
        expect_close(f"{where}: m", m, s.max(dim=1).values)
        expect_close(f"{where}: l", l, torch.exp(lse - s.max(dim=1).values), rtol=1e-9)
        expect_close(f"{where}: acc / l", acc / l[:, None], torch.softmax(s, dim=1) @ v,
                     rtol=1e-9, atol=1e-12)
    return f"{len(CASES)} cases, blocks of 1 to 16 keys, ragged last blocks, a fully masked first block"


@exercise("03.merge_lse")
def _merge_lse(merge_lse) -> str:
    """merge_lse(o_a, lse_a, o_b, lse_b) -> (o, lse): two normalised partials over disjoint keys."""
    gen = torch.Generator().manual_seed(30)
    for case in CASES:
        s, v = _scores(case, gen)
        cut = case["n"] // 2  # keys [0, cut) and [cut, n); cut = 0 leaves part a empty
        parts = []
        for lo, hi in ((0, cut), (cut, case["n"])):
            if hi > lo:
                s_part = s[:, lo:hi]
                parts.append((torch.softmax(s_part, dim=1) @ v[lo:hi], torch.logsumexp(s_part, dim=1)))
            else:  # no key: o = 0, lse = -inf
                parts.append((torch.zeros(case["rows"], case["d"], dtype=torch.float64),
                              torch.full((case["rows"],), -math.inf, dtype=torch.float64)))
        (o_a, lse_a), (o_b, lse_b) = parts
        for label, args in (("a, b", (o_a, lse_a, o_b, lse_b)), ("b, a", (o_b, lse_b, o_a, lse_a))):
            got = merge_lse(*args)
            if not (isinstance(got, tuple) and len(got) == 2):
                raise Mismatch("expected a tuple (o, lse)")
            where = f"case {describe(case)}, merge({label})"
            expect_close(f"{where}: lse", got[1], torch.logsumexp(s, dim=1), rtol=1e-9)
            expect_close(f"{where}: o", got[0], torch.softmax(s, dim=1) @ v, rtol=1e-9, atol=1e-12)
    # rows that saw no key on either side: o = 0 and lse = -inf, not NaN
    empty = (torch.zeros(2, 3, dtype=torch.float64), torch.full((2,), -math.inf, dtype=torch.float64))
    got = merge_lse(*empty, *empty)
    expect_close("two empty partials (every key masked): lse", got[1], empty[1])
    expect_close("two empty partials (every key masked): o", got[0], empty[0])
    return f"{len(CASES)} cases in both orders, an empty part, and two empty parts"
