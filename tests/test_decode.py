"""Split-KV decoding against the dense kernel on each sequence's valid cache prefix."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, DTYPES, ON_GPU, assert_close, dtype_id

from kernels import attention_reference, flash_attention, flash_decode

CACHES = {  # name: (cache_seqlens, max_cache_len)
    "ragged": ([70, 1, 0, 33], 100),
    "full": ([64, 64], 64),
    "one": ([129], 130),
}
if ON_GPU:
    CACHES["long"] = ([16000, 3, 9000], 16384)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("num_splits", [1, 2, 7, None], ids=lambda s: f"splits{s}")
@pytest.mark.parametrize("heads", [(4, 4), (4, 1), (6, 2)], ids=lambda h: f"hq{h[0]}-hkv{h[1]}")
@pytest.mark.parametrize("cache", list(CACHES))
def test_decode_matches_dense(cache, heads, num_splits, dtype):
    lengths, max_len = CACHES[cache]
    batch = len(lengths)
    q = torch.randn(batch, heads[0], 1, 64, device=DEVICE).to(dtype)
    k = torch.randn(batch, heads[1], max_len, 64, device=DEVICE).to(dtype)
    v = torch.randn(batch, heads[1], max_len, 64, device=DEVICE).to(dtype)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    out, lse = flash_decode(q, k, v, seqlens, num_splits=num_splits, return_lse=True)
    assert out.dtype == dtype and out.shape == q.shape
    for b, n in enumerate(lengths):
        qb, kb, vb = q[b:b + 1], k[b:b + 1, :, :n], v[b:b + 1, :, :n]
        if n == 0:  # nothing cached: zeros and lse -inf, as a row that sees no key
            assert torch.equal(out[b], torch.zeros_like(out[b])) and torch.isneginf(lse[b]).all()
            continue
        dense, dense_lse = flash_attention(qb, kb, vb, return_lse=True)
        ref, ref_lse = attention_reference(qb.double(), kb.double(), vb.double(), return_lse=True)
        # the dense kernel is the yardstick: split decoding may differ from it only by rounding
        assert_close("out", out[b:b + 1], ref, dense, dtype)
        assert_close("lse", lse[b:b + 1], ref_lse, dense_lse, torch.float32)


@pytest.mark.parametrize("num_splits", [1, 3])
def test_decode_several_queries_causal(num_splits):
    """seqlen_q > 1 (speculative steps): causal is aligned to each sequence's valid length."""
    lengths = [40, 5]
    q = torch.randn(2, 2, 3, 32, device=DEVICE)
    k, v = (torch.randn(2, 2, 48, 32, device=DEVICE) for _ in range(2))
    out = flash_decode(q, k, v, torch.tensor(lengths, dtype=torch.int32, device=DEVICE),
                       causal=True, num_splits=num_splits)
    for b, n in enumerate(lengths):
        ref = attention_reference(q[b:b + 1].double(), k[b:b + 1, :, :n].double(),
                                  v[b:b + 1, :, :n].double(), causal=True)
        torch.testing.assert_close(out[b:b + 1].double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(cache_seqlens=[3, 4]), TypeError, r"cache_seqlens: expected an int32 tensor"),
    (dict(cache_seqlens=torch.tensor([3, 4])), TypeError, r"cache_seqlens: expected dtype int32"),
    (dict(cache_seqlens=torch.tensor([3], dtype=torch.int32)), ValueError, r"cache_seqlens: expected shape \(2,\)"),
    (dict(cache_seqlens=torch.tensor([3, 17], dtype=torch.int32)), ValueError, r"cache_seqlens: expected values in \[0, 16\]"),
    (dict(num_splits=0), ValueError, r"num_splits: expected None or an int >= 1"),
], ids=["list", "dtype", "shape", "too-long", "splits"])
def test_decode_bad_input(kwargs, exc, pattern):
    q = torch.randn(2, 2, 1, 16, device=DEVICE)
    k = torch.randn(2, 2, 16, 16, device=DEVICE)
    args = dict(cache_seqlens=torch.tensor([3, 4], dtype=torch.int32), num_splits=None)
    args.update(kwargs)
    if isinstance(args["cache_seqlens"], torch.Tensor):
        args["cache_seqlens"] = args["cache_seqlens"].to(DEVICE)
    with pytest.raises(exc, match=pattern):
        flash_decode(q, k, k, args.pop("cache_seqlens"), **args)


@pytest.mark.skipif(not ON_GPU, reason="CUDA's grid limit; the interpreter has none, and would "
                    "take minutes over 65,600 programs")
def test_decode_batch_times_heads_past_grid_limit():
    """batch * heads = 65,600: the split kernel and the merge of the splits both launch more
    programs per grid axis than CUDA's 65,535 of the second axis."""
    q = torch.randn(4100, 16, 1, 32, device=DEVICE)
    k, v = (torch.randn(4100, 4, 70, 32, device=DEVICE) for _ in range(2))
    lengths = torch.randint(1, 71, (4100,), device=DEVICE, dtype=torch.int32)
    out = flash_decode(q, k, v, lengths, num_splits=3)
    valid = torch.arange(70, device=DEVICE)[None, :] < lengths[:, None]  # (batch, keys)
    s = torch.einsum("bhqd,bhkd->bhqk", q.double().view(4100, 4, 4, 32), k.double()) * 32 ** -0.5
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    ref = torch.einsum("bhqk,bhkd->bhqd", s.softmax(-1), v.double()).reshape(4100, 16, 1, 32)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,head_dim,exc,pattern", [
    (torch.float64, 16, TypeError, r"q: expected a floating dtype \(float32, float16, bfloat16\)"),
    (torch.float32, 1, ValueError, r"q: head_dim must be in \[8, 256\], got 1"),
    (torch.float32, 7, ValueError, r"q: head_dim must be in \[8, 256\], got 7"),
    (torch.float32, 300, ValueError, r"q: head_dim must be in \[8, 256\], got 300"),
    (torch.float32, 512, ValueError, r"q: head_dim must be in \[8, 256\], got 512"),
], ids=["float64", "d1", "d7", "d300", "d512"])
def test_decode_has_the_kernel_checks(dtype, head_dim, exc, pattern):
    """flash_decode died inside Triton on float64 (a 51-line InterpreterError) and accepted head
    dims that flash_attention rejects; it now runs flash_attention's own check."""
    q = torch.randn(2, 2, 1, head_dim, device=DEVICE, dtype=dtype)
    k = torch.randn(2, 2, 16, head_dim, device=DEVICE, dtype=dtype)
    with pytest.raises(exc, match=pattern):
        flash_decode(q, k, k, torch.tensor([3, 4], dtype=torch.int32, device=DEVICE))
