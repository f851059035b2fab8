"""The Triton primer of notebook 04: its kernels (``kernels/primer.py``) and their NumPy versions
(``kernels/primer_numpy.py``) against float64 references, on ragged sizes.

Sizes are tiny (lengths 1, primes, not multiples of the block): on a CPU the kernels run through
Triton's interpreter. The kernels' tests need Triton; the NumPy versions' run everywhere. Each
kernel's error against float64 must stay within twice what PyTorch makes in float32, plus a
rounding floor (``conftest.assert_close``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import DEVICE, assert_close, needs_triton

import kernels
from kernels import attention_reference, primer_numpy

if kernels.HAS_TRITON:
    from kernels import primer

ADD_CASES = [(1, 16), (7, 16), (16, 16), (37, 16), (1025, 256)]  # (n, block)
SOFTMAX_SHAPES = [(1, 1), (3, 7), (5, 37), (17, 100)]  # (rows, cols)
# (seqlen_q, seqlen_k, head_dim, block_m, block_n): one query and one key, seqlen_q != seqlen_k
# both ways, ragged last blocks, an exact multiple, tiles that are not square
ATTENTION_CASES = [(1, 1, 16, 16, 16), (5, 37, 16, 16, 16), (37, 5, 32, 16, 16), (48, 64, 16, 16, 32),
                   (50, 17, 16, 32, 16)]


def _attention64(q, k, v):
    return attention_reference(*(t.double()[None, None] for t in (q, k, v)))[0, 0]


def _causal_rows(x: torch.Tensor) -> torch.Tensor:
    """x with the columns j > i of row i set to -inf (top-left causal)."""
    rows, cols = x.shape
    hidden = torch.ones(rows, cols, dtype=torch.bool, device=x.device).triu(1)
    return x.masked_fill(hidden, -math.inf)


# --------------------------------------------------------------------------------------------
# The NumPy versions (no Triton needed)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, block", ADD_CASES, ids=lambda c: str(c))
def test_add_numpy(n, block):
    x, y = np.random.default_rng(n).standard_normal((2, n))
    assert np.array_equal(primer_numpy.add_numpy(x, y, BLOCK=block), x + y)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_numpy(shape, causal):
    x = 3 * torch.randn(shape, dtype=torch.float64)
    want = torch.softmax(_causal_rows(x) if causal else x, dim=1)
    got = primer_numpy.softmax_numpy(x.numpy(), causal=causal)
    assert np.abs(got - want.numpy()).max() < 1e-14


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "q{}-k{}-d{}-{}x{}".format(*c))
def test_attention_numpy(case):
    seqlen_q, seqlen_k, d, block_m, block_n = case
    q, k, v = (torch.randn(n, d, dtype=torch.float64) for n in (seqlen_q, seqlen_k, seqlen_k))
    got = primer_numpy.attention_numpy(q.numpy(), k.numpy(), v.numpy(), BLOCK_M=block_m, BLOCK_N=block_n)
    assert np.abs(got - _attention64(q, k, v).numpy()).max() < 1e-13


def test_numpy_helpers():
    assert [primer_numpy.cdiv(a, 16) for a in (0, 1, 16, 17)] == [0, 1, 1, 2]
    assert [primer_numpy.next_power_of_2(n) for n in (1, 2, 3, 16, 17)] == [1, 2, 4, 16, 32]
    a = np.arange(5.0)
    offs = np.arange(8)
    assert primer_numpy.load(a, offs, offs < 5, other=-1.0).tolist() == [0, 1, 2, 3, 4, -1, -1, -1]


# --------------------------------------------------------------------------------------------
# The kernels (Triton's interpreter on a CPU)
# --------------------------------------------------------------------------------------------
@needs_triton
@pytest.mark.parametrize("n, block", ADD_CASES, ids=lambda c: str(c))
def test_add(n, block):
    x, y = torch.randn(2, n, device=DEVICE)
    assert torch.equal(primer.add(x, y, block=block), x + y)  # one rounding, the same in both


@needs_triton
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax(shape, causal, layout):
    """Rows far below and above 0 too: the padded lanes must read -inf, and the max be subtracted."""
    x = 3 * torch.randn(shape, device=DEVICE)
    x[0] -= 50.0
    if shape[0] > 1:
        x[1] += 100.0
    if layout == "transposed":
        x = x.t().contiguous().t()
    out = primer.softmax(x, causal=causal)
    masked = _causal_rows(x) if causal else x
    assert_close("out", out, torch.softmax(masked.double(), dim=1), torch.softmax(masked, dim=1), torch.float32)


@needs_triton
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "q{}-k{}-d{}-{}x{}".format(*c))
def test_attention(case):
    seqlen_q, seqlen_k, d, block_m, block_n = case
    q, k, v = (torch.randn(n, d, device=DEVICE) for n in (seqlen_q, seqlen_k, seqlen_k))
    out = primer.attention(q, k, v, block_m=block_m, block_n=block_n)
    assert_close("out", out, _attention64(q, k, v), attention_reference(q[None, None], k[None, None],
                                                                         v[None, None])[0, 0], torch.float32)


@needs_triton
def test_attention_reads_through_strides():
    """q transposed, k a slice of wider rows, v transposed: the kernel follows the strides."""
    q = torch.randn(16, 23, device=DEVICE).t()
    k = torch.randn(19, 32, device=DEVICE)[:, 16:]
    v = torch.randn(16, 19, device=DEVICE).t()
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    out = primer.attention(q, k, v)
    assert_close("out", out, _attention64(q, k, v), _attention64(q, k, v).float(), torch.float32)


@needs_triton
def test_attention_matches_its_numpy_version():
    q, k, v = (torch.randn(n, 16, device=DEVICE) for n in (21, 40, 40))
    ref = primer_numpy.attention_numpy(*(t.double().cpu().numpy() for t in (q, k, v)))
    assert np.abs(primer.attention(q, k, v).cpu().numpy() - ref).max() < 1e-5


def _bad_calls():
    x = torch.randn(8, device=DEVICE)
    m = torch.randn(4, 16, device=DEVICE)
    return [
        ("add: x a list", lambda: primer.add([1.0], x), TypeError, "x: expected a torch.Tensor"),
        ("add: shapes", lambda: primer.add(x, torch.randn(9, device=DEVICE)), ValueError, "y: expected shape"),
        ("add: int dtype", lambda: primer.add(x.long(), x.long()), TypeError, "x: expected dtype"),
        ("add: strided", lambda: primer.add(torch.randn(16, device=DEVICE)[::2], x), ValueError,
         "x: expected a contiguous"),
        ("add: block 3", lambda: primer.add(x, x, block=3), ValueError, "block: expected a power of two"),
        ("softmax: 1-D", lambda: primer.softmax(x), ValueError, "x: expected 2 dimension"),
        ("softmax: float64", lambda: primer.softmax(m.double()), TypeError, "x: expected dtype float32"),
        ("softmax: causal str", lambda: primer.softmax(m, causal="no"), TypeError, "causal"),
        ("softmax: no column", lambda: primer.softmax(m[:, :0]), ValueError, "x: expected 1 to"),
        ("attention: head_dim 24", lambda: primer.attention(*[torch.randn(4, 24, device=DEVICE)] * 3),
         ValueError, "q: head_dim must be a power of two"),
        ("attention: head_dim 8", lambda: primer.attention(*[torch.randn(4, 8, device=DEVICE)] * 3),
         ValueError, "q: head_dim"),
        ("attention: k, v shapes", lambda: primer.attention(m, m, m[:3]), ValueError, "v: expected the shape of k"),
        ("attention: k head_dim", lambda: primer.attention(m, torch.randn(4, 32, device=DEVICE),
                                                           torch.randn(4, 32, device=DEVICE)), ValueError, "k: expected head_dim"),
        ("attention: no key", lambda: primer.attention(m, m[:0], m[:0]), ValueError, "k: expected at least one key"),
        ("attention: block_m 8", lambda: primer.attention(m, m, m, block_m=8), ValueError,
         "block_m: expected a power of two >= 16"),
        ("attention: block_n float", lambda: primer.attention(m, m, m, block_n=16.0), TypeError, "block_n"),
        ("attention: bf16", lambda: primer.attention(m.bfloat16(), m, m), TypeError, "q: expected dtype float32"),
    ]


@needs_triton
@pytest.mark.parametrize("call, error, match", [pytest.param(*c[1:], id=c[0]) for c in _bad_calls()])
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@needs_triton
def test_empty_inputs_launch_nothing():
    assert primer.softmax(torch.randn(0, 5, device=DEVICE)).shape == (0, 5)
    m = torch.randn(3, 16, device=DEVICE)
    assert primer.attention(m[:0], m, m).shape == (0, 16)
