"""An fp8 (e4m3) forward for inference: FlashAttention's kernel with 8-bit operands.

What the reader will learn here: what it takes to run attention's two matmuls in e4m3, the 8-bit
format (4 exponent bits, 3 mantissa bits, largest value 448) that Hopper's tensor cores multiply
at twice the bf16 rate. The forward kernel (``flash_fwd._attn_fwd``) is the same; four things
change around it:

* **Scales.** e4m3 holds 448 at most, so each ``(batch, head)`` of ``q``, ``k`` and ``v`` is
  divided by ``amax / 448`` before it is rounded (:func:`quantize_fp8`), and the kernel multiplies
  the scales back in float32: ``q_descale * k_descale`` into the softmax scale (the true scores are
  ``(q8 @ k8^T) * q_descale * k_descale``), ``v_descale`` into the output. This is the
  ``q_descale``/``k_descale``/``v_descale`` interface of FlashAttention-3's fp8 forward.
* **P in e4m3.** The probabilities ``p = exp2(s - m)`` lie in ``[0, 1]`` and are rounded to e4m3
  before ``p @ v`` (the second matmul's operands must share the format); the running sum ``l_i``
  adds them unrounded, in float32.
* **V's layout.** Hopper's fp8 ``wgmma`` reads both operands K-major. For ``p @ v`` the reduction
  runs over keys, so V's keys must be contiguous: :func:`quantize_fp8` can store each head's
  ``(seqlen, head_dim)`` matrix column by column (``column_major=True``), which the kernel reads
  through its strides like any other layout.
* **No backward.** The output carries no gradient; training stays in 16 bits.

Accuracy (measured against float64 on the unrounded inputs, tests/test_fp8.py and
benchmarks/NOTES.md): the error is that of rounding q, k, v and p to 3 mantissa bits, about ten
times bf16's. Without Triton the same function runs the plain-PyTorch twin on the dequantised
inputs, rounding p tile by tile as the kernel does (``flash_torch.attention_forward_torch``'s
``p_dtype``).
"""

from __future__ import annotations

import torch

from ._checks import (
    HAS_TRITON,
    KERNEL_DTYPES,
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    check_qkv,
    check_runs_here,
    check_scale,
)
from .band import Band
from .flash_torch import attention_forward_torch

E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448.0


