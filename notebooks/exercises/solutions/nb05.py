"""Solutions to notebook 05's exercises, and the mistakes their checks must catch. The natural
solution is the loop of ``kernels/flash_torch.py`` on one head, with its band helpers."""

from __future__ import annotations

import math

import torch

from kernels.band import Band
from kernels.flash_torch import band_mask, block_is_full, key_range


def flash_forward_local(q, k, v, softmax_scale, window_left, block_m, block_n):
    seqlen_q, seqlen_k = q.shape[0], k.shape[0]
    left, right = Band(window_left, 0).bounds(seqlen_q, seqlen_k)  # causal: right = 0; -1: unbounded
    out = q.new_zeros(q.shape)
    lse = q.new_full((seqlen_q,), -math.inf)
    for start_m in range(0, seqlen_q, block_m):  # one kernel program per query block
        end_m = min(start_m + block_m, seqlen_q)  # the last block may be ragged
        rows = torch.arange(start_m, end_m)
        q_blk = q[start_m:end_m] * softmax_scale  # [BLOCK_M, d]
        m = q.new_full((end_m - start_m,), -math.inf)
        l = q.new_zeros(end_m - start_m)
        acc = q.new_zeros(end_m - start_m, q.shape[1])
        lo, hi = key_range(start_m, end_m, seqlen_q, seqlen_k, left, right, block_n)
        for start_n in range(lo, hi, block_n):  # only the key blocks inside the band
            end_n = min(start_n + block_n, seqlen_k)
            s = q_blk @ k[start_n:end_n].T  # [BLOCK_M, BLOCK_N]
            if not block_is_full(start_m, end_m, start_n, end_n, seqlen_q, seqlen_k, left, right):
                cols = torch.arange(start_n, end_n)
                s = s.masked_fill(~band_mask(rows, cols, seqlen_q, seqlen_k, left, right), -math.inf)
            m_new = torch.maximum(m, s.amax(dim=1))
            m_safe = torch.where(m_new == -math.inf, 0.0, m_new)  # a row with no key yet
            p = torch.exp(s - m_safe[:, None])
            alpha = torch.exp(m - m_safe)  # rescales what was summed under the old max
            l = alpha * l + p.sum(dim=1)
            acc = alpha[:, None] * acc + p @ v[start_n:end_n]
            m = m_new
        seen = l > 0  # rows that saw no key keep out = 0 and lse = -inf
        l_safe = torch.where(seen, l, 1.0)
        out[start_m:end_m] = torch.where(seen[:, None], acc / l_safe[:, None], 0.0)
        lse[start_m:end_m] = torch.where(seen, m + torch.log(l_safe), -math.inf)
    return out, lse


def tile_kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    left, right = Band.from_window(causal=causal).bounds(seqlen_q, seqlen_k)
    row_lo, row_hi = i * block_m, min((i + 1) * block_m, seqlen_q)  # the real queries
    col_lo, col_hi = j * block_n, min((j + 1) * block_n, seqlen_k)  # the real keys
    lo, hi = key_range(row_lo, row_hi, seqlen_q, seqlen_k, left, right, block_n)
    if not lo <= col_lo < hi:
        return "skip"  # the loop over [lo, hi) never reaches this block
    padded = (j + 1) * block_n > seqlen_k  # a ragged last block: its padded keys need the mask
    full = block_is_full(row_lo, row_hi, col_lo, col_hi, seqlen_q, seqlen_k, left, right)
    return "full" if full and not padded else "masked"


