"""A Triton primer: the three smallest kernels that use everything FlashAttention's forward needs.

What the reader will learn here (notebook 04): a kernel runs as a grid of *programs*, each finding
its work from ``tl.program_id``; it builds offsets with ``tl.arange`` and strides, reads and
writes blocks with masked ``tl.load`` / ``tl.store``, takes its block sizes and flags as
``tl.constexpr``, reduces with ``tl.max`` / ``tl.sum``, and multiplies tiles with ``tl.dot``.

* :func:`add_kernel`: ``x + y``, one program per block of elements (the grid, masks);
* :func:`softmax_kernel`: the softmax of each row, one program per row (strides, ``other=-inf``,
  a constexpr flag, reductions);
* :func:`attention_kernel`: FlashAttention-2's forward for one head in float32 (``tl.dot``, the
  online softmax in a loop over key blocks); no causal mask, no batch, no flags.

Their NumPy versions, statement for statement, are in ``primer_numpy.py``. Each kernel has a host
wrapper that (1) checks its inputs, (2) allocates the output, (3) picks the grid and launches.
This file imports Triton: ``kernels/__init__.py`` does not import it, so ``import kernels`` works
without Triton; import it as ``from kernels import primer`` where Triton is installed.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._checks import check_causal, check_runs_here
from .primer_numpy import LOG2E

#: the longest row ``softmax`` takes: one program holds the whole row in one block
MAX_ROW = 16384
#: ``tl.dot`` needs every side of both tiles >= 16 (the compiler refuses less; the interpreter
#: does not check, which is why the wrappers do)
MIN_DOT = 16
#: the largest head_dim ``attention`` takes: its ``[BLOCK_M, HEAD_DIM]`` accumulator stays in registers
MAX_HEAD_DIM = 128


# --------------------------------------------------------------------------------------------
# The kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def add_kernel(x_ptr, y_ptr, out_ptr,  # pointers to the first element of each tensor
               n,  # number of elements
               BLOCK: tl.constexpr):  # elements per program, a power of two
    pid = tl.program_id(0)  # which program am I: 0 .. grid[0] - 1
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]: the elements this program owns
    mask = offs < n  # the last program runs past the end
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x + y, mask=mask)


@triton.jit
def softmax_kernel(x_ptr, out_ptr,  # pointers
                   stride_xm, stride_xn, stride_om, stride_on,  # strides, in elements
                   n_cols,  # row length
                   BLOCK_N: tl.constexpr,  # a power of two >= n_cols: one block holds a row
                   CAUSAL: tl.constexpr):  # keep only the columns j <= i of row i
    row = tl.program_id(0)  # one program per row
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < n_cols
    # [BLOCK_N]; the lanes past the row read -inf, which changes neither the max nor the sum
    x = tl.load(x_ptr + row * stride_xm + offs_n * stride_xn, mask=mask_n, other=float("-inf"))
    if CAUSAL:  # decided when the kernel is compiled: with CAUSAL=False this line does not exist
        x = tl.where(offs_n <= row, x, float("-inf"))
    m = tl.max(x, axis=0)
    p = tl.exp(x - m)  # exp(-inf) = 0 on the masked lanes
    l = tl.sum(p, axis=0)
    tl.store(out_ptr + row * stride_om + offs_n * stride_on, p / l, mask=mask_n)


@triton.jit
def attention_kernel(q_ptr, k_ptr, v_ptr, o_ptr,  # pointers
                     stride_qm, stride_qd, stride_kn, stride_kd,  # strides, in elements
                     stride_vn, stride_vd, stride_om, stride_od,
                     seqlen_q, seqlen_k,  # sizes
                     qk_scale,  # softmax_scale * log2(e): scores in base-2 units
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,  # tiles: powers of two >= 16
                     HEAD_DIM: tl.constexpr):  # head_dim: a power of two >= 16
    start_m = tl.program_id(0) * BLOCK_M  # this program's block of queries
    offs_m = start_m + tl.arange(0, BLOCK_M)
    mask_m = offs_m < seqlen_q
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None], other=0.0)  # [BLOCK_M, HEAD_DIM]
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, seqlen_k, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < seqlen_k
        k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                    mask=mask_n[:, None], other=0.0)  # [BLOCK_N, HEAD_DIM]
        v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=mask_n[:, None], other=0.0)  # [BLOCK_N, HEAD_DIM]
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale  # [BLOCK_M, BLOCK_N]
        s = tl.where(mask_n[None, :], s, float("-inf"))  # padded keys get no weight
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, out,
             mask=mask_m[:, None])


# --------------------------------------------------------------------------------------------
# Host wrappers: check, allocate, launch
# --------------------------------------------------------------------------------------------
def _check_tensor(name: str, t, ndim: int, dtypes: tuple[torch.dtype, ...]) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name}: expected dtype {allowed}, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {tuple(t.shape)}")


def _check_block(name: str, block, minimum: int = 1) -> int:
    if isinstance(block, bool) or not isinstance(block, int):
        raise TypeError(f"{name}: expected an int, got {type(block).__name__} {block!r}")
    if block < minimum or block & (block - 1):
        raise ValueError(f"{name}: expected a power of two >= {minimum} (tl.arange needs a power of "
                         f"two{', tl.dot at least 16' if minimum == MIN_DOT else ''}), got {block}")
    return block


def add(x: torch.Tensor, y: torch.Tensor, *, block: int = 1024) -> torch.Tensor:
    """``x + y`` by :func:`add_kernel`.

    Args:
        x, y: contiguous 1-D tensors of one floating dtype, on one device (CUDA, or the CPU under
            Triton's interpreter).
        block: elements per program, a power of two.

    Returns:
        ``out`` of the shape and dtype of ``x``.
    """
    floats = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    _check_tensor("x", x, 1, floats)
    _check_tensor("y", y, 1, floats)
    if y.shape != x.shape or y.dtype != x.dtype or y.device != x.device:
        raise ValueError(f"y: expected shape {tuple(x.shape)}, dtype {x.dtype} and device {x.device} "
                         f"(as x), got {tuple(y.shape)}, {y.dtype}, {y.device}")
    for name, t in (("x", x), ("y", y)):
        if not t.is_contiguous():
            raise ValueError(f"{name}: expected a contiguous tensor (add_kernel reads element i at "
                             "x_ptr + i), got strides " + str(t.stride()))
    _check_block("block", block)
    check_runs_here(x)
    out = torch.empty_like(x)
    n = x.numel()
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK"]),)  # noqa: E731  (the launch reads BLOCK from the call)
    add_kernel[grid](x, y, out, n, BLOCK=block)
    return out


def softmax(x: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
    """The softmax of each row of ``x`` by :func:`softmax_kernel`, one program per row.

    Args:
        x: ``(rows, cols)`` float32, any strides, ``1 <= cols <= MAX_ROW``.
        causal: row ``i`` keeps only the columns ``j <= i`` (top-left aligned).

    Returns:
        ``out``, contiguous, of the shape of ``x``.
    """
    _check_tensor("x", x, 2, (torch.float32,))
    check_causal(causal)
    n_rows, n_cols = x.shape
    if not 1 <= n_cols <= MAX_ROW:
        raise ValueError(f"x: expected 1 to {MAX_ROW} columns (one block holds a row; longer rows "
                         f"need a loop, the online softmax of notebook 03), got {n_cols}")
    check_runs_here(x)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if n_rows == 0:
        return out
    softmax_kernel[(n_rows,)](x, out, *x.stride(), *out.stride(), n_cols,
                              BLOCK_N=triton.next_power_of_2(n_cols), CAUSAL=causal)
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_m: int = 16,
              block_n: int = 16) -> torch.Tensor:
    """``softmax(q k^T / sqrt(head_dim)) v`` for one head by :func:`attention_kernel`, one program
    per block of ``block_m`` queries.

    Args:
        q: ``(seqlen_q, head_dim)`` float32; ``head_dim`` a power of two in [16, 128].
        k, v: ``(seqlen_k, head_dim)`` float32, ``seqlen_k >= 1``; any strides.
        block_m, block_n: query and key tiles, powers of two >= 16 (``tl.dot``'s minimum).

    Returns:
        ``out`` ``(seqlen_q, head_dim)``, contiguous.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 2, (torch.float32,))
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v: expected one device, got {q.device}, {k.device}, {v.device}")
    if k.shape != v.shape:
        raise ValueError(f"v: expected the shape of k {tuple(k.shape)}, got {tuple(v.shape)}")
    seqlen_q, head_dim = q.shape
    seqlen_k = k.shape[0]
    if k.shape[1] != head_dim:
        raise ValueError(f"k: expected head_dim {head_dim} (as q), got {k.shape[1]}")
    if head_dim < MIN_DOT or head_dim > MAX_HEAD_DIM or head_dim & (head_dim - 1):
        raise ValueError(f"q: head_dim must be a power of two in [{MIN_DOT}, {MAX_HEAD_DIM}] (this "
                         f"kernel does not pad it), got {head_dim}")
    if seqlen_k < 1:
        raise ValueError("k: expected at least one key (a row with no key has no softmax)")
    _check_block("block_m", block_m, MIN_DOT)
    _check_block("block_n", block_n, MIN_DOT)
    check_runs_here(q)
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if seqlen_q == 0:
        return out
    qk_scale = LOG2E / math.sqrt(head_dim)
    attention_kernel[(triton.cdiv(seqlen_q, block_m),)](
        q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        seqlen_q, seqlen_k, qk_scale, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim)
    return out
