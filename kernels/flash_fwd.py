"""FlashAttention-2's forward kernel, its launch table and its launcher.

What the reader will learn here: how the tiled algorithm of the notebooks becomes a GPU kernel.
Each program owns one block of ``BLOCK_M`` queries, keeps its running max ``m_i``, running sum
``l_i`` and unnormalised output ``acc`` on chip, and streams the keys and values past it in blocks
of ``BLOCK_N`` (the FlashAttention-2 loop order). Nothing of size ``seqlen_q x seqlen_k`` is ever
written to memory; the log-sum-exp ``lse`` of each row is saved for the backward
(``flash_bwd.py``).

Semantics (identical to :func:`kernels.reference.attention_reference`): the mask band of
:class:`kernels.band.Band`, bottom-right aligned; a query row that sees no key returns zeros and
``lse = -inf``; ``heads_q`` may be a multiple of ``heads_kv`` (MQA/GQA): query head ``h`` reads
kv head ``h // (heads_q // heads_kv)``.

Layout of the file: the inner loop and the ``@triton.jit`` kernel; the launch table
(:func:`fwd_config`); the launchers :func:`launch_forward` (into given buffers, also split-KV, for
``decode.py``) and :func:`attention_forward` (allocates, returns ``(out, lse)``). The tile and
sequence helpers the kernel calls live in ``tiles.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import INTERPRET
from .band import Band
from .tiles import (
    LN2_C,
    LOG2E,
    Layout,
    band_mask,
    dot_flags,
    full_range,
    grid,
    is_hopper,
    jit_kernel,
    key_range,
    launch_config,
    padded_head_dim,
    row_descriptors,
    sequence,
    split3,
    stretch_range,
    tile_ids,
)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
@triton.jit
def _round_to_e4m3(x):
    """``x`` in ``[0, 1]`` rounded to the nearest e4m3 value, in float32. Triton's interpreter
    (3.6, 3.7) casts float32 to e4m3 by truncating the mantissa and adding the rounding bit without
    a carry, so 0.49 becomes 0.25; values already on the e4m3 grid cast exactly. Normal numbers:
    Veltkamp's split by ``2**20 + 1`` keeps 24 - 20 = 4 significant bits (3 stored); below
    ``2**-6`` e4m3's subnormals are a grid of ``2**-9``."""
    c = x * 1048577.0
    normal = c - (c - x)
    subnormal = tl.math.floor(x * 512.0 + 0.5) * (1.0 / 512.0)
    return tl.where(x < 0.015625, subnormal, normal)


