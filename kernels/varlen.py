"""Variable-length (packed) attention: many sequences in one tensor, no padding.

What the reader will learn here: a batch of sequences of different lengths does not need padding.
Concatenate them into ``(total_tokens, heads, head_dim)`` and pass ``cu_seqlens``, the running
sum of the lengths (``[0, n0, n0 + n1, ...]``). The same Triton kernels as the dense case run
(``kernels/flash_fwd.py`` and ``kernels/flash_bwd.py``, ``VARLEN=True``): each program reads
where its sequence starts and how long it is from ``cu_seqlens``, and programs past the end of a
short sequence exit at once. The dense API is the special case of equal lengths.
"""

from __future__ import annotations

import torch

from ._checks import check_packed_qkv, check_runs_here, check_scale, check_varlen_offsets
from .band import Band
from .flash_attn import FlashAttentionFunction
from .flash_bwd import attention_backward
from .flash_fwd import attention_forward
from .tiles import Layout


def _layout(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
    return Layout(cu_seqlens_q.numel() - 1, max_seqlen_q, max_seqlen_k, cu_seqlens_q, cu_seqlens_k)


@torch.library.custom_op("flash_fp::attention_varlen_fwd", mutates_args=())
def _varlen_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                   cu_seqlens_k: torch.Tensor, max_seqlen_q: int, max_seqlen_k: int, causal: bool,
                   softmax_scale: float, window_left: int, window_right: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    layout = _layout(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    band = Band.from_window((window_left, window_right), causal)
    return attention_forward(q, k, v, band, softmax_scale, layout)


@_varlen_fwd_op.register_fake
def _(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale,
      window_left, window_right):
    return torch.empty_like(q), q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)


@torch.library.custom_op("flash_fp::attention_varlen_bwd", mutates_args=())
def _varlen_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   out: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor | None,
                   cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor, max_seqlen_q: int,
                   max_seqlen_k: int, causal: bool, softmax_scale: float, window_left: int,
                   window_right: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    layout = _layout(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
    band = Band.from_window((window_left, window_right), causal)
    return attention_backward(do, q, k, v, out, lse, dlse, band, softmax_scale, layout)


@_varlen_bwd_op.register_fake
def _(do, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal,
      softmax_scale, window_left, window_right):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, left, right = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
    ctx.max_seqlens = (max_seqlen_q, max_seqlen_k)
    ctx.band = Band.from_window((left, right), causal)
    ctx.softmax_scale = softmax_scale


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
    max_seqlen_q, max_seqlen_k = ctx.max_seqlens
    band = ctx.band
    dq, dk, dv = _varlen_bwd_op(dout.contiguous(), q, k, v, out, lse, dlse, cu_q, cu_k,
                                max_seqlen_q, max_seqlen_k, band.causal, ctx.softmax_scale,
                                band.left, band.right)
    return dq, dk, dv, None, None, None, None, None, None, None, None


_varlen_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                           causal=False, softmax_scale=None, window_size=(-1, -1),
                           return_lse=False, check_seqlens=True):
    """Attention over packed sequences; each sequence attends only within itself.

    Args:
        q: ``(total_q, heads_q, head_dim)``, the queries of all sequences, one after another.
        k, v: ``(total_k, heads_kv, head_dim)``; ``heads_q`` a multiple of ``heads_kv``.
        cu_seqlens_q, cu_seqlens_k: int32 ``(batch + 1,)`` cumulative lengths, starting at 0 and
            ending at ``total_q`` / ``total_k``. Sequence ``b``'s queries are rows
            ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]``. Lengths may be 0 and may differ between q and k.
        max_seqlen_q, max_seqlen_k: the longest sequence of each (sizes the launch grid).
        causal, softmax_scale, window_size: as :func:`kernels.flash_attention`, per sequence
            (bottom-right alignment uses each sequence's own lengths).
        return_lse: also return the float32 log-sum-exp, ``(heads_q, total_q)``.
        check_seqlens: verify the values of ``cu_seqlens_q`` / ``cu_seqlens_k`` (start at 0,
            non-decreasing, end at the totals, no length above ``max_seqlen_*``): a ValueError
            otherwise. It costs one device-to-host copy per call, which stalls the CPU until the
            GPU catches up, so that the GPU then idles while the next launch is prepared, and it
            cannot be captured in a CUDA graph. A training loop
            that builds its offsets itself passes ``False``, as FlashAttention's own varlen API
            does: the values are then trusted, and wrong ones give wrong rows, but never a read
            or write outside the tensors (the kernels clamp every offset into them).

    Returns:
        ``out`` ``(total_q, heads_q, head_dim)`` and, with ``return_lse``, ``lse``.
    """
    heads_q, heads_kv, head_dim = check_packed_qkv(q, k, v)
    check_varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                         values=check_seqlens)  # the values: one device-to-host copy for both
    scale = check_scale(softmax_scale, head_dim)
    band = Band.from_window(window_size, causal)
    check_runs_here(q)
    max_seqlen_q, max_seqlen_k = int(max_seqlen_q), int(max_seqlen_k)
    if torch.compiler.is_compiling():
        out, lse = _varlen_fwd_op(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  band.causal, scale, band.left, band.right)
    else:
        layout = _layout(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        out, lse = FlashAttentionFunction.apply(q, k, v, band, scale, layout)
    return (out, lse) if return_lse else out
