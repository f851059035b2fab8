"""Where the model runs and through which attention: the device, the backend and the precision,
chosen in one place for ``train.py`` and ``sample.py``.

The backends compute the same function, so the choice changes the speed, never the model.
``auto`` means: CUDA if there is a GPU; on it the flash kernel in bf16 autocast, and on a CPU the
reference in fp32, because the kernel runs there in Triton's interpreter, about 100 times slower.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

import kernels

from .model import BACKENDS


def pick_device(name: str) -> torch.device:
    """The device ``--device name`` asks for (``auto``: cuda if available); ``ValueError`` if it
    is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: only cpu and cuda are supported")
    return device


def pick_backend(name: str, device: torch.device) -> str:
    """The attention backend ``--backend name`` asks for on ``device`` (``auto``: flash on CUDA,
    reference on a CPU); ``ValueError`` if it cannot run there."""
    if name == "auto":  # the interpreted kernel is exact but far too slow to train on a CPU
        return "flash" if device.type == "cuda" else "reference"
    if name not in BACKENDS:
        raise ValueError(f"--backend {name}: unknown backend; choose auto, {', '.join(BACKENDS)}")
    if name == "flash" and not kernel_runs_on(device):
        raise ValueError(f"--backend flash on {device}: this machine compiles Triton for its GPU; "
                         "use --device cuda, or set TRITON_INTERPRET=1 to interpret on the CPU")
    return name


def kernel_runs_on(device: torch.device) -> bool:
    """The Triton kernel runs compiled on CUDA tensors, or interpreted where kernels chose that."""
    return device.type == "cuda" or kernels.INTERPRET


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU (the kernel runs in bf16 there); plain fp32 on a CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