@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn, stride_vd,
                offs_m, offs_n, offs_d, mask_d, lo, mid_lo, mid_hi, hi, qk_scale,
                seqlen_q, seqlen_k, window_left, window_right, k_desc, v_desc, off_b, off_hk,
                BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr, UPCAST: tl.constexpr,
                PRECISION: tl.constexpr, WARP_SPEC: tl.constexpr = False,
                ROUND_P: tl.constexpr = False, TMA: tl.constexpr = False,
                V_T: tl.constexpr = False, FOLD_SCALE: tl.constexpr = False):
    """The forward's inner loop over key blocks ``[lo, hi)``: online softmax, one block at a
    time, in three stretches: the edge blocks ``[lo, mid_lo)`` with the mask, the interior
    ``[mid_lo, mid_hi)`` without, the edge ``[mid_hi, hi)`` again. ``tl.static_range`` unrolls
    them at compile time, so ``stretch`` is a constant and each stretch compiles its own loop:
    the edges (``stretch != 1``) apply the band mask and drop padded keys, the interior's loop
    has no trace of either. ``WARP_SPEC`` asks Triton to warp-specialise the interior's loop
    (``tl.range(..., warp_specialize=True)``; benchmarks/NOTES.md, step 6, says what it does on
    Hopper). ``ROUND_P``: round ``p`` to e4m3 in float32 first (fp8 in the interpreter).
    ``TMA``: k and v come through host tensor descriptors (``k_desc``, ``v_desc``, 4-D, rows and
    columns past the tensor's load as zeros), which Hopper's copy engine serves; with ``V_T``,
    ``v_desc`` describes V stored column-major, ``(batch, heads, head_dim, seqlen)``, as the fp8
    kernel keeps it (kernels/fp8.py), and its tile is transposed on chip. ``FOLD_SCALE`` (an option,
    off; benchmarks/NOTES.md, step 11): ``qk_scale`` multiplies each row's maximum and enters the
    exponent as ``exp2(s * qk_scale - m)``, one fused multiply-add per score, as FlashAttention's
    CUDA does, instead of multiplying every score first: up to 3% faster on an H200, but a row's
    largest ``p`` is then ``2**r`` (``r``, the rounding of ``m``) instead of exactly 1 while the
    second matmul takes ``p`` rounded to 1, so where the softmax is one-hot the output can miss
    that key's value by an ulp (3 of 45 rows of ``test_large_logits_are_stable``), an error the
    backward's dQ multiplies by ``softmax_scale``: that test's dQ fails on the GPU."""
    for stretch in tl.static_range(3):
        start, end = stretch_range(stretch, lo, mid_lo, mid_hi, hi)
        for start_n in tl.range(start, end, BLOCK_N, warp_specialize=WARP_SPEC and stretch == 1):
            cols = start_n + offs_n
            mask_n = cols < seqlen_k
            if stretch != 1:
                mask_kt = mask_n[None, :] & mask_d[:, None]
                mask_v = mask_n[:, None] & mask_d[None, :]
            else:
                mask_kt = mask_d[:, None]
                mask_v = mask_d[None, :]
            if TMA:  # [HEAD_DIM, BLOCK_N]: K^T, the transpose of a row tile
                kt = tl.trans(k_desc.load([off_b, off_hk, start_n, 0]).reshape(
                    BLOCK_N, k_desc.block_shape[3]))
            else:  # [HEAD_DIM, BLOCK_N]: K^T, loaded transposed through the strides
                kt = tl.load(k_ptr + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                             mask=mask_kt, other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
            # [BLOCK_M, BLOCK_N]; with FOLD_SCALE unscaled: the scale goes to the row maxima and
            # into the exponent below, where it folds into one fused multiply-add per score
            s = tl.dot(q, kt, input_precision=PRECISION)
            if not FOLD_SCALE:
                s = s * qk_scale
            if stretch != 1:
                valid = mask_n[None, :]
                if IS_LOCAL:
                    valid = valid & band_mask(offs_m[:, None], cols[None, :], seqlen_q, seqlen_k,
                                              window_left, window_right)
                s = tl.where(valid, s, float("-inf"))
            # Online softmax. m_safe is 0 while a row has seen no key, so that exp2(-inf - m) = 0
            # instead of exp2(-inf + inf) = nan (only a masked block can leave a row empty).
            # qk_scale > 0 (checked on the host), so max(s) * qk_scale is the maximum of the scaled
            # scores, bit for bit.
            if FOLD_SCALE:
                m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            else:
                m_new = tl.maximum(m_i, tl.max(s, 1))
            if stretch != 1:
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            else:
                m_safe = m_new
            if FOLD_SCALE:
                p = tl.math.exp2(s * qk_scale - m_safe[:, None])  # [BLOCK_M, BLOCK_N]
            else:
                p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)  # rescales what was summed under the old max
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None]
            # [BLOCK_N, HEAD_DIM]
            if TMA and V_T:
                v = tl.trans(v_desc.load([off_b, off_hk, 0, start_n]).reshape(
                    v_desc.block_shape[2], BLOCK_N))
            elif TMA:
                v = v_desc.load([off_b, off_hk, start_n, 0]).reshape(BLOCK_N, v_desc.block_shape[3])
            else:
                v = tl.load(v_ptr + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                            mask=mask_v, other=0.0)
            if UPCAST:
                v = v.to(tl.float32)
            if ROUND_P:
                p = _round_to_e4m3(p)
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision=PRECISION)  # fp8: p in e4m3
            m_i = m_new
    return acc, l_i, m_i


