"""Solutions to notebook 04's exercises (the Triton primer), and the mistakes their checks must catch.

The kernels are ``@triton.jit`` functions. Without Triton (macOS, Windows) they stay plain
functions, which ``show_solution`` can still print but nothing runs (their checks report skip).
"""

from __future__ import annotations  # the kernels' annotations (tl.constexpr) stay text for Triton

import torch

import kernels

if kernels.HAS_TRITON:
    import triton
    import triton.language as tl
else:  # no Triton: @triton.jit below leaves each kernel a plain function, to be read, not run
    from types import SimpleNamespace

    triton = SimpleNamespace(jit=lambda fn: fn)


def tile_offsets(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    offs_m = pid_m * BLOCK_M + torch.arange(BLOCK_M)  # [BLOCK_M]: the tile's rows
    offs_n = pid_n * BLOCK_N + torch.arange(BLOCK_N)  # [BLOCK_N]: its columns
    offsets = offs_m[:, None] * stride_m + offs_n[None, :] * stride_n  # [BLOCK_M, BLOCK_N]
    mask = (offs_m[:, None] < n_rows) & (offs_n[None, :] < n_cols)  # both edges can be ragged
    return offsets, mask


@triton.jit
def scale_add_kernel(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = offs < n  # the last program runs past the end of the tensors
    x = tl.load(x_ptr + offs, mask=mask)
    y = tl.load(y_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, x * scale + y, mask=mask)


@triton.jit
def row_lse_kernel(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    offs_n = tl.arange(0, BLOCK_N)
    # [BLOCK_N]: -inf in the lanes past the row, so they change neither the max nor the sum
    x = tl.load(x_ptr + row * stride_xm + offs_n * stride_xn, mask=offs_n < n_cols, other=float("-inf"))
    m = tl.max(x, axis=0)  # subtracted before exp, so that nothing overflows
    lse = m + tl.log(tl.sum(tl.exp(x - m), axis=0))
    tl.store(lse_ptr + row, lse)


@triton.jit
def attention_lse_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,  # pointers
                         stride_qm, stride_qd, stride_kn, stride_kd,  # strides
                         stride_vn, stride_vd, stride_om, stride_od,
                         seqlen_q, seqlen_k, qk_scale,  # sizes; softmax_scale * log2(e)
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                         CAUSAL: tl.constexpr):  # bottom-right causal mask
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    mask_m = offs_m < seqlen_q
    q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=mask_m[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    for start_n in range(0, seqlen_k, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < seqlen_k
        # K_j^T [HEAD_DIM, BLOCK_N], loaded transposed through the strides (as kernels/flash_fwd.py does)
        kt = tl.load(k_ptr + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                     mask=mask_n[None, :], other=0.0)
        v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                    mask=mask_n[:, None], other=0.0)
        s = tl.dot(q, kt, input_precision="ieee") * qk_scale  # [BLOCK_M, BLOCK_N], base-2 units
        valid = mask_n[None, :]  # the ragged last block's padded keys
        if CAUSAL:  # query i sits at key position i + seqlen_k - seqlen_q and sees the keys up to it
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + (seqlen_k - seqlen_q))
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: exp2(-inf - 0) = 0
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    empty = l_i == 0.0  # rows that saw no key: out 0, lse -inf
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    # base 2 back to natural log: times ln(2)
    lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
    tl.store(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, out, mask=mask_m[:, None])
    tl.store(lse_ptr + offs_m, lse, mask=mask_m)


# --------------------------------------------------------------------------------------------
# Mistakes
# --------------------------------------------------------------------------------------------
def _offsets_swapped_strides(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    """Multiplies the rows by stride_n and the columns by stride_m."""
    offs_m = pid_m * BLOCK_M + torch.arange(BLOCK_M)
    offs_n = pid_n * BLOCK_N + torch.arange(BLOCK_N)
    mask = (offs_m[:, None] < n_rows) & (offs_n[None, :] < n_cols)
    return offs_m[:, None] * stride_n + offs_n[None, :] * stride_m, mask


def _offsets_rows_mask_only(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    """Masks the rows past the end, but not the columns."""
    offs_m = pid_m * BLOCK_M + torch.arange(BLOCK_M)
    offs_n = pid_n * BLOCK_N + torch.arange(BLOCK_N)
    mask = (offs_m[:, None] < n_rows) & (offs_n[None, :] >= 0)
    return offs_m[:, None] * stride_m + offs_n[None, :] * stride_n, mask


def _offsets_no_program_offset(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    """Forgets pid * BLOCK: every program reads tile (0, 0)."""
    offs_m = torch.arange(BLOCK_M)
    offs_n = torch.arange(BLOCK_N)
    mask = (offs_m[:, None] < n_rows) & (offs_n[None, :] < n_cols)
    return offs_m[:, None] * stride_m + offs_n[None, :] * stride_n, mask


def _offsets_off_by_one(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    """Masks with <= instead of <: keeps one row and one column past the end."""
    offs_m = pid_m * BLOCK_M + torch.arange(BLOCK_M)
    offs_n = pid_n * BLOCK_N + torch.arange(BLOCK_N)
    mask = (offs_m[:, None] <= n_rows) & (offs_n[None, :] <= n_cols)
    return offs_m[:, None] * stride_m + offs_n[None, :] * stride_n, mask


MISTAKES = {"tile_offsets": [_offsets_swapped_strides, _offsets_rows_mask_only, _offsets_no_program_offset,
                             _offsets_off_by_one]}

if kernels.HAS_TRITON:  # the kernels' mistakes run only with Triton (their checks skip without)
    from triton.runtime import KernelInterface

    @triton.jit
    def _scale_add_no_mask(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
        """No mask: the last program reads and writes past the end of the tensors."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + offs, tl.load(x_ptr + offs) * scale + tl.load(y_ptr + offs))

    @triton.jit
    def _scale_add_off_by_one(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
        """Masks with offs <= n: writes one element past the end."""
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs <= n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * scale + tl.load(y_ptr + offs, mask=mask),
                 mask=mask)

    @triton.jit
    def _scale_add_no_program_offset(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
        """Forgets pid * BLOCK: every program computes the first block."""
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * scale + tl.load(y_ptr + offs, mask=mask),
                 mask=mask)

    @triton.jit
    def _row_lse_other_zero(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr):
        """Masked lanes read 0 (other=0.0): they join the max and add exp(0 - m) to the sum."""
        row = tl.program_id(0)
        offs_n = tl.arange(0, BLOCK_N)
        x = tl.load(x_ptr + row * stride_xm + offs_n * stride_xn, mask=offs_n < n_cols, other=0.0)
        m = tl.max(x, axis=0)
        tl.store(lse_ptr + row, m + tl.log(tl.sum(tl.exp(x - m), axis=0)))

    @triton.jit
    def _row_lse_no_max(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr):
        """log(sum(exp(x))) without subtracting the max: exp overflows for large scores."""
        row = tl.program_id(0)
        offs_n = tl.arange(0, BLOCK_N)
        x = tl.load(x_ptr + row * stride_xm + offs_n * stride_xn, mask=offs_n < n_cols, other=float("-inf"))
        tl.store(lse_ptr + row, tl.log(tl.sum(tl.exp(x), axis=0)))

    @triton.jit
    def _row_lse_contiguous(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr):
        """Ignores the strides: assumes row i starts at i * n_cols and its elements are adjacent."""
        row = tl.program_id(0)
        offs_n = tl.arange(0, BLOCK_N)
        x = tl.load(x_ptr + row * n_cols + offs_n, mask=offs_n < n_cols, other=float("-inf"))
        m = tl.max(x, axis=0)
        tl.store(lse_ptr + row, m + tl.log(tl.sum(tl.exp(x - m), axis=0)))

    @triton.jit
    def _attention_with_mistake(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,
                                stride_qm, stride_qd, stride_kn, stride_kd,
                                stride_vn, stride_vd, stride_om, stride_od,
                                seqlen_q, seqlen_k, qk_scale,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                                CAUSAL: tl.constexpr, MISTAKE: tl.constexpr):
        """attention_lse_kernel with one mistake, chosen by MISTAKE (see _MISTAKE_DOCS)."""
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        mask_m = offs_m < seqlen_q
        q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                    mask=mask_m[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        for start_n in range(0, seqlen_k, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < seqlen_k
            k = tl.load(k_ptr + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                        mask=mask_n[:, None], other=0.0)
            v = tl.load(v_ptr + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                        mask=mask_n[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
            valid = offs_n[None, :] >= 0  # every key
            if MISTAKE != 1:
                valid = valid & mask_n[None, :]
            if CAUSAL:
                if MISTAKE == 4:
                    valid = valid & (offs_n[None, :] <= offs_m[:, None])
                else:
                    valid = valid & (offs_n[None, :] <= offs_m[:, None] + (seqlen_k - seqlen_q))
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            if MISTAKE == 5:
                m_safe = m_new
            else:
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            if MISTAKE == 2:
                p = tl.exp(s - m_safe[:, None])
                alpha = tl.exp(m_i - m_safe)
            else:
                p = tl.exp2(s - m_safe[:, None])
                alpha = tl.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if MISTAKE == 0:
                acc = acc + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            m_i = m_new
        empty = l_i == 0.0
        l_safe = tl.where(empty, 1.0, l_i)
        if MISTAKE == 6:
            out = acc / l_i[:, None]
        else:
            out = acc / l_safe[:, None]
        if MISTAKE == 3:
            lse = tl.where(empty, float("-inf"), m_i + tl.log2(l_safe))
        else:
            lse = tl.where(empty, float("-inf"), (m_i + tl.log2(l_safe)) * 0.6931471805599453)
        tl.store(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, out, mask=mask_m[:, None])
        tl.store(lse_ptr + offs_m, lse, mask=mask_m)

    _MISTAKE_DOCS = ["Forgets to rescale acc by alpha when the running max grows (l_i is rescaled).",
                     "Does not mask the scores of the ragged last key block: padded keys get weight.",
                     "Uses exp instead of exp2 on scores that qk_scale put in base-2 units.",
                     "Stores the log-sum-exp in base 2 (m_i + log2(l_i)), not multiplied by ln(2).",
                     "Causal mask aligned top-left (key j visible when j <= i), not bottom-right.",
                     "No m_safe guard: exp2(-inf - (-inf)) = NaN for a row that has seen no key.",
                     "Divides by l_i without a guard: out = 0 / 0 = NaN for a row that sees no key."]

    class _Mistaken(KernelInterface):
        """A kernel launched with its MISTAKE flag set: ``self[grid](...)`` runs
        ``kernel[grid](..., MISTAKE=flag)``."""

        def __init__(self, kernel, flag: int):
            self.kernel, self.flag = kernel, flag
            self.__name__ = f"attention_lse_kernel with MISTAKE={flag}"
            self.__doc__ = _MISTAKE_DOCS[flag]

        def __getitem__(self, grid):
            return lambda *args, **meta: self.kernel[grid](*args, MISTAKE=self.flag, **meta)

    MISTAKES.update({
        "scale_add_kernel": [_scale_add_no_mask, _scale_add_off_by_one, _scale_add_no_program_offset],
        "row_lse_kernel": [_row_lse_other_zero, _row_lse_no_max, _row_lse_contiguous],
        "attention_lse_kernel": [_Mistaken(_attention_with_mistake, flag)
                                 for flag in range(len(_MISTAKE_DOCS))],
    })
