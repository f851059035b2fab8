"""Checks for notebook 01 (naive attention): the three steps with a bottom-right causal mask, the
bytes of the score matrix, a softmax that survives huge scores and fully masked rows."""

from __future__ import annotations

import math
import numbers

import torch

from kernels import attention_reference

from . import Mismatch, describe, exercise, expect_close

# (queries, keys, head dim, causal): one of each, primes, fewer queries than keys (where top-left
# and bottom-right causal differ), more queries than keys without a mask
ATTENTION_CASES = [dict(nq=1, nk=1, d=1, causal=False), dict(nq=1, nk=1, d=1, causal=True),
                   dict(nq=5, nk=5, d=4, causal=True), dict(nq=7, nk=3, d=4, causal=False),
                   dict(nq=1, nk=7, d=3, causal=True), dict(nq=3, nk=11, d=8, causal=True),
                   dict(nq=13, nk=29, d=5, causal=True), dict(nq=13, nk=29, d=5, causal=False)]


@exercise("01.attention")
def _attention(attention) -> str:
    """attention(q, k, v, causal) -> o: q (Nq, d), k and v (Nk, d), bottom-right causal mask."""
    gen = torch.Generator().manual_seed(1)
    for case in ATTENTION_CASES:
        nq, nk, d = case["nq"], case["nk"], case["d"]
        # scores of order 3: forgetting 1/sqrt(d) or normalising the wrong axis shows
        q = 2 * torch.randn(nq, d, generator=gen, dtype=torch.float64)
        k = 2 * torch.randn(nk, d, generator=gen, dtype=torch.float64)
        v = torch.randn(nk, d, generator=gen, dtype=torch.float64)
        got = attention(q.clone(), k.clone(), v.clone(), case["causal"])
        want = attention_reference(q[None, None], k[None, None], v[None, None], causal=case["causal"])[0, 0]
        expect_close(f"case {describe(case)}: output", got, want, rtol=1e-9, atol=1e-12)
    return (f"{len(ATTENTION_CASES)} cases: one query and one key, Nq < Nk causal (bottom-right), "
            "Nq > Nk, primes")


# (batch, heads, seqlen_q, seqlen_k, dtype): the small ones are also allocated, to compare nbytes
BYTES_CASES = [(1, 1, 1, 1, torch.float32), (2, 3, 5, 7, torch.float16), (4, 1, 128, 1, torch.bfloat16),
               (3, 2, 17, 4, torch.float64), (1, 32, 4096, 4096, torch.bfloat16),
               (8, 16, 1000, 3000, torch.float32), (2, 64, 131072, 131072, torch.float16)]


@exercise("01.score_bytes")
def _score_bytes(score_bytes) -> str:
    """score_bytes(batch, heads, seqlen_q, seqlen_k, dtype) -> bytes of one S for all heads."""
    for batch, heads, nq, nk, dtype in BYTES_CASES:
        what = f"score_bytes({batch}, {heads}, {nq}, {nk}, {dtype})"
        got = score_bytes(batch, heads, nq, nk, dtype)
        if batch * heads * nq * nk <= 10**4:  # small: measure a real tensor
            want = torch.empty(batch, heads, nq, nk, dtype=dtype).nbytes
        else:
            want = batch * heads * nq * nk * torch.empty((), dtype=dtype).element_size()
        if not isinstance(got, numbers.Real) or isinstance(got, bool):
            raise Mismatch(f"{what}: expected a number of bytes, got {type(got).__name__}")
        if got != want:
            raise Mismatch(f"{what}: got {got:,}, expected {want:,} bytes")
    return f"{len(BYTES_CASES)} cases, four dtypes, seqlen_q != seqlen_k, up to 2 x 64 heads x 131072^2"


def _softmax_reference(x: torch.Tensor) -> torch.Tensor:
    """The convention of attention_reference: a row whose every score is -inf gets all zeros."""
    x = x.double()
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(x - m)
    l = e.sum(dim=-1, keepdim=True)
    return e / torch.where(l == 0, torch.ones_like(l), l)


@exercise("01.masked_softmax")
def _masked_softmax(masked_softmax) -> str:
    """masked_softmax(x) -> p: along the last axis of a float32 tensor; huge scores; rows all -inf give 0."""
    gen = torch.Generator().manual_seed(11)
    inf = math.inf
    one_big = torch.zeros(1, 100)
    one_big[0, -1] = 1000.0  # one key far above the rest: subtracting the mean is not enough
    partly_masked = 3 * torch.randn(4, 9, generator=gen)
    partly_masked[0, :4] = -inf
    partly_masked[1, 1::2] = -inf
    partly_masked[2, :-1] = -inf  # one key left
    masked = 3 * torch.randn(3, 6, generator=gen)
    masked[1] = -inf  # a row that sees no key: zeros, as attention_reference returns
    cases = [("one score", torch.tensor([[0.5]])),
             ("random scores (5, 7)", 3 * torch.randn(5, 7, generator=gen)),
             ("random scores (2, 3, 13), along the last axis", 3 * torch.randn(2, 3, 13, generator=gen)),
             ("scores near 1000", 1000 + torch.randn(3, 8, generator=gen)),
             ("99 zeros and one 1000", one_big),
             ("every score -1000", torch.full((2, 5), -1000.0)),
             ("some scores -inf (masked)", partly_masked),
             ("row 1 all -inf (sees no key)", masked)]
    for what, x in cases:
        got = masked_softmax(x.clone())
        expect_close(what, got, _softmax_reference(x), rtol=1e-5, atol=1e-7)
    return f"{len(cases)} cases: scores near 1000 and -1000, masked keys, a row with every key masked"
