"""Packed variable-length attention against the dense API run sequence by sequence."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, DTYPES, ON_GPU, assert_close, dtype_id, needs_triton

from kernels import attention_varlen_reference, flash_attention, flash_attention_varlen

# (lengths_q, lengths_k): zero-length and one-token sequences, a batch of one, q != k lengths
BATCHES = {
    "mixed": ([5, 0, 40, 1, 33], [7, 3, 40, 1, 20]),
    "one-seq": ([37], [37]),
    "q-longer": ([40, 9], [12, 30]),
    "ones": ([1, 1, 1], [1, 1, 1]),
}
if ON_GPU:
    BATCHES["long"] = ([1023, 1, 517, 2048], [1000, 64, 517, 2048])
MASKS = {"full": (False, (-1, -1)), "causal": (True, (-1, -1)), "window": (False, (6, 3))}


def cu(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                        device=DEVICE)


def packed(lengths_q, lengths_k, heads_q, heads_kv, head_dim, dtype):
    def t(total, heads):
        return torch.randn(total, heads, head_dim, device=DEVICE).to(dtype).requires_grad_()
    return t(sum(lengths_q), heads_q), t(sum(lengths_k), heads_kv), t(sum(lengths_k), heads_kv)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("batch", list(BATCHES))
def test_varlen_matches_reference(batch, mask, dtype):
    causal, window = MASKS[mask]
    run_case(*BATCHES[batch], 40, dtype, causal, window)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_varlen_head_dims(head_dim, causal, dtype):
    """The head dims with their own launch tables on a GPU (packed causal 128 has its own tile)."""
    lengths = [130, 1, 67, 256] if ON_GPU else [33, 1, 20]
    run_case(lengths, lengths, head_dim, dtype, causal, (-1, -1))


def run_case(lengths_q, lengths_k, head_dim, dtype, causal, window):
    """Forward + backward of the varlen kernel against the reference in float64 and in ``dtype``
    (4 query heads, 2 kv heads), asserting on out, lse, dq, dk, dv."""
    q, k, v = packed(lengths_q, lengths_k, 4, 2, head_dim, dtype)
    args = (cu(lengths_q), cu(lengths_k), max(lengths_q), max(lengths_k))
    kwargs = dict(causal=causal, window_size=window, return_lse=True)
    results = {}
    for name, fn, cast in (("kernel", flash_attention_varlen, dtype),
                           ("ref64", attention_varlen_reference, torch.float64),
                           ("lowp", attention_varlen_reference, dtype)):
        qi, ki, vi = (x.detach().to(cast).requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, *args, **kwargs)
        if name == "kernel":
            do = torch.randn_like(out, dtype=torch.float32)
        out.backward(do.to(out.dtype))
        results[name] = dict(out=out, lse=lse, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    kern, ref, low = results["kernel"], results["ref64"], results["lowp"]
    assert kern["lse"].shape == (4, sum(lengths_q))
    empty = torch.isinf(ref["lse"])
    assert torch.equal(torch.isinf(kern["lse"]), empty)
    assert_close("lse", kern["lse"][~empty], ref["lse"][~empty], low["lse"][~empty],
                 torch.float32 if dtype == torch.float32 else dtype)
    for key in ("out", "dq", "dk", "dv"):
        assert_close(key, kern[key], ref[key], low[key], dtype)


def test_varlen_equals_dense_kernel():
    """The dense API is the special case of equal lengths: same kernel, same numbers."""
    q, k, v = (torch.randn(3, 2, 29, 32, device=DEVICE) for _ in range(3))
    dense = flash_attention(q, k, v, causal=True)
    pack = lambda t: t.transpose(1, 2).reshape(-1, 2, 32)  # (B, H, N, D) -> (B * N, H, D)
    seqs = cu([29, 29, 29])
    out = flash_attention_varlen(pack(q), pack(k), pack(v), seqs, seqs, 29, 29, causal=True)
    torch.testing.assert_close(out, pack(dense), atol=1e-6, rtol=1e-6)


@needs_triton
def test_unchecked_offsets_and_compiled_op_agree():
    """``check_seqlens=False`` skips only the host-side check, and under torch.compile the
    varlen custom op gives the eager path's numbers, forward and backward."""
    lengths = [5, 0, 17]
    q, k, v = packed(lengths, lengths, 2, 1, 16, torch.float32)
    seqs = cu(lengths)

    def loss(q, k, v, **kw):
        return flash_attention_varlen(q * 2.0, k, v, seqs, seqs, 17, 17, causal=True, **kw).square().sum()

    results = []
    for fn in (loss, lambda *t: loss(*t, check_seqlens=False),
               torch.compile(lambda *t: loss(*t, check_seqlens=False), backend="aot_eager", fullgraph=True)):
        value = fn(q, k, v)
        results.append((value, *torch.autograd.grad(value, (q, k, v))))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def _bad(**overrides):
    lengths = [3, 5]
    q, k, v = packed(lengths, lengths, 2, 2, 16, torch.float32)
    args = dict(cu_seqlens_q=cu(lengths), cu_seqlens_k=cu(lengths), max_seqlen_q=5, max_seqlen_k=5)
    args.update(overrides)
    return flash_attention_varlen(q, k, v, **args)


