"""Bad input raises ValueError/TypeError naming the argument, before any kernel launches."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import DEVICE

from kernels import (
    attention_reference,
    flash_attention,
    flash_attention_varlen,
    flash_decode,
    ring_attention,
    ring_attention_allgather,
)


def t(*shape, dtype=torch.float32, device=DEVICE):
    return torch.randn(*shape, device=device).to(dtype)


GOOD = lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16))  # noqa: E731

CASES = {  # id: (q, k, v, kwargs, exception, message pattern)
    "rank": (lambda: (t(4, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, ValueError, r"q: expected 4 dimensions"),
    "batch": (lambda: (t(2, 4, 8, 16), t(3, 2, 8, 16), t(3, 2, 8, 16)), {}, ValueError, r"k: expected batch 2"),
    "head_dim": (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 32), t(2, 2, 8, 32)), {}, ValueError, r"head_dim 16"),
    "k_v_shapes": (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16), t(2, 2, 9, 16)), {}, ValueError, r"k, v: expected the same shape"),
    "gqa_ratio": (lambda: (t(2, 3, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, ValueError, r"multiple of heads_kv"),
    "mixed_dtypes": (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16, dtype=torch.bfloat16), t(2, 2, 8, 16)), {}, TypeError, r"one dtype"),
    "integer": (lambda: (t(2, 4, 8, 16).long(), t(2, 2, 8, 16).long(), t(2, 2, 8, 16).long()), {}, TypeError, r"q: expected a floating dtype"),
    "float64_kernel": (lambda: (t(2, 4, 8, 16).double(), t(2, 2, 8, 16).double(), t(2, 2, 8, 16).double()), {}, TypeError, r"q: expected a floating dtype \(float32, float16, bfloat16\)"),
    "not_tensor": (lambda: (t(2, 4, 8, 16).tolist(), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, TypeError, r"q: expected a torch.Tensor"),
    "head_dim_small": (lambda: (t(1, 1, 8, 4), t(1, 1, 8, 4), t(1, 1, 8, 4)), {}, ValueError, r"head_dim must be in \[8, 256\]"),
    "head_dim_large": (lambda: (t(1, 1, 8, 264), t(1, 1, 8, 264), t(1, 1, 8, 264)), {}, ValueError, r"head_dim must be in \[8, 256\]"),
    "window_type": (GOOD, {"window_size": 4}, TypeError, r"window_size: expected a pair"),
    "window_value": (GOOD, {"window_size": (-2, 3)}, ValueError, r"window_size\[0\] \(left\)"),
    "window_float": (GOOD, {"window_size": (2.5, 3)}, TypeError, r"window_size\[0\] \(left\): expected an int"),
    "causal_str": (GOOD, {"causal": "no"}, TypeError, r"causal: expected True or False, got str 'no'"),
    "causal_int": (GOOD, {"causal": 1}, TypeError, r"causal: expected True or False"),
    "meta": (lambda: (t(2, 4, 8, 16, device="meta"), t(2, 2, 8, 16, device="meta"), t(2, 2, 8, 16, device="meta")), {}, ValueError, r"q: a tensor on the meta device"),
    "scale": (GOOD, {"softmax_scale": -1.0}, ValueError, r"softmax_scale: expected a finite positive"),
    "scale_type": (GOOD, {"softmax_scale": "0.1"}, TypeError, r"softmax_scale: expected a float"),
}
if DEVICE == "cuda":
    CASES["devices"] = (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16, device="cpu"), t(2, 2, 8, 16)), {}, ValueError, r"one device")


# The reference is the float64 oracle: it accepts float64 and any head_dim, so these rules are
# the kernel's alone.
KERNEL_ONLY = {"float64_kernel", "head_dim_small", "head_dim_large"}
PAIRS = [(case, "flash") for case in CASES] + [(case, "reference") for case in CASES
                                                 if case not in KERNEL_ONLY]


@pytest.mark.parametrize("case,fn", PAIRS, ids=[f"{c}-{f}" for c, f in PAIRS])
def test_bad_input(case, fn):
    make, kwargs, exc, pattern = CASES[case]
    fn = flash_attention if fn == "flash" else attention_reference
    with pytest.raises(exc, match=pattern):
        fn(*make(), **kwargs)


def test_message_is_one_clear_line():
    with pytest.raises(ValueError) as info:
        flash_attention(t(2, 3, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16))
    message = str(info.value)
    assert "\n" not in message and re.search(r"heads_q \(3\).*heads_kv \(2\)", message)


def test_causal_must_be_a_bool_everywhere():
    """``causal="no"`` was truthy and silently masked; every entry point now names it."""
    q, k, v = GOOD()
    cu = torch.tensor([0, 8], dtype=torch.int32, device=DEVICE)
    packed = [x[0].transpose(0, 1).contiguous() for x in (q, k, v)]  # (8, heads, 16)
    calls = {
        "varlen": lambda: flash_attention_varlen(*packed, cu, cu, 8, 8, causal="no"),
        "decode": lambda: flash_decode(q[:, :, :1], k, v, torch.full((2,), 8, dtype=torch.int32,
                                                                      device=DEVICE), causal="no"),
        "ring": lambda: ring_attention(q, k, v, causal="no"),  # before any process group is needed
        "ring_allgather": lambda: ring_attention_allgather(q, k, v, causal="no"),
    }
    for name, call in calls.items():  # noqa: B007  (the name shows in a failure)
        with pytest.raises(TypeError, match=r"causal: expected True or False"):
            call()


@pytest.mark.parametrize("fn", [flash_attention, attention_reference], ids=["flash", "reference"])
def test_numpy_scalars_are_accepted(fn):
    """A numpy float32 ``softmax_scale`` and numpy integers in ``window_size`` were rejected
    while a numpy float64 passed: any real scalar is accepted, with the same result."""
    q, k, v = GOOD()
    want = fn(q, k, v, softmax_scale=0.3, window_size=(3, 1))
    for scale in (np.float32(0.3), np.float64(0.3)):
        got = fn(q, k, v, softmax_scale=scale, window_size=(np.int64(3), np.int32(1)))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
