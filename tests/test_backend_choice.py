"""`import kernels` picks compiled Triton or the interpreter by itself, before any kernel exists."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import needs_triton

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


@needs_triton
def test_automatic_choice():
    interpret, variable = run_probe(None)
    if torch.cuda.is_available():
        assert (interpret, variable) == ("False", "None")
    else:
        assert (interpret, variable) == ("True", "1")


@needs_triton
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


def test_interpreter_problem_names_the_versions():
    """Triton 3.6's interpreter fails on the kernels' loops with numpy >= 2.4 (fixed in 3.7)."""
    from kernels._checks import interpreter_problem

    message = interpreter_problem("3.6.0", "2.5.2")
    assert "Triton 3.6.0" in message and "numpy 2.5.2" in message and "triton>=3.7" in message
    for versions in [("3.7.1", "2.5.2"), ("3.6.0", "2.3.5"), ("3.10.0", "2.4.0"), ("3.6.0+git1a2b", "1.26.4")]:
        assert interpreter_problem(*versions) is None, versions


@needs_triton
def test_broken_interpreter_is_a_clear_error(monkeypatch):
    """Where the interpreter cannot run, a kernel call says why instead of failing mid-launch."""
    import kernels
    from kernels import _checks

    # what the GPU image's versions give where the interpreter is in force
    monkeypatch.setattr(_checks, "INTERPRET", True)
    monkeypatch.setattr(_checks, "INTERPRETER_PROBLEM", _checks.interpreter_problem("3.6.0", "2.5.2"))
    q = torch.randn(1, 2, 9, 16)
    calls = {
        "flash_attention": lambda: kernels.flash_attention(q, q, q),
        "flash_decode": lambda: kernels.flash_decode(q[:, :, :1], q, q, torch.tensor([9], dtype=torch.int32)),
        "flash_attention_varlen": lambda: kernels.flash_attention_varlen(
            q[0].transpose(0, 1), q[0].transpose(0, 1), q[0].transpose(0, 1),
            torch.tensor([0, 9], dtype=torch.int32), torch.tensor([0, 9], dtype=torch.int32), 9, 9),
        "linear_attention": lambda: kernels.linear_attention(q, q, q),
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=r"Triton 3\.6\.0's interpreter cannot run these kernels"):
            call()
        print(f"{name}: RuntimeError")
