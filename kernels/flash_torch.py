"""FlashAttention-2 in plain PyTorch: the readable twin of the Triton kernels.

What the reader will learn here: the FlashAttention-2 algorithm itself, without Triton's pointers,
strides and masks in the way. The loops that ``kernels/flash_fwd.py`` and ``kernels/flash_bwd.py``
spread over a launch grid are written out here as Python ``for`` loops over tiles, and every tile
operation is one PyTorch call on a ``BLOCK_M x BLOCK_N`` (or ``BLOCK x head_dim``) tensor. Nothing
of size ``seqlen_q x seqlen_k`` is ever made: memory is O(N), as in the kernel (the tests measure
it). It runs wherever PyTorch runs (CPU, CUDA, Apple MPS), without Triton, at plain-PyTorch speed.

How it mirrors the kernels, line by line (the names are the same):

* one kernel program  = one iteration of an outer loop here: a query block ``start_m`` in the
  forward and in dQ (``_attn_fwd``, ``_attn_bwd_dq``), a key block ``start_n`` in dK/dV
  (``_attn_bwd_dkdv``). The ``(batch, head)`` axis of the grid is not a loop: it is the leading
  dimensions of every tile, so a whole batch of heads is one set of tile matmuls;
* GQA: ``q`` is viewed as ``(batch, heads_kv, group, seqlen_q, head_dim)`` and the ``group``
  query heads of a kv head share one tile, its rows the (head, query) pairs (the kernel's
  ``PACK_GQA``, which ``decode.py`` uses): every tile product is one batched matmul against that
  kv head's K and V, read once for the group without a copy (no ``repeat_interleave``), and the
  products for ``dK``, ``dV`` sum over the group's heads as they sum over the queries (the dK/dV
  kernel's ``for g in range(0, group)``);
* the inner loop over key blocks is ``_fwd_blocks``: scores ``s``, the running max ``m_i``, the
  ``m_safe`` guard, ``p``, ``alpha``, the running sum ``l_i`` and the unnormalised output ``acc``;
  the backward recomputes ``p`` from the saved ``lse`` with ``delta = rowsum(dO * O) - dlse``;
* block skipping: :func:`key_range` and :func:`query_range` are ``tiles.key_range`` and the
  dK/dV kernel's ``lo, hi``; the loops never visit a block outside the band. Where the kernel
  precomputes ``full_range`` and cuts the loop into three stretches (so that the compiler can drop
  the mask from the interior loop), a Python loop simply asks :func:`block_is_full` per block and
  applies :func:`band_mask` only to the blocks that cut the band.

Where it differs, and why:

* no padding: the last block of a ragged length is a shorter slice, so there is no ``mask_m``,
  ``mask_n`` or ``mask_d`` (and no padded ``HEAD_DIM``), only the band mask;
* natural units: ``exp`` and ``log`` instead of ``exp2`` with ``qk_scale = scale * log2(e)``
  (exp2 is the cheaper GPU instruction; the result is the same up to rounding);
* every tile is converted to float32 when it is read (the kernel's ``UPCAST``), so the products
  as well as the softmax run in float32, and the results are rounded to the input dtype once;
* the query tile is multiplied by ``softmax_scale`` once, when it is read, rather than every
  score tile (one elementwise op per tile fewer: on a CPU the ops' overhead sets the pace).

Semantics are those of :func:`kernels.flash_attention` (and of
:func:`kernels.reference.attention_reference`): the bottom-right aligned band of
:class:`kernels.band.Band`, causal folded in as ``right = 0``; ``heads_q`` a multiple of
``heads_kv``; a query row that sees no key returns zeros and ``lse = -inf``, with finite (zero)
gradients. Inputs are checked by the same functions as the kernel's (``kernels/_checks.py``), so
the messages are identical: float32, float16 and bfloat16 only (float64 is rejected, as by the
kernel: Apple's MPS has no float64, and the float64 oracle is ``attention_reference``).

Layout of the file: the band helpers; reading and writing a tile of query rows; the forward and
backward loops on dense tensors; the ``torch.autograd.Function``s; the public functions
:func:`flash_attention_torch`, :func:`flash_attention_varlen_torch` (a loop over sequences) and
:func:`flash_decode_torch`.
This module imports nothing from Triton, nor from the modules that do.
"""

