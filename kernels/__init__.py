"""FlashAttention from first principles: Triton kernels, their plain-PyTorch twin, references.

``import kernels`` picks the implementation behind ``flash_attention``, ``flash_attention_varlen``,
``flash_decode``, ``ring_attention`` and ``linear_attention`` (``kernels.IMPLEMENTATION``):

* ``"triton"`` where Triton is installed (Linux). A machine with CUDA compiles the kernels for the
  GPU (pass CUDA tensors); a machine without CUDA runs them through Triton's interpreter
  (``TRITON_INTERPRET=1``) on CPU tensors, exact but slow. ``kernels.INTERPRET`` says which.
* ``"torch"`` without Triton (macOS, Windows, or a Linux without it): the same names are the
  plain-PyTorch twin (``kernels/flash_torch.py``: the same tiled algorithm, the same arguments,
  semantics and error messages) and, for ``linear_attention``, its parallel form. One line on
  stderr says so at import.

The twin is always there under its own names (``flash_attention_torch`` & co.).

To force the interpreter or compilation, set ``TRITON_INTERPRET`` yourself before the first
``import kernels`` (or ``triton``): ``1`` interprets even where a GPU exists, ``0`` always
compiles. Triton reads it once per process; it cannot be switched back afterwards.
"""

import os
import sys
import warnings

from ._platform import triton_installed

_NOTICE_SHOWN = "KERNELS_TWIN_NOTICE_SHOWN"  # set once the no-Triton line is printed

if triton_installed() and "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        if "triton" in sys.modules:
            warnings.warn(
                "triton was imported before kernels on a machine without CUDA, so the interpreter "
                "could not be switched on; set TRITON_INTERPRET=1 before importing triton.",
                stacklevel=2,
            )
        os.environ["TRITON_INTERPRET"] = "1"

from . import iocost  # noqa: E402,F401  (pure NumPy: the IO-cost model)
from ._checks import (  # noqa: E402,F401
    HAS_TRITON,
    IMPLEMENTATION,  # "triton" or "torch": what flash_attention & co. run on
    INTERPRET,  # True when the kernels run through Triton's CPU interpreter
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    implementation,  # the same in words, for a notebook's first line
)
from .flash_torch import flash_attention_torch, flash_attention_varlen_torch, flash_decode_torch  # noqa: E402
from .fp8 import flash_attention_fp8, quantize_fp8  # noqa: E402  (the kernel, or without Triton the twin)
from .linear_attn import (  # noqa: E402  (the kernel, or without Triton its parallel form)
    linear_attention,
    linear_attention_parallel,
    linear_attention_recurrent,
    linear_attention_step,
)
from .reference import attention_mask, attention_reference, attention_varlen_reference, rel_err  # noqa: E402
from .ring import ring_attention, ring_attention_allgather  # noqa: E402  (on either implementation)

if HAS_TRITON:
    from .decode import flash_decode
    from .flash_attn import flash_attention
    from .varlen import flash_attention_varlen
else:  # macOS / Windows: Triton ships Linux wheels only
    flash_attention = flash_attention_torch
    flash_attention_varlen = flash_attention_varlen_torch
    flash_decode = flash_decode_torch
    if not os.environ.get(_NOTICE_SHOWN):  # once: not again in the processes this one starts
        os.environ[_NOTICE_SHOWN] = "1"
        print("kernels: Triton is not installed, so flash_attention & co. run the plain-PyTorch twin "
              "(kernels/flash_torch.py): same results, slower; notebooks say where they differ.",
              file=sys.stderr)

__all__ = [
    "HAS_TRITON",
    "IMPLEMENTATION",
    "INTERPRET",
    "attention_mask",
    "attention_reference",
    "attention_varlen_reference",
    "flash_attention",
    "flash_attention_fp8",
    "flash_attention_torch",
    "flash_attention_varlen",
    "flash_attention_varlen_torch",
    "flash_decode",
    "flash_decode_torch",
    "implementation",
    "linear_attention",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_step",
    "quantize_fp8",
    "rel_err",
    "ring_attention",
    "ring_attention_allgather",
]