@jit_kernel
def _attn_fwd(
    # pointers
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
    cu_seqlens_q_ptr, cu_seqlens_k_ptr, seqused_k_ptr,  # read only when VARLEN / SEQUSED_K
    q_descale_ptr, k_descale_ptr, v_descale_ptr,  # fp8: float32 (batch, heads) scales, read when FP8
    k_desc, v_desc,  # host tensor descriptors of k and v, read when TMA
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
    num_tiles,  # query blocks per (batch, head): see tile_ids
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
    WARP_SPEC: tl.constexpr = False,  # warp-specialise the unmasked loop (an experiment: NOTES.md)
    FP8: tl.constexpr = False,  # q, k, v in e4m3 with per-(batch, head) descales (kernels/fp8.py)
    ROUND_P: tl.constexpr = False,  # fp8 in the interpreter: round p to e4m3 itself (_round_to_e4m3)
    TMA: tl.constexpr = False,  # k and v through k_desc and v_desc (dense layouts only)
    V_T: tl.constexpr = False,  # v_desc describes V column-major: (batch, heads, head_dim, seqlen)
    FOLD_SCALE: tl.constexpr = False,  # qk_scale inside the exponent's multiply-add (_fwd_blocks)
):
    pid_m, pid_bh = tile_ids(num_tiles)
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
    start_q, seqlen_q = sequence(cu_seqlens_q_ptr, seqused_k_ptr, off_b, seqlen_q, VARLEN, False)
    start_k, seqlen_k = sequence(cu_seqlens_k_ptr, seqused_k_ptr, off_b, seqlen_k, VARLEN,
                                  SEQUSED_K)
    off_b = off_b.to(tl.int64)
    if FP8:  # the true scores are (q8 @ k8^T) * q_descale * k_descale: fold both into the scale
        qk_scale = qk_scale * (tl.load(q_descale_ptr + off_b * heads_q + off_h)
                               * tl.load(k_descale_ptr + off_b * (heads_q // group) + off_hk))
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

    lo, hi = key_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right, BLOCK_N,
                       IS_LOCAL)
    lo = tl.maximum(lo, pid_s * split_size)  # split-KV: this program's slice of the keys
    hi = tl.minimum(hi, (pid_s + 1) * split_size)

    full_lo, full_hi = full_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
                                  BLOCK_N, IS_LOCAL)
    mid_lo, mid_hi = split3(lo, hi, full_lo, full_hi)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_ptr, v_ptr, stride_kn, stride_kd, stride_vn,
                                stride_vd, offs_m, offs_n, offs_d, mask_d, lo, mid_lo, mid_hi, hi,
                                qk_scale, seqlen_q, seqlen_k, window_left, window_right,
                                k_desc, v_desc, off_b.to(tl.int32), off_hk.to(tl.int32),
                                BLOCK_N=BLOCK_N, IS_LOCAL=IS_LOCAL, UPCAST=UPCAST,
                                PRECISION=PRECISION, WARP_SPEC=WARP_SPEC,
                                ROUND_P=ROUND_P, TMA=TMA, V_T=V_T, FOLD_SCALE=FOLD_SCALE)

    empty = l_i == 0.0  # rows that saw no key: output 0, lse -inf
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    if FP8:  # acc summed p8 @ v8; v = v8 * v_descale
        out = out * tl.load(v_descale_ptr + off_b * (heads_q // group) + off_hk)
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * LN2_C)
    tl.store(o_ptr + o_rows[:, None] + offs_d[None, :] * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])
    tl.store(lse_ptr + lse_rows, lse, mask=mask_m)




