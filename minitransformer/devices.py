"""Where the model runs and through which attention: the device, the backend and the precision,
chosen in one place for ``train.py`` and ``sample.py``.

The backends compute the same function, so the choice changes the speed, never the model.
``auto`` means: CUDA if there is a GPU, and the ``flash`` backend: on CUDA the Triton kernel in
bf16 autocast, on a CPU its plain-PyTorch twin in fp32 (``model.flash_for``). The one exception is
linear attention on a CPU: its chunked kernel exists only in Triton, whose interpreter is about 100
times too slow to train with, so ``auto`` trains it through the reference (the parallel form).
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


def pick_backend(name: str, device: torch.device, attention: str = "softmax") -> str:
    """The attention backend ``--backend name`` asks for on ``device`` (``auto``: flash, but the
    reference for linear attention on a CPU); ``ValueError`` if it cannot run there."""
    if name == "auto":
        return "flash" if device.type == "cuda" or attention == "softmax" else "reference"
    if name not in BACKENDS:
        raise ValueError(f"--backend {name}: unknown backend; choose auto, {', '.join(BACKENDS)}")
    if name == "flash" and not flash_runs_on(device, attention):
        raise ValueError(f"--backend flash on {device}: linear attention's chunked kernel is compiled "
                         "for the GPU on this machine; use --device cuda, or set TRITON_INTERPRET=1 "
                         "to interpret it on the CPU")
    return name


def flash_runs_on(device: torch.device, attention: str = "softmax") -> bool:
    """The ``flash`` backend can run here: softmax attention anywhere (the Triton kernel on CUDA,
    the twin elsewhere); linear attention where its Triton kernel runs (compiled on CUDA tensors,
    interpreted where kernels chose that) or, without Triton, through its parallel form."""
    return (attention == "softmax" or device.type == "cuda" or kernels.INTERPRET
            or not kernels.HAS_TRITON)


def flash_implementation(device: torch.device, attention: str = "softmax") -> str:
    """Words for what the ``flash`` backend runs on ``device``, for the training log."""
    if attention == "linear":
        if not kernels.HAS_TRITON:
            return "the parallel form (Triton is not installed)"
        return "the chunked Triton kernel" + ("" if device.type == "cuda" else ", interpreted")
    if device.type == "cuda" and kernels.HAS_TRITON:
        return "the Triton kernel"
    return "the plain-PyTorch twin of the kernel"


def autocast_for(device: torch.device):
    """bf16 autocast on a GPU (the kernel runs in bf16 there); plain fp32 on a CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
