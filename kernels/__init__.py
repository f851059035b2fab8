"""FlashAttention from first principles: Triton kernels and their plain references.

``import kernels`` picks how Triton runs, before any kernel is defined:

* a machine with CUDA compiles the kernels for the GPU (pass CUDA tensors);
* a machine without CUDA runs them through Triton's interpreter (``TRITON_INTERPRET=1``) on CPU
  tensors, so every notebook and test works on a laptop, only slower.

To force either, set the variable yourself before the first ``import kernels`` (or ``triton``):
``TRITON_INTERPRET=1`` interprets even where a GPU exists, ``TRITON_INTERPRET=0`` always compiles.
Triton reads it once per process; it cannot be switched back afterwards.
"""

import os
import sys
import warnings

if "TRITON_INTERPRET" not in os.environ:
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
from ._checks import (  # noqa: E402,F401  (the head dims the kernels take)
    INTERPRET,  # noqa: E402  (True when the kernels run through Triton's CPU interpreter)
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
)
from .flash_torch import flash_attention_torch, flash_attention_varlen_torch, flash_decode_torch  # noqa: E402
from .reference import attention_mask, attention_reference, attention_varlen_reference, rel_err  # noqa: E402

try:
    import triton  # noqa: F401
except ImportError:  # macOS / Windows: Triton ships Linux wheels only
    def _needs_triton(*args, **kwargs):
        raise ImportError(
            "kernels: Triton is not installed (it publishes Linux wheels only). The references "
            "(kernels.attention_reference, ...) and the IO model (kernels.iocost) work without it."
        )

    flash_attention = flash_attention_varlen = flash_decode = _needs_triton
    ring_attention = ring_attention_allgather = _needs_triton
    linear_attention = _needs_triton
    # linear attention's plain-PyTorch forms need no Triton (linear_attn imports it optionally)
    from .linear_attn import (
        linear_attention_parallel,
        linear_attention_recurrent,
        linear_attention_step,
    )
else:
    from .decode import flash_decode
    from .flash_attn import flash_attention
    from .linear_attn import (
        linear_attention,
        linear_attention_parallel,
        linear_attention_recurrent,
        linear_attention_step,
    )
    from .ring import ring_attention, ring_attention_allgather
    from .varlen import flash_attention_varlen

__all__ = [
    "INTERPRET",
    "attention_mask",
    "attention_reference",
    "attention_varlen_reference",
    "flash_attention",
    "flash_attention_torch",
    "flash_attention_varlen",
    "flash_attention_varlen_torch",
    "flash_decode",
    "flash_decode_torch",
    "linear_attention",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_step",
    "rel_err",
    "ring_attention",
    "ring_attention_allgather",
]
