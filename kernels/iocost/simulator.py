"""The simulator: the tiled algorithms run in NumPy through an explicit SRAM that counts traffic.

HBM is a dict of NumPy arrays and :class:`SRAM` an object of ``M`` elements: the only way data
reaches the arithmetic is ``SRAM.load`` and the only way results leave is ``SRAM.store``, and
both count every element. The tests check that the counts equal the closed forms
(:mod:`.closed_forms`) *exactly*, and that the outputs equal naive attention.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .closed_forms import Traffic, flash1_block_sizes

# ---------------------------------------------------------------------------------------------
# The simulator: HBM is a dict of NumPy arrays, SRAM an object that counts what crosses
# ---------------------------------------------------------------------------------------------


class SRAM:
    """On-chip memory of ``capacity`` elements: the only door between HBM and the arithmetic.

    A kernel first :meth:`alloc`-ates its tiles at their full block shape (as a GPU kernel
    declares its shared memory); a block size whose tiles do not fit raises ``ValueError`` there,
    before any data moves. :meth:`load` copies rows of an HBM tensor into a tile and
    :meth:`store` copies a result back; both count every element, per tensor. Per-row statistics
    go through :meth:`load_stat`, counted but not charged to the capacity (registers on a GPU).

    ``hbm`` is a dict ``name -> 2-D or 1-D array``; :meth:`store` creates missing tensors.
    """

    def __init__(self, capacity: int, hbm: dict[str, np.ndarray]):
        self.capacity = int(capacity)
        self.hbm = hbm
        self.tiles: dict[str, np.ndarray] = {}
        self.reads: Counter = Counter()
        self.writes: Counter = Counter()

    @property
    def used(self) -> int:
        return sum(t.size for t in self.tiles.values())

    def alloc(self, name: str, rows: int, cols: int) -> np.ndarray:
        """Reserve a ``rows x cols`` tile; ``ValueError`` if it does not fit beside the others."""
        if self.used + rows * cols > self.capacity:
            held = ", ".join(f"{n} {t.shape[0]}x{t.shape[1]}" for n, t in self.tiles.items())
            raise ValueError(
                f"SRAM of {self.capacity} elements: tile {name} ({rows} x {cols} = {rows * cols}) "
                f"does not fit beside {self.used} elements already held ({held or 'nothing'}); "
                f"use smaller blocks or a larger M")
        self.tiles[name] = np.zeros((rows, cols))
        return self.tiles[name]

    def free_all(self) -> None:
        """End of a program: its tiles are released (nothing is written back implicitly)."""
        self.tiles.clear()

    def load(self, tile: str, tensor: str, rows: slice, cols: slice = slice(None)) -> np.ndarray:
        """Copy ``hbm[tensor][rows, cols]`` into ``tile``; returns the filled part of the tile."""
        src = self.hbm[tensor][rows, cols]
        dst = self.tiles[tile]
        if src.shape[0] > dst.shape[0] or src.shape[1] > dst.shape[1]:
            raise ValueError(f"load of {tensor} {src.shape} into tile {tile} {dst.shape}: too large")
        view = dst[: src.shape[0], : src.shape[1]]
        view[...] = src
        self.reads[tensor] += src.size
        return view

    def load_stat(self, tensor: str, rows: slice) -> np.ndarray:
        """Load one statistic per row (l, m, lse, delta) into registers: counted, not charged."""
        src = self.hbm[tensor][rows]
        self.reads[tensor] += src.size
        return src.copy()

    def store(self, tensor: str, rows: slice, value: np.ndarray, cols: slice = slice(None)) -> None:
        """Write ``value`` (a tile or a per-row vector) to ``hbm[tensor][rows(, cols)]``."""
        value = np.asarray(value, dtype=np.float64)
        dst = self.hbm[tensor]
        if dst.ndim == 1:
            dst[rows] = value
        else:
            dst[rows, cols] = value
        self.writes[tensor] += value.size

    def traffic(self) -> Traffic:
        return Traffic(self.reads, self.writes)


@dataclass
class Simulation:
    """What a simulator returns: the output, and with ``dO`` the gradients, with their traffic."""

    out: np.ndarray                 # (N, d)
    forward: Traffic                # HBM traffic of the forward pass
    grads: tuple | None = None      # (dQ, dK, dV) when dO was given
    backward: Traffic | None = None  # HBM traffic of the backward pass
    per_kernel: dict[str, Traffic] | None = None  # simulate_flash2 only: traffic of each kernel


def _exp_sub(a, b):
    """``exp(a - b)`` with ``exp(-inf - (-inf)) = 0``: a row that has seen no key stays empty."""
    with np.errstate(invalid="ignore"):
        e = np.exp(a - b)
    return np.where(np.isneginf(a), 0.0, e)


def _causal_visible(q_rows: slice, k_rows: slice, N: int, N_k: int) -> np.ndarray:
    """Boolean ``[rows, cols]``: query i sees key j iff ``j <= i + N_k - N``."""
    i = np.arange(q_rows.start, q_rows.stop)[:, None]
    j = np.arange(k_rows.start, k_rows.stop)[None, :]
    return j <= i + (N_k - N)


def _setup(Q, K, V, dO, scale, causal):
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    if Q.ndim != 2 or K.shape != V.shape or K.ndim != 2 or K.shape[1] != Q.shape[1]:
        raise ValueError(f"expected Q (N, d) and K, V (N_k, d), got {Q.shape}, {K.shape}, {V.shape}")
    N, d = Q.shape
    N_k = K.shape[0]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    hbm = {"Q": Q, "K": K, "V": V}
    if dO is not None:
        hbm["dO"] = np.asarray(dO, dtype=np.float64)
        if hbm["dO"].shape != Q.shape:
            raise ValueError(f"dO: expected shape {Q.shape}, got {hbm['dO'].shape}")

    def mask(q_rows, k_rows):
        if causal:
            return _causal_visible(q_rows, k_rows, N, N_k)
        return np.ones((q_rows.stop - q_rows.start, k_rows.stop - k_rows.start), dtype=bool)

    return hbm, N, N_k, d, scale, mask


def _blocks(n: int, b: int) -> list[slice]:
    return [slice(s, min(s + b, n)) for s in range(0, n, b)]


def _new(hbm, name, shape):
    """Allocate a tensor in HBM (no traffic). NaN-filled, so reading what was never written shows."""
    hbm[name] = np.full(shape, np.nan)


def simulate_standard(Q, K, V, M: int, *, block_r: int | None = None, block_c: int | None = None,
                      causal: bool = False, dO=None, scale: float | None = None) -> Simulation:
    """Standard attention, kernel by kernel, through an SRAM of ``M`` elements.

    The GEMMs hold a block of output rows on chip and stream the other operand; the softmax (and
    the dS pass of the backward) holds one whole row of S (of P and dP), so it needs ``N_k``
    (``2 N_k``) elements of SRAM. Default blocks: :func:`flash1_block_sizes` of ``M``. The counts
    equal :func:`standard_attention_io` with the same blocks.
    """
    hbm, N, N_k, d, scale, mask = _setup(Q, K, V, dO, scale, causal)
    if block_r is None or block_c is None:
        b_r, b_c = flash1_block_sizes(M, d)
        block_r = b_r if block_r is None else block_r
        block_c = b_c if block_c is None else block_c
    rows, cols = _blocks(N, block_r), _blocks(N_k, block_c)
    sram = SRAM(M, hbm)
    for name in ("S", "P", "O"):
        _new(hbm, name, (N, d) if name == "O" else (N, N_k))

    # Kernel 1: S = scale Q K^T. Hold Q_i, stream every K_j past it.
    sram.alloc("Q_i", block_r, d), sram.alloc("K_j", block_c, d)
    for r in rows:
        q = sram.load("Q_i", "Q", r)
        for c in cols:
            k = sram.load("K_j", "K", c)
            sram.store("S", r, scale * q @ k.T, c)  # [B_r, B_c]
    sram.free_all()

    # Kernel 2: P = softmax(S) with the mask, one whole row at a time.
    sram.alloc("S_row", 1, N_k)
    full_k = slice(0, N_k)
    for i in range(N):
        s = sram.load("S_row", "S", slice(i, i + 1))  # [1, N_k]
        s = np.where(mask(slice(i, i + 1), full_k), s, -np.inf)
        m = s.max(axis=1, keepdims=True)
        e = _exp_sub(s, m)
        total = e.sum(axis=1, keepdims=True)
        sram.store("P", slice(i, i + 1), np.divide(e, total, out=np.zeros_like(e), where=total > 0))
    sram.free_all()

    # Kernel 3: O = P V. Hold the accumulator O_i, stream P_ij and V_j.
    acc = sram.alloc("O_i", block_r, d)
    sram.alloc("P_ij", block_r, block_c), sram.alloc("V_j", block_c, d)
    for r in rows:
        acc[...] = 0.0
        for c in cols:
            p = sram.load("P_ij", "P", r, c)  # [B_r, B_c]
            v = sram.load("V_j", "V", c)      # [B_c, d]
            acc[: p.shape[0]] += p @ v
        sram.store("O", r, acc[: r.stop - r.start])
    sram.free_all()
    forward = sram.traffic()
    if dO is None:
        return Simulation(hbm["O"], forward)

    sram = SRAM(M, hbm)
    for name, shape in (("dP", (N, N_k)), ("dS", (N, N_k)), ("dQ", (N, d)), ("dK", (N_k, d)),
                        ("dV", (N_k, d))):
        _new(hbm, name, shape)

    def gemm_over_rows(out_name, out_rows, n_out, inner_rows, n_in, a_name, b_name, transpose_a,
                       factor):
        """out[o] = factor * sum_i A(o, i) @ B_i (A^T if transpose_a), holding out[o] on chip.

        ``out_rows``/``inner_rows`` are the blocks, of ``n_out``/``n_in`` rows at most."""
        acc = sram.alloc("acc", n_out, d)
        sram.alloc("A_tile", n_in if transpose_a else n_out, n_out if transpose_a else n_in)
        sram.alloc("B_tile", n_in, d)
        for o in out_rows:
            acc[...] = 0.0
            for i in inner_rows:
                a = sram.load("A_tile", a_name, i, o) if transpose_a else sram.load("A_tile", a_name, o, i)
                b = sram.load("B_tile", b_name, i)
                acc[: o.stop - o.start] += (a.T if transpose_a else a) @ b
            sram.store(out_name, o, factor * acc[: o.stop - o.start])
        sram.free_all()

    # Kernel 1: dV = P^T dO. Hold dV_j, stream P_ij and dO_i.
    gemm_over_rows("dV", cols, block_c, rows, block_r, "P", "dO", transpose_a=True, factor=1.0)
    # Kernel 2: dP = dO V^T. Hold dO_i, stream V_j.
    sram.alloc("dO_i", block_r, d), sram.alloc("V_j", block_c, d)
    for r in rows:
        do = sram.load("dO_i", "dO", r)
        for c in cols:
            sram.store("dP", r, do @ sram.load("V_j", "V", c).T, c)  # [B_r, B_c]
    sram.free_all()
    # Kernel 3: dS = P * (dP - rowsum(P * dP)), one row at a time.
    sram.alloc("P_row", 1, N_k), sram.alloc("dP_row", 1, N_k)
    for i in range(N):
        p = sram.load("P_row", "P", slice(i, i + 1))
        dp = sram.load("dP_row", "dP", slice(i, i + 1))
        sram.store("dS", slice(i, i + 1), p * (dp - (p * dp).sum(axis=1, keepdims=True)))
    sram.free_all()
    # Kernels 4 and 5: dQ = scale dS K (hold dQ_i), dK = scale dS^T Q (hold dK_j).
    gemm_over_rows("dQ", rows, block_r, cols, block_c, "dS", "K", transpose_a=False, factor=scale)
    gemm_over_rows("dK", cols, block_c, rows, block_r, "dS", "Q", transpose_a=True, factor=scale)
    return Simulation(hbm["O"], forward, (hbm["dQ"], hbm["dK"], hbm["dV"]), sram.traffic())


def simulate_flash1(Q, K, V, M: int, *, block_r: int | None = None, block_c: int | None = None,
                    causal: bool = False, dO=None, scale: float | None = None) -> Simulation:
    """FlashAttention-1 (paper Algorithms 1 and 4) through an SRAM of ``M`` elements.

    Blocks come from :func:`flash1_block_sizes` (its forward rule for the forward, its backward
    rule for the backward) unless given; given blocks are used for both passes. The counts equal
    :func:`flash1_io`.
    """
    hbm, N, N_k, d, scale, mask = _setup(Q, K, V, dO, scale, causal)

    def blocks(backward):
        if block_r is not None and block_c is not None:
            return block_r, block_c
        b_r, b_c = flash1_block_sizes(M, d, backward=backward)
        return (b_r if block_r is None else block_r), (b_c if block_c is None else block_c)

    b_r, b_c = blocks(backward=False)
    sram = SRAM(M, hbm)
    sram.alloc("K_j", b_c, d), sram.alloc("V_j", b_c, d)
    sram.alloc("Q_i", b_r, d), sram.alloc("O_i", b_r, d)
    for name, shape in (("O", (N, d)), ("l", (N,)), ("m", (N,))):
        _new(hbm, name, shape)
    # Line 2: O = 0, l = 0, m = -inf, in HBM.
    sram.store("O", slice(0, N), np.zeros((N, d)))
    sram.store("l", slice(0, N), np.zeros(N))
    sram.store("m", slice(0, N), np.full(N, -np.inf))
    for c in _blocks(N_k, b_c):                         # outer loop: K/V blocks
        k = sram.load("K_j", "K", c)                    # [B_c, d]
        v = sram.load("V_j", "V", c)                    # [B_c, d]
        for r in _blocks(N, b_r):                       # inner loop: Q blocks
            visible = mask(r, c)
            if not visible.any():                       # above the causal diagonal: skip
                continue
            q = sram.load("Q_i", "Q", r)                # [B_r, d]
            o = sram.load("O_i", "O", r)                # [B_r, d]
            l_i, m_i = sram.load_stat("l", r), sram.load_stat("m", r)
            s = np.where(visible, scale * q @ k.T, -np.inf)  # [B_r, B_c]
            m_tilde = s.max(axis=1)
            p_tilde = _exp_sub(s, m_tilde[:, None])
            l_tilde = p_tilde.sum(axis=1)
            m_new = np.maximum(m_i, m_tilde)
            alpha, beta = _exp_sub(m_i, m_new), _exp_sub(m_tilde, m_new)
            l_new = alpha * l_i + beta * l_tilde
            num = (alpha * l_i)[:, None] * o + beta[:, None] * (p_tilde @ v)
            o_new = np.divide(num, l_new[:, None], out=np.zeros_like(num), where=l_new[:, None] > 0)
            sram.store("O", r, o_new)
            sram.store("l", r, l_new)
            sram.store("m", r, m_new)
    forward = sram.traffic()
    if dO is None:
        return Simulation(hbm["O"], forward)

    b_r, b_c = blocks(backward=True)
    sram = SRAM(M, hbm)
    for name, shape in (("dQ", (N, d)), ("dK", (N_k, d)), ("dV", (N_k, d))):
        _new(hbm, name, shape)
    sram.alloc("K_j", b_c, d), sram.alloc("V_j", b_c, d)
    dk, dv = sram.alloc("dK_j", b_c, d), sram.alloc("dV_j", b_c, d)
    for name in ("Q_i", "O_i", "dO_i", "dQ_i"):
        sram.alloc(name, b_r, d)
    sram.store("dQ", slice(0, N), np.zeros((N, d)))
    for c in _blocks(N_k, b_c):
        n_c = c.stop - c.start
        k, v = sram.load("K_j", "K", c), sram.load("V_j", "V", c)
        dk[...] = 0.0
        dv[...] = 0.0
        for r in _blocks(N, b_r):
            visible = mask(r, c)
            if not visible.any():
                continue
            q, o = sram.load("Q_i", "Q", r), sram.load("O_i", "O", r)
            do, dq = sram.load("dO_i", "dO", r), sram.load("dQ_i", "dQ", r)
            l_i, m_i = sram.load_stat("l", r), sram.load_stat("m", r)
            s = np.where(visible, scale * q @ k.T, -np.inf)             # [B_r, B_c]
            p = np.divide(_exp_sub(s, m_i[:, None]), l_i[:, None],
                          out=np.zeros_like(s), where=l_i[:, None] > 0)
            dv[:n_c] += p.T @ do
            dp = do @ v.T                                               # [B_r, B_c]
            delta = (do * o).sum(axis=1)                                # rowsum(dO * O)
            ds = p * (dp - delta[:, None])
            sram.store("dQ", r, dq + scale * ds @ k)
            dk[:n_c] += scale * ds.T @ q
        sram.store("dK", c, dk[:n_c])
        sram.store("dV", c, dv[:n_c])
    return Simulation(hbm["O"], forward, (hbm["dQ"], hbm["dK"], hbm["dV"]), sram.traffic())


def simulate_flash2(Q, K, V, M: int, *, block_m: int, block_n: int, causal: bool = False,
                    dO=None, scale: float | None = None) -> Simulation:
    """The project's Triton kernels (FlashAttention-2 order), one program after another.

    Forward ``_attn_fwd``: per Q block, tiles Q_i, K_j, V_j and the accumulator O_i
    (``2 block_m d + 2 block_n d`` elements of SRAM). Backward: ``_attn_bwd_preprocess``
    (O_i, dO_i), ``_attn_bwd_dkdv`` (K_j, V_j, dK_j, dV_j, Q_i, dO_i) and ``_attn_bwd_dq``
    (Q_i, dO_i, dQ_i, K_j, V_j), each refused if its tiles do not fit in ``M``. The counts equal
    :func:`flash2_kernels_io` kernel by kernel, and :func:`flash2_io` in sum.
    """
    hbm, N, N_k, d, scale, mask = _setup(Q, K, V, dO, scale, causal)
    rows, cols = _blocks(N, block_m), _blocks(N_k, block_n)
    for name, shape in (("O", (N, d)), ("lse", (N,))):
        _new(hbm, name, shape)
    sram = SRAM(M, hbm)
    sram.alloc("Q_i", block_m, d), sram.alloc("K_j", block_n, d), sram.alloc("V_j", block_n, d)
    acc = sram.alloc("O_i", block_m, d)
    for r in rows:                                      # one program per Q block
        n_r = r.stop - r.start
        q = sram.load("Q_i", "Q", r)
        m_i, l_i = np.full(n_r, -np.inf), np.zeros(n_r)  # registers
        acc[...] = 0.0
        for c in cols:
            visible = mask(r, c)
            if not visible.any():                       # past the causal diagonal: loop ends
                continue
            k, v = sram.load("K_j", "K", c), sram.load("V_j", "V", c)
            s = np.where(visible, scale * q @ k.T, -np.inf)   # [BLOCK_M, BLOCK_N]
            m_new = np.maximum(m_i, s.max(axis=1))
            p = _exp_sub(s, m_new[:, None])
            alpha = _exp_sub(m_i, m_new)
            l_i = alpha * l_i + p.sum(axis=1)
            acc[:n_r] = alpha[:, None] * acc[:n_r] + p @ v
            m_i = m_new
        empty = l_i == 0                                # rows that saw no key
        sram.store("O", r, np.divide(acc[:n_r], l_i[:, None], out=np.zeros((n_r, d)),
                                     where=~empty[:, None]))
        with np.errstate(divide="ignore"):
            sram.store("lse", r, np.where(empty, -np.inf, m_i + np.log(l_i)))
    forward = sram.traffic()
    if dO is None:
        return Simulation(hbm["O"], forward)

    per_kernel = {}
    for name, shape in (("delta", (N,)), ("dQ", (N, d)), ("dK", (N_k, d)), ("dV", (N_k, d))):
        _new(hbm, name, shape)

    # _attn_bwd_preprocess: delta = rowsum(dO * O), one program per Q block.
    sram = SRAM(M, hbm)
    sram.alloc("O_i", block_m, d), sram.alloc("dO_i", block_m, d)
    for r in rows:
        sram.store("delta", r, (sram.load("O_i", "O", r) * sram.load("dO_i", "dO", r)).sum(axis=1))
    per_kernel["_attn_bwd_preprocess"] = sram.traffic()

    def probs(q, k, lse, visible):
        """P recomputed from the saved lse: exp(scale Q K^T - lse), 0 where masked."""
        return _exp_sub(np.where(visible, scale * q @ k.T, -np.inf), lse[:, None])

    # _attn_bwd_dkdv: one program per K/V block, looping over Q blocks.
    sram = SRAM(M, hbm)
    sram.alloc("K_j", block_n, d), sram.alloc("V_j", block_n, d)
    dk, dv = sram.alloc("dK_j", block_n, d), sram.alloc("dV_j", block_n, d)
    sram.alloc("Q_i", block_m, d), sram.alloc("dO_i", block_m, d)
    for c in cols:
        n_c = c.stop - c.start
        k, v = sram.load("K_j", "K", c), sram.load("V_j", "V", c)
        dk[...] = 0.0
        dv[...] = 0.0
        for r in rows:
            visible = mask(r, c)
            if not visible.any():                       # before the causal diagonal: skipped
                continue
            q, do = sram.load("Q_i", "Q", r), sram.load("dO_i", "dO", r)
            lse, delta = sram.load_stat("lse", r), sram.load_stat("delta", r)
            p = probs(q, k, lse, visible)               # [BLOCK_M, BLOCK_N]
            dv[:n_c] += p.T @ do
            ds = p * (do @ v.T - delta[:, None])
            dk[:n_c] += scale * ds.T @ q
        sram.store("dK", c, dk[:n_c])
        sram.store("dV", c, dv[:n_c])
    per_kernel["_attn_bwd_dkdv"] = sram.traffic()

    # _attn_bwd_dq: one program per Q block, looping over K/V blocks.
    sram = SRAM(M, hbm)
    sram.alloc("Q_i", block_m, d), sram.alloc("dO_i", block_m, d)
    dq = sram.alloc("dQ_i", block_m, d)
    sram.alloc("K_j", block_n, d), sram.alloc("V_j", block_n, d)
    for r in rows:
        n_r = r.stop - r.start
        q, do = sram.load("Q_i", "Q", r), sram.load("dO_i", "dO", r)
        lse, delta = sram.load_stat("lse", r), sram.load_stat("delta", r)
        dq[...] = 0.0
        for c in cols:
            visible = mask(r, c)
            if not visible.any():
                continue
            k, v = sram.load("K_j", "K", c), sram.load("V_j", "V", c)
            p = probs(q, k, lse, visible)
            ds = p * (do @ v.T - delta[:, None])
            dq[:n_r] += scale * ds @ k
        sram.store("dQ", r, dq[:n_r])
    per_kernel["_attn_bwd_dq"] = sram.traffic()

    backward = sum(per_kernel.values(), Traffic())
    return Simulation(hbm["O"], forward, (hbm["dQ"], hbm["dK"], hbm["dV"]), backward, per_kernel)
