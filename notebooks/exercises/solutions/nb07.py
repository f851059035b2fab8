"""Solutions to notebook 07's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import torch

from kernels.band import Band
from kernels.flash_torch import attention_backward_torch


def backward_tile(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    p = torch.exp(softmax_scale * q_i @ k_j.T - lse_i[:, None])  # [block_m, block_n]: P from lse
    dv_j = p.T @ do_i  # [block_n, d]
    dp = do_i @ v_j.T  # [block_m, block_n]
    ds = p * (dp - delta_i[:, None])  # [block_m, block_n]: the softmax's Jacobian, row by row
    dq_i = softmax_scale * ds @ k_j  # [block_m, d]: S = scale * Q K^T, so the scale comes back
    dk_j = softmax_scale * ds.T @ q_i  # [block_n, d]
    return dq_i, dk_j, dv_j


def attention_backward(q, k, v, o, lse, do, softmax_scale, causal):
    # The plain-PyTorch twin's backward (kernels/flash_torch.py) is one answer: delta =
    # rowsum(dO * O), then tiles of 16 x 16, each recomputing P = exp(scale * Q K^T - lse) with
    # the bottom-right mask applied to the scores, then the lines of backward_tile. Rows that
    # see no key have lse = -inf; it turns them into +inf, so that P = exp(-inf - inf) = 0 there.
    # It works on (batch, heads, seqlen, head_dim) tensors, in float32.
    x = [t[None, None] for t in (do, q, k, v, o)]
    dq, dk, dv = attention_backward_torch(*x, lse[None, None], None, Band.from_window(causal=causal),
                                          softmax_scale, block_m=16, block_n=16)
    return dq[0, 0], dk[0, 0], dv[0, 0]


# --- mistakes for backward_tile -------------------------------------------------------------
def _tile_no_scale_in_grads(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    """Forgets that S = scale * Q K^T: dQ = dS K and dK = dS^T Q without the scale."""
    dq_i, dk_j, dv_j = backward_tile(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale)
    return dq_i / softmax_scale, dk_j / softmax_scale, dv_j


def _tile_no_delta(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    """dS = P * dP: leaves out the -delta of the softmax's Jacobian."""
    p = torch.exp(softmax_scale * q_i @ k_j.T - lse_i[:, None])
    ds = p * (do_i @ v_j.T)
    return softmax_scale * ds @ k_j, softmax_scale * ds.T @ q_i, p.T @ do_i


def _tile_delta_sign(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    """dS = P * (dP + delta): the right term with the wrong sign."""
    p = torch.exp(softmax_scale * q_i @ k_j.T - lse_i[:, None])
    ds = p * (do_i @ v_j.T + delta_i[:, None])
    return softmax_scale * ds @ k_j, softmax_scale * ds.T @ q_i, p.T @ do_i


def _tile_transposed(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    """dV = P dO and dK = scale * dS Q: transposes missing (shapes fit only for square tiles)."""
    p = torch.exp(softmax_scale * q_i @ k_j.T - lse_i[:, None])
    ds = p * (do_i @ v_j.T - delta_i[:, None])
    return softmax_scale * ds @ k_j, softmax_scale * ds @ q_i, p @ do_i


def _tile_p_unscaled(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    """Recomputes P = exp(Q K^T - lse): the scale forgotten in the scores."""
    p = torch.exp(q_i @ k_j.T - lse_i[:, None])
    ds = p * (do_i @ v_j.T - delta_i[:, None])
    return softmax_scale * ds @ k_j, softmax_scale * ds.T @ q_i, p.T @ do_i


# --- mistakes for attention_backward ------------------------------------------------------------
def _dense_backward(q, k, v, o, lse, do, softmax_scale, visible, lse_guard=True):
    """The five lines on the whole head, with `visible` [nq, nk] as the mask."""
    s = (softmax_scale * q @ k.T).masked_fill(~visible, float("-inf"))
    lse_ = torch.where(lse == float("-inf"), float("inf"), lse) if lse_guard else lse
    p = torch.exp(s - lse_[:, None])
    delta = (do * o).sum(-1, keepdim=True)
    ds = p * (do @ v.T - delta)
    return softmax_scale * ds @ k, softmax_scale * ds.T @ q, p.T @ do


def _visible(q, k, causal, rule):
    """[nq, nk] bool: rule(i, j, off) where causal, with off = seqlen_k - seqlen_q; else all True."""
    i, j = torch.arange(q.shape[0])[:, None], torch.arange(k.shape[0])[None, :]
    if not causal:
        return torch.ones(q.shape[0], k.shape[0], dtype=torch.bool)
    return rule(i, j, k.shape[0] - q.shape[0])


def _backward_top_left(q, k, v, o, lse, do, softmax_scale, causal):
    """Top-left causal mask (j <= i), as SDPA's is_causal: wrong whenever seqlen_q != seqlen_k."""
    visible = _visible(q, k, causal, lambda i, j, off: j <= i)
    return _dense_backward(q, k, v, o, lse, do, softmax_scale, visible)


def _backward_off_by_one(q, k, v, o, lse, do, softmax_scale, causal):
    """Masks the diagonal too (j < i + seqlen_k - seqlen_q): no query sees its own key."""
    visible = _visible(q, k, causal, lambda i, j, off: j < i + off)
    return _dense_backward(q, k, v, o, lse, do, softmax_scale, visible)


def _backward_nan_empty_rows(q, k, v, o, lse, do, softmax_scale, causal):
    """P = exp(S - lse) as is: NaN (exp(-inf + inf)) in the rows that see no key."""
    visible = _visible(q, k, causal, lambda i, j, off: j <= i + off)
    return _dense_backward(q, k, v, o, lse, do, softmax_scale, visible, lse_guard=False)


def _backward_no_scale(q, k, v, o, lse, do, softmax_scale, causal):
    """Right P and dS, but dQ = dS K and dK = dS^T Q without the scale."""
    dq, dk, dv = attention_backward(q, k, v, o, lse, do, softmax_scale, causal)
    return dq / softmax_scale, dk / softmax_scale, dv


MISTAKES = {"backward_tile": [_tile_no_scale_in_grads, _tile_no_delta, _tile_delta_sign, _tile_transposed,
                              _tile_p_unscaled],
            "attention_backward": [_backward_top_left, _backward_off_by_one, _backward_nan_empty_rows,
                                   _backward_no_scale]}