# --------------------------------------------------------------------------------------------
# Host side: the launch table, the launchers
# --------------------------------------------------------------------------------------------
# Launch configurations measured by benchmarks/tune_attention.py on an H100 (bf16, N = 4096,
# 16k tokens, 2026-11-23; the sweep is in benchmarks/results/h100/tune_attention.csv), keyed by
# (padded head_dim, causal). fp16 uses the same. Fixed tables instead of run-time autotuning: a
# notebook should not spend minutes tuning, and the interpreter needs one small config anyway.
# The backward's table is in flash_bwd.py. TMA: k and v through tensor descriptors, as fast as
# the same blocks through pointers on an H200 for bf16 (0.99-1.08x over two runs from N = 4k;
# benchmarks/NOTES.md, step 7), and what the e4m3 kernel needs (below).
_HOPPER_FWD = {
    (64, False): dict(launch_config(128, 64, 4, 3), TMA=True),
    (64, True): dict(launch_config(64, 64, 4, 3), TMA=True),
    (128, False): dict(launch_config(128, 128, 8, 3), TMA=True),
    (128, True): dict(launch_config(128, 128, 8, 3), TMA=True),
}
# e4m3 (kernels/fp8.py), measured by benchmarks/bench_fp8.py on an H200 (2026-12-02,
# results/h200/fp8_fwd.csv): with V column-major and k and v through descriptors, 1.15-1.73x the
# bf16 kernel (1.20-1.52x from N = 4k); through pointers V was not pipelined (its tile was copied
# to shared memory inside the loop) and the e4m3 kernel ran at 0.40-0.98x the bf16 one.
_HOPPER_FWD_FP8 = {
    (64, False): dict(launch_config(128, 128, 4, 3), TMA=True),
    (64, True): dict(launch_config(64, 64, 4, 3), TMA=True),
    (128, False): dict(launch_config(64, 128, 4, 3), TMA=True),
    (128, True): dict(launch_config(64, 128, 4, 3), TMA=True),
}
# Packed (varlen) batches, where they differ: the varlen kernel keeps more values live (each
# sequence's start as int64, its lengths loaded from cu_seqlens), and at head_dim 128 with the
# causal edge masks the 128 x 128 tile then spills 28 registers where the dense one spills none
# (ptxas, H100): 8% slower. 128 x 64 spills none and runs at 0.97-1.05x the dense kernel
# (benchmarks/NOTES.md, step 4).
_HOPPER_FWD_PACKED = {(128, True): launch_config(128, 64, 8, 3)}


def fwd_config(head_dim: int, dtype: torch.dtype, causal: bool = False, packed: bool = False) -> dict:
    """Launch configuration of the forward kernel: a measured table on Hopper for 16-bit and e4m3
    inputs with head_dim <= 128 (``packed``: for varlen batches), conservative choices that fit
    any recent GPU otherwise."""
    if INTERPRET:  # the interpreter's cost is per block op: small blocks keep tests meaningful
        return launch_config(32, 32, 4, 1)
    d = padded_head_dim(head_dim)
    if dtype == torch.float32:  # twice the bytes per tile, and the ieee dot is slow anyway
        return launch_config(64, 32, 4, 2) if d <= 128 else launch_config(32, 32, 4, 1)
    if d > 128:
        return launch_config(64, 32, 4, 2)
    if is_hopper():
        key = (max(d, 64), bool(causal))
        if dtype == torch.float8_e4m3fn:
            return dict(_HOPPER_FWD_FP8[key])
        return dict(_HOPPER_FWD_PACKED.get(key, _HOPPER_FWD[key]) if packed else _HOPPER_FWD[key])
    return launch_config(128, 64, 4, 3) if d <= 64 else launch_config(128, 64, 8, 3)