@pytest.mark.parametrize("overrides,exc,pattern", [
    (dict(cu_seqlens_q=torch.tensor([1, 4, 8], dtype=torch.int32)), ValueError, r"cu_seqlens_q: expected to start at 0"),
    (dict(cu_seqlens_k=torch.tensor([0, 6, 5, 8], dtype=torch.int32)), ValueError, r"cu_seqlens_k: expected non-decreasing"),
    (dict(cu_seqlens_q=torch.tensor([0, 3, 7], dtype=torch.int32)), ValueError, r"last entry must be the total number of tokens \(8\)"),
    (dict(cu_seqlens_q=torch.tensor([0, 3, 8], dtype=torch.int64)), TypeError, r"cu_seqlens_q: expected dtype int32"),
    (dict(cu_seqlens_q=torch.tensor([[0, 3, 8]], dtype=torch.int32)), ValueError, r"cu_seqlens_q: expected a 1-D tensor"),
    (dict(max_seqlen_k=4), ValueError, r"max_seqlen_k: 4 is smaller than the longest sequence \(5\)"),
    (dict(max_seqlen_q=5.0), TypeError, r"max_seqlen_q: expected an int"),
    (dict(cu_seqlens_k=torch.tensor([0, 8], dtype=torch.int32), max_seqlen_k=8), ValueError, r"cu_seqlens_k: expected 3 entries"),
    (dict(cu_seqlens_q=[0, 3, 8]), TypeError, r"cu_seqlens_q: expected a torch.Tensor"),
], ids=["start", "decreasing", "last", "dtype", "rank", "max-too-small", "max-type", "batch", "list"])
def test_bad_cu_seqlens(overrides, exc, pattern):
    for key, val in overrides.items():
        if isinstance(val, torch.Tensor):
            overrides[key] = val.to(DEVICE)
    with pytest.raises(exc, match=pattern):
        _bad(**overrides)


if ON_GPU:  # only a CUDA machine has a second device to mix up
    def test_cu_seqlens_on_wrong_device():
        with pytest.raises(ValueError, match=r"cu_seqlens_q: expected it on cuda"):
            _bad(cu_seqlens_q=cu([3, 5]).cpu())


def test_bad_packed_shapes():
    q = torch.randn(2, 8, 4, 16, device=DEVICE)
    with pytest.raises(ValueError, match=r"q: expected 3 dimensions \(total_tokens, heads, head_dim\)"):
        flash_attention_varlen(q, q, q, cu([8]), cu([8]), 8, 8)