from __future__ import annotations

import torch

from ._checks import (
    check_cache_seqlens,
    check_kernel_qkv,
    check_num_splits,
    check_packed_qkv,
    check_scale,
    check_varlen_offsets,
)
from .band import Band, check_dense_args

BLOCK_M = 64  # query rows per tile: the default of the public functions
BLOCK_N = 64  # keys per tile


# --------------------------------------------------------------------------------------------
# The band: which blocks to visit, which of them need the mask
# --------------------------------------------------------------------------------------------
def key_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right, block_n):
    """Keys ``[lo, hi)`` that query rows ``[row_lo, row_hi)`` can see, ``lo`` rounded down to a
    block (``tiles.key_range``): query ``i`` sees ``[i + off - left, i + off + right]``."""
    off = seqlen_k - seqlen_q
    lo = max(row_lo + off - window_left, 0) // block_n * block_n
    hi = min(row_hi + off + window_right, seqlen_k)
    return lo, hi


def query_range(col_lo, col_hi, seqlen_q, seqlen_k, window_left, window_right, block_m):
    """Queries ``[lo, hi)`` that see some key of ``[col_lo, col_hi)``, ``lo`` rounded down to a
    block (the dK/dV kernel's ``lo, hi``): key ``j`` is seen by ``[j - off - right, j - off + left]``."""
    off = seqlen_k - seqlen_q
    lo = max(col_lo - off - window_right, 0) // block_m * block_m
    hi = min(col_hi - off + window_left, seqlen_q)
    return lo, hi


def block_is_full(row_lo, row_hi, col_lo, col_hi, seqlen_q, seqlen_k, window_left, window_right):
    """Every query of ``[row_lo, row_hi)`` sees every key of ``[col_lo, col_hi)``: the tile needs
    no mask (``tiles.full_range``, asked per block): the last row's first key is at or before
    ``col_lo``, the first row's last key at or after ``col_hi - 1``."""
    off = seqlen_k - seqlen_q
    return col_lo >= row_hi - 1 + off - window_left and col_hi - 1 <= row_lo + off + window_right


def band_mask(rows, cols, seqlen_q, seqlen_k, window_left, window_right):
    """``[len(rows), len(cols)]`` bool: True where query ``rows[i]`` sees key ``cols[j]``
    (``tiles.band_mask``; the predicate of :func:`kernels.reference.attention_mask`)."""
    diag = rows[:, None] + (seqlen_k - seqlen_q)  # the key each query is aligned with
    return (cols[None, :] >= diag - window_left) & (cols[None, :] <= diag + window_right)


# --------------------------------------------------------------------------------------------
# Tiles of query rows. With GQA the `group` query heads of a kv head share one tile (the kernel's
# PACK_GQA): a tile's rows are (head of the group, query) pairs, head-major, so that every tile
# product is one batched matmul against that kv head's K and V, read once for the whole group.
# --------------------------------------------------------------------------------------------
def read_rows(t5, start, end):
    """Rows ``[start, end)`` of every head of a ``(B, Hkv, G, N, ...)`` view as one tile
    ``(B, Hkv, G * (end - start), ...)``, in float32 (a copy of the tile, at most)."""
    return t5[:, :, :, start:end].flatten(2, 3).float()


def write_rows(t5, start, end, tile):
    """The inverse of :func:`read_rows`: store ``tile`` into rows ``[start, end)`` of ``t5``."""
    t5[:, :, :, start:end] = tile.unflatten(2, (t5.shape[2], end - start)).to(t5.dtype)


