"""The fp8 (e4m3) forward, kernels/fp8.py, against float64.

Two references per case, both in float64: the exact attention of the unrounded inputs, and the
attention of the inputs after :func:`quantize_fp8` (dequantised exactly). The second isolates the
one rounding the kernel adds itself, the probabilities' (p in e4m3 before ``p @ v``); the first
is what a user gets. Both implementations are checked: the Triton kernel (compiled or
interpreted) where Triton is installed, the plain-PyTorch twin without it, and the two against
each other.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE, ON_GPU, needs_triton, rel_err

from kernels import attention_reference
from kernels.band import Band
from kernels.flash_torch import attention_forward_torch
from kernels.fp8 import E4M3, E4M3_MAX, flash_attention_fp8, fp8_forward, quantize_fp8

# (batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, causal, window): one query and one key,
# primes, lengths off the block, q != k both ways, GQA, head dims 8 to 256, every mask
CASES = [
    (2, 4, 2, 37, 53, 64, False, (-1, -1)),
    (1, 2, 2, 65, 65, 40, True, (-1, -1)),
    (1, 1, 1, 1, 17, 128, False, (-1, -1)),
    (1, 2, 1, 113, 113, 8, False, (9, 4)),
    (1, 1, 1, 17, 1, 256, False, (-1, -1)),
    (1, 3, 1, 40, 33, 64, True, (21, 0)),
    (1, 2, 2, 33, 40, 96, True, (-1, -1)),
]
if ON_GPU:
    CASES += [(2, 8, 2, 1023, 1023, 128, True, (-1, -1)), (1, 4, 4, 257, 1500, 64, False, (-1, -1)),
              (1, 2, 2, 2048, 2048, 128, False, (-1, -1))]
P_ROUNDING = 0.03  # what rounding p to 3 mantissa bits may add (measured 0.015-0.021, CPU cases)
# lse against the rounded inputs': float32 sums of exact e4m3 products on the CPU; on Hopper the
# fp8 MMA accumulates with about 14 bits (DeepSeek-V3's technical report, section 3.3.2)
LSE_BOUND = 2e-3 if ON_GPU else 1e-4
INPUT_SLACK = 0.02  # beyond what rounding the inputs alone makes


def case_id(c):
    b, hq, hk, n, m, d, causal, win = c
    return f"b{b}-h{hq}/{hk}-{n}x{m}-d{d}" + ("-causal" if causal else "") + (f"-w{win}" if win != (-1, -1) else "")


def dequantised(x8, descale):
    return x8.double() * descale.double()[..., None, None]


def fresh(b, hq, hk, n, m, d, dtype=torch.bfloat16):
    return (torch.randn(b, hq, n, d, device=DEVICE).to(dtype),
            torch.randn(b, hk, m, d, device=DEVICE).to(dtype),
            torch.randn(b, hk, m, d, device=DEVICE).to(dtype))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fp8_against_float64(case):
    b, hq, hk, n, m, d, causal, window = case
    q, k, v = fresh(b, hq, hk, n, m, d)
    kw = dict(causal=causal, window_size=window)
    out, lse = flash_attention_fp8(q, k, v, return_lse=True, **kw)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape and lse.dtype == torch.float32
    exact, lse_exact = attention_reference(q.double(), k.double(), v.double(), return_lse=True, **kw)
    (q8, qd), (k8, kd), (v8, vd) = quantize_fp8(q), quantize_fp8(k), quantize_fp8(v)
    rounded, lse_rounded = attention_reference(dequantised(q8, qd), dequantised(k8, kd),
                                               dequantised(v8, vd), return_lse=True, **kw)
    bf16 = attention_reference(q, k, v, **kw)
    err, err_p = rel_err(out, exact), rel_err(out, rounded)
    err_inputs, err_bf16 = rel_err(rounded, exact), rel_err(bf16, exact)
    empty = torch.isinf(lse_exact)
    lse_err = (lse[~empty] - lse_rounded[~empty]).abs().max().item() if (~empty).any() else 0.0
    print(f"fp8 {err:.2e} (p rounding {err_p:.2e}, inputs {err_inputs:.2e}); bf16 {err_bf16:.2e}; "
          f"lse {lse_err:.1e}")
    assert torch.equal(torch.isinf(lse), empty) and not out[empty].any()
    assert torch.isfinite(out).all()
    # the scores are exact products of e4m3 values, summed in float32: lse as the rounded inputs'
    assert lse_err <= LSE_BOUND
    assert err_p <= P_ROUNDING, f"p rounding added {err_p:.3e} > {P_ROUNDING}"
    assert err <= err_inputs + INPUT_SLACK
    assert err > 2 * err_bf16, "an fp8 result as accurate as bf16: were the inputs rounded at all?"


@pytest.mark.parametrize("case", CASES[:4], ids=case_id)
def test_fp8_inputs_with_descales(case):
    """Quantised by the caller (V row-major, the descales passed, q's in FlashAttention-3's
    (batch, heads_kv) shape too): the same output as quantising inside."""
    b, hq, hk, n, m, d, causal, window = case
    q, k, v = fresh(b, hq, hk, n, m, d, torch.float32)
    kw = dict(causal=causal, window_size=window)
    (q8, qd), (k8, kd), (v8, vd) = quantize_fp8(q), quantize_fp8(k), quantize_fp8(v)
    out = flash_attention_fp8(q8, k8, v8, q_descale=qd, k_descale=kd, v_descale=vd,
                              out_dtype=torch.float32, **kw)
    assert torch.equal(out, flash_attention_fp8(q, k, v, **kw))
    assert flash_attention_fp8(q8, k8, v8, q_descale=qd, k_descale=kd, v_descale=vd,
                               **kw).dtype == torch.bfloat16  # the default for e4m3 inputs
    if hq != hk:  # one scale per kv head's group of query heads
        qd_kv = qd.unflatten(1, (hk, hq // hk)).amax(-1)
        q8_kv = (dequantised(q8, qd).float() / qd_kv.repeat_interleave(hq // hk, 1)[..., None, None]).to(E4M3)
        got = flash_attention_fp8(q8_kv, k8, v8, q_descale=qd_kv, k_descale=kd, v_descale=vd, **kw)
        ref = attention_reference(dequantised(q8_kv, qd_kv.repeat_interleave(hq // hk, 1)),
                                  dequantised(k8, kd), dequantised(v8, vd), **kw)
        assert rel_err(got, ref) <= P_ROUNDING
    ones = flash_attention_fp8(q8, k8, v8, **kw)  # no descales: 1
    ref1 = attention_reference(q8.double(), k8.double(), v8.double(), **kw)
    assert rel_err(ones, ref1) <= P_ROUNDING


@needs_triton
@pytest.mark.parametrize("case", CASES[:3], ids=case_id)
def test_fp8_kernel_matches_twin(case):
    """The Triton kernel and the plain-PyTorch twin round the same inputs and the same kind of p:
    they differ only where their tiles' running maxima put p's rounding."""
    b, hq, hk, n, m, d, causal, window = case
    q, k, v = fresh(b, hq, hk, n, m, d)
    band = Band.from_window(window, causal)
    (q8, qd), (k8, kd), (v8, vd) = quantize_fp8(q), quantize_fp8(k), quantize_fp8(v)
    twin, _ = attention_forward_torch(dequantised(q8, qd).float(), dequantised(k8, kd).float(),
                                      v8.float(), band, d ** -0.5, p_dtype=E4M3)
    twin = twin * vd.repeat_interleave(hq // hk, 1)[..., None, None]
    assert rel_err(flash_attention_fp8(q, k, v, causal=causal, window_size=window), twin) <= P_ROUNDING


@needs_triton
@pytest.mark.parametrize("causal", [False, True])
def test_fp8_tma_matches_pointers(causal):
    """k and v (column-major) through tensor descriptors give what pointer loads give, bit for
    bit (lengths and head_dim keep every stride 16-byte aligned, so the descriptors are made)."""
    from kernels.flash_fwd import fwd_config
    from kernels.tiles import row_descriptors

    q, k, v = fresh(1, 2, 1, 37, 80, 64)
    band = Band.from_window((-1, -1), causal)
    (q8, qd), (k8, kd), (v8, vd) = quantize_fp8(q), quantize_fp8(k), quantize_fp8(v, column_major=True)
    cfg = fwd_config(64, E4M3, causal)
    assert all(row_descriptors((t,), 16, 16)[0] is not None for t in (k8, v8.mT))
    args = (q8, k8, v8, (qd, kd, vd), band, 0.125, torch.bfloat16)
    pointers, lse_p = fp8_forward(*args, config=cfg)
    tma, lse_t = fp8_forward(*args, config=dict(cfg, TMA=True))
    assert torch.equal(pointers, tma) and torch.equal(lse_p, lse_t)


def test_quantize_fp8():
    x = torch.randn(2, 3, 37, 40, device=DEVICE) * torch.tensor([1e-3, 1.0, 1e3], device=DEVICE)[:, None, None]
    x[1, 2] = 0
    x8, descale = quantize_fp8(x)
    assert x8.dtype == E4M3 and descale.shape == (2, 3) and descale.dtype == torch.float32
    peak = x8.float().abs().amax(dim=(2, 3))
    assert (peak[descale != 1] == E4M3_MAX).all() and descale[1, 2] == 1 and not x8[1, 2].float().any()
    back = dequantised(x8, descale)
    normal = back.abs() >= 2 ** -6 * descale.double()[..., None, None]  # e4m3's normal range
    rel = ((back - x.double()).abs() / x.double().abs())[normal]
    assert rel.max() <= 2 ** -4 + 1e-6  # half a unit in the last of 3 mantissa bits
    col, _ = quantize_fp8(x, column_major=True)
    assert col.stride()[-2:] == (1, 37) and torch.equal(col.float(), x8.float())


@pytest.mark.parametrize("call, error, words", [
    (lambda q, k, v: flash_attention_fp8(q, k, v, q_descale=torch.ones(1, 2)), ValueError, "q_descale"),
    (lambda q, k, v: flash_attention_fp8(q.requires_grad_(), k, v), ValueError, "no backward"),
    (lambda q, k, v: flash_attention_fp8(q, k, v, out_dtype=torch.int8), TypeError, "out_dtype"),
    (lambda q, k, v: flash_attention_fp8(q.to(E4M3), k, v), TypeError, "one dtype"),
    (lambda q, k, v: flash_attention_fp8(q.to(E4M3), k.to(E4M3), v.to(E4M3),
                                         k_descale=torch.ones(1, 3)), ValueError, "k_descale"),
    (lambda q, k, v: flash_attention_fp8(q.to(E4M3), k.to(E4M3), v.to(E4M3),
                                         v_descale=[1.0, 1.0]), TypeError, "v_descale"),
    (lambda q, k, v: flash_attention_fp8(q.double(), k.double(), v.double()), TypeError, "q"),
    (lambda q, k, v: quantize_fp8(q[0]), ValueError, "4 dimensions"),
    (lambda q, k, v: quantize_fp8(q.index_fill(2, torch.tensor([3], device=q.device), float("inf"))),
     ValueError, "inf"),
])
def test_fp8_bad_input(call, error, words):
    q, k, v = fresh(1, 2, 2, 9, 9, 16, torch.float32)
    with pytest.raises(error, match=words):
        call(q, k, v)