def quantize_fp8(x: torch.Tensor, *, column_major: bool = False):
    """Round ``x`` ``(batch, heads, seqlen, head_dim)`` to e4m3 with one scale per (batch, head).

    Returns ``(x8, descale)``: ``x8`` in ``torch.float8_e4m3fn``, ``descale`` float32
    ``(batch, heads)`` with ``x ~= x8 * descale[..., None, None]``; each head's largest magnitude
    becomes 448, an all-zero head keeps the scale 1. ``column_major``: store each head's matrix
    column by column (the same values and shape, strides ``(.., 1, seqlen)``), the layout the fp8
    kernel wants for ``v``. Raises ``ValueError`` on non-finite values, which e4m3 cannot hold
    (finding them costs one host sync).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in KERNEL_DTYPES:
        raise TypeError(f"x: expected float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x: expected 4 dimensions (batch, heads, seqlen, head_dim), got shape "
                         f"{tuple(x.shape)}")
    xf = x.float()
    amax = xf.abs().amax(dim=(2, 3)) if x.numel() else xf.new_zeros(x.shape[:2])
    if not torch.isfinite(amax).all():
        raise ValueError("x: has inf or nan values, which e4m3 cannot represent")
    descale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    scaled = xf / descale[..., None, None]
    if column_major:
        scaled = scaled.transpose(-1, -2).contiguous().transpose(-1, -2)
    return scaled.to(E4M3), descale


def _check_descale(descale, name: str, batch: int, heads: int, heads_kv: int, device):
    """A ``(batch, heads)`` float32 tensor of scales, or ones for ``None``; ``(batch, heads_kv)``
    is accepted for ``q_descale`` too (FlashAttention-3's shape) and repeated over each group."""
    if descale is None:
        return torch.ones(batch, heads, device=device, dtype=torch.float32)
    if not isinstance(descale, torch.Tensor) or not descale.is_floating_point():
        got = descale.dtype if isinstance(descale, torch.Tensor) else type(descale).__name__
        raise TypeError(f"{name}: expected a floating torch.Tensor of shape ({batch}, {heads}), "
                        f"got {got}")
    if descale.device != device:
        raise ValueError(f"{name}: expected device {device} (as q), got {descale.device}")
    shape = tuple(descale.shape)
    if shape == (batch, heads_kv) and heads != heads_kv:
        descale = descale.repeat_interleave(heads // heads_kv, dim=1)
    elif shape != (batch, heads):
        raise ValueError(f"{name}: expected shape ({batch}, {heads}), got {shape}")
    return descale.float().contiguous()


def fp8_forward(q8, k8, v8, descales, band: Band, softmax_scale: float, out_dtype,
                config: dict | None = None):
    """The fp8 forward on checked e4m3 tensors and ``(q, k, v)`` descales; returns
    ``(out, lse)`` with ``out`` in ``out_dtype``. With Triton it launches the kernel (``config``:
    a launch configuration, by default the forward's table); without, the plain-PyTorch twin."""
    lse = torch.empty(q8.shape[:3], device=q8.device, dtype=torch.float32)
    if q8.numel() == 0 or k8.numel() == 0:
        return torch.zeros(q8.shape, device=q8.device, dtype=out_dtype), lse.fill_(float("-inf"))
    if not HAS_TRITON:  # dequantise exactly in float32, round p as the kernel does
        qd, kd, vd = descales
        vd = vd.repeat_interleave(q8.shape[1] // k8.shape[1], dim=1)  # per query head
        out, lse = attention_forward_torch(q8.float() * qd[..., None, None],
                                           k8.float() * kd[..., None, None], v8.float(), band,
                                           softmax_scale, p_dtype=E4M3)
        return (out * vd[..., None, None]).to(out_dtype), lse
    from .flash_fwd import launch_forward  # Triton's, imported only where it is installed
    from .tiles import Layout

    out = torch.empty(q8.shape, device=q8.device, dtype=out_dtype)
    launch_forward(q8, k8, v8, out, lse, Layout.dense(q8, k8), band, softmax_scale,
                   config=config, descales=descales)
    return out, lse


def flash_attention_fp8(q, k, v, *, causal=False, softmax_scale=None, window_size=(-1, -1),
                        q_descale=None, k_descale=None, v_descale=None, out_dtype=None,
                        return_lse=False):
    """Softmax attention with e4m3 matmuls: the forward of :func:`kernels.flash_attention`, for
    inference.

    Args:
        q, k, v: as for :func:`kernels.flash_attention` (``(batch, heads, seqlen, head_dim)``,
            GQA allowed), either 16/32-bit floats, which are quantised here with
            :func:`quantize_fp8` (V column-major), or ``torch.float8_e4m3fn`` tensors you
            quantised yourself, with their scales.
        causal, softmax_scale, window_size: as for :func:`kernels.flash_attention`.
        q_descale, k_descale, v_descale: e4m3 inputs only: float32 ``(batch, heads)`` scales
            with ``x = x8 * descale`` (``None``: 1); ``q_descale`` may also be
            ``(batch, heads_kv)``, FlashAttention-3's shape.
        out_dtype: the output's dtype; by default the input's, or bfloat16 for e4m3 inputs.
        return_lse: also return the float32 log-sum-exp of each row's scaled scores.

    Returns:
        ``out`` ``(batch, heads_q, seqlen_q, head_dim)`` in ``out_dtype`` (no gradient), and
        ``lse`` with ``return_lse``. Rows that see no key get zeros and ``lse = -inf``.
    """
    batch, heads_q, heads_kv, _, _, head_dim = check_qkv(
        q, k, v, dtypes=KERNEL_DTYPES + (E4M3,), min_head_dim=MIN_HEAD_DIM, max_head_dim=MAX_HEAD_DIM)
    scale, band = check_scale(softmax_scale, head_dim), Band.from_window(window_size, causal)
    if out_dtype is not None and out_dtype not in KERNEL_DTYPES:
        raise TypeError(f"out_dtype: expected float32, float16 or bfloat16, got {out_dtype}")
    if q.dtype == E4M3:
        descales = (_check_descale(q_descale, "q_descale", batch, heads_q, heads_kv, q.device),
                    _check_descale(k_descale, "k_descale", batch, heads_kv, heads_kv, q.device),
                    _check_descale(v_descale, "v_descale", batch, heads_kv, heads_kv, q.device))
        q8, k8, v8 = q, k, v
        out_dtype = out_dtype or torch.bfloat16
    else:
        for name, d in (("q_descale", q_descale), ("k_descale", k_descale), ("v_descale", v_descale)):
            if d is not None:
                raise ValueError(f"{name}: only for float8_e4m3fn inputs; {q.dtype} inputs are "
                                 "quantised here, with scales of their own")
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            raise ValueError("q, k, v: flash_attention_fp8 has no backward; call it under "
                             "torch.no_grad() (inference), or use flash_attention to train")
        (q8, qd), (k8, kd), (v8, vd) = quantize_fp8(q), quantize_fp8(k), quantize_fp8(v, column_major=True)
        descales = (qd, kd, vd)
        out_dtype = out_dtype or q.dtype
    if HAS_TRITON:
        check_runs_here(q)
    out, lse = fp8_forward(q8, k8, v8, descales, band, scale, out_dtype)
    return (out, lse) if return_lse else out


__all__ = ["E4M3", "E4M3_MAX", "flash_attention_fp8", "fp8_forward", "quantize_fp8"]
