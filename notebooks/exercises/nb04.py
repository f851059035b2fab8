"""Checks for notebook 04 (the Triton primer): a tile's offsets and mask, a masked kernel, a row
log-sum-exp kernel, and FlashAttention's forward for one head, causal or not, with its log-sum-exp.

The kernels' checks launch the reader's ``@triton.jit`` function with the signature that the
notebook's spec gives (through the interpreter on a CPU, compiled on a GPU). This module imports
no Triton at the top: it is loaded, and its first check runs, without Triton too.
"""

from __future__ import annotations

import math

import torch

from . import Mismatch, describe, exercise, expect_close

LOG2E = math.log2(math.e)


def _device() -> str:
    import kernels

    return "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"


def _launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """``kernel[grid](*args, **meta)`` for a ``@triton.jit`` kernel. Anything else is called
    instead, so that a stub's NotImplementedError reaches the framework ("not implemented")."""
    from triton.runtime import KernelInterface

    if kernel is None:
        raise NotImplementedError
    if not isinstance(kernel, KernelInterface):
        try:
            kernel(*args, **meta)
        except NotImplementedError:
            raise
        except Exception:  # noqa: BLE001  (a kernel body run as plain Python fails at tl.program_id)
            pass
        raise Mismatch("expected a @triton.jit kernel: put @triton.jit on the line above your def")
    kernel[grid](*args, **meta)


# --------------------------------------------------------------------------------------------
# 1. The offsets and mask of one tile (NumPy or PyTorch: runs without Triton)
# --------------------------------------------------------------------------------------------
# (what, n_rows, n_cols, stride_m, stride_n): a contiguous matrix, a transposed view, a slice of
# the columns of a wider matrix (its row stride is not n_cols), one element
LAYOUTS = [("a contiguous 7 x 5 matrix", 7, 5, 5, 1),
           ("the transpose of a contiguous 5 x 7 matrix", 7, 5, 1, 7),
           ("columns 2..8 of a 6 x 11 matrix", 6, 7, 11, 1),
           ("a 1 x 1 matrix", 1, 1, 1, 1)]


