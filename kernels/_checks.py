"""Input validation shared by every attention entry point.

Each rule raises ``ValueError`` or ``TypeError`` with a message that names the argument and says
what was expected, so a user never meets a Triton compile trace or a silent wrong answer.
"""

from __future__ import annotations

import math
import numbers
import os

import torch

from ._platform import triton_installed

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_HEAD_DIM = 8
MAX_HEAD_DIM = 256
HAS_TRITON = triton_installed()  # Linux wheels only
#: True when the kernels run through Triton's CPU interpreter (``kernels/__init__.py`` decides).
INTERPRET = HAS_TRITON and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
# Which implementation is behind kernels.flash_attention & co.: "triton" (compiled on CUDA tensors,
# interpreted on CPU tensors) or "torch" (the plain-PyTorch twin, kernels/flash_torch.py).
IMPLEMENTATION = "triton" if HAS_TRITON else "torch"


def implementation() -> str:
    """In words, what runs behind ``flash_attention`` & co. in this process (notebooks print it)."""
    if not HAS_TRITON:
        return "torch (the plain-PyTorch twin: Triton is not installed)"
    return "triton (Triton's CPU interpreter)" if INTERPRET else "triton (compiled for the GPU)"


def _version(text: str) -> tuple[int, int]:
    major, minor = (text.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def interpreter_problem(triton_version: str | None = None, numpy_version: str | None = None) -> str | None:
    """Why Triton's interpreter cannot run these kernels here, or None. Triton 3.6's interpreter
    fails with numpy >= 2.4 on a loop over a runtime bound (``for s in range(start, end, BLOCK)``),
    fixed in Triton 3.7 (triton PR 9172). The versions default to the installed ones."""
    if (triton_version is None or numpy_version is None) and not HAS_TRITON:
        return None  # no interpreter at all: the PyTorch twin stands in (kernels/__init__.py)
    if triton_version is None or numpy_version is None:
        import numpy
        import triton

        triton_version = triton_version or triton.__version__
        numpy_version = numpy_version or numpy.__version__
    if _version(triton_version) < (3, 7) and _version(numpy_version) >= (2, 4):
        return (f"Triton {triton_version}'s interpreter cannot run these kernels with numpy {numpy_version} "
                "(a loop over a runtime bound fails; fixed in Triton 3.7): install triton>=3.7 "
                "(requirements.txt pins it) or numpy<2.4, or pass CUDA tensors without TRITON_INTERPRET")
    return None


#: Why the interpreter in force cannot run the kernels, or None; decided once, at import.
INTERPRETER_PROBLEM = interpreter_problem() if INTERPRET else None


def check_runs_here(q: torch.Tensor) -> None:
    """The kernels run compiled on CUDA tensors, or through the interpreter on CPU tensors."""
    if q.device.type != "cuda" and not INTERPRET:
        raise ValueError(f"q: tensors on {q.device} need Triton's interpreter; move them to CUDA, "
                         "or set TRITON_INTERPRET=1 before importing kernels")
    if INTERPRETER_PROBLEM:
        raise RuntimeError(INTERPRETER_PROBLEM)


def check_causal(causal) -> bool:
    """``causal`` must be a bool: a string such as ``"no"`` is truthy and would silently mask."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected True or False, got {type(causal).__name__} {causal!r}")
    return causal


def check_window(window_size, causal) -> tuple[int, int]:
    """Validate ``window_size=(left, right)`` and ``causal``; returns the band as two Python ints.

    -1 means unbounded on that side; any integer type (Python, numpy, a 0-d integer tensor is
    not one) is accepted. ``causal=True`` sets ``right = 0`` whatever ``right`` was, as
    FlashAttention does (its ``flash_attn_func`` accepts ``causal=True`` with any window and
    applies the causal mask on top of it): ``(left, right)`` with causal is ``(left, 0)``.
    """
    check_causal(causal)
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise TypeError(f"window_size: expected a pair (left, right) of ints, got {window_size!r}")
    left, right = window_size
    for name, value in (("window_size[0] (left)", left), ("window_size[1] (right)", right)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
        if value < -1:
            raise ValueError(f"{name}: expected -1 (unbounded) or a size >= 0, got {value}")
    return int(left), (0 if causal else int(right))


def check_scale(softmax_scale, head_dim: int) -> float:
    """Default to 1/sqrt(head_dim); reject anything that is not a finite positive real number
    (any real scalar type: Python, numpy float32/float64/integers)."""
    if softmax_scale is None:
        return 1.0 / math.sqrt(head_dim)
    if isinstance(softmax_scale, bool) or not isinstance(softmax_scale, numbers.Real):
        raise TypeError(f"softmax_scale: expected a float or None, got {type(softmax_scale).__name__}")
    if not math.isfinite(softmax_scale) or softmax_scale <= 0:
        raise ValueError(f"softmax_scale: expected a finite positive number, got {softmax_scale}")
    return float(softmax_scale)


DENSE_DIMS = ("batch", "heads", "seqlen", "head_dim")
PACKED_DIMS = ("total_tokens", "heads", "head_dim")


def check_qkv(q, k, v, *, dtypes=FLOAT_DTYPES, min_head_dim=1, max_head_dim=None, packed=False):
    """Check the dense layout ``(batch, heads, seqlen, head_dim)``, or with ``packed`` the varlen
    one ``(total_tokens, heads, head_dim)`` (seen as a batch of one); returns the sizes.

    Returns ``(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim)``. Reads shapes only: no
    tensor op, so it adds microseconds, not tens of them, to every call.
    """
    dims = PACKED_DIMS if packed else DENSE_DIMS
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in dtypes:
            allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
            raise TypeError(f"{name}: expected a floating dtype ({allowed}), got {t.dtype}")
        if t.dim() != len(dims):
            raise ValueError(f"{name}: expected {len(dims)} dimensions ({', '.join(dims)}), "
                             f"got shape {tuple(t.shape)}")
        if t.is_meta:
            raise ValueError(f"{name}: a tensor on the meta device has no values to attend over; "
                             "pass a CPU or CUDA tensor")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v: expected one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"k, v: expected the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")

    def sizes(t):  # (batch, heads, seqlen, head_dim)
        return (1, t.shape[1], t.shape[0], t.shape[2]) if packed else tuple(t.shape)
    batch, heads_q, seqlen_q, head_dim = sizes(q)
    batch_k, heads_kv, seqlen_k, head_dim_k = sizes(k)
    if batch_k != batch:
        raise ValueError(f"k: expected batch {batch} (as q), got {batch_k}")
    if head_dim_k != head_dim:
        raise ValueError(f"k, v: expected head_dim {head_dim} (as q), got {head_dim_k}")
    if heads_kv == 0 or heads_q % heads_kv != 0:
        raise ValueError(
            f"k, v: heads_q ({heads_q}) must be a multiple of heads_kv ({heads_kv}) for MQA/GQA"
        )
    if head_dim < min_head_dim or (max_head_dim is not None and head_dim > max_head_dim):
        raise ValueError(
            f"q: head_dim must be in [{min_head_dim}, {max_head_dim}], got {head_dim}"
        )
    return batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim


def check_kernel_qkv(q, k, v, *, packed=False):
    """:func:`check_qkv` with the attention kernels' limits (float32/16, bfloat16; head_dim
    8..256): the one check of :func:`kernels.flash_attention`, its varlen, decoding and ring
    forms. Returns what :func:`check_qkv` returns."""
    return check_qkv(q, k, v, dtypes=KERNEL_DTYPES, min_head_dim=MIN_HEAD_DIM,
                     max_head_dim=MAX_HEAD_DIM, packed=packed)


def check_packed_qkv(q, k, v):
    """Check the packed layout ``(total, heads, head_dim)``; returns ``(heads_q, heads_kv, head_dim)``."""
    _, heads_q, heads_kv, _, _, head_dim = check_kernel_qkv(q, k, v, packed=True)
    return heads_q, heads_kv, head_dim


def check_cu_seqlens(cu_seqlens, name: str, total: int, max_seqlen, max_name: str, device,
                     offsets: list[int] | None = None) -> None:
    """``cu_seqlens``: int32, 1-D, on ``device``; ``max_seqlen`` an int. With ``offsets`` (the
    tensor's values, fetched by the caller: a host sync) also: starting at 0, non-decreasing,
    ending at ``total``, no length above ``max_seqlen``."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor of int32, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype != torch.int32:
        raise TypeError(f"{name}: expected dtype int32, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"{name}: expected a 1-D tensor of length batch + 1 >= 2, got shape "
                         f"{tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != device:
        raise ValueError(f"{name}: expected it on {device} (as q), got {cu_seqlens.device}")
    if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int):
        raise TypeError(f"{max_name}: expected an int, got {type(max_seqlen).__name__}")
    if offsets is None:
        return
    if offsets[0] != 0:
        raise ValueError(f"{name}: expected to start at 0, got {offsets[0]}")
    lengths = [b - a for a, b in zip(offsets[:-1], offsets[1:])]
    if min(lengths) < 0:
        raise ValueError(f"{name}: expected non-decreasing offsets, got {offsets}")
    if offsets[-1] != total:
        raise ValueError(f"{name}: last entry must be the total number of tokens ({total}), "
                         f"got {offsets[-1]}")
    if max_seqlen < max(lengths):
        raise ValueError(f"{max_name}: {max_seqlen} is smaller than the longest sequence ({max(lengths)})")


def check_scale_named(scale, head_dim: int, name: str) -> float:
    """:func:`check_scale` for an argument called ``name`` (linear attention's ``scale`` multiplies
    ``q . k`` without any softmax): the same rule, the message naming the right argument."""
    try:
        return check_scale(scale, head_dim)
    except (TypeError, ValueError) as e:
        raise type(e)(str(e).replace("softmax_scale", name, 1)) from None


def check_feature_map(feature_map, choices: tuple) -> None:
    """``feature_map`` must be one of ``choices`` (``None`` may be one of them)."""
    if feature_map not in choices:
        names = ", ".join(repr(c) for c in choices)
        raise ValueError(f"feature_map: expected one of {names}, got {feature_map!r}")


def check_chunk_size(chunk_size, *, minimum: int = 16, maximum: int = 128) -> int:
    """A chunk of the linear-attention kernel: a power of two in ``[minimum, maximum]`` (``tl.dot``
    needs every side >= 16; the ``chunk x chunk`` score tile must fit in registers)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"chunk_size: expected an int or None, got {type(chunk_size).__name__} "
                        f"{chunk_size!r}")
    if chunk_size < minimum or chunk_size > maximum or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two in [{minimum}, {maximum}], got {chunk_size}")
    return chunk_size


def check_decay(decay, heads: int, device, dtype=torch.float32):
    """A per-head decay in ``(0, 1]``: ``None`` (no decay), a Python number (the same for every
    head) or a floating tensor of shape ``(heads,)`` on ``device``. Returns ``None`` or a
    ``(heads,)`` tensor in ``dtype`` (checking a tensor's values costs one host sync)."""
    if decay is None:
        return None
    if isinstance(decay, bool) or not isinstance(decay, (int, float, torch.Tensor)):
        raise TypeError(f"decay: expected None, a float or a tensor of shape (heads,), got "
                        f"{type(decay).__name__}")
    if isinstance(decay, torch.Tensor):
        if not decay.is_floating_point():
            raise TypeError(f"decay: expected a floating tensor, got {decay.dtype}")
        if tuple(decay.shape) != (heads,):
            raise ValueError(f"decay: expected shape ({heads},), one value per head, got "
                             f"{tuple(decay.shape)}")
        if decay.device != torch.device(device):
            raise ValueError(f"decay: expected it on {device} (as q), got {decay.device}")
        lo, hi = decay.detach().aminmax() if heads else (torch.ones(()), torch.ones(()))
        lo, hi = lo.item(), hi.item()
    else:
        lo = hi = float(decay)
        decay = torch.full((heads,), lo, device=device, dtype=dtype)  # 0.9 stays 0.9 in float64
    if not (0.0 < lo and hi <= 1.0):  # also False for nan
        raise ValueError(f"decay: expected values in (0, 1] (1 = no decay), got values in [{lo}, {hi}]")
    return decay.to(dtype)


def check_varlen_offsets(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                         values: bool = True):
    """The packed entry points' ``cu_seqlens`` (see :func:`check_cu_seqlens`). With ``values``
    also their values, fetched in one device-to-host copy: returns ``(offsets_q, offsets_k)`` as
    lists, or ``None`` without ``values``."""
    named = [(cu_seqlens_q, "cu_seqlens_q", q.shape[0], max_seqlen_q, "max_seqlen_q"),
             (cu_seqlens_k, "cu_seqlens_k", k.shape[0], max_seqlen_k, "max_seqlen_k")]
    for cu_args in named:
        check_cu_seqlens(*cu_args, q.device)
    offsets = None
    if values:
        both = torch.cat([cu_seqlens_q, cu_seqlens_k]).tolist()
        n = cu_seqlens_q.numel()
        offsets = both[:n], both[n:]
        for cu_args, values_of in zip(named, offsets):
            check_cu_seqlens(*cu_args, q.device, offsets=values_of)
    if cu_seqlens_q.numel() != cu_seqlens_k.numel():
        raise ValueError(f"cu_seqlens_k: expected {cu_seqlens_q.numel()} entries (as cu_seqlens_q), "
                         f"got {cu_seqlens_k.numel()}")
    return offsets


def check_num_splits(num_splits) -> None:
    """``num_splits`` of the decoding entry points: None (pick from the shape) or an int >= 1."""
    if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                   or num_splits < 1):
        raise ValueError(f"num_splits: expected None or an int >= 1, got {num_splits!r}")


def check_cache_seqlens(cache_seqlens, batch: int, max_len: int, device, *, values: bool = True):
    """``cache_seqlens``: an int32 ``(batch,)`` tensor on ``device``; with ``values`` (one
    device-to-host copy) each in ``[0, max_len]``, returned as a list (else ``None``)."""
    if not isinstance(cache_seqlens, torch.Tensor):
        raise TypeError(f"cache_seqlens: expected an int32 tensor, got {type(cache_seqlens).__name__}")
    if cache_seqlens.dtype != torch.int32:
        raise TypeError(f"cache_seqlens: expected dtype int32, got {cache_seqlens.dtype}")
    if cache_seqlens.shape != (batch,):
        raise ValueError(f"cache_seqlens: expected shape ({batch},), got {tuple(cache_seqlens.shape)}")
    if cache_seqlens.device != device:
        raise ValueError(f"cache_seqlens: expected it on {device} (as q), got {cache_seqlens.device}")
    if not values:
        return None
    lengths = cache_seqlens.tolist()
    if batch and (min(lengths) < 0 or max(lengths) > max_len):
        raise ValueError(f"cache_seqlens: expected values in [0, {max_len}], got {lengths}")
    return lengths
