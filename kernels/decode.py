"""Split-KV decoding (flash-decoding): one new query against a long KV cache, fast.

What the reader will learn here: when a step generates one token, there is one query row per head
and the FlashAttention grid has only ``batch * heads`` programs: far too few to fill a GPU while
each of them walks the whole cache alone. Split the cache instead. ``num_splits`` programs each
run the ordinary forward kernel (``kernels/flash_fwd.py``) over a slice of the keys and write a
partial output and its log-sum-exp; a second small kernel merges them with the online-softmax
algebra, one level up (and the query heads that share a kv head share one tile, so the cache is
read once per kv head rather than once per query head):

    lse = log(sum_s exp(lse_s)),    out = sum_s exp(lse_s - lse) * out_s.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import (
    INTERPRET,
    check_cache_seqlens,
    check_kernel_qkv,
    check_num_splits,
    check_runs_here,
    check_scale,
)
from .band import Band
from .flash_fwd import fwd_config, launch_forward
from .tiles import Layout, grid, padded_head_dim, tile_ids


@triton.jit
def _merge_splits(
    part_o_ptr, part_lse_ptr, o_ptr, lse_ptr,
    stride_ps, stride_pb, stride_ph, stride_pm, stride_pd,  # partial outputs (split, b, h, m, d)
    stride_pls, stride_plb, stride_plh,  # partial lse (split, b, h, m), rows contiguous
    stride_ob, stride_oh, stride_om, stride_od,
    stride_lb, stride_lh,
    heads_q, head_dim, num_splits, num_tiles,
    SPLITS: tl.constexpr,  # num_splits padded to a power of two
    HEAD_DIM: tl.constexpr,
):
    """One program per (query row, batch * head): merge ``num_splits`` partial softmaxes."""
    pid_m, pid_bh = tile_ids(num_tiles)
    off_b = (pid_bh // heads_q).to(tl.int64)
    off_h = (pid_bh % heads_q).to(tl.int64)
    offs_s = tl.arange(0, SPLITS)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_s = offs_s < num_splits
    # [SPLITS]: a split that saw no key has lse -inf and weighs nothing
    lse_s = tl.load(part_lse_ptr + offs_s * stride_pls + off_b * stride_plb + off_h * stride_plh
                    + pid_m, mask=mask_s, other=float("-inf"))
    lse_max = tl.max(lse_s, 0)
    lse_max = tl.where(lse_max == float("-inf"), 0.0, lse_max)
    w = tl.exp(lse_s - lse_max)  # [SPLITS]
    total = tl.sum(w, 0)
    # [SPLITS, HEAD_DIM]
    o_s = tl.load(part_o_ptr + offs_s[:, None] * stride_ps + off_b * stride_pb + off_h * stride_ph
                  + pid_m * stride_pm + offs_d[None, :] * stride_pd,
                  mask=mask_s[:, None] & (offs_d < head_dim)[None, :], other=0.0)
    out = tl.sum(w[:, None] * o_s, 0) / tl.where(total == 0.0, 1.0, total)  # [HEAD_DIM]
    lse = tl.where(total == 0.0, float("-inf"), lse_max + tl.log(tl.where(total == 0.0, 1.0, total)))
    tl.store(o_ptr + off_b * stride_ob + off_h * stride_oh + pid_m * stride_om + offs_d * stride_od,
             out.to(o_ptr.dtype.element_ty), mask=offs_d < head_dim)
    tl.store(lse_ptr + off_b * stride_lb + off_h * stride_lh + pid_m, lse)


def decode_config(head_dim: int, dtype: torch.dtype, rows: int) -> dict:
    """Blocks for decoding: ``rows`` = seqlen_q * (query heads per kv head), since the query
    heads of a group share one tile; the block only as tall as tl.dot allows (16) when few."""
    cfg = dict(fwd_config(head_dim, dtype))
    cfg.pop("TMA", None)  # measured for the prefill forward only; decoding reads k/v by pointer
    cfg["BLOCK_M"] = max(16, triton.next_power_of_2(rows)) if rows <= 64 else cfg["BLOCK_M"]
    if not INTERPRET and dtype != torch.float32 and padded_head_dim(head_dim) <= 128:
        cfg.update(BLOCK_N=128, num_warps=4, num_stages=2)
    return cfg


def choose_num_splits(batch: int, heads_kv: int, rows: int, max_cache_len: int, cfg: dict,
                      device: torch.device) -> int:
    """Enough splits to give every multiprocessor about two programs, each split covering at
    least two key blocks; 1 when the ordinary grid already fills the GPU (or on a CPU)."""
    if device.type != "cuda":
        return 1
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count
    programs = batch * heads_kv * triton.cdiv(rows, cfg["BLOCK_M"])
    key_blocks = triton.cdiv(max_cache_len, cfg["BLOCK_N"])
    return max(1, min(triton.cdiv(2 * n_sm, programs), key_blocks // 2, 128))


def flash_decode(q, k_cache, v_cache, cache_seqlens, *, causal=False, softmax_scale=None,
                 window_size=(-1, -1), num_splits=None, return_lse=False, check_lengths=True):
    """Attention of a few new queries against a KV cache, split across programs (flash-decoding).

    Args:
        q: ``(batch, heads_q, seqlen_q, head_dim)``, ``seqlen_q`` small (1 for plain decoding).
        k_cache, v_cache: ``(batch, heads_kv, max_cache_len, head_dim)``; only the first
            ``cache_seqlens[b]`` positions of sequence ``b`` are read.
        cache_seqlens: int32 ``(batch,)``, each in ``[0, max_cache_len]``.
        causal: bottom-right aligned to each sequence's valid length, as
            :func:`kernels.flash_attention` (query ``i`` of ``n`` sees keys
            ``j <= cache_seqlens[b] - n + i``); with one query it changes nothing.
        softmax_scale: defaults to ``1 / sqrt(head_dim)``.
        window_size: ``(left, right)`` as :func:`kernels.flash_attention`, aligned to each
            sequence's valid length (FlashAttention's ``flash_attn_with_kvcache`` semantics);
            with ``causal=True``, ``right`` is 0 whatever is passed.
        num_splits: key-sequence splits; ``None`` picks from the shape and the GPU.
        return_lse: also return the float32 log-sum-exp ``(batch, heads_q, seqlen_q)``.
        check_lengths: verify ``0 <= cache_seqlens <= max_cache_len`` (a ValueError otherwise).
            It costs a device-to-host copy, which stalls the CPU and cannot be captured in a CUDA
            graph: a decoding loop that knows its lengths passes ``False``. Out-of-range values are
            then clamped by the kernel (never read out of bounds), not reported.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` (and ``lse``). Inference only: not
        differentiable.
    """
    batch, heads_q, heads_kv, seqlen_q, max_len, head_dim = check_kernel_qkv(q, k_cache, v_cache)
    check_cache_seqlens(cache_seqlens, batch, max_len, q.device, values=check_lengths)
    check_num_splits(num_splits)
    scale = check_scale(softmax_scale, head_dim)
    band = Band.from_window(window_size, causal)
    check_runs_here(q)
    out, lse = decode_forward(q, k_cache, v_cache, cache_seqlens, band, scale, num_splits=num_splits)
    return (out, lse) if return_lse else out


def decode_forward(q, k_cache, v_cache, cache_seqlens, band: Band, softmax_scale: float, *,
                   num_splits: int | None = None, config: dict | None = None):
    """Allocate, launch the split forward and merge; returns ``(out, lse)``. Inputs are assumed
    validated (:func:`flash_decode` checks them).

    Args:
        q, k_cache, v_cache, cache_seqlens, num_splits: as :func:`flash_decode`.
        band: the keys each query sees; softmax_scale: multiplies ``q @ k^T``.
        config: the forward's launch configuration, ``dict(BLOCK_M=, BLOCK_N=, num_warps=,
            num_stages=)``; ``None``: :func:`decode_config`.
    """
    batch, heads_q, seqlen_q, head_dim = q.shape
    heads_kv, max_len = k_cache.shape[1], k_cache.shape[2]
    rows = seqlen_q * (heads_q // heads_kv)  # query heads of a group share a tile (PACK_GQA)
    cfg = decode_config(head_dim, q.dtype, rows) if config is None else config
    if num_splits is None:
        num_splits = choose_num_splits(batch, heads_kv, rows, max_len, cfg, q.device)
    num_splits = max(1, min(num_splits, triton.cdiv(max(max_len, 1), cfg["BLOCK_N"])))
    layout = Layout(batch, seqlen_q, max_len, seqused_k=cache_seqlens)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], device=q.device, dtype=torch.float32)
    if q.numel() == 0 or max_len == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    with torch.no_grad():
        if num_splits == 1:
            launch_forward(q, k_cache, v_cache, out, lse, layout, band, softmax_scale, config=cfg,
                           pack_gqa=True)
        else:
            part_o = torch.empty((num_splits, *q.shape), device=q.device, dtype=torch.float32)
            part_lse = torch.empty((num_splits, *q.shape[:3]), device=q.device, dtype=torch.float32)
            launch_forward(q, k_cache, v_cache, part_o, part_lse, layout, band, softmax_scale,
                           config=cfg, num_splits=num_splits, pack_gqa=True)
            _merge_splits[grid(seqlen_q, batch * heads_q)](
                part_o, part_lse, out, lse, *part_o.stride(), *part_lse.stride()[:3],
                *out.stride(), lse.stride(0), lse.stride(1), heads_q, head_dim, num_splits, seqlen_q,
                SPLITS=triton.next_power_of_2(num_splits), HEAD_DIM=padded_head_dim(head_dim),
            )
    return out, lse