@exercise("04.tile_offsets")
def _tile_offsets(tile_offsets) -> str:
    """tile_offsets(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n) ->
    (offsets, mask), both [BLOCK_M, BLOCK_N]: what tile (pid_m, pid_n) of a strided matrix loads."""
    tiles = 0
    for what, n_rows, n_cols, stride_m, stride_n in LAYOUTS:
        for block_m, block_n in ((4, 4), (2, 8)):
            for pid_m in range(-(-n_rows // block_m)):
                for pid_n in range(-(-n_cols // block_n)):
                    rows = pid_m * block_m + torch.arange(block_m)
                    cols = pid_n * block_n + torch.arange(block_n)
                    want_offsets = rows[:, None] * stride_m + cols[None, :] * stride_n
                    want_mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
                    got = tile_offsets(pid_m, pid_n, block_m, block_n, n_rows, n_cols, stride_m, stride_n)
                    if not (isinstance(got, tuple) and len(got) == 2):
                        raise Mismatch("expected a tuple (offsets, mask)")
                    where = (f"tile ({pid_m}, {pid_n}) of {what} (strides ({stride_m}, {stride_n})), "
                             f"blocks {block_m} x {block_n}")
                    mask = torch.as_tensor(got[1])
                    expect_close(f"{where}: mask", mask.to(torch.float64), want_mask.to(torch.float64),
                                 rtol=0)
                    offsets = torch.as_tensor(got[0]).to(torch.float64)
                    if offsets.shape != want_offsets.shape:
                        raise Mismatch(f"{where}: offsets of shape {tuple(offsets.shape)}, expected "
                                       f"{tuple(want_offsets.shape)}")
                    offsets = torch.where(want_mask, offsets, want_offsets.to(torch.float64))  # masked: any
                    expect_close(f"{where}: offsets", offsets, want_offsets, rtol=0)
                    tiles += 1
    return f"{tiles} tiles of 4 layouts (transposed, a column slice, ragged edges), two block shapes"


# --------------------------------------------------------------------------------------------
# 2. out = x * scale + y, masked
# --------------------------------------------------------------------------------------------
@exercise("04.scale_add_kernel", needs_triton=True)
def _scale_add_kernel(scale_add_kernel) -> str:
    """scale_add_kernel(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr), launched on
    cdiv(n, BLOCK) programs: out = x * scale + y, and nothing written past the end of out."""
    device = _device()
    gen = torch.Generator().manual_seed(4)
    scale = -1.5
    cases = [dict(n=1, BLOCK=16), dict(n=15, BLOCK=16), dict(n=16, BLOCK=16), dict(n=37, BLOCK=16),
             dict(n=100, BLOCK=32)]
    for case in cases:
        n, block = case["n"], case["BLOCK"]
        pad = 2 * block  # room past the end, so that an unmasked load or store stays in the buffers
        x_buf, y_buf = (torch.randn(n + pad, generator=gen).to(device) for _ in range(2))
        out_buf = torch.full((n + pad,), math.nan, device=device)  # the tail is a canary: NaN
        x, y, out = x_buf[:n], y_buf[:n], out_buf[:n]
        _launch(scale_add_kernel, (-(-n // block),), x, y, out, n, scale, BLOCK=block)
        where = f"case {describe(case)}, scale={scale}"
        expect_close(f"{where}: out", out, x.double() * scale + y.double(), rtol=1e-6, atol=1e-6)
        written = ~torch.isnan(out_buf[n:]).cpu()
        if written.any():
            i = int(written.nonzero()[0])
            raise Mismatch(f"{where}: element {n + i} of the buffer was written "
                           f"({out_buf[n + i].item():.6g}), past the end of out (length {n}): is every "
                           "store masked with offs < n?")
    return (f"{len(cases)} lengths (1, a prime, one below and at a multiple of BLOCK), nothing written "
            "past the end")


# --------------------------------------------------------------------------------------------
# 3. The log-sum-exp of each row
# --------------------------------------------------------------------------------------------
@exercise("04.row_lse_kernel", needs_triton=True)
def _row_lse_kernel(row_lse_kernel) -> str:
    """row_lse_kernel(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr), one
    program per row: lse[row] = log(sum_j exp(x[row, j])), for rows far below and above 0."""
    device = _device()
    gen = torch.Generator().manual_seed(5)
    cases = [dict(rows=3, n_cols=1, BLOCK_N=16), dict(rows=4, n_cols=5, BLOCK_N=16),
             dict(rows=4, n_cols=13, BLOCK_N=16), dict(rows=3, n_cols=16, BLOCK_N=16),
             dict(rows=5, n_cols=17, BLOCK_N=32)]
    for i, case in enumerate(cases):
        rows, n_cols, block = case["rows"], case["n_cols"], case["BLOCK_N"]
        x = 3 * torch.randn(rows, n_cols, generator=gen)
        x[0] -= 50.0  # every score far below 0 (masked lanes that read 0 win the max)
        x[1] += 100.0  # exp(100) overflows float32 unless the max is subtracted first
        layout = "contiguous"
        if i % 2:  # a transposed view: stride_xn != 1
            x = x.t().contiguous().t()
            layout = "transposed"
        x = x.to(device)
        lse = torch.full((rows,), math.nan, device=device)
        _launch(row_lse_kernel, (rows,), x, lse, x.stride(0), x.stride(1), n_cols, BLOCK_N=block)
        where = f"case {describe(case)}, {layout} x (strides {x.stride()}); row 0 is x - 50, row 1 is x + 100"
        expect_close(f"{where}: lse", lse, torch.logsumexp(x.double(), dim=1), rtol=2e-6, atol=2e-5)
    return f"{len(cases)} shapes, rows shorter than the block, transposed inputs, scores near -50 and +100"


# --------------------------------------------------------------------------------------------
# 4. FlashAttention's forward for one head, causal or not, with the log-sum-exp
# --------------------------------------------------------------------------------------------
def _strided(rows: int, cols: int, how: str, gen, device) -> torch.Tensor:
    """A (rows, cols) float32 tensor stored contiguously, transposed, or as half of a wider one."""
    if how == "transposed":
        return torch.randn(cols, rows, generator=gen).to(device).t()
    if how == "sliced":
        return torch.randn(rows, 2 * cols, generator=gen).to(device)[:, cols:]
    return torch.randn(rows, cols, generator=gen).to(device)


@exercise("04.attention_lse_kernel", needs_triton=True)
def _attention_lse_kernel(attention_lse_kernel) -> str:
    """attention_lse_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, stride_qm, stride_qd, stride_kn,
    stride_kd, stride_vn, stride_vd, stride_om, stride_od, seqlen_q, seqlen_k, qk_scale, BLOCK_M,
    BLOCK_N, HEAD_DIM, CAUSAL), one program per BLOCK_M queries: out and lse of
    softmax(q k^T / sqrt(d)) v, with CAUSAL the bottom-right causal mask (rows that see no key:
    out 0, lse -inf)."""
    import kernels
    from kernels import attention_reference

    device = _device()
    gen = torch.Generator().manual_seed(6)
    # exact fp32 dots in the interpreter; a GPU's fp32 tl.dot defaults to TF32 (about 1e-3)
    tol = 1e-4 if kernels.INTERPRET else 5e-3
    cases = [dict(seqlen_q=1, seqlen_k=1, d=16), dict(seqlen_q=5, seqlen_k=37, d=16),
             dict(seqlen_q=33, seqlen_k=16, d=16), dict(seqlen_q=20, seqlen_k=50, d=32)]
    layouts = ["contiguous", "sliced", "transposed"]
    for i, case in enumerate(cases):
        nq, nk, d = case["seqlen_q"], case["seqlen_k"], case["d"]
        q = _strided(nq, d, layouts[i % 3], gen, device)
        k = _strided(nk, d, layouts[(i + 1) % 3], gen, device)
        v = _strided(nk, d, layouts[(i + 2) % 3], gen, device)
        for causal in (False, True):  # causal (33, 16): the first 17 queries see no key
            out = torch.full((nq, d), math.nan, device=device)
            lse = torch.full((nq,), math.nan, device=device)
            _launch(attention_lse_kernel, (-(-nq // 16),), q, k, v, out, lse, *q.stride(), *k.stride(),
                    *v.stride(), *out.stride(), nq, nk, LOG2E / math.sqrt(d), BLOCK_M=16, BLOCK_N=16,
                    HEAD_DIM=d, CAUSAL=causal)
            out_ref, lse_ref = attention_reference(*(t.double()[None, None] for t in (q, k, v)),
                                                   causal=causal, return_lse=True)
            where = f"case {describe(dict(case, causal=causal))}, blocks 16 x 16"
            expect_close(f"{where}: out", out, out_ref[0, 0], rtol=tol, atol=tol)
            expect_close(f"{where}: lse", lse, lse_ref[0, 0], rtol=tol, atol=tol)
    return (f"{len(cases)} cases, causal and not: one query and one key, seqlen_q != seqlen_k both ways "
            "(rows that see no key), ragged last blocks, transposed and sliced inputs")
