"""Solutions to notebook 01's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import math

import torch


def attention(q, k, v, causal):
    nq, nk = q.shape[0], k.shape[0]
    s = q @ k.T / math.sqrt(q.shape[-1])  # (Nq, Nk) scores
    if causal:  # bottom-right: query i sits at key position i + (Nk - Nq) and sees the keys up to it
        i = torch.arange(nq)[:, None]  # (Nq, 1)
        j = torch.arange(nk)[None, :]  # (1, Nk)
        s = s.masked_fill(j > i + (nk - nq), -math.inf)
    p = torch.softmax(s, dim=-1)  # (Nq, Nk), each row sums to 1
    return p @ v  # (Nq, d)


def score_bytes(batch, heads, seqlen_q, seqlen_k, dtype):
    return batch * heads * seqlen_q * seqlen_k * dtype.itemsize  # itemsize: bytes per element


def masked_softmax(x):
    m = x.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, 0.0)  # a row of -inf: subtract 0, not -inf (-inf - -inf = NaN)
    e = torch.exp(x - m)  # every exponent <= 0; masked entries exp(-inf) = 0
    l = e.sum(dim=-1, keepdim=True)  # >= 1 unless the row is fully masked
    return e / torch.where(l == 0, 1.0, l)  # a fully masked row: 0 / 1 = 0


def _attention_top_left(q, k, v, causal):
    """Top-left causal (key j visible when j <= i), SDPA's is_causal, instead of bottom-right."""
    s = q @ k.T / math.sqrt(q.shape[-1])
    if causal:
        s = s.masked_fill(torch.ones_like(s, dtype=torch.bool).tril().logical_not(), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def _attention_no_diagonal(q, k, v, causal):
    """Off by one: masks the diagonal too (j < i + Nk - Nq), so a query cannot see its own key."""
    nq, nk = q.shape[0], k.shape[0]
    s = q @ k.T / math.sqrt(q.shape[-1])
    if causal:
        i, j = torch.arange(nq)[:, None], torch.arange(nk)[None, :]
        s = s.masked_fill(j >= i + (nk - nq), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def _attention_no_scale(q, k, v, causal):
    """Forgets the 1 / sqrt(d) on the scores."""
    nq, nk = q.shape[0], k.shape[0]
    s = q @ k.T
    if causal:
        i, j = torch.arange(nq)[:, None], torch.arange(nk)[None, :]
        s = s.masked_fill(j > i + (nk - nq), -math.inf)
    return torch.softmax(s, dim=-1) @ v


def _attention_softmax_over_queries(q, k, v, causal):
    """Normalises each column (over the queries) instead of each row (over the keys)."""
    nq, nk = q.shape[0], k.shape[0]
    s = q @ k.T / math.sqrt(q.shape[-1])
    if causal:
        i, j = torch.arange(nq)[:, None], torch.arange(nk)[None, :]
        s = s.masked_fill(j > i + (nk - nq), -math.inf)
    return torch.softmax(s, dim=0) @ v


def _bytes_elements(batch, heads, seqlen_q, seqlen_k, dtype):
    """Counts elements, not bytes: forgets the element size."""
    return batch * heads * seqlen_q * seqlen_k


def _bytes_bits(batch, heads, seqlen_q, seqlen_k, dtype):
    """Multiplies by the bits per element, not the bytes."""
    return batch * heads * seqlen_q * seqlen_k * torch.finfo(dtype).bits


def _bytes_one_head(batch, heads, seqlen_q, seqlen_k, dtype):
    """Forgets that every head has its own score matrix."""
    return batch * seqlen_q * seqlen_k * dtype.itemsize


def _bytes_square(batch, heads, seqlen_q, seqlen_k, dtype):
    """Assumes a square matrix, seqlen_q x seqlen_q."""
    return batch * heads * seqlen_q * seqlen_q * dtype.itemsize


def _softmax_no_max(x):
    """No max subtracted: exp(1000) = inf and inf / inf = NaN; exp(-1000) = 0 and 0 / 0 = NaN."""
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_mean(x):
    """Subtracts the row mean: one score of 1000 among zeros still overflows."""
    e = torch.exp(x - x.mean(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_nan_when_masked(x):
    """The safe softmax of section 3: right, except NaN for a row whose every score is -inf."""
    e = torch.exp(x - x.amax(dim=-1, keepdim=True))
    return e / e.sum(dim=-1, keepdim=True)


def _softmax_torch(x):
    """torch.softmax as it is: safe for huge scores, but NaN for a row that sees no key."""
    return torch.softmax(x, dim=-1)


MISTAKES = {"attention": [_attention_top_left, _attention_no_diagonal, _attention_no_scale,
                          _attention_softmax_over_queries],
            "score_bytes": [_bytes_elements, _bytes_bits, _bytes_one_head, _bytes_square],
            "masked_softmax": [_softmax_no_max, _softmax_mean, _softmax_nan_when_masked, _softmax_torch]}
