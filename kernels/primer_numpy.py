"""The Triton primer's three kernels in NumPy, statement for statement (notebook 04).

What the reader will learn here: what each kernel of ``kernels/primer.py`` computes, with the
launch grid written as a Python loop over program ids and the masked loads and stores written as
two small helpers, :func:`load` and :func:`store`. The names are the kernels' names, so the two
versions can be read side by side (the notebook prints a line-by-line diff of the attention).

Pure NumPy: this module runs where Triton does not (macOS, Windows), which is why it is not in
``primer.py`` (that file imports Triton).
"""

from __future__ import annotations

import math

import numpy as np

LOG2E = math.log2(math.e)  # exp(x) = exp2(x * log2(e)); exp2 is the cheaper GPU instruction


def cdiv(a: int, b: int) -> int:
    """``triton.cdiv``: the number of blocks of ``b`` that cover ``a``, ``ceil(a / b)``."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """``triton.next_power_of_2``: the smallest power of two >= ``n`` (``tl.arange`` needs one)."""
    return 1 << max(n - 1, 0).bit_length()


def load(a: np.ndarray, offs: np.ndarray, mask: np.ndarray, other: float = 0.0) -> np.ndarray:
    """What ``tl.load(a_ptr + offs, mask=mask, other=other)`` returns: ``a[offs]`` where ``mask``,
    ``other`` elsewhere. ``offs`` index ``a``'s first axis (NumPy applies the strides itself); a
    masked lane reads nothing, so its offset may lie past the end."""
    rows = a[np.where(mask, offs, 0)]  # masked lanes read row 0 (any valid row), then get `other`
    return np.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), rows, other)


def store(a: np.ndarray, offs: np.ndarray, mask: np.ndarray, value: np.ndarray) -> None:
    """What ``tl.store(a_ptr + offs, value, mask=mask)`` does: ``a[offs] = value`` where ``mask``."""
    a[offs[mask]] = value[mask]


def add_numpy(x: np.ndarray, y: np.ndarray, BLOCK: int = 1024) -> np.ndarray:
    """``x + y`` for 1-D arrays, as ``add_kernel`` computes it: one program per ``BLOCK`` elements."""
    n = x.shape[0]
    out = np.empty_like(x)
    for pid in range(cdiv(n, BLOCK)):  # the grid: the programs run in any order, here one by one
        offs = pid * BLOCK + np.arange(0, BLOCK)  # [BLOCK]: the elements this program owns
        mask = offs < n  # the last program runs past the end
        store(out, offs, mask, load(x, offs, mask) + load(y, offs, mask))
    return out


def softmax_numpy(x: np.ndarray, causal: bool = False) -> np.ndarray:
    """The softmax of each row of a 2-D array, as ``softmax_kernel`` computes it: one program per
    row, the row padded to a power of two with ``-inf``. ``causal``: row ``i`` keeps the columns
    ``j <= i`` (top-left)."""
    n_rows, n_cols = x.shape
    BLOCK_N = next_power_of_2(n_cols)
    out = np.empty_like(x)
    for row in range(n_rows):  # the grid: one program per row
        offs_n = np.arange(0, BLOCK_N)
        mask_n = offs_n < n_cols
        x_row = load(x[row], offs_n, mask_n, other=float("-inf"))  # [BLOCK_N]
        if causal:
            x_row = np.where(offs_n <= row, x_row, float("-inf"))
        m = np.max(x_row, axis=0)
        p = np.exp(x_row - m)  # exp(-inf) = 0 on the padded lanes
        l = np.sum(p, axis=0)
        store(out[row], offs_n, mask_n, p / l)
    return out


def attention_numpy(Q: np.ndarray, K: np.ndarray, V: np.ndarray, BLOCK_M: int = 16,
                    BLOCK_N: int = 16) -> np.ndarray:
    """``softmax(Q K^T / sqrt(d)) V`` for one head, ``Q`` ``(seqlen_q, d)`` and ``K``, ``V``
    ``(seqlen_k, d)``: FlashAttention-2's forward as ``attention_kernel`` computes it, the grid
    of query blocks written as the outer loop. No mask, so every row sees key 0 in the first
    block and the running max is finite from then on."""
    seqlen_q, HEAD_DIM = Q.shape
    seqlen_k = K.shape[0]
    qk_scale = LOG2E / math.sqrt(HEAD_DIM)  # scores in base-2 units: exp2(s * log2(e)) = exp(s)
    O = np.zeros_like(Q)
    for start_m in range(0, seqlen_q, BLOCK_M):  # the grid: one program per block of queries
        offs_m = start_m + np.arange(0, BLOCK_M)
        mask_m = offs_m < seqlen_q
        q = load(Q, offs_m, mask_m)  # [BLOCK_M, HEAD_DIM]
        m_i = np.full([BLOCK_M], float("-inf"))
        l_i = np.zeros([BLOCK_M])
        acc = np.zeros([BLOCK_M, HEAD_DIM])
        for start_n in range(0, seqlen_k, BLOCK_N):
            offs_n = start_n + np.arange(0, BLOCK_N)
            mask_n = offs_n < seqlen_k
            k = load(K, offs_n, mask_n)  # [BLOCK_N, HEAD_DIM]
            v = load(V, offs_n, mask_n)  # [BLOCK_N, HEAD_DIM]
            s = (q @ k.T) * qk_scale  # [BLOCK_M, BLOCK_N]
            s = np.where(mask_n[None, :], s, float("-inf"))  # padded keys get no weight
            m_new = np.maximum(m_i, np.max(s, axis=1))
            p = np.exp2(s - m_new[:, None])
            alpha = np.exp2(m_i - m_new)  # rescales what was summed under the old max
            l_i = l_i * alpha + np.sum(p, axis=1)
            acc = acc * alpha[:, None] + p @ v
            m_i = m_new
        out = acc / l_i[:, None]
        store(O, offs_m, mask_m, out)
    return O
