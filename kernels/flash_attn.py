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

import os

import torch
import triton
import triton.language as tl

from ._checks import KERNEL_DTYPES, MAX_HEAD_DIM, MIN_HEAD_DIM, check_qkv, check_scale, check_window

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the cheaper instruction
LN2 = 0.6931471805599453
# Triton compiles a variant per "divisible by 16 / equal to 1" pattern of each integer argument.
# Sizes vary from call to call and gain nothing from it: keep one compiled kernel for all of them.
_SIZES = ["heads_q", "heads_kv", "group", "seqlen_q", "seqlen_k", "head_dim", "window_left",
          "window_right"]


def _jit(fn):
    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    return triton.jit(do_not_specialize=[n for n in _SIZES if n in names])(fn)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
@_jit
def _attn_fwd(
    # pointers
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    # strides, one group per tensor; lse is contiguous (batch, heads_q, seqlen_q)
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh,
    # sizes
    heads_q, group, seqlen_q, seqlen_k, head_dim,
    qk_scale,  # softmax_scale * log2(e): scores go straight to base-2 units
    window_left, window_right,  # bounds of the band; the host passes a huge value for "unbounded"
    # meta-parameters
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,  # head_dim padded to a power of two >= 16
    IS_LOCAL: tl.constexpr,  # causal or windowed: apply the band mask and skip blocks outside it
    EVEN_N: tl.constexpr,  # seqlen_k % BLOCK_N == 0: no padded key columns to mask
    UPCAST: tl.constexpr,  # convert loaded blocks to fp32 (the interpreter's bf16 dot is wrong)
    PRECISION: tl.constexpr,  # "ieee" for fp32 inputs, "tf32" otherwise (ignored for 16-bit)
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // heads_q).to(tl.int64)
    off_h = (pid_bh % heads_q).to(tl.int64)
    off_hk = off_h // group  # GQA: the kv head this query head reads
    q_ptr += off_b * stride_qb + off_h * stride_qh
    k_ptr += off_b * stride_kb + off_hk * stride_kh
    v_ptr += off_b * stride_vb + off_hk * stride_vh
    o_ptr += off_b * stride_ob + off_h * stride_oh
    lse_ptr += off_b * stride_lb + off_h * stride_lh

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < seqlen_q
    mask_d = offs_d < head_dim

    # [BLOCK_M, HEAD_DIM]: read once, kept in registers for the whole loop
    q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (base-2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(s - m_i)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)  # unnormalised output

    # Bottom-right alignment: query i sits at key position diag[i].
    diag = offs_m + (seqlen_k - seqlen_q)
    lo = 0
    hi = seqlen_k
    if IS_LOCAL:  # only the key blocks that meet this tile's band
        lo = tl.maximum(pid_m * BLOCK_M + (seqlen_k - seqlen_q) - window_left, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum((pid_m + 1) * BLOCK_M + (seqlen_k - seqlen_q) + window_right, seqlen_k)

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen_k
        # [HEAD_DIM, BLOCK_N]: K^T, loaded transposed through the strides
        kt = tl.load(k_ptr + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_n[None, :] & mask_d[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        # [BLOCK_M, BLOCK_N]
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        if IS_LOCAL or not EVEN_N:
            valid = mask_n[None, :]
            if IS_LOCAL:
                valid = valid & (cols[None, :] >= diag[:, None] - window_left)
                valid = valid & (cols[None, :] <= diag[:, None] + window_right)
            s = tl.where(valid, s, float("-inf"))
        # Online softmax. m_safe is 0 while a row has seen no key, so that exp2(-inf - m) = 0
        # instead of exp2(-inf + inf) = nan.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_safe[:, None])  # [BLOCK_M, BLOCK_N]
        alpha = tl.math.exp2(m_i - m_safe)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        # [BLOCK_N, HEAD_DIM]
        v = tl.load(v_ptr + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        if UPCAST:
            v = v.to(tl.float32)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)
        m_i = m_new

    empty = l_i == 0.0  # rows that saw no key: output 0, lse -inf
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    tl.store(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    tl.store(lse_ptr + offs_m, lse, mask=mask_m)


# --------------------------------------------------------------------------------------------
# Backward
#   P  = exp(scale * Q K^T - lse)          recomputed block by block, never stored
#   dV = P^T dO        dP = dO V^T        dS = P * (dP - delta),  delta = rowsum(dO * O) - dlse
#   dQ = scale * dS K  dK = scale * dS^T Q
# --------------------------------------------------------------------------------------------
@_jit
def _attn_bwd_preprocess(
    o_ptr, do_ptr, delta_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_lb, stride_lh,
    heads_q, seqlen_q, head_dim,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // heads_q).to(tl.int64)
    off_h = (pid_bh % heads_q).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask = (offs_m < seqlen_q)[:, None] & (offs_d < head_dim)[None, :]
    # [BLOCK_M, HEAD_DIM]
    o = tl.load(o_ptr + off_b * stride_ob + off_h * stride_oh
                + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, mask=mask, other=0.0)
    do = tl.load(do_ptr + off_b * stride_dob + off_h * stride_doh
                 + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # [BLOCK_M]
    tl.store(delta_ptr + off_b * stride_lb + off_h * stride_lh + offs_m, delta, mask=offs_m < seqlen_q)


@_jit
def _attn_bwd_dkdv(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_lb, stride_lh,  # lse and delta: contiguous (batch, heads_q, seqlen_q)
    heads_kv, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (key block, kv head): dK and dV accumulate on chip over every query
    block, and over every query head of the GQA group, so no atomics are needed."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // heads_kv).to(tl.int64)
    off_hk = (pid_bh % heads_kv).to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_n = offs_n < seqlen_k
    mask_d = offs_d < head_dim
    mask_nd = mask_n[:, None] & mask_d[None, :]

    # [BLOCK_N, HEAD_DIM]
    k = tl.load(k_ptr + off_b * stride_kb + off_hk * stride_kh
                + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=mask_nd, other=0.0)
    v = tl.load(v_ptr + off_b * stride_vb + off_hk * stride_vh
                + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=mask_nd, other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    # Query i sees key j when j - off - right <= i <= j - off + left: only those query blocks.
    off = seqlen_k - seqlen_q
    lo = 0
    hi = seqlen_q
    if IS_LOCAL:
        lo = tl.maximum(pid_n * BLOCK_N - off - window_right, 0)
        lo = (lo // BLOCK_M) * BLOCK_M
        hi = tl.minimum((pid_n + 1) * BLOCK_N - off + window_left, seqlen_q)

    for g in range(0, group):
        off_h = off_hk * group + g
        q_head = q_ptr + off_b * stride_qb + off_h * stride_qh
        do_head = do_ptr + off_b * stride_dob + off_h * stride_doh
        lse_head = lse_ptr + off_b * stride_lb + off_h * stride_lh
        delta_head = delta_ptr + off_b * stride_lb + off_h * stride_lh
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + offs_m
            mask_m = rows < seqlen_q
            # [HEAD_DIM, BLOCK_M]: Q^T
            qt = tl.load(q_head + rows[None, :] * stride_qm + offs_d[:, None] * stride_qd,
                         mask=mask_m[None, :] & mask_d[:, None], other=0.0)
            # [BLOCK_M, HEAD_DIM]
            do = tl.load(do_head + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                         mask=mask_m[:, None] & mask_d[None, :], other=0.0)
            if UPCAST:
                qt = qt.to(tl.float32)
                do = do.to(tl.float32)
            # Rows with no key (lse = -inf) and padded rows get lse = +inf, so P = 0 there.
            lse = tl.load(lse_head + rows, mask=mask_m, other=float("inf"))
            lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
            delta = tl.load(delta_head + rows, mask=mask_m, other=0.0)
            # [BLOCK_N, BLOCK_M]
            st = tl.dot(k, qt, input_precision=PRECISION) * qk_scale
            if IS_LOCAL:  # mask the exponent, not P: exp2 of a masked-out huge score overflows
                diag = rows + off
                valid = (offs_n[:, None] >= diag[None, :] - window_left)
                valid = valid & (offs_n[:, None] <= diag[None, :] + window_right)
                st = tl.where(valid, st, float("-inf"))
            pt = tl.math.exp2(st - lse[None, :])
            dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
            # [BLOCK_N, BLOCK_M]
            dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
            dst = pt * (dpt - delta[None, :])
            dk = tl.dot(dst.to(qt.dtype), tl.trans(qt), dk, input_precision=PRECISION)

    dk = dk * sm_scale
    tl.store(dk_ptr + off_b * stride_dkb + off_hk * stride_dkh
             + offs_n[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=mask_nd)
    tl.store(dv_ptr + off_b * stride_dvb + off_hk * stride_dvh
             + offs_n[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=mask_nd)


@_jit
def _attn_bwd_dq(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_lb, stride_lh,
    heads_q, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
):
    """One program per (query block, query head): the forward's loop again, accumulating dQ."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = (pid_bh // heads_q).to(tl.int64)
    off_h = (pid_bh % heads_q).to(tl.int64)
    off_hk = off_h // group
    k_ptr += off_b * stride_kb + off_hk * stride_kh
    v_ptr += off_b * stride_vb + off_hk * stride_vh

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < seqlen_q
    mask_d = offs_d < head_dim
    mask_md = mask_m[:, None] & mask_d[None, :]

    # [BLOCK_M, HEAD_DIM]
    q = tl.load(q_ptr + off_b * stride_qb + off_h * stride_qh
                + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd, mask=mask_md, other=0.0)
    do = tl.load(do_ptr + off_b * stride_dob + off_h * stride_doh
                 + offs_m[:, None] * stride_dom + offs_d[None, :] * stride_dod, mask=mask_md, other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
        do = do.to(tl.float32)
    lse = tl.load(lse_ptr + off_b * stride_lb + off_h * stride_lh + offs_m, mask=mask_m,
                  other=float("inf"))
    lse = tl.where(lse == float("-inf"), float("inf"), lse) * 1.4426950408889634
    delta = tl.load(delta_ptr + off_b * stride_lb + off_h * stride_lh + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    diag = offs_m + (seqlen_k - seqlen_q)
    lo = 0
    hi = seqlen_k
    if IS_LOCAL:
        lo = tl.maximum(pid_m * BLOCK_M + (seqlen_k - seqlen_q) - window_left, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum((pid_m + 1) * BLOCK_M + (seqlen_k - seqlen_q) + window_right, seqlen_k)

    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        mask_n = cols < seqlen_k
        mask_dn = mask_d[:, None] & mask_n[None, :]
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
        valid = mask_n[None, :]  # padded keys have k = 0, hence p = exp2(-lse) != 0: mask them
        if IS_LOCAL:
            valid = valid & (cols[None, :] >= diag[:, None] - window_left)
            valid = valid & (cols[None, :] <= diag[:, None] + window_right)
        p = tl.math.exp2(tl.where(valid, s, float("-inf")) - lse[:, None])
        dp = tl.dot(do, vt, input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=PRECISION)

    dq = dq * sm_scale
    tl.store(dq_ptr + off_b * stride_dqb + off_h * stride_dqh
             + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=mask_md)


# --------------------------------------------------------------------------------------------
# Host side: configs, launches
# --------------------------------------------------------------------------------------------
def _padded_head_dim(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))  # tl.dot needs K >= 16


def fwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Default launch configuration of the forward kernel (tunable; see benchmarks/)."""
    if INTERPRET:  # the interpreter's cost is per block op: small blocks keep tests meaningful
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    d = _padded_head_dim(head_dim)
    if dtype == torch.float32:  # twice the bytes per tile, and the ieee dot is slow anyway
        return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2) if d <= 128 else \
            dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    if d <= 64:
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    if d <= 128:
        return dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)


def bwd_config(head_dim: int, dtype: torch.dtype) -> dict:
    """Default launch configuration of the backward kernels (dK/dV and dQ share it)."""
    if INTERPRET:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    d = _padded_head_dim(head_dim)
    if dtype == torch.float32 or d > 128:
        return dict(BLOCK_M=32, BLOCK_N=32, num_warps=4, num_stages=1)
    return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=2)


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


def _flash_attn_forward(q, k, v, causal: bool, softmax_scale: float, window_left: int,
                        window_right: int, block_m=None, block_n=None, num_warps=None,
                        num_stages=None):
    """Launch the forward kernel; returns ``(out, lse)``. Inputs are assumed validated."""
    batch, heads_q, seqlen_q, head_dim = q.shape
    heads_kv, seqlen_k = k.shape[1], k.shape[2]
    if causal:
        window_right = 0
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads_q, seqlen_q), device=q.device, dtype=torch.float32)
    if out.numel() == 0 or seqlen_k == 0:  # nothing to launch; empty rows are 0 with lse -inf
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    cfg = fwd_config(head_dim, q.dtype)
    block_m = block_m or cfg["BLOCK_M"]
    block_n = block_n or cfg["BLOCK_N"]
    left, right, is_local = _band(seqlen_q, seqlen_k, window_left, window_right)
    grid = (triton.cdiv(seqlen_q, block_m), batch * heads_q)
    _attn_fwd[grid](
        q, k, v, out, lse,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), lse.stride(0), lse.stride(1),
        heads_q, heads_q // heads_kv, seqlen_q, seqlen_k, head_dim,
        softmax_scale * LOG2E, left, right,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=_padded_head_dim(head_dim),
        IS_LOCAL=is_local, EVEN_N=seqlen_k % block_n == 0, **_flags(q.dtype),
        num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"],
    )
    return out, lse


def _flash_attn_backward(do, q, k, v, out, lse, dlse, causal: bool, softmax_scale: float,
                         window_left: int, window_right: int, block_m=None, block_n=None,
                         num_warps=None, num_stages=None):
    """Launch the three backward kernels; returns ``(dq, dk, dv)``."""
    batch, heads_q, seqlen_q, head_dim = q.shape
    heads_kv, seqlen_k = k.shape[1], k.shape[2]
    if causal:
        window_right = 0
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    cfg = bwd_config(head_dim, q.dtype)
    block_m = block_m or cfg["BLOCK_M"]
    block_n = block_n or cfg["BLOCK_N"]
    launch = dict(num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"])
    head_dim_pad = _padded_head_dim(head_dim)
    lse = lse.contiguous()

    # delta_i = rowsum(dO_i * O_i) - dlse_i   (the second term makes lse itself differentiable)
    delta = torch.empty_like(lse)
    _attn_bwd_preprocess[(triton.cdiv(seqlen_q, block_m), batch * heads_q)](
        out, do, delta, *out.stride(), *do.stride(), delta.stride(0), delta.stride(1),
        heads_q, seqlen_q, head_dim, BLOCK_M=block_m, HEAD_DIM=head_dim_pad,
    )
    if dlse is not None:
        delta = delta - dlse
    left, right, is_local = _band(seqlen_q, seqlen_k, window_left, window_right)
    flags = _flags(q.dtype)
    common = (seqlen_q, seqlen_k, head_dim, softmax_scale, softmax_scale * LOG2E, left, right)
    _attn_bwd_dkdv[(triton.cdiv(seqlen_k, block_n), batch * heads_kv)](
        q, k, v, do, lse, delta, dk, dv,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dk.stride(), *dv.stride(),
        lse.stride(0), lse.stride(1), heads_kv, heads_q // heads_kv, *common,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim_pad, IS_LOCAL=is_local, **flags,
        **launch,
    )
    _attn_bwd_dq[(triton.cdiv(seqlen_q, block_m), batch * heads_q)](
        q, k, v, do, lse, delta, dq,
        *q.stride(), *k.stride(), *v.stride(), *do.stride(), *dq.stride(),
        lse.stride(0), lse.stride(1), heads_q, heads_q // heads_kv, *common,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim_pad, IS_LOCAL=is_local, **flags,
        **launch,
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
    check_qkv(q, k, v, dtypes=KERNEL_DTYPES, min_head_dim=MIN_HEAD_DIM, max_head_dim=MAX_HEAD_DIM)
    scale = check_scale(softmax_scale, q.shape[-1])
    window_left, window_right = check_window(window_size, causal)
    if q.device.type != "cuda" and not INTERPRET:
        raise ValueError(
            f"q: tensors on {q.device} need Triton's interpreter; move them to CUDA, or set "
            "TRITON_INTERPRET=1 before importing kernels"
        )
    out, lse = _attention_fwd_op(q, k, v, bool(causal), scale, window_left, window_right)
    return (out, lse) if return_lse else out


__all__ = ["flash_attention", "fwd_config", "bwd_config"]
