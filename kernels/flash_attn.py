"""FlashAttention-2, forward and backward, in Triton.

What the reader will learn here: how the tiled algorithm of the notebooks becomes a GPU kernel.
Each program owns one block of ``BLOCK_M`` queries, keeps its running max ``m_i``, running sum
``l_i`` and unnormalised output ``acc`` on chip, and streams the keys and values past it in blocks
of ``BLOCK_N`` (the FlashAttention-2 loop order). Nothing of size ``seqlen_q x seqlen_k`` is ever
written to memory: the backward pass recomputes the probabilities from the saved log-sum-exp.

Semantics (identical to :func:`kernels.reference.attention_reference`):

* masks are aligned to the bottom-right corner: query ``i`` sits at key position
  ``i + seqlen_k - seqlen_q`` and sees key ``j`` when ``i + off - left <= j <= i + off + right``;
  ``causal=True`` is ``right = 0``;
* a query row that sees no key returns zeros and ``lse = -inf``;
* ``heads_q`` may be a multiple of ``heads_kv`` (MQA/GQA): query head ``h`` reads kv head
  ``h // (heads_q // heads_kv)``.

Layout of the file: the four ``@triton.jit`` kernels (forward; backward preprocess; dK/dV; dQ),
the host wrappers that check, allocate and launch, the ``torch.library`` custom ops with their
autograd formula, and the public :func:`flash_attention`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._checks import INTERPRET, check_kernel_qkv, check_runs_here, check_scale, check_window

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the cheaper instruction
LN2 = 0.6931471805599453  # log(x) = log2(x) * ln(2)
# The same two numbers as compile-time constants, the only kind of global a @triton.jit reads.
LOG2E_C: tl.constexpr = tl.constexpr(LOG2E)
LN2_C: tl.constexpr = tl.constexpr(LN2)
# Triton compiles a variant per "divisible by 16 / equal to 1" pattern of each integer argument.
# Sequence lengths and window bounds vary from call to call and gain nothing from it: keep one
# compiled kernel for all of them. head_dim is left specialised: knowing it is a multiple of 16
# lets the compiler turn the `offs_d < head_dim` masks into 16-byte vector loads (measured on an
# H100: 2-3x slower kernels without it).
_SIZES = ["heads_q", "heads_kv", "group", "seqlen_q", "seqlen_k", "window_left", "window_right",
          "num_tiles"]


def _jit(fn):
    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    return triton.jit(do_not_specialize=[n for n in _SIZES if n in names])(fn)


# --------------------------------------------------------------------------------------------
# Shared pieces: where a sequence starts and how long it is; which blocks meet the band
# --------------------------------------------------------------------------------------------
@triton.jit
def _tile_ids(num_tiles):
    """(tile, batch * head) of this program. Grid axis 0 enumerates both, tiles fastest: the
    launch order of a 2D grid (tiles, batch * heads), so the programs running together share a
    head's K and V in L2, without CUDA's limit of 65535 on a grid's second axis (a batch of
    4096 sequences with 16 heads is already past it)."""
    pid = tl.program_id(0)
    return pid % num_tiles, pid // num_tiles


def _grid(num_tiles: int, batch_heads: int, *more: int) -> tuple[int, ...]:
    """The launch grid that :func:`_tile_ids` decodes."""
    return (num_tiles * batch_heads, *more)


@triton.jit
def _sequence(cu_seqlens_ptr, seqused_ptr, off_b, seqlen, VARLEN: tl.constexpr,
              SEQUSED: tl.constexpr):
    """(first row, length) of sequence ``off_b``. Dense batches start at row 0 and have the
    length passed in; packed ones read ``cu_seqlens``, and ``seqlen`` is then the packed
    tensor's number of rows: offsets are clamped into it, so wrong ``cu_seqlens`` (passed with
    ``check_seqlens=False``) can give wrong rows but never reach outside the tensor. A KV cache
    reads ``seqused`` (its valid length, ``cache_seqlens`` in :func:`kernels.flash_decode`),
    clamped the same way. The start is int64: it is multiplied by a row stride of
    ``heads * head_dim``, and a packed batch of over 2**31 / 2048 = 1M tokens (16 heads of 128)
    would overflow int32 and read the wrong rows."""
    start = 0
    if VARLEN:
        start = tl.minimum(tl.maximum(tl.load(cu_seqlens_ptr + off_b), 0), seqlen)
        end = tl.minimum(tl.maximum(tl.load(cu_seqlens_ptr + off_b + 1), start), seqlen)
        seqlen = end - start
        start = start.to(tl.int64)
    if SEQUSED:  # clamped: an out-of-range length must never read outside the cache
        seqlen = tl.minimum(tl.maximum(tl.load(seqused_ptr + off_b), 0), seqlen)
    return start, seqlen


@triton.jit
def _key_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
               BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr):
    """Keys ``[lo, hi)`` that query positions ``[row_lo, row_hi)`` can see; ``lo`` is rounded
    down to a block so that every load stays block-aligned."""
    lo = 0
    hi = seqlen_k
    if IS_LOCAL:
        off = seqlen_k - seqlen_q
        lo = tl.maximum(row_lo + off - window_left, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum(row_hi + off + window_right, seqlen_k)
    return lo, hi


@triton.jit
def _full_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
                BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr):
    """Keys ``[lo, hi)``, block-aligned, that *every* query of ``[row_lo, row_hi)`` sees, all of
    them real keys: blocks there need no mask at all. Only the blocks at the edges of the band
    (the diagonal, for causal) and a ragged last block pay for ``tl.where``."""
    lo = 0
    hi = (seqlen_k // BLOCK_N) * BLOCK_N
    if IS_LOCAL:
        off = seqlen_k - seqlen_q
        first = row_hi - 1 + off - window_left  # the last row's first key
        lo = tl.cdiv(tl.maximum(first, 0), BLOCK_N) * BLOCK_N
        last = row_lo + off + window_right + 1  # one past the first row's last key
        hi = tl.minimum(hi, (tl.maximum(last, 0) // BLOCK_N) * BLOCK_N)
    return lo, hi


@triton.jit
def _split3(lo, hi, full_lo, full_hi):
    """Cut ``[lo, hi)`` into masked ``[lo, a)``, unmasked ``[a, b)`` and masked ``[b, hi)``."""
    a = tl.minimum(tl.maximum(full_lo, lo), hi)
    b = tl.maximum(tl.minimum(full_hi, hi), a)
    return a, b


@triton.jit
def _band_mask(rows, cols, seqlen_q, seqlen_k, window_left, window_right):
    """True where query ``rows`` sees key ``cols`` (bottom-right aligned); pass them broadcastable,
    ``rows[:, None], cols[None, :]`` for a [BLOCK_M, BLOCK_N] mask or the transpose."""
    diag = rows + (seqlen_k - seqlen_q)
    return (cols >= diag - window_left) & (cols <= diag + window_right)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                offs_m, offs_n, offs_d, mask_d, start, end, qk_scale,
                seqlen_q, seqlen_k, window_left, window_right,
                BLOCK_N: tl.constexpr, MASKED: tl.constexpr, IS_LOCAL: tl.constexpr,
                UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """The forward's inner loop over key blocks ``[start, end)``: online softmax, one block at a
    time. ``MASKED`` blocks apply the band mask and drop padded keys; the others need neither."""
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen_k
        if MASKED:
            mask_kt = mask_n[None, :] & mask_d[:, None]
            mask_v = mask_n[:, None] & mask_d[None, :]
        else:
            mask_kt = mask_d[:, None]
            mask_v = mask_d[None, :]
        # [HEAD_DIM, BLOCK_N]: K^T, loaded transposed through the strides
        kt = tl.load(k_ptr + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_kt, other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        # [BLOCK_M, BLOCK_N]
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASKED:
            valid = mask_n[None, :]
            if IS_LOCAL:
                valid = valid & _band_mask(offs_m[:, None], cols[None, :], seqlen_q, seqlen_k,
                                           window_left, window_right)
            s = tl.where(valid, s, float("-inf"))
        # Online softmax. m_safe is 0 while a row has seen no key, so that exp2(-inf - m) = 0
        # instead of exp2(-inf + inf) = nan (only a masked block can leave a row empty).
        m_new = tl.maximum(m_i, tl.max(s, 1))
        if MASKED:
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_safe = m_new
        p = tl.math.exp2(s - m_safe[:, None])  # [BLOCK_M, BLOCK_N]
        alpha = tl.math.exp2(m_i - m_safe)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        # [BLOCK_N, HEAD_DIM]
        v = tl.load(v_ptr + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=mask_v, other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@_jit
def _attn_fwd(
    # pointers
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr, seqused_k_ptr,  # read only when VARLEN / SEQUSED_K
    # strides, one group per tensor, as (batch, head, row, dim); a packed tensor has batch
    # stride 0 (its rows are found through cu_seqlens). o and lse also have a split stride.
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_os, stride_ob, stride_oh, stride_om, stride_od,
    stride_ls, stride_lb, stride_lh,  # lse rows are contiguous
    # sizes (seqlen_q / seqlen_k: a dense batch's lengths; with VARLEN the packed tensors' rows)
    heads_q, group, seqlen_q, seqlen_k, head_dim,
    qk_scale,  # softmax_scale * log2(e): scores go straight to base-2 units
    window_left, window_right,  # bounds of the band; the host passes a huge value for "unbounded"
    split_size,  # keys per split-KV program (a multiple of BLOCK_N); >= seqlen_k without splits
    num_tiles,  # query blocks per (batch, head): see _tile_ids
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,  # head_dim padded to a power of two >= 16
    IS_LOCAL: tl.constexpr,  # causal or windowed: apply the band mask and skip blocks outside it
    EVEN_N: tl.constexpr,  # every key length is a multiple of BLOCK_N: no padded columns
    VARLEN: tl.constexpr,  # packed sequences described by cu_seqlens_q / cu_seqlens_k
    SEQUSED_K: tl.constexpr,  # per-sequence number of valid keys (a KV cache)
    PACK_GQA: tl.constexpr,  # tile rows are (query, head-of-the-group) pairs: K/V read once per group
    UPCAST: tl.constexpr,  # convert loaded blocks to fp32 (the interpreter's bf16 dot is wrong)
    PRECISION: tl.constexpr,  # "ieee" for fp32 inputs, "tf32" otherwise (ignored for 16-bit)
):
    pid_m, pid_bh = _tile_ids(num_tiles)
    if IS_LOCAL:  # causal: the longest rows (last query blocks) first, the short ones fill the tail
        pid_m = num_tiles - 1 - pid_m
    pid_s = tl.program_id(1)  # split-KV index (0 without splits)
    if PACK_GQA:  # one program serves every query head of kv head off_hk
        off_b = pid_bh // (heads_q // group)
        off_hk = (pid_bh % (heads_q // group)).to(tl.int64)
        off_h = off_hk * group  # the group's first query head
    else:
        off_b = pid_bh // heads_q
        off_h = (pid_bh % heads_q).to(tl.int64)
        off_hk = off_h // group  # GQA: the kv head this query head reads
    start_q, seqlen_q = _sequence(cu_seqlens_q_ptr, seqused_k_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = _sequence(cu_seqlens_k_ptr, seqused_k_ptr, off_b, seqlen_k, VARLEN,
                                  SEQUSED_K)
    off_b = off_b.to(tl.int64)
    q_ptr += off_b * stride_qb + off_h * stride_qh + start_q * stride_qm
    k_ptr += off_b * stride_kb + off_hk * stride_kh + start_k * stride_kn
    v_ptr += off_b * stride_vb + off_hk * stride_vh + start_k * stride_vn
    o_ptr += pid_s * stride_os + off_b * stride_ob + off_h * stride_oh + start_q * stride_om
    lse_ptr += pid_s * stride_ls + off_b * stride_lb + off_h * stride_lh + start_q

    offs_r = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # the tile's rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    if PACK_GQA:  # row r is query position r // group of head r % group
        if pid_m * BLOCK_M >= seqlen_q * group:
            return
        offs_m = offs_r // group
        q_rows = offs_m * stride_qm + (offs_r % group) * stride_qh
        o_rows = offs_m * stride_om + (offs_r % group) * stride_oh
        lse_rows = offs_m + (offs_r % group) * stride_lh
        row_lo = (pid_m * BLOCK_M) // group
        row_hi = ((pid_m + 1) * BLOCK_M - 1) // group + 1
    else:
        if pid_m * BLOCK_M >= seqlen_q:  # packed batches: this sequence is shorter than the grid
            return
        offs_m = offs_r
        q_rows = offs_m * stride_qm
        o_rows = offs_m * stride_om
        lse_rows = offs_m
        row_lo = pid_m * BLOCK_M
        row_hi = row_lo + BLOCK_M
    mask_m = offs_m < seqlen_q
    mask_d = offs_d < head_dim

    # [BLOCK_M, HEAD_DIM]: read once, kept in registers for the whole loop
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (base-2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # unnormalised output

    lo, hi = _key_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right, BLOCK_N,
                        IS_LOCAL)
    lo = tl.maximum(lo, pid_s * split_size)  # split-KV: this program's slice of the keys
    hi = tl.minimum(hi, (pid_s + 1) * split_size)

    full_lo, full_hi = _full_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
                                   BLOCK_N, IS_LOCAL)
    mid_lo, mid_hi = _split3(lo, hi, full_lo, full_hi)
    # Three stretches of one loop: edge blocks with the mask, the interior without, edge again.
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn,
                                stride_vd, offs_m, offs_n, offs_d, mask_d, lo, mid_lo, qk_scale,
                                seqlen_q, seqlen_k, window_left, window_right, BLOCK_N,
                                True, IS_LOCAL, UPCAST, PRECISION)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn,
                                stride_vd, offs_m, offs_n, offs_d, mask_d, mid_lo, mid_hi, qk_scale,
                                seqlen_q, seqlen_k, window_left, window_right, BLOCK_N,
                                False, IS_LOCAL, UPCAST, PRECISION)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn,
                                stride_vd, offs_m, offs_n, offs_d, mask_d, mid_hi, hi, qk_scale,
                                seqlen_q, seqlen_k, window_left, window_right, BLOCK_N,
                                True, IS_LOCAL, UPCAST, PRECISION)

    empty = l_i == 0.0  # rows that saw no key: output 0, lse -inf
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2_C)
    tl.store(o_ptr + o_rows[:, None] + offs_d[None, :] * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    tl.store(lse_ptr + lse_rows, lse, mask=mask_m)


# --------------------------------------------------------------------------------------------
# Backward
#   P  = exp(scale * Q K^T - lse)          recomputed block by block, never stored
#   dV = P^T dO        dP = dO V^T        dS = P * (dP - delta),  delta = rowsum(dO * O) - dlse
#   dQ = scale * dS K  dK = scale * dS^T Q
# --------------------------------------------------------------------------------------------
@_jit
def _attn_bwd_preprocess(
    o_ptr, do_ptr, delta_ptr, cu_seqlens_q_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_lb, stride_lh,
    heads_q, seqlen_q, head_dim, num_tiles,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, VARLEN: tl.constexpr,
):
    pid_m, pid_bh = _tile_ids(num_tiles)
    off_b = pid_bh // heads_q
    off_h = (pid_bh % heads_q).to(tl.int64)
    start_q, seqlen_q = _sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
    off_b = off_b.to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = (offs_m < seqlen_q)[:, None] & (offs_d < head_dim)[None, :]
    rows = start_q + offs_m
    # [BLOCK_M, HEAD_DIM]
    o = tl.load(o_ptr + off_b * stride_ob + off_h * stride_oh
                + rows[:, None] * stride_om + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_ptr + off_b * stride_dob + off_h * stride_doh
                 + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # [BLOCK_M]
    tl.store(delta_ptr + off_b * stride_lb + off_h * stride_lh + rows, delta,
             mask=offs_m < seqlen_q)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, stride_qm, stride_qd,
                 stride_dom, stride_dod, offs_n, offs_m, offs_d, mask_d, start, end, qk_scale,
                 seqlen_q, seqlen_k, window_left, window_right, BLOCK_M: tl.constexpr,
                 MASKED: tl.constexpr, IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr,
                 PRECISION: tl.constexpr):
    """dK and dV's loop over query blocks ``[start, end)`` of one query head. Padded keys need no
    mask here (their rows of dK, dV are never stored); ``MASKED`` blocks mask the band and
    padded query rows."""
    for start_m in range(start, end, BLOCK_M):
        rows = start_m + offs_m
        mask_m = rows < seqlen_q
        if MASKED:
            mask_qt = mask_m[None, :] & mask_d[:, None]
            mask_do = mask_m[:, None] & mask_d[None, :]
        else:
            mask_qt = mask_d[:, None]
            mask_do = mask_d[None, :]
        # [HEAD_DIM, BLOCK_M]: Q^T
        qt = tl.load(q_head + rows[None, :] * stride_qm + offs_d[:, None] * stride_qd,
                     mask=mask_qt, other=0.0)
        # [BLOCK_M, HEAD_DIM]
        do = tl.load(do_head + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                     mask=mask_do, other=0.0)
        if UPCAST:
            qt = qt.to(tl.float32)
            do = do.to(tl.float32)
        # Rows with no key (lse = -inf) and padded rows get lse = +inf, so P = 0 there.
        if MASKED:
            lse = tl.load(lse_head + rows, mask=mask_m, other=float("inf"))
            delta = tl.load(delta_head + rows, mask=mask_m, other=0.0)
        else:
            lse = tl.load(lse_head + rows)
            delta = tl.load(delta_head + rows)
        lse = tl.where(lse == float("-inf"), float("inf"), lse) * LOG2E_C
        # [BLOCK_N, BLOCK_M]
        st = tl.dot(k, qt, input_precision=PRECISION) * qk_scale
        if MASKED and IS_LOCAL:  # mask the exponent, not P: exp2 of a masked-out score overflows
            valid = _band_mask(rows[None, :], offs_n[:, None], seqlen_q, seqlen_k, window_left,
                               window_right)
            st = tl.where(valid, st, float("-inf"))
        pt = tl.math.exp2(st - lse[None, :])
        dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
        # [BLOCK_N, BLOCK_M]
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])
        dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)
    return dk, dv


@_jit
def _attn_bwd_dkdv(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_lb, stride_lh,  # lse and delta share one layout, rows contiguous
    heads_kv, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right, num_tiles,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (key block, kv head): dK and dV accumulate on chip over every query
    block, and over every query head of the GQA group, so no atomics are needed."""
    pid_n, pid_bh = _tile_ids(num_tiles)
    off_b = pid_bh // heads_kv
    off_hk = (pid_bh % heads_kv).to(tl.int64)
    start_q, seqlen_q = _sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = _sequence(cu_seqlens_k_ptr, cu_seqlens_k_ptr, off_b, seqlen_k, VARLEN, False)
    if pid_n * BLOCK_N >= seqlen_k:
        return
    off_b = off_b.to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_n = offs_n < seqlen_k
    mask_d = offs_d < head_dim
    mask_nd = mask_n[:, None] & mask_d[None, :]
    keys = start_k + offs_n  # row index in memory

    # [BLOCK_N, HEAD_DIM]
    k = tl.load(k_ptr + off_b * stride_kb + off_hk * stride_kh
                + keys[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_nd, other=0.0)
    v = tl.load(v_ptr + off_b * stride_vb + off_hk * stride_vh
                + keys[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_nd, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Query i sees key j when j - off - right <= i <= j - off + left: only those query blocks.
    # Query blocks wholly inside that range (and wholly real rows) need no mask.
    lo = 0
    hi = seqlen_q
    full_lo = 0
    full_hi = (seqlen_q // BLOCK_M) * BLOCK_M
    if IS_LOCAL:
        off = seqlen_k - seqlen_q
        lo = tl.maximum(pid_n * BLOCK_N - off - window_right, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
        hi = tl.minimum((pid_n + 1) * BLOCK_N - off + window_left, seqlen_q)
        first = (pid_n + 1) * BLOCK_N - 1 - off - window_right  # sees the block's last key
        full_lo = tl.cdiv(tl.maximum(first, 0), BLOCK_M) * BLOCK_M
        last = pid_n * BLOCK_N - off + window_left + 1  # one past the last row to see its first
        full_hi = tl.minimum(full_hi, (tl.maximum(last, 0) // BLOCK_M) * BLOCK_M)
    mid_lo, mid_hi = _split3(lo, hi, full_lo, full_hi)

    for g in range(0, group):
        off_h = off_hk * group + g
        q_head = q_ptr + off_b * stride_qb + off_h * stride_qh + start_q * stride_qm
        do_head = do_ptr + off_b * stride_dob + off_h * stride_doh + start_q * stride_dom
        lse_head = lse_ptr + off_b * stride_lb + off_h * stride_lh + start_q
        delta_head = delta_ptr + off_b * stride_lb + off_h * stride_lh + start_q
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, stride_qm,
                              stride_qd, stride_dom, stride_dod, offs_n, offs_m, offs_d, mask_d,
                              lo, mid_lo, qk_scale, seqlen_q, seqlen_k, window_left, window_right,
                              BLOCK_M, True, IS_LOCAL, UPCAST, PRECISION)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, stride_qm,
                              stride_qd, stride_dom, stride_dod, offs_n, offs_m, offs_d, mask_d,
                              mid_lo, mid_hi, qk_scale, seqlen_q, seqlen_k, window_left,
                              window_right, BLOCK_M, False, IS_LOCAL, UPCAST, PRECISION)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, stride_qm,
                              stride_qd, stride_dom, stride_dod, offs_n, offs_m, offs_d, mask_d,
                              mid_hi, hi, qk_scale, seqlen_q, seqlen_k, window_left, window_right,
                              BLOCK_M, True, IS_LOCAL, UPCAST, PRECISION)

    dk = dk * sm_scale
    tl.store(dk_ptr + off_b * stride_dkb + off_hk * stride_dkh
             + keys[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=mask_nd)
    tl.store(dv_ptr + off_b * stride_dvb + off_hk * stride_dvh
             + keys[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=mask_nd)


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_n, offs_d, mask_d, start, end, qk_scale, seqlen_q, seqlen_k,
               window_left, window_right, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
               IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """dQ's loop over key blocks ``[start, end)``; ``MASKED`` as in :func:`_fwd_blocks`."""
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen_k
        if MASKED:
            mask_dn = mask_d[:, None] & mask_n[None, :]
        else:
            mask_dn = mask_d[:, None]
        # [HEAD_DIM, BLOCK_N]
        kt = tl.load(k_ptr + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_dn, other=0.0)
        vt = tl.load(v_ptr + cols[None, :] * stride_vn + offs_d[:, None] * stride_vd,
                     mask=mask_dn, other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
            vt = vt.to(tl.float32)
        # [BLOCK_M, BLOCK_N]
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if MASKED:  # padded keys have k = 0, hence p = exp2(-lse) != 0: mask them
            valid = mask_n[None, :]
            if IS_LOCAL:
                valid = valid & _band_mask(offs_m[:, None], cols[None, :], seqlen_q, seqlen_k,
                                           window_left, window_right)
            s = tl.where(valid, s, float("-inf"))
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, vt, input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)
    return dq


@_jit
def _attn_bwd_dq(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_lb, stride_lh,
    heads_q, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right, num_tiles,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (query block, query head): the forward's loop again, accumulating dQ."""
    pid_m, pid_bh = _tile_ids(num_tiles)
    off_b = pid_bh // heads_q
    off_h = (pid_bh % heads_q).to(tl.int64)
    off_hk = off_h // group
    start_q, seqlen_q = _sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = _sequence(cu_seqlens_k_ptr, cu_seqlens_k_ptr, off_b, seqlen_k, VARLEN, False)
    if pid_m * BLOCK_M >= seqlen_q:
        return
    off_b = off_b.to(tl.int64)
    q_ptr += off_b * stride_qb + off_h * stride_qh + start_q * stride_qm
    do_ptr += off_b * stride_dob + off_h * stride_doh + start_q * stride_dom
    dq_ptr += off_b * stride_dqb + off_h * stride_dqh + start_q * stride_dqm
    k_ptr += off_b * stride_kb + off_hk * stride_kh + start_k * stride_kn
    v_ptr += off_b * stride_vb + off_hk * stride_vh + start_k * stride_vn
    lse_ptr += off_b * stride_lb + off_h * stride_lh + start_q
    delta_ptr += off_b * stride_lb + off_h * stride_lh + start_q

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < seqlen_q
    mask_d = offs_d < head_dim
    mask_md = mask_m[:, None] & mask_d[None, :]

    # [BLOCK_M, HEAD_DIM]
    q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_md, other=0.0)
    do = tl.load(do_ptr + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                 mask=mask_md, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(lse_ptr + offs_m, mask=mask_m, other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * LOG2E_C
    delta = tl.load(delta_ptr + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    lo, hi = _key_range(pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M, seqlen_q, seqlen_k, window_left,
                        window_right, BLOCK_N, IS_LOCAL)
    full_lo, full_hi = _full_range(pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M, seqlen_q, seqlen_k,
                                   window_left, window_right, BLOCK_N, IS_LOCAL)
    mid_lo, mid_hi = _split3(lo, hi, full_lo, full_hi)
    dq = _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_n, offs_d, mask_d, lo, mid_lo, qk_scale, seqlen_q, seqlen_k,
                    window_left, window_right, BLOCK_N, True, IS_LOCAL, UPCAST, PRECISION)
    dq = _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_n, offs_d, mask_d, mid_lo, mid_hi, qk_scale, seqlen_q, seqlen_k,
                    window_left, window_right, BLOCK_N, False, IS_LOCAL, UPCAST, PRECISION)
    dq = _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_n, offs_d, mask_d, mid_hi, hi, qk_scale, seqlen_q, seqlen_k,
                    window_left, window_right, BLOCK_N, True, IS_LOCAL, UPCAST, PRECISION)

    dq = dq * sm_scale
    tl.store(dq_ptr + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=mask_md)


# --------------------------------------------------------------------------------------------
# Host side: configs, launches
# --------------------------------------------------------------------------------------------
def _padded_head_dim(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))  # tl.dot needs K >= 16


def _cfg(bm: int, bn: int, warps: int, stages: int) -> dict:
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)


@functools.cache
def _hopper() -> bool:
    """Compute capability 9.x (H100, H200): the generation the tables below were measured on."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


# Launch configurations measured by benchmarks/tune_attention.py on an H100 (bf16, N = 4096,
# 16k tokens, 2026-11-23; the sweep is in benchmarks/results/h100/tune_attention.csv), keyed by
# (padded head_dim, causal). fp16 uses the same. Fixed tables instead of run-time autotuning: a
# notebook should not spend minutes tuning, and the interpreter needs one small config anyway.
_HOPPER_FWD = {
    (64, False): _cfg(128, 64, 4, 3), (64, True): _cfg(64, 64, 4, 3),
    (128, False): _cfg(128, 128, 8, 3), (128, True): _cfg(128, 128, 8, 3),
}
# Packed (varlen) batches, where they differ: the varlen kernel keeps more values live (each
# sequence's start as int64, its lengths loaded from cu_seqlens), and at head_dim 128 with the
# causal edge masks the 128 x 128 tile then spills 28 registers where the dense one spills none
# (ptxas, H100): 8% slower. 128 x 64 spills none and runs at 0.97-1.05x the dense kernel
# (benchmarks/NOTES.md, step 4).
_HOPPER_FWD_PACKED = {(128, True): _cfg(128, 64, 8, 3)}
_HOPPER_BWD = {  # (dK/dV, dQ)
    (64, False): (_cfg(32, 128, 4, 3), _cfg(128, 64, 4, 3)),
    (64, True): (_cfg(64, 64, 4, 1), _cfg(64, 64, 4, 3)),
    (128, False): (_cfg(64, 128, 8, 2), _cfg(128, 64, 8, 3)),
    (128, True): (_cfg(32, 64, 4, 3), _cfg(128, 64, 8, 3)),
}


def fwd_config(head_dim: int, dtype: torch.dtype, causal: bool = False, packed: bool = False) -> dict:
    """Launch configuration of the forward kernel: a measured table on Hopper for 16-bit inputs
    with head_dim <= 128 (``packed``: for varlen batches), conservative choices that fit any
    recent GPU otherwise."""
    if INTERPRET:  # the interpreter's cost is per block op: small blocks keep tests meaningful
        return _cfg(32, 32, 4, 1)
    d = _padded_head_dim(head_dim)
    if dtype == torch.float32:  # twice the bytes per tile, and the ieee dot is slow anyway
        return _cfg(64, 32, 4, 2) if d <= 128 else _cfg(32, 32, 4, 1)
    if d > 128:
        return _cfg(64, 32, 4, 2)
    if _hopper():
        key = (max(d, 64), bool(causal))
        return dict(_HOPPER_FWD_PACKED.get(key, _HOPPER_FWD[key]) if packed else _HOPPER_FWD[key])
    return _cfg(128, 64, 4, 3) if d <= 64 else _cfg(128, 64, 8, 3)


def bwd_config(head_dim: int, dtype: torch.dtype, causal: bool = False) -> dict:
    """Launch configuration of the backward kernels: ``BLOCK_M``/``BLOCK_N``/warps/stages of the
    dK/dV kernel (and the preprocess), and under ``"dq"`` the same four for the dQ kernel.
    dK/dV keeps a key block on chip and streams query blocks; dQ the other way round, so each
    prefers its resident block large and its streamed block small."""
    d = _padded_head_dim(head_dim)
    if INTERPRET or dtype == torch.float32 or d > 128:
        cfg = cfg_dq = _cfg(32, 32, 4, 1)
    elif _hopper():
        cfg, cfg_dq = _HOPPER_BWD[(max(d, 64), bool(causal))]
    else:
        cfg = cfg_dq = _cfg(64, 64, 4, 2)
    return dict(cfg, dq=dict(cfg_dq))


def _band(seqlen_q: int, seqlen_k: int, window_left: int, window_right: int):
    """Window bounds as kernel arguments: -1 (unbounded) becomes a bound that never binds."""
    unbounded = seqlen_q + seqlen_k + 1
    left = unbounded if window_left < 0 else window_left
    right = unbounded if window_right < 0 else window_right
    is_local = window_left >= 0 or window_right >= 0
    return left, right, is_local


def _flags(dtype: torch.dtype) -> dict:
    return dict(UPCAST=INTERPRET and dtype == torch.bfloat16,
                PRECISION="ieee" if dtype == torch.float32 else "tf32")


@dataclass(frozen=True)
class Layout:
    """How the kernels find a sequence's rows.

    Dense tensors are ``(batch, heads, seqlen, head_dim)``. Packed (variable-length) tensors are
    ``(total, heads, head_dim)`` with ``cu_seqlens`` of length ``batch + 1``; the kernels then see
    them with a batch stride of 0 and start each sequence at row ``cu_seqlens[b]``.
    """

    batch: int
    seqlen_q: int  # dense length, or max_seqlen_q when packed
    seqlen_k: int
    cu_seqlens_q: torch.Tensor | None = None
    cu_seqlens_k: torch.Tensor | None = None
    seqused_k: torch.Tensor | None = None  # valid keys per sequence (KV cache lengths)

    @property
    def packed(self) -> bool:
        return self.cu_seqlens_q is not None

    def lengths(self, q: torch.Tensor, k: torch.Tensor) -> tuple[int, int]:
        """(seqlen_q, seqlen_k) as the kernels take them: a dense batch's lengths; when packed,
        the number of rows of q and k, which bounds every sequence (``_sequence`` clamps the
        offsets to it) and makes the "unbounded" window bound of :func:`_band` never bind."""
        return (q.shape[0], k.shape[0]) if self.packed else (self.seqlen_q, self.seqlen_k)

    def strides(self, t: torch.Tensor) -> tuple[int, int, int, int]:
        """(batch, head, row, dim) strides of q, k, v, o or a gradient."""
        if self.packed:
            return (0, t.stride(1), t.stride(0), t.stride(2))
        return tuple(t.stride())

    def lse_strides(self, lse: torch.Tensor) -> tuple[int, int]:
        """(batch, head) strides of lse / delta: (batch, heads, seqlen) or packed (heads, total)."""
        return (0, lse.stride(0)) if self.packed else (lse.stride(0), lse.stride(1))

    def pointers(self, placeholder: torch.Tensor):
        """cu_seqlens_q, cu_seqlens_k, seqused_k; unused ones get a placeholder tensor that the
        kernel never reads (a constexpr flag compiles its loads away)."""
        return tuple(placeholder if t is None else t
                     for t in (self.cu_seqlens_q, self.cu_seqlens_k, self.seqused_k))


def _launch_forward(q, k, v, out, lse, layout: Layout, causal: bool, softmax_scale: float,
                    window_left: int, window_right: int, num_splits: int = 1,
                    pack_gqa: bool = False, block_m=None, block_n=None, num_warps=None,
                    num_stages=None):
    """Launch the forward kernel writing into ``out`` and ``lse``.

    With ``num_splits > 1``, ``out`` is ``(num_splits, *q.shape)`` and ``lse``
    ``(num_splits, *lse_shape)``: each split-KV program writes its own partial result there.
    """
    head_dim = q.shape[-1]
    heads_q, heads_kv = q.shape[1], k.shape[1]  # (b, h, n, d) dense, (total, h, d) packed
    cfg = fwd_config(head_dim, q.dtype, causal, layout.packed)
    block_m = block_m or cfg["BLOCK_M"]
    block_n = block_n or cfg["BLOCK_N"]
    if causal:
        window_right = 0
    seqlen_q, seqlen_k = layout.lengths(q, k)
    left, right, is_local = _band(seqlen_q, seqlen_k, window_left, window_right)
    split_size = triton.cdiv(triton.cdiv(layout.seqlen_k, block_n), num_splits) * block_n
    split_out = (out.stride(0),) if num_splits > 1 else (0,)
    split_lse = (lse.stride(0),) if num_splits > 1 else (0,)
    o_view = out[0] if num_splits > 1 else out
    l_view = lse[0] if num_splits > 1 else lse
    ragged_k = layout.packed or layout.seqused_k is not None
    group = heads_q // heads_kv
    pack_gqa = pack_gqa and group > 1
    if pack_gqa:  # rows = (query, head) pairs of one kv head's group
        tiles, batch_heads = triton.cdiv(layout.seqlen_q * group, block_m), layout.batch * heads_kv
    else:
        tiles, batch_heads = triton.cdiv(layout.seqlen_q, block_m), layout.batch * heads_q
    _attn_fwd[_grid(tiles, batch_heads, num_splits)](
        q, k, v, out, lse, *layout.pointers(lse),
        *layout.strides(q), *layout.strides(k), *layout.strides(v),
        *split_out, *layout.strides(o_view), *split_lse, *layout.lse_strides(l_view),
        heads_q, heads_q // heads_kv, seqlen_q, seqlen_k, head_dim,
        softmax_scale * LOG2E, left, right, split_size, tiles,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=_padded_head_dim(head_dim),
        IS_LOCAL=is_local, EVEN_N=not ragged_k and layout.seqlen_k % block_n == 0,
        VARLEN=layout.packed, SEQUSED_K=layout.seqused_k is not None, PACK_GQA=pack_gqa,
        **_flags(q.dtype),
        num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"],
    )


def _flash_attn_forward(q, k, v, causal: bool, softmax_scale: float, window_left: int,
                        window_right: int, layout: Layout | None = None, **config):
    """Allocate and launch the forward; returns ``(out, lse)``. Inputs are assumed validated.

    ``lse`` is ``(batch, heads_q, seqlen_q)`` for dense inputs and ``(heads_q, total_q)`` packed.
    ``config`` may override ``block_m``, ``block_n``, ``num_warps``, ``num_stages``.
    """
    if layout is None:
        layout = Layout(q.shape[0], q.shape[2], k.shape[2])
    lse_shape = (q.shape[1], q.shape[0]) if layout.packed else q.shape[:3]
    out = torch.empty_like(q)
    lse = torch.empty(lse_shape, device=q.device, dtype=torch.float32)
    if out.numel() == 0 or k.numel() == 0:  # nothing to launch; empty rows are 0 with lse -inf
        return out.zero_(), lse.fill_(float("-inf"))
    _launch_forward(q, k, v, out, lse, layout, causal, softmax_scale, window_left, window_right,
                    **config)
    return out, lse


def _flash_attn_backward(do, q, k, v, out, lse, dlse, causal: bool, softmax_scale: float,
                         window_left: int, window_right: int, layout: Layout | None = None,
                         block_m=None, block_n=None, num_warps=None, num_stages=None):
    """Launch the three backward kernels; returns ``(dq, dk, dv)``. ``block_m`` etc. override
    :func:`bwd_config` for all three kernels alike."""
    if layout is None:
        layout = Layout(q.shape[0], q.shape[2], k.shape[2])
    head_dim = q.shape[-1]
    heads_q, heads_kv = q.shape[1], k.shape[1]  # (b, h, n, d) dense, (total, h, d) packed
    if causal:
        window_right = 0
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    cfg = bwd_config(head_dim, q.dtype, causal)
    given = dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps, num_stages=num_stages)
    given = {key: val for key, val in given.items() if val}
    cfg_dq = dict(cfg.pop("dq"), **given)
    cfg.update(given)
    block_m = cfg["BLOCK_M"]
    head_dim_pad = _padded_head_dim(head_dim)
    lse = lse.contiguous()
    cu_q, cu_k, _ = layout.pointers(lse)
    seqlen_q, seqlen_k = layout.lengths(q, k)

    # delta_i = rowsum(dO_i * O_i) - dlse_i   (the second term makes lse itself differentiable)
    delta = torch.empty_like(lse)
    tiles = triton.cdiv(layout.seqlen_q, block_m)
    _attn_bwd_preprocess[_grid(tiles, layout.batch * heads_q)](
        out, do, delta, cu_q, *layout.strides(out), *layout.strides(do), *layout.lse_strides(delta),
        heads_q, seqlen_q, head_dim, tiles, BLOCK_M=block_m, HEAD_DIM=head_dim_pad,
        VARLEN=layout.packed,
    )
    if dlse is not None:
        delta = delta - dlse
    left, right, is_local = _band(seqlen_q, seqlen_k, window_left, window_right)
    meta = dict(HEAD_DIM=head_dim_pad, IS_LOCAL=is_local, VARLEN=layout.packed, **_flags(q.dtype))
    common = (seqlen_q, seqlen_k, head_dim, softmax_scale, softmax_scale * LOG2E, left, right)
    strides_qkvdo = (*layout.strides(q), *layout.strides(k), *layout.strides(v),
                     *layout.strides(do))
    tiles = triton.cdiv(layout.seqlen_k, cfg["BLOCK_N"])
    _attn_bwd_dkdv[_grid(tiles, layout.batch * heads_kv)](
        q, k, v, do, lse, delta, dk, dv, cu_q, cu_k,
        *strides_qkvdo, *layout.strides(dk), *layout.strides(dv), *layout.lse_strides(lse),
        heads_kv, heads_q // heads_kv, *common, tiles, **meta, **cfg,
    )
    tiles = triton.cdiv(layout.seqlen_q, cfg_dq["BLOCK_M"])
    _attn_bwd_dq[_grid(tiles, layout.batch * heads_q)](
        q, k, v, do, lse, delta, dq, cu_q, cu_k,
        *strides_qkvdo, *layout.strides(dq), *layout.lse_strides(lse),
        heads_q, heads_q // heads_kv, *common, tiles, **meta, **cfg_dq,
    )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# torch.library ops: opaque to torch.compile, differentiable through register_autograd
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("flash_fp::attention_fwd", mutates_args=())
def _attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                      softmax_scale: float, window_left: int, window_right: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    return _flash_attn_forward(q, k, v, causal, softmax_scale, window_left, window_right)


@_attention_fwd_op.register_fake
def _(q, k, v, causal, softmax_scale, window_left, window_right):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("flash_fp::attention_bwd", mutates_args=())
def _attention_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      out: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor | None, causal: bool,
                      softmax_scale: float, window_left: int, window_right: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _flash_attn_backward(do, q, k, v, out, lse, dlse, causal, softmax_scale,
                                window_left, window_right)


@_attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, dlse, causal, softmax_scale, window_left, window_right):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, softmax_scale, window_left, window_right = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.args = (causal, softmax_scale, window_left, window_right)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = _attention_bwd_op(dout.contiguous(), q, k, v, out, lse, dlse, *ctx.args)
    return dq, dk, dv, None, None, None, None


_attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class _FlashAttention(torch.autograd.Function):
    """The eager path of :func:`flash_attention` and :func:`kernels.flash_attention_varlen`: the
    same forward and backward as the custom ops above, without the dispatcher between. A custom
    op with registered autograd costs about 100 us of host time per call (measured on this
    project's CPU machine), a plain ``autograd.Function`` about 25 us: for a short kernel (causal,
    N = 1024 runs about 70 us on an H100) the host time, not the GPU, would set the pace.
    Under ``torch.compile`` :func:`flash_attention` calls the custom ops, which it keeps opaque."""

    @staticmethod
    def forward(ctx, q, k, v, causal, softmax_scale, window_left, window_right, layout):
        out, lse = _flash_attn_forward(q, k, v, causal, softmax_scale, window_left, window_right,
                                       layout)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (causal, softmax_scale, window_left, window_right, layout)
        ctx.set_materialize_grads(False)  # dlse stays None unless lse was used
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = torch.zeros_like(out) if dout is None else dout.contiguous()
        dq, dk, dv = _flash_attn_backward(dout, q, k, v, out, lse, dlse, *ctx.args)
        return dq, dk, dv, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def flash_attention(q, k, v, *, causal=False, softmax_scale=None, window_size=(-1, -1),
                    return_lse=False):
    """Exact softmax attention, tiled: O(N) memory, differentiable in q, k and v.

    Args:
        q: ``(batch, heads_q, seqlen_q, head_dim)``, float32, float16 or bfloat16.
        k, v: ``(batch, heads_kv, seqlen_k, head_dim)``; ``heads_q`` a multiple of ``heads_kv``
            (MQA/GQA). ``head_dim`` from 8 to 256, any value.
        causal: mask aligned to the bottom-right corner (FlashAttention >= 2.1): query ``i`` sees
            key ``j`` when ``j <= i + seqlen_k - seqlen_q``. PyTorch's SDPA ``is_causal`` aligns to
            the top-left instead (``j <= i``); the two agree only when ``seqlen_q == seqlen_k``.
        softmax_scale: multiplies ``q @ k^T``; defaults to ``1 / sqrt(head_dim)``.
        window_size: ``(left, right)`` for local attention: query ``i`` sees keys in
            ``[i + off - left, i + off + right]`` with ``off = seqlen_k - seqlen_q``; -1 = unbounded.
        return_lse: also return the log-sum-exp of each row's scaled scores.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` in the input dtype and, with
        ``return_lse``, ``lse`` ``(batch, heads_q, seqlen_q)`` in float32 (differentiable too).
        A query row that sees no key gets zeros and ``lse = -inf``.
    """
    check_kernel_qkv(q, k, v)
    scale = check_scale(softmax_scale, q.shape[-1])
    window_left, window_right = check_window(window_size, causal)
    check_runs_here(q)
    if torch.compiler.is_compiling():
        out, lse = _attention_fwd_op(q, k, v, causal, scale, window_left, window_right)
    else:
        out, lse = _FlashAttention.apply(q, k, v, causal, scale, window_left, window_right, None)
    return (out, lse) if return_lse else out


__all__ = ["flash_attention", "fwd_config", "bwd_config"]
