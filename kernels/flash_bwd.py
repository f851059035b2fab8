"""FlashAttention-2's backward: three kernels, their launch table and their launcher.

What the reader will learn here: how the gradients of attention are computed without the
``seqlen_q x seqlen_k`` matrix of probabilities. The forward (``flash_fwd.py``) saved only the
output and each row's log-sum-exp; from them the backward recomputes ``P`` block by block:

* a preprocess kernel computes ``delta = rowsum(dO * O)`` per query row;
* the dK/dV kernel keeps a block of keys on chip and streams the query blocks past it;
* the dQ kernel keeps a block of queries on chip and streams the key blocks past it (the forward's
  loop again), so that no gradient needs atomics.

On Hopper the launch table has the dQ kernel compute delta itself and run first (``OWN_DELTA``:
one launch and one read of dO fewer, ``benchmarks/NOTES.md`` step 9), and the dK/dV kernel start
while the dQ kernel's last programs still run, each of its programs waiting only for the dQ
programs of its own head (``PDL``, Hopper's programmatic dependent launch, step 10); elsewhere,
and in the interpreter, the three kernels run one after the other in the order above.

Layout of the file: the three ``@triton.jit`` kernels with their inner loops, the launch table
(:func:`bwd_config`) and the launcher :func:`attention_backward`. The tile, sequence and band
helpers live in ``tiles.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

from ._checks import INTERPRET
from .band import Band
from .tiles import (
    LOG2E,
    LOG2E_C,
    Layout,
    band_mask,
    dot_flags,
    full_range,
    grid,
    is_hopper,
    jit_kernel,
    key_range,
    launch_config,
    load_rows,
    padded_head_dim,
    row_descriptors,
    sequence,
    sequence_descriptors,
    split3,
    stretch_range,
    tile_ids,
)


# --------------------------------------------------------------------------------------------
# Backward
#   P  = exp(scale * Q K^T - lse)          recomputed block by block, never stored
#   dV = P^T dO        dP = dO V^T        dS = P * (dP - delta),  delta = rowsum(dO * O) - dlse
#   dQ = scale * dS K  dK = scale * dS^T Q
# --------------------------------------------------------------------------------------------
@jit_kernel
def _attn_bwd_preprocess(
    o_ptr, do_ptr, delta_ptr, cu_seqlens_q_ptr,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_lb, stride_lh,
    heads_q, seqlen_q, head_dim, num_tiles,
    BLOCK_M: tl.constexpr, HEAD_DIM: tl.constexpr, VARLEN: tl.constexpr,
):
    pid_m, pid_bh = tile_ids(num_tiles)
    off_b = pid_bh // heads_q
    off_h = (pid_bh % heads_q).to(tl.int64)
    start_q, seqlen_q = sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
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
def log2_lse(lse):
    """The offset of a row's exponent, ``P = exp2(scale * log2(e) * s - lse * log2(e))``: rows
    with no key (``lse = -inf``) get ``+inf``, so their ``P`` is 0, not NaN."""
    return tl.where(lse == float("-inf"), float("inf"), lse) * LOG2E_C


@triton.jit
def _signal_ready(ready_ptr):
    """``PDL=2``, the dQ kernel's side: after every thread of this program has stored its rows of
    delta (the barrier), one release-ordered atomic counts the program in ``ready_ptr``."""
    tl.debug_barrier()
    tl.atomic_add(ready_ptr, 1, sem="release")


@triton.jit
def _wait_ready(ready_ptr, count):
    """``PDL=2``, the dK/dV kernel's side: spin until ``count`` dQ programs of this query head
    have written their delta. Safe because the dK/dV grid starts only once every dQ program has
    started (``gdc_launch_dependents`` is the dQ kernel's first instruction), so every program
    waited on is running or done; without programmatic launch the counters are full already."""
    while tl.atomic_add(ready_ptr, 0, sem="acquire") < count:
        pass


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, dq_head, stride_qm,
                 stride_qd, stride_dom, stride_dod, stride_dqm, stride_dqd, offs_n, offs_m, offs_d,
                 mask_n, mask_d, lo, mid_lo, mid_hi, hi, sm_scale, qk_scale, seqlen_q, seqlen_k,
                 window_left, window_right, q_desc, do_desc, off_b, off_h, start_q,
                 BLOCK_M: tl.constexpr, IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr,
                 PRECISION: tl.constexpr, KV_B: tl.constexpr, ATOMIC_DQ: tl.constexpr,
                 WARP_SPEC: tl.constexpr, TMA: tl.constexpr, VARLEN: tl.constexpr,
                 LSE2: tl.constexpr, SEQ_DESC: tl.constexpr = False):
    """dK and dV's loop over query blocks ``[lo, hi)`` of one query head, in the three stretches
    of :func:`kernels.flash_fwd._fwd_blocks` (masked ``[lo, mid_lo)``, unmasked
    ``[mid_lo, mid_hi)``, masked ``[mid_hi, hi)``). Padded keys need no mask here (their rows of
    dK, dV are never stored); the edges (``stretch != 1``) mask the band and padded query rows.

    Two arrangements of the same five lines: by default the tiles are transposed, ``S^T = K Q^T``
    ``[BLOCK_N, BLOCK_M]``, so that ``dV += P^T dO`` and ``dK += dS^T Q`` need no transpose of a
    register tile; with ``KV_B``, ``S = Q K^T`` ``[BLOCK_M, BLOCK_N]`` as in the forward, k and v
    only ever the second operand of a dot (read from shared memory), and ``P`` and ``dS``
    transposed for the two accumulations. Which is faster depends on the block shape (the launch
    table says which each shape uses). ``WARP_SPEC``: as in the forward's loop. ``TMA``: q and
    dO come through tensor descriptors (``q_desc``, ``do_desc``, made on the host by
    :func:`kernels.tiles.row_descriptors`), which Hopper serves with its copy engine; rows and
    columns past the tensor's come back as zeros, so no mask is needed, except in a packed batch
    (``VARLEN``), where the rows past a sequence's end are the next one's: there the edge
    stretches load through pointers, masked, and only the interior through descriptors, unless
    ``SEQ_DESC``: then the descriptors were made in the kernel for this sequence alone
    (:func:`kernels.tiles.sequence_descriptor`), its rows past the end load as zeros, and every
    stretch loads through them. ``LSE2``: ``lse_head``
    holds the rows' ``lse * log2(e)`` with ``+inf`` for rows without a key, as the dQ kernel
    writes it beside delta, so the loop loads the exponent's offset as it is.

    With ``ATOMIC_DQ`` the loop also computes this tile's share of dQ, ``scale * dS K``, and adds
    it into the fp32 buffer at ``dq_head`` with atomics (FlashAttention-2's single backward
    kernel: 5 matmuls per tile pair instead of the 7 of two kernels). Padded keys are then masked
    out of ``S``: their k rows are zero, but ``exp2(0 - lse)`` can overflow and ``inf * 0`` would
    poison dQ."""
    # Padded keys only exist in the last key block of a sequence
    key_ragged = tl.min(mask_n.to(tl.int32), 0) == 0
    # Without a band the first stretch is empty (lo = mid_lo = 0): it is not compiled
    for stretch in tl.static_range(0 if IS_LOCAL else 1, 3):
        start, end = stretch_range(stretch, lo, mid_lo, mid_hi, hi)
        for start_m in tl.range(start, end, BLOCK_M, warp_specialize=WARP_SPEC and stretch == 1):
            rows = start_m + offs_m
            mask_m = rows < seqlen_q
            if stretch != 1:
                mask_q = mask_m[:, None] & mask_d[None, :]
            else:
                mask_q = mask_d[None, :]
            # [BLOCK_M, HEAD_DIM], rows as they lie in memory (the dots take their transposes)
            # a packed batch's edge blocks read through pointers (see the docstring)
            if TMA and not (VARLEN and not SEQ_DESC and stretch != 1):
                q = load_rows(q_desc, off_b, off_h, start_q, start_m, BLOCK_M, VARLEN, SEQ_DESC)
                do = load_rows(do_desc, off_b, off_h, start_q, start_m, BLOCK_M, VARLEN, SEQ_DESC)
            else:
                q = tl.load(q_head + rows[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                            mask=mask_q, other=0.0)
                do = tl.load(do_head + rows[:, None] * stride_dom + offs_d[None, :] * stride_dod,
                             mask=mask_q, other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
                do = do.to(tl.float32)
            # Rows with no key (lse = -inf) and padded rows get lse = +inf, so P = 0 there.
            if stretch != 1:
                lse = tl.load(lse_head + rows, mask=mask_m, other=float("inf"))
                delta = tl.load(delta_head + rows, mask=mask_m, other=0.0)
            else:
                lse = tl.load(lse_head + rows)
                delta = tl.load(delta_head + rows)
            if not LSE2:
                lse = log2_lse(lse)
            if KV_B:  # k and v only as the second operand of each dot: read from shared memory
                # [BLOCK_M, BLOCK_N]
                s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
                if stretch != 1 and IS_LOCAL:
                    valid = band_mask(rows[:, None], offs_n[None, :], seqlen_q, seqlen_k, window_left,
                                      window_right)
                    s = tl.where(valid, s, float("-inf"))
                if ATOMIC_DQ:
                    if key_ragged:
                        s = tl.where(mask_n[None, :], s, float("-inf"))
                p = tl.math.exp2(s - lse[:, None])
                dv = tl.dot(tl.trans(p.to(do.dtype)), do, dv, input_precision=PRECISION)
                dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
                ds = p * (dp - delta[:, None])
                dk = tl.dot(tl.trans(ds.to(q.dtype)), q, dk, input_precision=PRECISION)
                if ATOMIC_DQ:
                    dq = tl.dot(ds.to(k.dtype), k, input_precision=PRECISION) * sm_scale
                    tl.atomic_add(dq_head + rows[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
                                  dq, mask=mask_q, sem="relaxed")
            else:
                # [BLOCK_N, BLOCK_M]
                st = tl.dot(k, tl.trans(q), input_precision=PRECISION) * qk_scale
                # mask the exponent, not P: exp2 of a masked-out score overflows
                if stretch != 1 and IS_LOCAL:
                    valid = band_mask(rows[None, :], offs_n[:, None], seqlen_q, seqlen_k, window_left,
                                      window_right)
                    st = tl.where(valid, st, float("-inf"))
                if ATOMIC_DQ:
                    if key_ragged:
                        st = tl.where(mask_n[:, None], st, float("-inf"))
                pt = tl.math.exp2(st - lse[None, :])
                dv = tl.dot(pt.to(do.dtype), do, dv, input_precision=PRECISION)
                # [BLOCK_N, BLOCK_M]
                dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)
                dst = pt * (dpt - delta[None, :])
                dk = tl.dot(dst.to(q.dtype), q, dk, input_precision=PRECISION)
                if ATOMIC_DQ:
                    dq = tl.dot(tl.trans(dst.to(k.dtype)), k, input_precision=PRECISION) * sm_scale
                    tl.atomic_add(dq_head + rows[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
                                  dq, mask=mask_q, sem="relaxed")
    return dk, dv


@jit_kernel
def _attn_bwd_dkdv(
    q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, dq_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr, q_desc, do_desc, ready_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_dkb, stride_dkh, stride_dkn, stride_dkd,
    stride_dvb, stride_dvh, stride_dvn, stride_dvd,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_lb, stride_lh,  # lse and delta share one layout, rows contiguous
    heads_kv, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right, num_tiles, ready_count,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    KV_B: tl.constexpr = False, ATOMIC_DQ: tl.constexpr = False, WARP_SPEC: tl.constexpr = False,
    ONE_HEAD: tl.constexpr = False, TMA: tl.constexpr = False, PDL: tl.constexpr = 0,
    LSE2: tl.constexpr = False, SEQ_DESC: tl.constexpr = False,
):
    """One program per (key block, kv head): dK and dV accumulate on chip over every query
    block, and over every query head of the GQA group, so no atomics are needed for them. With
    ``ATOMIC_DQ`` it also adds each tile's dQ into ``dq_ptr`` (fp32, zeroed) with atomics.

    ``PDL`` (Hopper's programmatic dependent launch; this kernel runs after the dQ kernel, which
    writes delta): the grid may start while the dQ kernel's last programs still run. ``PDL=2``:
    each query head waits only for its own ``ready_count`` dQ programs (the counters at
    ``ready_ptr``, one per (batch, query head)), so the programs of the first heads fill the SMs
    that the dQ kernel's last wave leaves idle; ``gdc_wait`` at the end keeps the stream's order
    (this kernel ends after the dQ kernel). (``PDL=1``, a ``gdc_wait`` for the whole dQ kernel
    after k and v are loaded, was withdrawn: it stopped the GPU in repeated calls, NOTES.md
    step 14.)"""
    pid_n, pid_bh = tile_ids(num_tiles)
    off_b = pid_bh // heads_kv
    off_hk = (pid_bh % heads_kv).to(tl.int64)
    start_q, seqlen_q = sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = sequence(cu_seqlens_k_ptr, cu_seqlens_k_ptr, off_b, seqlen_k, VARLEN, False)
    if pid_n * BLOCK_N >= seqlen_k:
        if PDL:
            gdc_wait()  # every program waits: this kernel ends after the dQ kernel
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
    mid_lo, mid_hi = split3(lo, hi, full_lo, full_hi)

    # ONE_HEAD (no GQA): the loop over the group's query heads has one trip, known when compiling,
    # so it is not compiled as a loop; a run-time loop around the query loop costs registers (the
    # accumulators and the pipelined loads live across both): spills fell by 75-100% at head
    # dim 128 (benchmarks/NOTES.md, step 6). ONE_HEAD=False in a config keeps the loop (to measure)
    for g in range(0, 1 if ONE_HEAD else group):
        off_h = off_hk * group + g
        q_head = q_ptr + off_b * stride_qb + off_h * stride_qh + start_q * stride_qm
        do_head = do_ptr + off_b * stride_dob + off_h * stride_doh + start_q * stride_dom
        lse_head = lse_ptr + off_b * stride_lb + off_h * stride_lh + start_q
        delta_head = delta_ptr + off_b * stride_lb + off_h * stride_lh + start_q
        dq_head = dq_ptr + off_b * stride_dqb + off_h * stride_dqh + start_q * stride_dqm
        if PDL == 2:
            _wait_ready(ready_ptr + off_b * heads_kv * group + off_h, ready_count)
        q_src, do_src = sequence_descriptors(q_desc, do_desc, q_head, do_head, seqlen_q, head_dim,
                                             stride_qm, stride_dom, BLOCK_M, HEAD_DIM, SEQ_DESC)
        dk, dv = _dkdv_blocks(dk, dv, k, v, q_head, do_head, lse_head, delta_head, dq_head,
                              stride_qm, stride_qd, stride_dom, stride_dod, stride_dqm, stride_dqd,
                              offs_n, offs_m, offs_d, mask_n, mask_d, lo, mid_lo, mid_hi, hi,
                              sm_scale, qk_scale, seqlen_q, seqlen_k, window_left, window_right,
                              q_src, do_src, off_b.to(tl.int32), off_h.to(tl.int32), start_q,
                              BLOCK_M=BLOCK_M, IS_LOCAL=IS_LOCAL, UPCAST=UPCAST,
                              PRECISION=PRECISION, KV_B=KV_B, ATOMIC_DQ=ATOMIC_DQ,
                              WARP_SPEC=WARP_SPEC, TMA=TMA, VARLEN=VARLEN, LSE2=LSE2,
                              SEQ_DESC=SEQ_DESC)

    dk = dk * sm_scale
    tl.store(dk_ptr + off_b * stride_dkb + off_hk * stride_dkh
             + keys[:, None] * stride_dkn + offs_d[None, :] * stride_dkd,
             dk.to(dk_ptr.dtype.element_ty), mask=mask_nd)
    tl.store(dv_ptr + off_b * stride_dvb + off_hk * stride_dvh
             + keys[:, None] * stride_dvn + offs_d[None, :] * stride_dvd,
             dv.to(dv_ptr.dtype.element_ty), mask=mask_nd)
    if PDL == 2:
        gdc_wait()


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
               offs_m, offs_n, offs_d, mask_d, lo, mid_lo, mid_hi, hi, qk_scale, seqlen_q,
               seqlen_k, window_left, window_right, k_desc, v_desc, off_b, off_hk, start_k,
               BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr,
               PRECISION: tl.constexpr, TMA: tl.constexpr, VARLEN: tl.constexpr,
               SEQ_DESC: tl.constexpr = False):
    """dQ's loop over key blocks ``[lo, hi)``, in the three stretches of
    :func:`kernels.flash_fwd._fwd_blocks`, the edges (``stretch != 1``) masked. ``TMA``: k and
    v through tensor descriptors, as in the forward's loop (:func:`kernels.tiles.load_rows`), and
    as in :func:`_dkdv_blocks` a packed batch's edge stretches through pointers unless
    ``SEQ_DESC``."""
    for stretch in tl.static_range(3):
        start, end = stretch_range(stretch, lo, mid_lo, mid_hi, hi)
        for start_n in range(start, end, BLOCK_N):
            cols = start_n + offs_n
            mask_n = cols < seqlen_k
            if stretch != 1:
                mask_nd = mask_n[:, None] & mask_d[None, :]
            else:
                mask_nd = mask_d[None, :]
            # [BLOCK_N, HEAD_DIM], rows as they lie in memory (the dots take their transposes)
            if TMA and not (VARLEN and not SEQ_DESC and stretch != 1):  # packed edges: pointers
                k = load_rows(k_desc, off_b, off_hk, start_k, start_n, BLOCK_N, VARLEN, SEQ_DESC)
                v = load_rows(v_desc, off_b, off_hk, start_k, start_n, BLOCK_N, VARLEN, SEQ_DESC)
            else:
                k = tl.load(k_ptr + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                            mask=mask_nd, other=0.0)
                v = tl.load(v_ptr + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                            mask=mask_nd, other=0.0)
            if UPCAST:
                k = k.to(tl.float32)
                v = v.to(tl.float32)
            # [BLOCK_M, BLOCK_N]
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
            if stretch != 1:  # padded keys have k = 0, hence p = exp2(-lse) != 0: mask them
                valid = mask_n[None, :]
                if IS_LOCAL:
                    valid = valid & band_mask(offs_m[:, None], cols[None, :], seqlen_q, seqlen_k,
                                              window_left, window_right)
                s = tl.where(valid, s, float("-inf"))
            p = tl.math.exp2(s - lse[:, None])
            dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)  # [BLOCK_M, BLOCK_N]
            ds = p * (dp - delta[:, None])
            dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=PRECISION)
    return dq


@jit_kernel
def _attn_bwd_dq(
    q_ptr, k_ptr, v_ptr, do_ptr, o_ptr, lse_ptr, dlse_ptr, delta_ptr, lse2_ptr, dq_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr, k_desc, v_desc, ready_ptr,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_dob, stride_doh, stride_dom, stride_dod,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_dqb, stride_dqh, stride_dqm, stride_dqd,
    stride_lb, stride_lh,  # lse, dlse and delta share one layout, rows contiguous
    heads_q, group, seqlen_q, seqlen_k, head_dim,
    sm_scale, qk_scale, window_left, window_right, num_tiles,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    IS_LOCAL: tl.constexpr, VARLEN: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    TMA: tl.constexpr = False, LONGEST_FIRST: tl.constexpr = True,
    OWN_DELTA: tl.constexpr = False, HAS_DLSE: tl.constexpr = False,
    STORE_DELTA: tl.constexpr = False, STORE_LSE2: tl.constexpr = False, PDL: tl.constexpr = 0,
    SEQ_DESC: tl.constexpr = False,
):
    """One program per (query block, query head): the forward's loop again, accumulating dQ.
    ``TMA``: k and v through ``k_desc`` and ``v_desc`` (dense or packed), or with ``SEQ_DESC``
    through descriptors made here for this sequence (packed). ``LONGEST_FIRST``: with
    a band, a head's query blocks run last to first, as in the forward: under a causal mask the
    last block sees the most keys, and the short ones then fill the grid's tail.

    ``OWN_DELTA``: the program computes its rows' ``delta = rowsum(dO * O) - dlse`` itself (the
    preprocess kernel's work: it holds dO already, so only O is read again) instead of loading
    it; ``HAS_DLSE``: subtract ``dlse_ptr``'s rows; ``STORE_DELTA``: write delta to
    ``delta_ptr`` for the dK/dV kernel, which then runs after this one; ``STORE_LSE2`` (with
    it): also write the rows' exponent offset, ``lse * log2(e)`` with ``+inf`` for rows
    without a key, to ``lse2_ptr``, which the dK/dV kernel then loads as it is (its ``LSE2``).
    ``PDL=2`` (see :func:`_attn_bwd_dkdv`): let the dK/dV grid launch as soon as every program
    here has started, and count each program at ``ready_ptr[batch * heads_q + head]`` once its
    delta is stored."""
    if PDL:
        gdc_launch_dependents()
    pid_m, pid_bh = tile_ids(num_tiles)
    if IS_LOCAL and LONGEST_FIRST:
        pid_m = num_tiles - 1 - pid_m
    off_b = pid_bh // heads_q
    off_h = (pid_bh % heads_q).to(tl.int64)
    off_hk = off_h // group
    start_q, seqlen_q = sequence(cu_seqlens_q_ptr, cu_seqlens_q_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = sequence(cu_seqlens_k_ptr, cu_seqlens_k_ptr, off_b, seqlen_k, VARLEN, False)
    if pid_m * BLOCK_M >= seqlen_q:
        if PDL == 2:  # past a packed sequence's end: no rows, but dK/dV counts every program
            _signal_ready(ready_ptr + pid_bh)
        return
    off_b = off_b.to(tl.int64)
    q_ptr += off_b * stride_qb + off_h * stride_qh + start_q * stride_qm
    do_ptr += off_b * stride_dob + off_h * stride_doh + start_q * stride_dom
    dq_ptr += off_b * stride_dqb + off_h * stride_dqh + start_q * stride_dqm
    k_ptr += off_b * stride_kb + off_hk * stride_kh + start_k * stride_kn
    v_ptr += off_b * stride_vb + off_hk * stride_vh + start_k * stride_vn
    o_ptr += off_b * stride_ob + off_h * stride_oh + start_q * stride_om
    lse_ptr += off_b * stride_lb + off_h * stride_lh + start_q
    dlse_ptr += off_b * stride_lb + off_h * stride_lh + start_q
    delta_ptr += off_b * stride_lb + off_h * stride_lh + start_q
    lse2_ptr += off_b * stride_lb + off_h * stride_lh + start_q

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
    lse = log2_lse(tl.load(lse_ptr + offs_m, mask=mask_m, other=float("inf")))
    if OWN_DELTA:
        o = tl.load(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od,
                    mask=mask_md, other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # [BLOCK_M]
        if HAS_DLSE:
            delta -= tl.load(dlse_ptr + offs_m, mask=mask_m, other=0.0)
        if STORE_DELTA:
            tl.store(delta_ptr + offs_m, delta, mask=mask_m)
            if STORE_LSE2:
                tl.store(lse2_ptr + offs_m, lse, mask=mask_m)
            if PDL == 2:
                _signal_ready(ready_ptr + pid_bh)
    else:
        delta = tl.load(delta_ptr + offs_m, mask=mask_m, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    lo, hi = key_range(pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M, seqlen_q, seqlen_k, window_left,
                       window_right, BLOCK_N, IS_LOCAL)
    full_lo, full_hi = full_range(pid_m * BLOCK_M, (pid_m + 1) * BLOCK_M, seqlen_q, seqlen_k,
                                  window_left, window_right, BLOCK_N, IS_LOCAL)
    mid_lo, mid_hi = split3(lo, hi, full_lo, full_hi)
    k_src, v_src = sequence_descriptors(k_desc, v_desc, k_ptr, v_ptr, seqlen_k, head_dim, stride_kn,
                                        stride_vn, BLOCK_N, HEAD_DIM, SEQ_DESC)
    dq = _dq_blocks(dq, q, do, lse, delta, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                    offs_m, offs_n, offs_d, mask_d, lo, mid_lo, mid_hi, hi, qk_scale, seqlen_q,
                    seqlen_k, window_left, window_right, k_src, v_src, off_b.to(tl.int32),
                    off_hk.to(tl.int32), start_k, BLOCK_N=BLOCK_N, IS_LOCAL=IS_LOCAL,
                    UPCAST=UPCAST, PRECISION=PRECISION, TMA=TMA, VARLEN=VARLEN, SEQ_DESC=SEQ_DESC)

    dq = dq * sm_scale
    tl.store(dq_ptr + offs_m[:, None] * stride_dqm + offs_d[None, :] * stride_dqd,
             dq.to(dq_ptr.dtype.element_ty), mask=mask_md)


# --------------------------------------------------------------------------------------------
# Host side: the launch table, the launcher
# --------------------------------------------------------------------------------------------
# Measured with the forward's table (flash_fwd.py, the same sweep), keyed by (padded head_dim,
# causal): (dK/dV, dQ). KV_B: the dK/dV loop's dots take k and v as their second operand
# (benchmarks/NOTES.md, issue 20: 0.92x FlexAttention's backward instead of 0.85x at head_dim 128
# without a mask on an H200; slower everywhere else). Head dim 64 causal: 2 stages since step 6
# (1.05-1.12x FlexAttention, against 0.99-1.13x with 1 stage once the GQA loop was compiled away).
# TMA (the dK/dV loop's q and dO tiles through tensor descriptors) at head_dim 128 unmasked:
# 1.03/1.05/1.16x the same blocks through pointers at N = 1k/4k/16k (step 7); head dim 64's dK/dV
# gained nothing measurable (0.95-1.02x) and keeps pointers. Step 8 (results/h200/bwd_step8.csv): the
# dQ kernel's k and v through descriptors everywhere (1.00-1.04x; 185 registers instead of 247 at
# head dim 128), and the causal head-dim-128 dK/dV at the unmasked entry's 64 x 64 KV_B blocks
# once both use descriptors (1.08-1.11x the 32 x 64 pointer entry it replaces). Step 9
# (results/h200/bwd_step9.csv): the dQ kernel computes delta itself and runs first, no
# preprocess launch (OWN_DELTA: 1.00-1.03x at every shape); dQ on a second stream beside dK/dV
# (STREAMS) measured 0.92-1.05x and is not in the table. Step 10 (results/h200/bwd_step10.csv):
# the dK/dV grid launched while the dQ kernel's last programs run, each query head waiting on
# its own dQ programs (PDL=2: 1.01-1.05x at 11 of 12 shapes, 0.998x at the twelfth; PDL=1,
# waiting for the whole dQ kernel, 0.98-1.07x, later withdrawn: it hung in repeated calls,
# results/h200/pdl_stress.csv, while every entry here ran 6000 calls a case).
_HOPPER_BWD = {
    (64, False): (dict(launch_config(32, 128, 4, 3), PDL=2),
                  dict(launch_config(128, 64, 4, 3), TMA=True, OWN_DELTA=True)),
    (64, True): (dict(launch_config(64, 64, 4, 2), PDL=2),
                 dict(launch_config(64, 64, 4, 3), TMA=True, OWN_DELTA=True)),
    (128, False): (dict(launch_config(64, 64, 4, 2), KV_B=True, TMA=True, PDL=2),
                   dict(launch_config(128, 64, 8, 3), TMA=True, OWN_DELTA=True)),
    (128, True): (dict(launch_config(64, 64, 4, 2), KV_B=True, TMA=True, PDL=2),
                  dict(launch_config(128, 64, 8, 3), TMA=True, OWN_DELTA=True)),
}
# Packed (varlen) batches: the dense table (its descriptors over the (heads, total, d) view of a
# (total, heads, d) tensor, a packed sequence's edge stretches through pointers), except causal
# at head dim 128, where the descriptors are made in the kernel for each sequence (SEQ_DESC),
# every stretch through them: 0.87/0.95/1.01x the dense backward at N = 1k/4k/16k, against
# 0.88/0.90/0.92x for the step-7 pointer entry it replaces and 0.83/0.89/0.93x for the host's
# descriptors (step 13, results/h200/varlen_step13.csv). Elsewhere SEQ_DESC lost at N = 1k (a
# descriptor written per program: 0.93x dense instead of 0.96x unmasked at head dim 128) and
# gained only at 16k. Before step 12 the host's packed descriptors had the unit dimension in the
# middle, and ptxas serialized the dK/dV loop's wgmma (0.57-0.63x, results/h200/varlen_bwd.csv).
_HOPPER_BWD_PACKED = {
    (128, True): (dict(_HOPPER_BWD[128, True][0], SEQ_DESC=True),
                  dict(_HOPPER_BWD[128, True][1], SEQ_DESC=True)),
}


def bwd_config(head_dim: int, dtype: torch.dtype, causal: bool = False, packed: bool = False) -> dict:
    """Launch configuration of the backward kernels: ``BLOCK_M``/``BLOCK_N``/warps/stages of the
    dK/dV kernel (and the preprocess), and under ``"dq"`` the same four for the dQ kernel.
    dK/dV keeps a key block on chip and streams query blocks; dQ the other way round, so each
    prefers its resident block large and its streamed block small. The dK/dV dict may also hold
    ``KV_B`` (see :func:`_dkdv_blocks`), either dict ``TMA`` (the streamed tiles through tensor
    descriptors: q and dO in dK/dV, k and v in dQ, dense or packed) and with it ``SEQ_DESC`` (a
    packed batch's descriptors made in the kernel, one per sequence). ``packed``: for varlen
    batches."""
    d = padded_head_dim(head_dim)
    if INTERPRET or dtype == torch.float32 or d > 128:
        cfg = cfg_dq = launch_config(32, 32, 4, 1)
    elif is_hopper():
        key = (max(d, 64), bool(causal))
        cfg, cfg_dq = _HOPPER_BWD_PACKED.get(key, _HOPPER_BWD[key]) if packed else _HOPPER_BWD[key]
    else:
        cfg = cfg_dq = launch_config(64, 64, 4, 2)
    return dict(cfg, dq=dict(cfg_dq))


def loads_lse2(config: dict) -> bool:
    """Whether the backward ``config`` (as :func:`bwd_config` returns it) has the dK/dV kernel
    load the rows' exponent offsets that the dQ kernel writes beside delta (``LSE2``): unless
    the config says ``LSE2=False``, wherever the dQ kernel runs first and writes delta
    (``OWN_DELTA`` without ``ATOMIC_DQ`` or ``STREAMS``)."""
    dq = config.get("dq") or {}
    return bool(config.get("LSE2", True) and dq.get("OWN_DELTA", False)
                and not config.get("ATOMIC_DQ", False) and not config.get("STREAMS", False))


def attention_backward(do, q, k, v, out, lse, dlse, band: Band, softmax_scale: float,
                       layout: Layout | None = None, config: dict | None = None):
    """Launch the three backward kernels; returns ``(dq, dk, dv)``. Inputs are assumed validated.

    Args:
        do: the gradient of ``out``; q, k, v, out, lse: as the forward took and returned them
            (:func:`kernels.flash_fwd.attention_forward`); dlse: the gradient of ``lse`` or None.
        band, softmax_scale, layout: as the forward.
        config: ``dict(BLOCK_M=, BLOCK_N=, num_warps=, num_stages=, dq=dict(...))`` as
            :func:`bwd_config` returns it (the dK/dV kernel's and the preprocess's, and under
            ``"dq"`` the dQ kernel's); ``None``: :func:`bwd_config`. With ``ATOMIC_DQ=True`` the
            dK/dV kernel computes dQ too and ``"dq"`` is not read. ``dq=dict(OWN_DELTA=True)``:
            the dQ kernel computes delta and runs first, no preprocess; ``STREAMS=True`` (CUDA
            only, ignored elsewhere): the dQ kernel runs on a second stream beside dK/dV.
            ``PDL=2`` (with ``OWN_DELTA``, compute capability 9.0 and up; ignored elsewhere;
            ``0`` or ``2`` only): the dK/dV kernel starts while the dQ kernel's last programs
            run (see :func:`_attn_bwd_dkdv`). ``LSE2=False`` in the dK/dV dict: with
            ``OWN_DELTA``, dK/dV computes its exponent offset from lse itself instead of loading
            the one the dQ kernel writes beside delta (``STORE_LSE2``; to measure the difference).

    Returns:
        ``dq``, ``dk``, ``dv`` like ``q``, ``k``, ``v``.
    """
    if layout is None:
        layout = Layout.dense(q, k)
    head_dim = q.shape[-1]
    heads_q, heads_kv = q.shape[1], k.shape[1]  # (b, h, n, d) dense, (total, h, d) packed
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if q.numel() == 0 or k.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    cfg = dict(bwd_config(head_dim, q.dtype, band.causal, layout.packed) if config is None else config)
    lse2 = loads_lse2(cfg)
    cfg.pop("LSE2", None)
    cfg_dq = dict(cfg.pop("dq", None) or {})  # None with ATOMIC_DQ: no dQ kernel
    atomic_dq = cfg.get("ATOMIC_DQ", False)
    # ATOMIC_DQ: the dK/dV kernel also adds up dQ, in fp32, and the dQ kernel is not launched
    dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device) if atomic_dq else dq
    own_delta = cfg_dq.pop("OWN_DELTA", False) and not atomic_dq
    side = _side_stream(q.device) if cfg.pop("STREAMS", False) and not atomic_dq else None
    # PDL: only after the dQ kernel on one stream, on a GPU that has programmatic dependent launch
    pdl = cfg.pop("PDL", 0)
    if pdl not in (0, 2):
        raise ValueError(f"config: PDL must be 0 or 2, got {pdl!r} (PDL=1, one wait for the whole dQ "
                         "kernel, was withdrawn: it hung the GPU in repeated calls, NOTES.md step 14)")
    pdl = pdl if own_delta and side is None and _has_pdl(q.device) else 0
    block_m = cfg["BLOCK_M"]
    head_dim_pad = padded_head_dim(head_dim)
    lse = lse.contiguous()
    dlse = None if dlse is None else dlse.contiguous()
    cu_q, cu_k, _ = layout.pointers(lse)
    seqlen_q, seqlen_k = layout.lengths(q, k)
    delta = torch.empty_like(lse)
    # LSE2: the dQ kernel, when it writes delta for dK/dV, writes the rows' exponent offset too
    # (log2_lse), which the dK/dV loop then loads as it is
    lse_dkdv = torch.empty_like(lse) if lse2 else lse
    ready = torch.zeros(layout.batch * heads_q, dtype=torch.int32, device=q.device) if pdl == 2 else delta
    ready_count = triton.cdiv(layout.seqlen_q, cfg_dq.get("BLOCK_M", 1))
    left, right = band.bounds(seqlen_q, seqlen_k)
    meta = dict(HEAD_DIM=head_dim_pad, IS_LOCAL=band.is_local, VARLEN=layout.packed,
                **dot_flags(q.dtype))
    common = (seqlen_q, seqlen_k, head_dim, softmax_scale, softmax_scale * LOG2E, left, right)
    strides_qkvdo = (*layout.strides(q), *layout.strides(k), *layout.strides(v),
                     *layout.strides(do))

    def preprocess():
        """delta_i = rowsum(dO_i * O_i) - dlse_i (the second term makes lse itself differentiable)"""
        nonlocal delta
        tiles = triton.cdiv(layout.seqlen_q, block_m)
        _attn_bwd_preprocess[grid(tiles, layout.batch * heads_q)](
            out, do, delta, cu_q, *layout.strides(out), *layout.strides(do),
            *layout.lse_strides(delta), heads_q, seqlen_q, head_dim, tiles, BLOCK_M=block_m,
            HEAD_DIM=head_dim_pad, VARLEN=layout.packed,
        )
        if dlse is not None:
            delta = delta - dlse

    def dkdv():
        tiles = triton.cdiv(layout.seqlen_k, cfg["BLOCK_N"])
        flags = dict(cfg)
        seq_desc = flags.pop("SEQ_DESC", False) and layout.packed
        q_desc, do_desc = row_descriptors((q, do), block_m, head_dim_pad, seq_desc) if (
            flags.pop("TMA", False)) else (None, None)
        _attn_bwd_dkdv[grid(tiles, layout.batch * heads_kv)](
            q, k, v, do, lse_dkdv, delta, dk, dv, dq_acc, cu_q, cu_k,
            q if q_desc is None else q_desc, do if do_desc is None else do_desc, ready,
            *strides_qkvdo, *layout.strides(dk), *layout.strides(dv), *layout.strides(dq_acc),
            *layout.lse_strides(lse), heads_kv, heads_q // heads_kv, *common, tiles, ready_count,
            **meta, ONE_HEAD=flags.pop("ONE_HEAD", True) and heads_q == heads_kv,
            TMA=q_desc is not None, PDL=pdl, LSE2=lse2, SEQ_DESC=seq_desc and q_desc is not None,
            **flags,
            **(dict(launch_pdl=True) if pdl else {}),
        )

    def dq_kernel(store_delta: bool):
        tiles = triton.cdiv(layout.seqlen_q, cfg_dq["BLOCK_M"])
        flags = dict(cfg_dq)
        seq_desc = flags.pop("SEQ_DESC", False) and layout.packed
        k_desc, v_desc = row_descriptors((k, v), cfg_dq["BLOCK_N"], head_dim_pad, seq_desc) if (
            flags.pop("TMA", False)) else (None, None)
        _attn_bwd_dq[grid(tiles, layout.batch * heads_q)](
            q, k, v, do, out, lse, lse if dlse is None else dlse, delta, lse_dkdv, dq, cu_q, cu_k,
            k if k_desc is None else k_desc, v if v_desc is None else v_desc, ready, *strides_qkvdo,
            *layout.strides(out), *layout.strides(dq),
            *layout.lse_strides(lse), heads_q, heads_q // heads_kv, *common, tiles, **meta,
            TMA=k_desc is not None, OWN_DELTA=own_delta, HAS_DLSE=own_delta and dlse is not None,
            STORE_DELTA=store_delta, STORE_LSE2=store_delta and lse2, PDL=pdl,
            SEQ_DESC=seq_desc and k_desc is not None, **flags,
        )

    # Four orders of the same kernels (the launch table says which each shape uses):
    if atomic_dq:  # preprocess, then dK/dV with dQ
        preprocess()
        dkdv()
        return dq.copy_(dq_acc), dk, dv
    if side is None and own_delta:  # dQ (writing delta), then dK/dV: no preprocess launch
        dq_kernel(store_delta=True)
        dkdv()
    elif side is None:  # preprocess, dK/dV, dQ
        preprocess()
        dkdv()
        dq_kernel(store_delta=False)
    else:
        _fork_dq(side, dq_kernel, preprocess, dkdv, own_delta)
    return dq, dk, dv


def _fork_dq(side, dq_kernel, preprocess, dkdv, own_delta: bool):
    """``STREAMS``: dQ on a second stream, beside dK/dV, so that the programs of one kernel fill
    the SMs that the other's last wave leaves idle; with ``OWN_DELTA`` dQ starts at once, beside
    the preprocess too. The current stream waits for both, so nothing the side stream reads is
    freed or overwritten before it is done (the empty ``delta`` the preprocess replaces is not
    read there)."""
    main = torch.cuda.current_stream(side.device)
    if not own_delta:
        preprocess()
    side.wait_stream(main)
    with torch.cuda.stream(side):
        dq_kernel(store_delta=False)
    if own_delta:
        preprocess()
    dkdv()
    main.wait_stream(side)


def _has_pdl(device: torch.device) -> bool:
    """Programmatic dependent launch (``PDL``): CUDA devices of compute capability 9.0 and up,
    compiled kernels only (not the interpreter)."""
    return device.type == "cuda" and not INTERPRET and torch.cuda.get_device_capability(device)[0] >= 9


_SIDE_STREAMS: dict = {}


def _side_stream(device: torch.device):
    """One second CUDA stream per device for ``STREAMS`` (None off CUDA: the kernels then run in
    order on the CPU, as the interpreter does)."""
    if device.type != "cuda":
        return None
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return _SIDE_STREAMS[device]


__all__ = ["attention_backward", "bwd_config", "loads_lse2"]
