"""`import kernels` picks compiled Triton or the interpreter by itself, before any kernel exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PROBE = "import os, kernels; print(kernels.INTERPRET, os.environ.get('TRITON_INTERPRET'))"


def run_probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if env_value is not None:
        env["TRITON_INTERPRET"] = env_value
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                            check=True, timeout=120)
    return result.stdout.split()


def test_automatic_choice():
    interpret, variable = run_probe(None)
    if torch.cuda.is_available():
        assert (interpret, variable) == ("False", "None")
    else:
        assert (interpret, variable) == ("True", "1")


def test_forced_interpreter():
    assert run_probe("1") == ["True", "1"]


def test_flash_attention_runs_after_plain_import():
    """The README's example: no environment set up, CPU tensors on a CPU-only machine."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    code = (
        "import torch, kernels\n"
        f"q = torch.randn(1, 2, 9, 16, device='{device}')\n"
        "out = kernels.flash_attention(q, q, q, causal=True)\n"
        "ref = kernels.attention_reference(q, q, q, causal=True)\n"
        "assert (out - ref).abs().max() < 1e-4, (out - ref).abs().max()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
