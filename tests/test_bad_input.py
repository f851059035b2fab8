"""Bad input raises ValueError/TypeError naming the argument, before any kernel launches."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import DEVICE

from kernels import attention_reference, flash_attention


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
    "window_causal": (GOOD, {"causal": True, "window_size": (4, 2)}, ValueError, r"window_size\[1\] \(right\): causal=True"),
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