@pytest.mark.skipif(not ON_GPU, reason="needs ~12 GB of GPU memory: rows past 2**31 elements")
def test_offsets_past_int32_elements():
    """A sequence's start times the row stride passes 2**31 in a large packed batch; computed in
    int32 it wraps and reads another sequence's rows (an illegal address on an H100, in a first
    version of this test with 1M tokens of 16 x 128 in separate q, k, v).
    q, k, v here are views of one packed QKV projection, (total, 3, heads, head_dim), whose row
    stride 3 * 16 * 128 = 6144 gets there after 350k tokens. Checks the last sequences, which
    start past that point, forward and backward, against float64."""
    heads, head_dim, dtype = 16, 128, torch.bfloat16
    lengths = [256] * 1400 + [37, 101]
    total, tail = sum(lengths), sum(lengths[-2:])
    assert (total - tail) * 3 * heads * head_dim > 2**31
    qkv = torch.randn(total, 3, heads, head_dim, device=DEVICE, dtype=dtype)
    q, k, v = (qkv[:, i].requires_grad_() for i in range(3))
    seqs = cu(lengths)
    out = flash_attention_varlen(q, k, v, seqs, seqs, 256, 256, causal=True, check_seqlens=False)
    do = torch.randn(tail, heads, head_dim, device=DEVICE, dtype=dtype)
    out[-tail:].backward(do)
    results = {"kernel": dict(out=out[-tail:], dq=q.grad[-tail:], dk=k.grad[-tail:],
                              dv=v.grad[-tail:])}
    last = cu(lengths[-2:])
    for name, cast in (("ref64", torch.float64), ("lowp", dtype)):
        qi, ki, vi = (x.detach()[-tail:].to(cast).requires_grad_() for x in (q, k, v))
        ref = attention_varlen_reference(qi, ki, vi, last, last, causal=True)
        ref.backward(do.to(cast))
        results[name] = dict(out=ref, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    for key in ("out", "dq", "dk", "dv"):
        assert_close(key, results["kernel"][key], results["ref64"][key], results["lowp"][key], dtype)


# Offsets past the packed tensors, with check_seqlens=False: (cu_seqlens, max_seqlen, the
# lengths they clamp to). The kernels clamp every offset into [0, total], so each bad batch
# computes exactly the batch of the clamped lengths.
UNCHECKED = {
    "last-past-end": ([0, 5, 40], 35, [5, 7]),
    "negative-start": ([-3, 5, 12], 8, [5, 7]),
    "huge-middle": ([0, 2**31 - 1, 12], 12, [12, 0]),
    "decreasing": ([0, 12, 4], 12, [12, 0]),
}
_UNCHECKED_SCRIPT = """
import sys, torch
from kernels import attention_varlen_reference, flash_attention_varlen
bad, max_seqlen, lengths = eval(sys.argv[1])
device = sys.argv[2]
torch.manual_seed(0)
q, k, v = (torch.randn(12, 2, 16, device=device, requires_grad=True) for _ in range(3))
cu_bad = torch.tensor(bad, dtype=torch.int32, device=device)
cu_good = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
for causal in (False, True):
    out = flash_attention_varlen(q, k, v, cu_bad, cu_bad, max_seqlen, max_seqlen, causal=causal,
                                 check_seqlens=False)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref = attention_varlen_reference(*(t.double() for t in (q, k, v)), cu_good, cu_good, 12, 12, causal=causal)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip((out, *grads), (ref, *ref_grads)):
        torch.testing.assert_close(a.double(), b.double(), atol=1e-4, rtol=1e-4)
print("clamped", flush=True)
if device == "cuda":
    # an illegal address would have surfaced above (assert_close synchronises); on an H200 under
    # 14 test workers the process once aborted in interpreter shutdown after this line
    # ("terminate called without an active exception"), so a GPU run skips the shutdown. The CPU
    # keeps it: heap corruption there shows when the process frees its memory.
    torch.cuda.synchronize()
    import os
    os._exit(0)
"""


@needs_triton
@pytest.mark.parametrize("case", list(UNCHECKED))
def test_unchecked_offsets_never_leave_the_tensors(case):
    """``check_seqlens=False`` with a ``cu_seqlens`` past the packed tokens read and wrote outside
    the tensors: heap corruption on the CPU (the process aborted after returning), an illegal
    address on a GPU. The kernels now clamp the offsets, so the batch is computed as the one of
    the clamped lengths, forward and backward. Run in a subprocess: an out-of-bounds write can
    kill the process that makes it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad, max_seqlen, lengths = UNCHECKED[case]
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", _UNCHECKED_SCRIPT, repr((bad, max_seqlen, lengths)),
                             DEVICE], cwd=root, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(root)})
    print(result.stdout[-2000:], result.stderr[-2000:])
    assert result.returncode == 0 and "clamped" in result.stdout, f"exit code {result.returncode}"


@needs_triton
@pytest.mark.parametrize("mask", ["full", "causal"])
@pytest.mark.parametrize("kv_b", [False, True], ids=["kt_q", "kv_b"])
@pytest.mark.parametrize("seq_desc", [False, True], ids=["host", "per_sequence"])
def test_packed_descriptors_stay_in_their_sequence(seq_desc, kv_b, mask):
    """The backward's tensor descriptors (TMA) on a packed batch: a block running past a
    sequence's end would read the next sequence's rows through the host's descriptors, so there
    the edge stretches load through masked pointers instead; descriptors made in the kernel for
    each sequence (SEQ_DESC) end where it ends and serve every stretch. Either way the gradients
    are the pointer loads' (and the float64 reference's), and a NaN in the middle sequence's v
    and dO stays in that sequence (were the edges loaded through the host's descriptors, the
    first sequence's last blocks would carry it into its dK, dV and dQ). Block shapes that
    divide no length, GQA."""
    from kernels.band import Band
    from kernels.flash_bwd import attention_backward
    from kernels.flash_fwd import attention_forward
    from kernels.varlen import _layout

    causal, window = MASKS[mask]
    lengths = [37, 20, 45]
    q, k, v = (x.detach().float() for x in packed(lengths, lengths, 2, 1, 32, torch.float32))
    seqs = cu(lengths)
    layout, band, scale = _layout(seqs, seqs, 45, 45), Band.from_window(window, causal), 32 ** -0.5
    do = torch.randn_like(q)
    poisoned = slice(37, 57)  # the middle sequence's rows
    v[poisoned, :, 3], do[poisoned, :, 5] = float("nan"), float("nan")
    out, lse = attention_forward(q, k, v, band, scale, layout)
    grads = {}
    for tma in (False, True):
        flags = dict(TMA=tma, SEQ_DESC=tma and seq_desc)
        cfg = dict(BLOCK_M=16, BLOCK_N=32, num_warps=4, num_stages=1, KV_B=kv_b, **flags,
                   dq=dict(BLOCK_M=32, BLOCK_N=16, num_warps=4, num_stages=1, **flags))
        grads[tma] = attention_backward(do, q, k, v, out, lse, None, band, scale, layout, cfg)
    clean = torch.ones(q.shape[0], dtype=torch.bool)
    clean[poisoned] = False
    qd, kd, vd = (x[clean].double().requires_grad_() for x in (q, k, v))
    kept = cu([37, 45])
    ref = attention_varlen_reference(qd, kd, vd, kept, kept, 45, 45, causal=causal, window_size=window)
    ref_grads = torch.autograd.grad(ref, (qd, kd, vd), do[clean].double())
    for name, pointer, tma, want in zip(("dq", "dk", "dv"), grads[False], grads[True], ref_grads):
        assert torch.isfinite(tma[clean]).all(), name
        assert torch.isnan(tma[poisoned]).any(), name  # the NaN is there, in its own sequence
        torch.testing.assert_close(tma[clean], pointer[clean], atol=1e-5, rtol=1e-5)
        assert (tma[clean].double() - want).norm() / want.norm() < 1e-5, name


@needs_triton
def test_descriptor_allocator_keeps_the_programs_own():
    """Descriptors made in a kernel (SEQ_DESC) need Triton's allocator: the launcher sets one
    (torch's caching allocator) only while none is set, and leaves a program's own in place."""
    import triton
    from triton.runtime import _allocation

    from kernels.tiles import _descriptor_allocator

    before = _allocation._allocator.get()
    try:
        triton.set_allocator(_allocation._NULL_ALLOCATOR)
        _descriptor_allocator(torch.device("cuda"))  # sets ours; nothing is allocated here
        ours = _allocation._allocator.get()
        assert ours is not _allocation._NULL_ALLOCATOR

        def own(size, alignment, stream):
            raise AssertionError("not called here")

        triton.set_allocator(own)
        _descriptor_allocator(torch.device("cuda"))
        assert _allocation._allocator.get() is own
        triton.set_allocator(_allocation._NULL_ALLOCATOR)
        _descriptor_allocator(torch.device("cpu"))  # the interpreter needs none
        assert _allocation._allocator.get() is _allocation._NULL_ALLOCATOR
    finally:
        triton.set_allocator(before)
