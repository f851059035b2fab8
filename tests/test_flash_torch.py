"""The plain-PyTorch FlashAttention-2 (kernels/flash_torch.py) against the float64 reference, the
Triton kernel, and its own promises: O(N) memory, block skipping, the kernel's error messages.

The twin runs natively (no interpreter), so it is tested on more shapes than the Triton kernels
on a CPU: every dtype, two tile shapes, forward and every gradient, including the gradient that
flows through ``lse``. Errors follow ``conftest.assert_close``'s three-way rule.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from conftest import DEVICE, assert_attention_results, assert_close, dtype_id, make_qkv, rel_err
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from kernels import attention_reference, attention_varlen_reference
from kernels.flash_torch import flash_attention_torch, flash_attention_varlen_torch, flash_decode_torch

TWIN_DTYPES = [torch.float32, torch.float16, torch.bfloat16]  # natively on CPU: all three
MASKS = {  # name: (causal, window_size)
    "full": (False, (-1, -1)),
    "causal": (True, (-1, -1)),
    "window": (False, (9, 4)),
    "causal-window": (True, (21, 0)),
    "causal-window-right": (True, (21, 5)),  # causal folds right = 0 whatever is passed
    "diagonal": (False, (0, 0)),  # one key per row; with seqlen_q > seqlen_k many rows see none
}
# (seqlen_q, seqlen_k): 1, primes, not multiples of either tile, q != k both ways.
LENGTHS = [(1, 1), (17, 17), (63, 63), (111, 111), (130, 130), (1, 63), (17, 130), (130, 17),
           (111, 63)]
BLOCKS = {"64x64": (64, 64), "16x32": (16, 32)}  # the default, and one with many edge tiles
HAS_TRITON = importlib.util.find_spec("triton") is not None


def run_case(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype, causal, window,
             blocks=(64, 64), softmax_scale=None):
    """Forward + backward of the twin, of the float64 reference and of the reference in
    ``dtype``, with random upstream gradients for ``out`` and for ``lse``; asserts on out, lse,
    dq, dk, dv."""
    q, k, v = make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype)
    kwargs = dict(causal=causal, window_size=window, softmax_scale=softmax_scale, return_lse=True)
    block_m, block_n = blocks
    twin = lambda *a, **kw: flash_attention_torch(*a, block_m=block_m, block_n=block_n, **kw)  # noqa: E731
    do = torch.randn(q.shape, device=DEVICE)
    dlse = torch.randn(q.shape[:3], device=DEVICE)
    results = {}
    for name, fn, cast in (("twin", twin, None), ("ref64", attention_reference, torch.float64),
                           ("lowp", attention_reference, None)):
        qi, ki, vi = (x.detach().to(cast or dtype).requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, **kwargs)
        torch.autograd.backward([out, lse], [do.to(out.dtype), dlse.to(lse.dtype)])
        results[name] = dict(out=out, lse=lse, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    assert_attention_results(results["twin"], results["ref64"], results["lowp"], dtype)
    return results


@pytest.mark.parametrize("blocks", list(BLOCKS))
@pytest.mark.parametrize("dtype", TWIN_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("seqlens", LENGTHS, ids=lambda s: f"q{s[0]}-k{s[1]}")
def test_lengths_and_masks(seqlens, mask, dtype, blocks):
    """Out, lse and all gradients (through out and lse) on awkward lengths and every mask, GQA
    4:2, with the default tile and a small one (more blocks cut by the band, skipped, ragged)."""
    causal, window = MASKS[mask]
    run_case(2, 4, 2, *seqlens, 40, dtype, causal, window, blocks=BLOCKS[blocks])


@pytest.mark.parametrize("dtype", TWIN_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1)], ids=lambda h: f"hq{h[0]}-hkv{h[1]}")
@pytest.mark.parametrize("head_dim", [16, 40, 64, 100, 128])
def test_head_dims_and_gqa(head_dim, heads, dtype):
    """Head dims that are and are not powers of two; MHA, GQA 4:2 and MQA 4:1 (dk, dv summed
    over the group)."""
    run_case(1, *heads, 50, 70, head_dim, dtype, causal=True, window=(-1, -1), blocks=(32, 16))


def test_custom_scale():
    run_case(1, 2, 1, 33, 47, 24, torch.float32, causal=False, window=(5, 7), softmax_scale=0.7)


def test_rows_with_no_key_are_zero_with_zero_gradients():
    """A window (0, 0) with 40 queries and 8 keys leaves the first 32 rows without a key: out 0,
    lse -inf, and finite gradients that are exactly zero for those rows (the m_safe guard and the
    lse = +inf trick of the backward; without them: nan)."""
    q, k, v = make_qkv(1, 2, 1, 40, 8, 16, torch.float32)
    out, lse = flash_attention_torch(q, k, v, window_size=(0, 0), return_lse=True, block_m=16,
                                     block_n=16)
    (out.sum() + lse[..., 32:].sum()).backward()
    assert not out[..., :32, :].any() and torch.isneginf(lse[..., :32]).all()
    assert torch.isfinite(lse[..., 32:]).all()
    for g in (q.grad, k.grad, v.grad):
        assert torch.isfinite(g).all()
    assert not q.grad[..., :32, :].any()


def test_empty_key_sequence():
    """seqlen_k = 0: every row is empty; out 0, lse -inf, gradients zero (and empty for k, v)."""
    q, k, v = make_qkv(1, 2, 2, 5, 0, 16, torch.float32)
    out, lse = flash_attention_torch(q, k, v, return_lse=True)
    out.sum().backward()
    assert not out.any() and torch.isneginf(lse).all()
    assert torch.equal(q.grad, torch.zeros_like(q)) and k.grad.shape == k.shape


def test_gradient_through_lse_only():
    """A loss on lse alone: out gets no gradient (autograd passes None, the backward uses zeros);
    lse does not depend on v, so dv is exactly 0, and dq, dk match the reference."""
    q, k, v = make_qkv(1, 2, 1, 37, 45, 32, torch.float32)
    grads = []
    for fn, dt in ((flash_attention_torch, torch.float32), (attention_reference, torch.float64)):
        qi, ki, vi = (x.detach().to(dt).requires_grad_() for x in (q, k, v))
        _, lse = fn(qi, ki, vi, causal=True, return_lse=True)
        lse.sin().sum().backward()
        grads.append((qi.grad, ki.grad, vi.grad))
    (dq, dk, dv), (rq, rk, rv) = grads
    assert rv is None and not dv.any()
    assert_close("dq", dq, rq, rq.float(), torch.float32)
    assert_close("dk", dk, rk, rk.float(), torch.float32)


def test_non_contiguous_inputs():
    """Inputs in (batch, seqlen, heads, head_dim) memory order, viewed as (b, h, n, d)."""
    q, k, v = (torch.randn(2, n, 4, 24).transpose(1, 2).requires_grad_() for n in (19, 29, 29))
    q.retain_grad()
    out = flash_attention_torch(q, k, v, causal=True, block_m=8, block_n=8)
    ref = attention_reference(q.double(), k.double(), v.double(), causal=True)
    assert_close("out", out, ref, attention_reference(q, k, v, causal=True), torch.float32)


# --------------------------------------------------------------------------------------------
# Block skipping, counted
# --------------------------------------------------------------------------------------------
class OpCount(TorchDispatchMode):
    """Counts the aten operators that run, by name."""

    def __init__(self):
        super().__init__()
        self.counts = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mask,tiles,masked", [("full", 16, 0), ("causal", 10, 4),
                                               ("window", 7, 7)])
def test_forward_skips_blocks_outside_the_band(mask, tiles, masked):
    """256 queries and keys in 64 x 64 tiles (4 x 4): full attention visits all 16 tiles without
    a mask; causal visits the 10 on or below the diagonal and masks only the 4 diagonal ones; a
    window (40, 0) visits the diagonal and the tile left of it, and masks them all. Two tile
    matmuls (QK^T, PV) per visited tile, one masked_fill per masked one."""
    causal, window = {"full": (False, (-1, -1)), "causal": (True, (-1, -1)),
                      "window": (False, (40, 0))}[mask]
    q, k, v = make_qkv(1, 1, 1, 256, 256, 16, torch.float32, requires_grad=False)
    with OpCount() as ops:
        flash_attention_torch(q, k, v, causal=causal, window_size=window)
    matmuls = sum(ops.counts.get(n, 0) for n in ("bmm", "mm", "matmul"))
    assert matmuls == 2 * tiles, ops.counts
    assert ops.counts.get("masked_fill", 0) == masked, ops.counts


# --------------------------------------------------------------------------------------------
# Memory: O(N), measured
# --------------------------------------------------------------------------------------------
class LiveMemory(TorchDispatchMode):
    """The bytes held, live, by the tensors that operators return: a new storage counts from its
    op until its tensor is freed. Keeps the peak and the largest single tensor (in elements).
    Like notebook 01's AllocationLog, it sees what operators return (not their scratch space)."""

    def __init__(self):
        super().__init__()
        self.live = {}  # storage address -> bytes
        self.peak = 0
        self.largest = 0

    def _free(self, ptr):
        self.live.pop(ptr, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t._is_view():
                continue
            storage = t.untyped_storage()
            ptr, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or ptr in self.live:  # in-place ops return their input
                continue
            self.live[ptr] = size
            weakref.finalize(t, self._free, ptr)
            self.peak = max(self.peak, sum(self.live.values()))
            self.largest = max(self.largest, t.numel())
        return out


def peak_memory(fn, seqlen, head_dim=64):
    """(peak live bytes, largest tensor in elements) of one forward + backward of ``fn``."""
    q, k, v = (torch.randn(1, 1, seqlen, head_dim, requires_grad=True) for _ in range(3))
    do = torch.randn(1, 1, seqlen, head_dim)
    with LiveMemory() as mem:
        fn(q, k, v).backward(do)
    return mem.peak, mem.largest


def test_memory_is_linear_in_seqlen():
    """FlashAttention's claim, measured: forward + backward of the twin at N = 512 and 2048 (one
    head, d = 64) holds 4x the memory at 4x the length (the reference: ~16x, its N x N scores and
    probabilities), and no tensor of N x N elements ever exists in the twin."""
    small, large = 512, 2048
    twin = [peak_memory(flash_attention_torch, n) for n in (small, large)]
    ref = [peak_memory(attention_reference, n) for n in (small, large)]
    twin_ratio, ref_ratio = twin[1][0] / twin[0][0], ref[1][0] / ref[0][0]
    print(f"peak bytes: twin {twin[0][0]:,} -> {twin[1][0]:,} (x{twin_ratio:.2f}), "
          f"reference {ref[0][0]:,} -> {ref[1][0]:,} (x{ref_ratio:.2f})")
    assert ref[1][1] >= large * large  # the instrument sees the reference's N x N matrices
    assert ref_ratio > 12
    assert 3 < twin_ratio < 6
    for n, (_, largest) in zip((small, large), twin):
        assert largest < n * n, f"N={n}: a tensor of {largest} elements"


# --------------------------------------------------------------------------------------------
# The twin and the Triton kernel agree
# --------------------------------------------------------------------------------------------
TWIN_VS_KERNEL = {  # id: (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype, causal, window)
    "full-fp32": (1, 2, 1, 37, 45, 32, torch.float32, False, (-1, -1)),
    "causal-window-gqa-fp32": (2, 4, 2, 45, 29, 16, torch.float32, True, (11, 0)),
    "causal-bf16": (1, 2, 2, 33, 33, 24, torch.bfloat16, True, (-1, -1)),
}


@pytest.mark.skipif(not HAS_TRITON, reason="Triton is not installed: no kernel to compare with")
@pytest.mark.parametrize("case", list(TWIN_VS_KERNEL))
def test_twin_matches_triton_kernel(case):
    """The twin and kernels.flash_attention (the interpreter on a CPU) compute the same function:
    out, lse and the three gradients agree to rounding (float32: 1e-5 relative; bfloat16: the
    outputs' own rounding, since both compute in float32 and round once)."""
    from kernels import INTERPRET, flash_attention
    from kernels._checks import INTERPRETER_PROBLEM

    if DEVICE == "cpu" and not INTERPRET or INTERPRETER_PROBLEM:
        pytest.skip(INTERPRETER_PROBLEM or "the Triton kernel cannot run on CPU tensors here")
    *sizes, dtype, causal, window = TWIN_VS_KERNEL[case]
    q, k, v = make_qkv(*sizes, dtype)
    do = torch.randn(q.shape, device=DEVICE).to(dtype)
    dlse = torch.randn(q.shape[:3], device=DEVICE)
    got = {}
    for name, fn in (("twin", flash_attention_torch), ("kernel", flash_attention)):
        qi, ki, vi = (x.detach().clone().requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, causal=causal, window_size=window, return_lse=True)
        torch.autograd.backward([out, lse], [do, dlse])
        got[name] = dict(out=out, lse=lse, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    empty = torch.isinf(got["kernel"]["lse"])  # rows with no key: -inf in both, compare the rest
    assert torch.equal(torch.isinf(got["twin"]["lse"]), empty)
    for name in got:
        got[name]["lse"] = got[name]["lse"].masked_fill(empty, 0.0)
    for key in got["twin"]:
        err = rel_err(got["twin"][key], got["kernel"][key])
        print(f"{key:>4}: twin vs kernel {err:.2e}")
        assert err <= tol, f"{key}: {err:.3e}"


# --------------------------------------------------------------------------------------------
# Bad input: the kernel's messages
# --------------------------------------------------------------------------------------------
def t(*shape, dtype=torch.float32, device=DEVICE):
    return torch.randn(*shape, device=device).to(dtype)


GOOD = lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16))  # noqa: E731
CASES = {  # id: (make q, k, v; kwargs; exception; message pattern), a subset of test_bad_input.py
    "rank": (lambda: (t(4, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, ValueError, r"q: expected 4 dimensions"),
    "batch": (lambda: (t(2, 4, 8, 16), t(3, 2, 8, 16), t(3, 2, 8, 16)), {}, ValueError, r"k: expected batch 2"),
    "gqa_ratio": (lambda: (t(2, 3, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, ValueError, r"multiple of heads_kv"),
    "mixed_dtypes": (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16, dtype=torch.bfloat16), t(2, 2, 8, 16)), {}, TypeError, r"one dtype"),
    "float64": (lambda: (t(2, 4, 8, 16).double(), t(2, 2, 8, 16).double(), t(2, 2, 8, 16).double()), {}, TypeError, r"q: expected a floating dtype \(float32, float16, bfloat16\)"),
    "not_tensor": (lambda: (t(2, 4, 8, 16).tolist(), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, TypeError, r"q: expected a torch.Tensor"),
    "head_dim_small": (lambda: (t(1, 1, 8, 4), t(1, 1, 8, 4), t(1, 1, 8, 4)), {}, ValueError, r"head_dim must be in \[8, 256\]"),
    "meta": (lambda: (t(2, 4, 8, 16, device="meta"), t(2, 2, 8, 16, device="meta"), t(2, 2, 8, 16, device="meta")), {}, ValueError, r"q: a tensor on the meta device"),
    "window_value": (GOOD, {"window_size": (-2, 3)}, ValueError, r"window_size\[0\] \(left\)"),
    "window_float": (GOOD, {"window_size": (2.5, 3)}, TypeError, r"window_size\[0\] \(left\): expected an int"),
    "causal_str": (GOOD, {"causal": "no"}, TypeError, r"causal: expected True or False, got str 'no'"),
    "scale": (GOOD, {"softmax_scale": -1.0}, ValueError, r"softmax_scale: expected a finite positive"),
    "scale_type": (GOOD, {"softmax_scale": "0.1"}, TypeError, r"softmax_scale: expected a float"),
}


def raised(fn, *args, **kwargs) -> BaseException:
    with pytest.raises((TypeError, ValueError)) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_same_message_as_kernel(case):
    """The twin validates with the kernel's own checks: the same exception and the same message
    (compared word for word with kernels.flash_attention where Triton is installed)."""
    make, kwargs, exc, pattern = CASES[case]
    args = make()
    err = raised(flash_attention_torch, *args, **kwargs)
    assert type(err) is exc and re.search(pattern, str(err)), f"{type(err).__name__}: {err}"
    if HAS_TRITON:
        from kernels import flash_attention

        want = raised(flash_attention, *args, **kwargs)
        assert (type(err), str(err)) == (type(want), str(want))


@pytest.mark.parametrize("blocks", [(0, 64), (64, 16.0), (True, 64)])
def test_bad_block_sizes(blocks):
    q, k, v = GOOD()
    with pytest.raises(ValueError, match=r"block_[mn]: expected an int >= 1"):
        flash_attention_torch(q, k, v, block_m=blocks[0], block_n=blocks[1])


def test_imports_without_triton():
    """The twin is the path for machines without Triton (macOS, Windows): it must import and run
    with Triton unimportable."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\nfrom kernels.flash_torch import flash_attention_torch\n"
            "q = torch.randn(1, 2, 37, 16, requires_grad=True)\n"
            "flash_attention_torch(q, q, q, causal=True).sum().backward()\n"
            "assert 'triton.language' not in sys.modules and q.grad.shape == q.shape\n")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=root,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------
# Packed sequences and decoding
# --------------------------------------------------------------------------------------------
def cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                        device=DEVICE)


@pytest.mark.parametrize("mask", ["full", "causal", "window"])
def test_varlen_matches_reference(mask):
    """Packed sequences (zero-length and one-token ones, q != k lengths) against the reference run
    sequence by sequence, in float64 terms: out, lse and the three gradients."""
    causal, window = MASKS[mask]
    lengths_q, lengths_k = [5, 0, 40, 1, 33], [7, 3, 40, 1, 20]
    q, k, v = (torch.randn(sum(n), h, 24, device=DEVICE, requires_grad=True)
               for n, h in ((lengths_q, 4), (lengths_k, 2), (lengths_k, 2)))
    cu_q, cu_k = cu(lengths_q), cu(lengths_k)
    do = torch.randn(q.shape, device=DEVICE)
    dlse = torch.randn(q.shape[1], q.shape[0], device=DEVICE)
    got = []
    for fn, dt in ((flash_attention_varlen_torch, torch.float32), (attention_varlen_reference, torch.float64)):
        qi, ki, vi = (x.detach().to(dt).requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, cu_q, cu_k, 40, 40, causal=causal, window_size=window,
                      return_lse=True)
        fin = torch.isfinite(lse)
        torch.autograd.backward([out, lse], [do.to(dt), torch.where(fin, dlse.to(dt), 0)])
        got.append(dict(out=out, lse=lse.masked_fill(~fin, 0), dq=qi.grad, dk=ki.grad, dv=vi.grad))
    for key in got[0]:
        assert_close(key, got[0][key], got[1][key], got[1][key].float(), torch.float32)


def test_varlen_bad_input_same_message():
    q, k, v = (torch.randn(8, 2, 16) for _ in range(3))
    bad = dict(int64=(torch.tensor([0, 8]), torch.tensor([0, 8], dtype=torch.int32), 8, 8),
               end=(torch.tensor([0, 7], dtype=torch.int32), torch.tensor([0, 8], dtype=torch.int32), 8, 8),
               max=(torch.tensor([0, 8], dtype=torch.int32), torch.tensor([0, 8], dtype=torch.int32), 4, 8))
    for args in bad.values():
        err = raised(flash_attention_varlen_torch, q, k, v, *args)
        if HAS_TRITON:
            from kernels import flash_attention_varlen

            want = raised(flash_attention_varlen, q, k, v, *args)
            assert (type(err), str(err)) == (type(want), str(want))


@pytest.mark.parametrize("mask", ["full", "causal-window-right"])
def test_decode_matches_reference(mask):
    """Three new queries against caches of different valid lengths (37, 20, 0), GQA 4:2: each
    sequence as the reference on its valid keys; an empty cache gives zeros and lse -inf."""
    causal, window = MASKS[mask]
    q, k, v = make_qkv(3, 4, 2, 3, 37, 32, torch.float32, requires_grad=False)
    lengths = torch.tensor([37, 20, 0], dtype=torch.int32, device=q.device)
    out, lse = flash_decode_torch(q, k, v, lengths, causal=causal, window_size=window,
                                  return_lse=True, block_n=16)
    for b, n in enumerate(lengths.tolist()):
        want, want_lse = attention_reference(q[b:b + 1].double(), k[b:b + 1, :, :n].double(),
                                             v[b:b + 1, :, :n].double(), causal=causal,
                                             window_size=window, return_lse=True)
        torch.testing.assert_close(out[b:b + 1].double(), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lse[b:b + 1].double(), want_lse, atol=1e-5, rtol=1e-5)
    bad = torch.tensor([37, 20, 38], dtype=torch.int32)
    err = raised(flash_decode_torch, q, k, v, bad)
    if HAS_TRITON:
        from kernels import flash_decode

        want = raised(flash_decode, q, k, v, bad)
        assert (type(err), str(err)) == (type(want), str(want))