# --------------------------------------------------------------------------------------------
# Forward: query blocks outside, key/value blocks streaming inside (flash_fwd._attn_fwd)
# Tile shapes: B = batch, Hkv = kv heads, R = group * BLOCK_M rows, D = head_dim.
# --------------------------------------------------------------------------------------------
def attention_forward_torch(q, k, v, band: Band, softmax_scale: float,
                            block_m: int = BLOCK_M, block_n: int = BLOCK_N, p_dtype=None):
    """The forward on dense ``(batch, heads, seqlen, head_dim)`` tensors; returns ``(out, lse)``:
    ``out`` like ``q``, ``lse`` float32 ``(batch, heads_q, seqlen_q)``. Inputs are assumed
    validated; ``band`` is the :class:`kernels.band.Band` of the call (causal folded in).
    ``p_dtype``: round each tile of probabilities to it before ``p @ v``, as the fp8 kernel does
    (``kernels/fp8.py``); the running sum ``l_i`` keeps them unrounded, as there."""
    batch, heads_q, seqlen_q, head_dim = q.shape
    heads_kv, seqlen_k = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    window_left, window_right = band.bounds(seqlen_q, seqlen_k)
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    q5, out5 = (t.unflatten(1, (heads_kv, group)) for t in (q, out))  # (B, Hkv, G, Nq, D): views
    lse5 = lse.unflatten(1, (heads_kv, group))  # (B, Hkv, G, Nq)
    offs_m = torch.arange(seqlen_q, device=q.device)
    offs_n = torch.arange(seqlen_k, device=q.device)

    for start_m in range(0, seqlen_q, block_m):  # one kernel program per query block
        end_m = min(start_m + block_m, seqlen_q)
        rows = offs_m[start_m:end_m].repeat(group)  # [R]: the query position of each row
        # [B, Hkv, R, D]: read once, kept for the whole inner loop; scaled once here instead of
        # every score tile (the kernel multiplies s by qk_scale)
        q_blk = read_rows(q5, start_m, end_m) * softmax_scale
        m_i = q_blk.new_full(q_blk.shape[:-1], float("-inf"))  # [B, Hkv, R] running max
        l_i = q_blk.new_zeros(q_blk.shape[:-1])  # [B, Hkv, R] running sum of exp(s - m_i)
        acc = torch.zeros_like(q_blk)  # [B, Hkv, R, D] unnormalised output

        lo, hi = key_range(start_m, end_m, seqlen_q, seqlen_k, window_left, window_right, block_n)
        for start_n in range(lo, hi, block_n):  # _fwd_blocks: only the blocks inside the band
            end_n = min(start_n + block_n, seqlen_k)
            k_blk = k[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
            v_blk = v[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
            s = q_blk @ k_blk.transpose(-1, -2)  # [B, Hkv, R, BLOCK_N]
            masked = not block_is_full(start_m, end_m, start_n, end_n, seqlen_q, seqlen_k,
                                       window_left, window_right)
            if masked:  # an edge block of the band: [R, BLOCK_N], broadcast over (B, Hkv)
                valid = band_mask(rows, offs_n[start_n:end_n], seqlen_q, seqlen_k, window_left,
                                  window_right)
                s = s.masked_fill(~valid, float("-inf"))
            # Online softmax. m_safe is 0 while a row has seen no key, so that exp(-inf - m) = 0
            # instead of exp(-inf + inf) = nan (only a masked block can leave a row empty).
            m_new = torch.maximum(m_i, s.amax(-1))  # [B, Hkv, R]
            m_safe = torch.where(m_new == float("-inf"), 0.0, m_new) if masked else m_new
            p = torch.exp(s - m_safe[..., None])  # [B, Hkv, R, BLOCK_N]
            alpha = torch.exp(m_i - m_safe)  # [B, Hkv, R]: rescales what was summed under the old max
            l_i = l_i * alpha + p.sum(-1)
            if p_dtype is not None:  # the fp8 kernel multiplies e4m3 probabilities
                p = p.to(p_dtype).float()
            acc = acc * alpha[..., None] + p @ v_blk  # [B, Hkv, R, D]
            m_i = m_new

        empty = l_i == 0.0  # [B, Hkv, R] rows that saw no key: output 0, lse -inf
        l_safe = torch.where(empty, 1.0, l_i)
        write_rows(out5, start_m, end_m, acc / l_safe[..., None])  # [B, Hkv, R, D]
        write_rows(lse5, start_m, end_m, torch.where(empty, float("-inf"), m_i + torch.log(l_safe)))
    return out, lse


# --------------------------------------------------------------------------------------------
# Backward (flash_bwd.py): P recomputed tile by tile from lse, never stored
#   P  = exp(scale * Q K^T - lse)
#   dV = P^T dO        dP = dO V^T        dS = P * (dP - delta),  delta = rowsum(dO * O) - dlse
#   dQ = scale * dS K  dK = scale * dS^T Q
# --------------------------------------------------------------------------------------------
def attention_backward_torch(do, q, k, v, out, lse, dlse, band: Band,
                             softmax_scale: float, block_m: int = BLOCK_M, block_n: int = BLOCK_N):
    """The backward on dense tensors; returns ``(dq, dk, dv)`` like ``q, k, v``. ``do``: the
    gradient of ``out``; ``dlse``: the gradient of ``lse`` or None. Inputs are assumed validated."""
    batch, heads_q, seqlen_q, head_dim = q.shape
    heads_kv, seqlen_k = k.shape[1], k.shape[2]
    group = heads_q // heads_kv
    window_left, window_right = band.bounds(seqlen_q, seqlen_k)
    # _attn_bwd_preprocess: [B, Hq, Nq]; the dlse term makes lse itself differentiable
    delta = (do.float() * out.float()).sum(-1)
    if dlse is not None:
        delta = delta - dlse
    # Rows with no key (lse = -inf) get lse = +inf, so that P = exp(s - inf) = 0 there.
    lse = torch.where(lse == float("-inf"), float("inf"), lse)
    dq = q.new_empty(q.shape)
    dk = k.new_empty(k.shape)
    dv = v.new_empty(v.shape)
    q5, do5, dq5 = (t.unflatten(1, (heads_kv, group)) for t in (q, do, dq))  # (B, Hkv, G, Nq, D)
    lse5, delta5 = (t.unflatten(1, (heads_kv, group)) for t in (lse, delta))  # (B, Hkv, G, Nq)
    offs_m = torch.arange(seqlen_q, device=q.device)
    offs_n = torch.arange(seqlen_k, device=q.device)

    def tile_p(q_blk, k_blk, lse_blk, start_m, end_m, start_n, end_n):
        """[B, Hkv, R, BLOCK_N]: P of one tile, recomputed from lse (q_blk is pre-scaled)."""
        s = q_blk @ k_blk.transpose(-1, -2)  # [B, Hkv, R, BLOCK_N]
        if not block_is_full(start_m, end_m, start_n, end_n, seqlen_q, seqlen_k, window_left,
                             window_right):
            valid = band_mask(offs_m[start_m:end_m].repeat(group), offs_n[start_n:end_n],
                              seqlen_q, seqlen_k, window_left, window_right)  # [R, BLOCK_N]
            s = s.masked_fill(~valid, float("-inf"))  # mask the exponent, not P: exp() overflows
        return torch.exp(s - lse_blk[..., None])

    # _attn_bwd_dkdv: a key block stays, the query blocks stream past it, and the query heads of
    # the group all add to it (their rows share the tile); each dK, dV block is written once, so
    # no atomics are needed.
    for start_n in range(0, seqlen_k, block_n):
        end_n = min(start_n + block_n, seqlen_k)
        k_blk = k[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
        v_blk = v[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
        dk_blk = torch.zeros_like(k_blk)  # [B, Hkv, BLOCK_N, D]
        dv_blk = torch.zeros_like(v_blk)  # [B, Hkv, BLOCK_N, D]
        lo, hi = query_range(start_n, end_n, seqlen_q, seqlen_k, window_left, window_right, block_m)
        for start_m in range(lo, hi, block_m):  # _dkdv_blocks
            end_m = min(start_m + block_m, seqlen_q)
            q_blk = read_rows(q5, start_m, end_m) * softmax_scale  # [B, Hkv, R, D]
            do_blk = read_rows(do5, start_m, end_m)  # [B, Hkv, R, D]
            delta_blk = read_rows(delta5, start_m, end_m)  # [B, Hkv, R]
            p = tile_p(q_blk, k_blk, read_rows(lse5, start_m, end_m), start_m, end_m, start_n, end_n)
            dv_blk += p.transpose(-1, -2) @ do_blk  # [B, Hkv, BLOCK_N, D], summed over the R rows
            dp = do_blk @ v_blk.transpose(-1, -2)  # [B, Hkv, R, BLOCK_N]
            ds = p * (dp - delta_blk[..., None])  # [B, Hkv, R, BLOCK_N]
            dk_blk += ds.transpose(-1, -2) @ q_blk  # [B, Hkv, BLOCK_N, D]; q_blk carries the scale
        dk[:, :, start_n:end_n] = dk_blk.to(dk.dtype)
        dv[:, :, start_n:end_n] = dv_blk.to(dv.dtype)

    # _attn_bwd_dq: the forward's loop again, a query block stays and accumulates dQ.
    for start_m in range(0, seqlen_q, block_m):
        end_m = min(start_m + block_m, seqlen_q)
        q_blk = read_rows(q5, start_m, end_m) * softmax_scale  # [B, Hkv, R, D]
        do_blk = read_rows(do5, start_m, end_m)  # [B, Hkv, R, D]
        lse_blk = read_rows(lse5, start_m, end_m)  # [B, Hkv, R]
        delta_blk = read_rows(delta5, start_m, end_m)  # [B, Hkv, R]
        dq_blk = torch.zeros_like(q_blk)  # [B, Hkv, R, D]
        lo, hi = key_range(start_m, end_m, seqlen_q, seqlen_k, window_left, window_right, block_n)
        for start_n in range(lo, hi, block_n):  # _dq_blocks
            end_n = min(start_n + block_n, seqlen_k)
            k_blk = k[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
            v_blk = v[:, :, start_n:end_n].float()  # [B, Hkv, BLOCK_N, D]
            p = tile_p(q_blk, k_blk, lse_blk, start_m, end_m, start_n, end_n)
            dp = do_blk @ v_blk.transpose(-1, -2)  # [B, Hkv, R, BLOCK_N]
            ds = p * (dp - delta_blk[..., None])  # [B, Hkv, R, BLOCK_N]
            dq_blk += ds @ k_blk  # [B, Hkv, R, D]
        write_rows(dq5, start_m, end_m, dq_blk * softmax_scale)
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------
class FlashAttentionTorchFunction(torch.autograd.Function):
    """:func:`flash_attention_torch`'s autograd: saves ``q, k, v, out, lse`` (O(N)), and
    recomputes P in the backward. ``apply(q, k, v, band, softmax_scale, blocks)`` with
    ``band`` a :class:`kernels.band.Band` and ``blocks = (block_m, block_n)``; returns
    ``(out, lse)``, both differentiable. Inputs are assumed validated."""

    @staticmethod
    def forward(ctx, q, k, v, band, softmax_scale, blocks):
        out, lse = attention_forward_torch(q, k, v, band, softmax_scale, *blocks)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.band, ctx.softmax_scale, ctx.blocks = band, softmax_scale, blocks
        ctx.set_materialize_grads(False)  # dlse stays None unless lse was used
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = torch.zeros_like(out) if dout is None else dout
        dq, dk, dv = attention_backward_torch(dout, q, k, v, out, lse, dlse, ctx.band,
                                              ctx.softmax_scale, *ctx.blocks)
        return dq, dk, dv, None, None, None


def _dense(t, lo, hi):
    """Rows ``[lo, hi)`` of a packed ``(total, heads, head_dim)`` tensor as a dense batch of one,
    ``(1, heads, n, head_dim)``: a view."""
    return t[lo:hi].transpose(0, 1).unsqueeze(0)


class FlashAttentionVarlenTorchFunction(torch.autograd.Function):
    """:func:`flash_attention_varlen_torch`'s autograd: the dense forward and backward on each
    sequence in turn (the kernel's ``VARLEN`` programs, one sequence at a time). ``apply(q, k, v,
    offsets_q, offsets_k, band, softmax_scale, blocks)`` with the offsets as Python lists;
    returns ``(out, lse)``, lse ``(heads_q, total_q)``. Inputs are assumed validated."""

    @staticmethod
    def forward(ctx, q, k, v, offsets_q, offsets_k, band, softmax_scale, blocks):
        out = q.new_zeros(q.shape)  # (total_q, heads_q, D)
        lse = q.new_full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32)  # (Hq, total_q)
        for (q0, q1), (k0, k1) in zip(zip(offsets_q, offsets_q[1:]), zip(offsets_k, offsets_k[1:])):
            o_b, lse_b = attention_forward_torch(_dense(q, q0, q1), _dense(k, k0, k1),
                                                 _dense(v, k0, k1), band, softmax_scale, *blocks)
            out[q0:q1] = o_b[0].transpose(0, 1)  # (n, Hq, D)
            lse[:, q0:q1] = lse_b[0]  # (Hq, n)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.offsets = (offsets_q, offsets_k)
        ctx.band, ctx.softmax_scale, ctx.blocks = band, softmax_scale, blocks
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        offsets_q, offsets_k = ctx.offsets
        dout = torch.zeros_like(out) if dout is None else dout
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for (q0, q1), (k0, k1) in zip(zip(offsets_q, offsets_q[1:]), zip(offsets_k, offsets_k[1:])):
            dlse_b = None if dlse is None else dlse[:, q0:q1].unsqueeze(0)  # (1, Hq, n)
            grads = attention_backward_torch(
                _dense(dout, q0, q1), _dense(q, q0, q1), _dense(k, k0, k1), _dense(v, k0, k1),
                _dense(out, q0, q1), lse[:, q0:q1].unsqueeze(0), dlse_b, ctx.band,
                ctx.softmax_scale, *ctx.blocks)
            for full, g, (lo, hi) in zip((dq, dk, dv), grads, ((q0, q1), (k0, k1), (k0, k1))):
                full[lo:hi] = g[0].transpose(0, 1)  # (n, heads, D)
        return dq, dk, dv, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def check_blocks(block_m, block_n) -> tuple[int, int]:
    """Tile sizes: any ints >= 1 (no power of two needed: nothing here is padded)."""
    for name, value in (("block_m", block_m), ("block_n", block_n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return block_m, block_n


def flash_attention_torch(q, k, v, *, causal=False, softmax_scale=None, window_size=(-1, -1),
                          return_lse=False, block_m=BLOCK_M, block_n=BLOCK_N):
    """Exact softmax attention, tiled, in plain PyTorch: O(N) memory, differentiable in q, k, v.

    Same arguments, semantics and error messages as :func:`kernels.flash_attention`, on any
    device PyTorch supports.

    Args:
        q: ``(batch, heads_q, seqlen_q, head_dim)``, float32, float16 or bfloat16.
        k, v: ``(batch, heads_kv, seqlen_k, head_dim)``; ``heads_q`` a multiple of ``heads_kv``.
        causal: bottom-right aligned: query ``i`` sees key ``j`` when ``j <= i + seqlen_k - seqlen_q``.
        softmax_scale: multiplies ``q @ k^T``; defaults to ``1 / sqrt(head_dim)``.
        window_size: ``(left, right)``, -1 = unbounded; with ``causal=True``, ``right`` is 0.
        return_lse: also return the log-sum-exp of each row's scaled scores.
        block_m, block_n: the tile, ``BLOCK_M`` queries by ``BLOCK_N`` keys.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` in the input dtype and, with
        ``return_lse``, ``lse`` ``(batch, heads_q, seqlen_q)`` in float32 (differentiable too).
        A query row that sees no key gets zeros and ``lse = -inf``.
    """
    scale, band = check_dense_args(q, k, v, causal, softmax_scale, window_size)
    blocks = check_blocks(block_m, block_n)
    out, lse = FlashAttentionTorchFunction.apply(q, k, v, band, scale, blocks)
    return (out, lse) if return_lse else out


def flash_attention_varlen_torch(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                                 causal=False, softmax_scale=None, window_size=(-1, -1),
                                 return_lse=False, check_seqlens=True, block_m=BLOCK_M,
                                 block_n=BLOCK_N):
    """Attention over packed sequences, each attending only within itself: the twin of
    :func:`kernels.flash_attention_varlen` (same arguments, checks and messages). The values of
    ``cu_seqlens`` are checked even with ``check_seqlens=False`` (accepted for the same call):
    the loop over sequences reads them on the host anyway.

    Args:
        q: ``(total_q, heads_q, head_dim)``; k, v: ``(total_k, heads_kv, head_dim)``.
        cu_seqlens_q, cu_seqlens_k: int32 ``(batch + 1,)`` cumulative lengths from 0 to the totals.
        max_seqlen_q, max_seqlen_k: the longest sequence of each (checked, otherwise unused).
        causal, softmax_scale, window_size, block_m, block_n: as :func:`flash_attention_torch`,
            per sequence.
        return_lse: also return the float32 log-sum-exp, ``(heads_q, total_q)``.

    Returns:
        ``out`` ``(total_q, heads_q, head_dim)`` and, with ``return_lse``, ``lse``.
    """
    _, _, head_dim = check_packed_qkv(q, k, v)
    # always checked: the loop over sequences reads the offsets on the host anyway
    offsets_q, offsets_k = check_varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                                                max_seqlen_k)
    scale = check_scale(softmax_scale, head_dim)
    band = Band.from_window(window_size, causal)
    blocks = check_blocks(block_m, block_n)
    out, lse = FlashAttentionVarlenTorchFunction.apply(q, k, v, offsets_q, offsets_k, band, scale,
                                                       blocks)
    return (out, lse) if return_lse else out


def flash_decode_torch(q, k_cache, v_cache, cache_seqlens, *, causal=False, softmax_scale=None,
                       window_size=(-1, -1), num_splits=None, return_lse=False, check_lengths=True,
                       block_m=BLOCK_M, block_n=BLOCK_N):
    """Attention of a few new queries against a KV cache: the twin of :func:`kernels.flash_decode`
    (same arguments and checks). ``num_splits`` is checked and otherwise unused (one loop walks
    the cache: there are no split-KV programs to merge), and the lengths are checked even with
    ``check_lengths=False``, since the loop over the batch reads them on the host anyway.
    Inference only.

    Args:
        q: ``(batch, heads_q, seqlen_q, head_dim)``, ``seqlen_q`` small (1 for plain decoding).
        k_cache, v_cache: ``(batch, heads_kv, max_cache_len, head_dim)``; only the first
            ``cache_seqlens[b]`` positions of sequence ``b`` are read.
        cache_seqlens: int32 ``(batch,)``, each in ``[0, max_cache_len]``.
        causal, window_size: aligned to each sequence's valid length, as :func:`kernels.flash_decode`.
        softmax_scale, return_lse, block_m, block_n: as :func:`flash_attention_torch`.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` (and float32 ``lse``), not differentiable.
    """
    batch, _, _, _, max_len, head_dim = check_kernel_qkv(q, k_cache, v_cache)
    check_num_splits(num_splits)
    lengths = check_cache_seqlens(cache_seqlens, batch, max_len, q.device)
    scale = check_scale(softmax_scale, head_dim)
    band = Band.from_window(window_size, causal)
    blocks = check_blocks(block_m, block_n)
    out = q.new_empty(q.shape)
    lse = q.new_empty(q.shape[:3], dtype=torch.float32)
    with torch.no_grad():
        for b, n in enumerate(lengths):  # each sequence against its valid part of the cache
            out[b:b + 1], lse[b:b + 1] = attention_forward_torch(
                q[b:b + 1], k_cache[b:b + 1, :, :n], v_cache[b:b + 1, :, :n], band, scale, *blocks)
    return (out, lse) if return_lse else out


__all__ = [
    "FlashAttentionTorchFunction",
    "FlashAttentionVarlenTorchFunction",
    "attention_backward_torch",
    "attention_forward_torch",
    "flash_attention_torch",
    "flash_attention_varlen_torch",
    "flash_decode_torch",
]
