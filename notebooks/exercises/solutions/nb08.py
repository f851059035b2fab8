"""Solutions to notebook 08's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import torch


def causal_mask(seqlen_q, seqlen_k):
    i = torch.arange(seqlen_q)[:, None]  # [seqlen_q, 1]
    j = torch.arange(seqlen_k)[None, :]  # [1, seqlen_k]
    return j <= i + (seqlen_k - seqlen_q)  # query i sits at key position i + seqlen_k - seqlen_q


def window_mask(seqlen_q, seqlen_k, left, right):
    i = torch.arange(seqlen_q)[:, None]  # [seqlen_q, 1]
    j = torch.arange(seqlen_k)[None, :]  # [1, seqlen_k]
    diag = i + (seqlen_k - seqlen_q)  # the key each query is aligned with
    mask = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if left >= 0:  # -1: no bound on that side
        mask &= j >= diag - left
    if right >= 0:
        mask &= j <= diag + right
    return mask


def merge_splits(out_s, lse_s):
    # As the kernel's _merge_splits (kernels/decode.py), for all rows at once. Folding the two-way
    # merge of notebook 03 (kernels.ring.merge_partials) over the splits passes too, with one log
    # per split instead of one in all.
    lse_max = lse_s.max(dim=0).values  # [rows]
    lse_max = torch.where(lse_max == float("-inf"), 0.0, lse_max)  # no key in any split: exp(-inf) = 0
    w = torch.exp(lse_s - lse_max)  # [num_splits, rows]: each split's share, up to one factor
    total = w.sum(dim=0)  # [rows]
    empty = total == 0.0
    out = (w[..., None] * out_s).sum(dim=0) / torch.where(empty, 1.0, total)[:, None]  # [rows, d]
    lse = torch.where(empty, float("-inf"), lse_max + torch.log(torch.where(empty, 1.0, total)))
    return out, lse


# --- mistakes for causal_mask ---------------------------------------------------------------
def _causal_top_left(seqlen_q, seqlen_k):
    """Top-left alignment (j <= i), SDPA's is_causal: right only when seqlen_q == seqlen_k."""
    return torch.ones(seqlen_q, seqlen_k, dtype=torch.bool).tril()


def _causal_off_by_one(seqlen_q, seqlen_k):
    """j < i + seqlen_k - seqlen_q: every query misses its own key."""
    i, j = torch.arange(seqlen_q)[:, None], torch.arange(seqlen_k)[None, :]
    return j < i + (seqlen_k - seqlen_q)


def _causal_offset_reversed(seqlen_q, seqlen_k):
    """Offset the wrong way round: j <= i + seqlen_q - seqlen_k."""
    i, j = torch.arange(seqlen_q)[:, None], torch.arange(seqlen_k)[None, :]
    return j <= i + (seqlen_q - seqlen_k)


# --- mistakes for window_mask ---------------------------------------------------------------
def _window_minus_one_literal(seqlen_q, seqlen_k, left, right):
    """Treats -1 as a bound, not as unbounded: left = -1 then hides the query's own key."""
    i, j = torch.arange(seqlen_q)[:, None], torch.arange(seqlen_k)[None, :]
    diag = i + (seqlen_k - seqlen_q)
    return (j >= diag - left) & (j <= diag + right)


def _window_top_left(seqlen_q, seqlen_k, left, right):
    """Centres the window on key i (top-left) instead of key i + seqlen_k - seqlen_q."""
    i, j = torch.arange(seqlen_q)[:, None], torch.arange(seqlen_k)[None, :]
    mask = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool)
    if left >= 0:
        mask &= j >= i - left
    if right >= 0:
        mask &= j <= i + right
    return mask


def _window_swapped(seqlen_q, seqlen_k, left, right):
    """Swaps left and right: keys after the query where the window asks for keys before it."""
    return window_mask(seqlen_q, seqlen_k, right, left)


# --- mistakes for merge_splits --------------------------------------------------------------
def _merge_average(out_s, lse_s):
    """Averages the splits' outputs, ignoring how much probability mass each one holds."""
    return out_s.mean(dim=0), torch.logsumexp(lse_s, dim=0)


def _merge_nan_when_empty(out_s, lse_s):
    """Right wherever a row sees a key; NaN (exp(-inf + inf)) for a row that sees none."""
    lse = torch.logsumexp(lse_s, dim=0)  # [rows]: -inf for an empty row
    return (torch.exp(lse_s - lse)[..., None] * out_s).sum(dim=0), lse


def _merge_no_max(out_s, lse_s):
    """lse = log(sum(exp(lse_s))) with no max subtracted: exp overflows for large scores."""
    lse = torch.log(torch.exp(lse_s).sum(dim=0))
    safe = torch.where(lse == float("-inf"), 0.0, lse)
    return (torch.exp(lse_s - safe)[..., None] * out_s).sum(dim=0), lse


MISTAKES = {"causal_mask": [_causal_top_left, _causal_off_by_one, _causal_offset_reversed],
            "window_mask": [_window_minus_one_literal, _window_top_left, _window_swapped],
            "merge_splits": [_merge_average, _merge_nan_when_empty, _merge_no_max]}