def launch_forward(q, k, v, out, lse, layout: Layout, band: Band, softmax_scale: float, *,
                   config: dict | None = None, num_splits: int = 1, pack_gqa: bool = False,
                   descales: tuple | None = None):
    """Launch the forward kernel writing into ``out`` and ``lse``.

    ``config``: ``dict(BLOCK_M=, BLOCK_N=, num_warps=, num_stages=)``, by default
    :func:`fwd_config`. With ``num_splits > 1``, ``out`` is ``(num_splits, *q.shape)`` and ``lse``
    ``(num_splits, *lse_shape)``: each split-KV program writes its own partial result there.
    ``pack_gqa``: the query heads that share a kv head share a tile (decoding).
    ``descales``: for e4m3 ``q, k, v`` (``kernels/fp8.py``), their float32 scales, contiguous
    ``(batch, heads_q)``, ``(batch, heads_kv)``, ``(batch, heads_kv)``; dense, unsplit, unpacked.
    """
    head_dim = q.shape[-1]
    heads_q, heads_kv = q.shape[1], k.shape[1]  # (b, h, n, d) dense, (total, h, d) packed
    cfg = fwd_config(head_dim, q.dtype, band.causal, layout.packed) if config is None else config
    block_m, block_n = cfg["BLOCK_M"], cfg["BLOCK_N"]
    seqlen_q, seqlen_k = layout.lengths(q, k)
    left, right = band.bounds(seqlen_q, seqlen_k)
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
    fp8 = descales is not None
    if fp8 and (layout.packed or num_splits > 1 or pack_gqa):
        raise NotImplementedError("the fp8 forward runs dense, unsplit, unpacked batches only")
    head_dim_pad = max(padded_head_dim(head_dim), 32 if fp8 else 16)  # an fp8 MMA's K is >= 32
    k_desc = v_desc = None
    v_t = v.stride(-2) == 1 and v.stride(-1) != 1  # V column-major (the fp8 kernel's layout)
    if cfg.get("TMA") and not layout.packed:
        (k_desc,) = row_descriptors((k,), block_n, head_dim_pad)
        (v_desc,) = (row_descriptors((v.mT,), head_dim_pad, block_n) if v_t
                     else row_descriptors((v,), block_n, head_dim_pad))
    tma = k_desc is not None and v_desc is not None
    _attn_fwd[grid(tiles, batch_heads, num_splits)](
        q, k, v, out, lse, *layout.pointers(lse), *(descales if fp8 else (lse, lse, lse)),
        *((k_desc, v_desc) if tma else (k, v)),
        *layout.strides(q), *layout.strides(k), *layout.strides(v),
        *split_out, *layout.strides(o_view), *split_lse, *layout.lse_strides(l_view),
        heads_q, heads_q // heads_kv, seqlen_q, seqlen_k, head_dim,
        softmax_scale * LOG2E, left, right, split_size, tiles,
        BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim_pad,
        IS_LOCAL=band.is_local, EVEN_N=not ragged_k and layout.seqlen_k % block_n == 0,
        VARLEN=layout.packed, SEQUSED_K=layout.seqused_k is not None, PACK_GQA=pack_gqa,
        **dot_flags(q.dtype), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        WARP_SPEC=bool(cfg.get("WARP_SPEC")), FP8=fp8, ROUND_P=fp8 and INTERPRET,
        TMA=tma, V_T=tma and v_t, FOLD_SCALE=bool(cfg.get("FOLD_SCALE")),
    )


def attention_forward(q, k, v, band: Band, softmax_scale: float, layout: Layout | None = None,
                      config: dict | None = None):
    """Allocate and launch the forward; returns ``(out, lse)``. Inputs are assumed validated.

    Args:
        q, k, v: ``(batch, heads, seqlen, head_dim)``, or packed ``(total, heads, head_dim)``
            with a packed ``layout``.
        band: the keys each query sees; softmax_scale: multiplies ``q @ k^T``.
        layout: how to find the sequences' rows; ``None``: dense.
        config: the launch configuration (see :func:`launch_forward`); ``None``: :func:`fwd_config`.

    Returns:
        ``out`` like ``q``; ``lse`` float32, ``(batch, heads_q, seqlen_q)`` for dense inputs and
        ``(heads_q, total_q)`` packed.
    """
    if layout is None:
        layout = Layout.dense(q, k)
    lse_shape = (q.shape[1], q.shape[0]) if layout.packed else q.shape[:3]
    out = torch.empty_like(q)
    lse = torch.empty(lse_shape, device=q.device, dtype=torch.float32)
    if out.numel() == 0 or k.numel() == 0:  # nothing to launch; empty rows are 0 with lse -inf
        return out.zero_(), lse.fill_(float("-inf"))
    launch_forward(q, k, v, out, lse, layout, band, softmax_scale, config=config)
    return out, lse


__all__ = ["attention_forward", "fwd_config", "launch_forward"]
