"""FlashAttention-2, the public function: custom ops, autograd, :func:`flash_attention`.

What the reader will learn here: how two Triton launchers become a differentiable PyTorch
function that ``torch.compile`` can hold. The kernels and their launchers live beside this file:

* ``tiles.py``: what every kernel shares (tiles, sequences, the mask :class:`~kernels.band.Band`,
  the :class:`~kernels.tiles.Layout` of dense and packed tensors);
* ``flash_fwd.py``: the forward kernel and :func:`~kernels.flash_fwd.attention_forward`;
* ``flash_bwd.py``: the three backward kernels and :func:`~kernels.flash_bwd.attention_backward`.

This file wraps them twice: as ``torch.library`` custom ops with their autograd formula (what
``torch.compile`` sees), and as a plain ``torch.autograd.Function``, :class:`FlashAttentionFunction`
(the eager path, cheaper on the host). The mask band and the softmax scale are made once, in
:func:`flash_attention`, and travel down as a :class:`~kernels.band.Band` and a float; only the
custom ops' schemas spell them as plain numbers.
"""

from __future__ import annotations

import torch

from ._checks import check_runs_here
from .band import Band, check_dense_args
from .flash_bwd import attention_backward
from .flash_fwd import attention_forward
from .tiles import Layout


# --------------------------------------------------------------------------------------------
# torch.library ops: opaque to torch.compile, differentiable through register_autograd
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("flash_fp::attention_fwd", mutates_args=())
def _attention_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                      softmax_scale: float, window_left: int, window_right: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    band = Band.from_window((window_left, window_right), causal)
    return attention_forward(q, k, v, band, softmax_scale)


@_attention_fwd_op.register_fake
def _(q, k, v, causal, softmax_scale, window_left, window_right):
    return torch.empty_like(q), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("flash_fp::attention_bwd", mutates_args=())
def _attention_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      out: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor | None, causal: bool,
                      softmax_scale: float, window_left: int, window_right: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    band = Band.from_window((window_left, window_right), causal)
    return attention_backward(do, q, k, v, out, lse, dlse, band, softmax_scale)


@_attention_bwd_op.register_fake
def _(do, q, k, v, out, lse, dlse, causal, softmax_scale, window_left, window_right):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, softmax_scale, window_left, window_right = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.band = Band.from_window((window_left, window_right), causal)
    ctx.softmax_scale = softmax_scale


def _backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    band = ctx.band
    dq, dk, dv = _attention_bwd_op(dout.contiguous(), q, k, v, out, lse, dlse, band.causal,
                                   ctx.softmax_scale, band.left, band.right)
    return dq, dk, dv, None, None, None, None


_attention_fwd_op.register_autograd(_backward, setup_context=_setup_context)


class FlashAttentionFunction(torch.autograd.Function):
    """The eager path of :func:`flash_attention` and :func:`kernels.flash_attention_varlen`: the
    same forward and backward as the custom ops above, without the dispatcher between. A custom
    op with registered autograd costs about 100 us of host time per call (measured on this
    project's CPU machine), a plain ``autograd.Function`` about 25 us: for a short kernel (causal,
    N = 1024 runs about 70 us on an H100) the host time, not the GPU, would set the pace.
    Under ``torch.compile`` :func:`flash_attention` calls the custom ops, which it keeps opaque.

    ``apply(q, k, v, band, softmax_scale, layout=None, fwd_config=None, bwd_config=None)``
    (positional, as ``autograd.Function`` wants): ``layout`` ``None`` for dense inputs; the two
    launch configurations as :func:`kernels.flash_fwd.fwd_config` and
    :func:`kernels.flash_bwd.bwd_config` return them, ``None`` for those defaults. Returns
    ``(out, lse)``. Inputs are assumed validated.
    """

    @staticmethod
    def forward(ctx, q, k, v, band: Band, softmax_scale: float, layout: Layout | None = None,
                fwd_config: dict | None = None, bwd_config: dict | None = None):
        out, lse = attention_forward(q, k, v, band, softmax_scale, layout, fwd_config)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.band, ctx.softmax_scale, ctx.layout, ctx.bwd_config = band, softmax_scale, layout, bwd_config
        ctx.set_materialize_grads(False)  # dlse stays None unless lse was used
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dout = torch.zeros_like(out) if dout is None else dout.contiguous()
        dq, dk, dv = attention_backward(dout, q, k, v, out, lse, dlse, ctx.band, ctx.softmax_scale,
                                        ctx.layout, ctx.bwd_config)
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
            With ``causal=True``, ``right`` is 0 whatever is passed (FlashAttention's rule).
        return_lse: also return the log-sum-exp of each row's scaled scores.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` in the input dtype and, with
        ``return_lse``, ``lse`` ``(batch, heads_q, seqlen_q)`` in float32 (differentiable too).
        A query row that sees no key gets zeros and ``lse = -inf``.
    """
    scale, band = check_dense_args(q, k, v, causal, softmax_scale, window_size)
    check_runs_here(q)
    if torch.compiler.is_compiling():
        out, lse = _attention_fwd_op(q, k, v, band.causal, scale, band.left, band.right)
    else:
        out, lse = FlashAttentionFunction.apply(q, k, v, band, scale)
    return (out, lse) if return_lse else out


__all__ = ["FlashAttentionFunction", "flash_attention"]