# --------------------------------------------------------------------------------------------
# Mistakes
# --------------------------------------------------------------------------------------------
def _forward(q, k, v, scale, window_left, block_m, block_n, *, rescale=True, top_left=False,
             drop_ragged=False, window_extra=0, guard=True):
    """The plain tiled forward (every block visited, masked element by element) with one slip."""
    seqlen_q, seqlen_k = q.shape[0], k.shape[0]
    off = 0 if top_left else seqlen_k - seqlen_q
    out = q.new_zeros(q.shape)
    lse = q.new_full((seqlen_q,), -math.inf)
    last_n = seqlen_k - seqlen_k % block_n if drop_ragged else seqlen_k
    for start_m in range(0, seqlen_q, block_m):
        end_m = min(start_m + block_m, seqlen_q)
        rows = torch.arange(start_m, end_m)[:, None]
        m = q.new_full((end_m - start_m,), -math.inf)
        l = q.new_zeros(end_m - start_m)
        acc = q.new_zeros(end_m - start_m, q.shape[1])
        for start_n in range(0, last_n, block_n):
            end_n = min(start_n + block_n, seqlen_k)
            cols = torch.arange(start_n, end_n)[None, :]
            visible = cols <= rows + off
            if window_left >= 0:
                visible &= cols >= rows + off - window_left + window_extra
            s = (scale * q[start_m:end_m] @ k[start_n:end_n].T).masked_fill(~visible, -math.inf)
            m_new = torch.maximum(m, s.amax(dim=1))
            m_safe = torch.where(m_new == -math.inf, 0.0, m_new) if guard else m_new
            p = torch.exp(s - m_safe[:, None])
            alpha = torch.exp(m - m_safe)
            l = alpha * l + p.sum(dim=1)
            acc = (alpha[:, None] * acc if rescale else acc) + p @ v[start_n:end_n]
            m = m_new
        if not guard:  # divide by l = 0: NaN for a row that saw no key
            out[start_m:end_m], lse[start_m:end_m] = acc / l[:, None], m + torch.log(l)
            continue
        seen = l > 0
        l_safe = torch.where(seen, l, 1.0)
        out[start_m:end_m] = torch.where(seen[:, None], acc / l_safe[:, None], 0.0)
        lse[start_m:end_m] = torch.where(seen, m + torch.log(l_safe), -math.inf)
    return out, lse


def _fwd_no_rescale(q, k, v, softmax_scale, window_left, block_m, block_n):
    """Rescales l but not acc when a row's running max grows."""
    return _forward(q, k, v, softmax_scale, window_left, block_m, block_n, rescale=False)


def _fwd_top_left(q, k, v, softmax_scale, window_left, block_m, block_n):
    """Causal mask aligned to the top-left corner (j <= i), right only when seqlen_q == seqlen_k."""
    return _forward(q, k, v, softmax_scale, window_left, block_m, block_n, top_left=True)


def _fwd_drops_ragged_block(q, k, v, softmax_scale, window_left, block_m, block_n):
    """Loops over seqlen_k // block_n whole key blocks: the ragged last block is never read."""
    return _forward(q, k, v, softmax_scale, window_left, block_m, block_n, drop_ragged=True)


def _fwd_default_scale(q, k, v, softmax_scale, window_left, block_m, block_n):
    """Ignores softmax_scale and uses the default 1/sqrt(d)."""
    return _forward(q, k, v, 1 / math.sqrt(q.shape[1]), window_left, block_m, block_n)


def _fwd_window_one_short(q, k, v, softmax_scale, window_left, block_m, block_n):
    """A window of window_left keys including the diagonal one: one key short on the left."""
    return _forward(q, k, v, softmax_scale, window_left, block_m, block_n, window_extra=1)


def _fwd_nan_when_empty(q, k, v, softmax_scale, window_left, block_m, block_n):
    """No m_safe guard: a row that sees no key gets NaN instead of out = 0 and lse = -inf."""
    return _forward(q, k, v, softmax_scale, window_left, block_m, block_n, guard=False)


def _kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal, *, off=None, strict_skip=False,
          full_row="first", ragged_full=False):
    """tile_kind from the tile's corners, with one slip."""
    off = seqlen_k - seqlen_q if off is None else off
    row_lo, row_hi = i * block_m, min((i + 1) * block_m, seqlen_q)
    col_lo, col_hi = j * block_n, min((j + 1) * block_n, seqlen_k)
    ragged = (j + 1) * block_n > seqlen_k and not ragged_full
    if not causal:
        return "masked" if ragged else "full"
    last_diag = row_hi - 1 + off  # the last row's last visible key
    if col_lo > last_diag or (strict_skip and col_lo == last_diag):
        return "skip"
    full_diag = (row_lo if full_row == "first" else row_hi - 1) + off
    return "full" if col_hi - 1 <= full_diag and not ragged else "masked"


def _kind_top_left(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    """Aligns the causal mask to the top-left corner (query i sees keys j <= i)."""
    return _kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal, off=0)


def _kind_skip_off_by_one(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    """Skips a tile whose first key is the last row's diagonal key (>= where > is right)."""
    return _kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal, strict_skip=True)


def _kind_full_from_last_row(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    """Calls a tile full when its last row sees every key; it is the first row that must."""
    return _kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal, full_row="last")


def _kind_ragged_full(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    """Forgets the padded keys of a ragged last block: calls it full when its real keys are."""
    return _kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal, ragged_full=True)


MISTAKES = {"flash_forward_local": [_fwd_no_rescale, _fwd_top_left, _fwd_drops_ragged_block,
                                    _fwd_default_scale, _fwd_window_one_short, _fwd_nan_when_empty],
            "tile_kind": [_kind_top_left, _kind_skip_off_by_one, _kind_full_from_last_row, _kind_ragged_full]}
