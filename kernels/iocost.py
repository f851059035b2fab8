"""How many bytes attention moves: a closed-form IO model, a simulator that proves it, a roofline.

What the reader will learn here: FlashAttention does the same arithmetic as standard attention
(a little more, in fact); it is faster because it moves fewer elements between HBM (the GPU's
large, slow memory) and SRAM (the small, fast memory beside each multiprocessor). This module
counts those elements for three algorithms, per (batch, head):

* standard attention, which writes the ``N x N`` scores ``S`` and probabilities ``P`` to HBM and
  reads them back: Theta(N d + N^2) elements;
* FlashAttention-1's loop order (paper: Dao et al. 2022, Algorithm 1 and 4): outer loop over K/V
  blocks, inner loop over Q blocks, with the partial output ``O`` and the statistics ``l, m``
  re-read and re-written on every outer step: Theta(N^2 d^2 / M) for SRAM size ``M``;
* FlashAttention-2's loop order, which is the order of this project's Triton kernels: outer over
  Q blocks (Q read and O written once), inner over K/V blocks (K and V read once per Q block).

Three kinds of evidence sit side by side:

1. **Closed forms** (``standard_attention_io``, ``flash1_io``, ``flash2_io``): arithmetic on the
   sizes, with a comment saying what is read or written how many times.
2. **A simulator** (``simulate_standard``, ``simulate_flash1``, ``simulate_flash2``): the tiled
   algorithm run in NumPy through an explicit :class:`SRAM` of ``M`` elements. The only way data
   reaches the arithmetic is ``SRAM.load`` and the only way results leave is ``SRAM.store``, and
   both count every element. The tests check that the counts equal the closed forms *exactly*,
   and that the outputs equal naive attention.
3. **A roofline** (``roofline``, :class:`GPU`): time >= max(FLOPs / peak rate, bytes / bandwidth),
   which turns the counts into a prediction of which resource bounds a kernel.

``benchmarks/profile_iocost.py`` then compares ``flash2_kernels_io`` with what Nsight Compute
measures on an H100: the bytes L2 delivers to the SMs and the bytes the SMs store (what this
model's "HBM" is at the level of one kernel), and the DRAM traffic behind L2, which
``flash2_dram_io`` predicts with an L2-reuse term. Between the two, caches absorb re-reads that the
model counts: L1 when programs on one SM load the same block, Hopper's L2 request coalescer when
programs on different SMs load it at the same moment, and L2 itself for DRAM.

Conventions, used everywhere below:

* Sizes: ``N`` query rows (``N_k`` key rows, default ``N``), head dimension ``d``, SRAM size ``M``
  in elements (the paper's unit). Traffic is per (batch, head); multiply by ``batch * heads``.
* A block of rows that runs past the end of a tensor (a "ragged" last block) moves only the rows
  that exist: a masked load fetches nothing for the masked rows. So every tensor's count is
  (its size) x (how many times it is read), with no padding.
* Causal masks are aligned to the bottom-right corner, as in :mod:`kernels.reference`: with
  ``off = N_k - N``, query ``i`` sees key ``j`` iff ``j <= i + off``. A (Q block, K/V block) pair
  is *visited* iff some query of the block sees some key of the block, i.e. iff the first key of
  the K/V block is ``<=`` the last query of the Q block plus ``off``. Every other pair is skipped,
  which is about half of them for ``N = N_k``.
* What is charged against ``M``: the tiles a kernel keeps on chip with ``d`` columns (blocks of
  Q, K, V, O and their gradients) and, for standard attention, the tiles of S and P it loads.
  This is what the paper's block rule budgets for. Per-row statistics (``l, m, lse, delta``:
  one number per row) and the score tile ``S_ij = Q_i K_j^T`` computed on chip are held in
  registers on a GPU; they are counted as traffic when they cross HBM, but not charged to ``M``.
* Per-row statistics are float32 on the GPU whatever the input dtype, so :meth:`Traffic.bytes`
  charges them ``stat_bytes`` (4) and everything else ``dtype_bytes``.

Everything here is plain NumPy and Python, so it imports anywhere, GPU or not, in milliseconds.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

#: Tensors that hold one float32 number per query row, whatever the input dtype.
STAT_TENSORS = frozenset({"l", "m", "lse", "delta"})

#: Names of the project's Triton kernels (kernels/flash_attn.py), in launch order.
FLASH2_KERNELS = ("_attn_fwd", "_attn_bwd_preprocess", "_attn_bwd_dkdv", "_attn_bwd_dq")


# ---------------------------------------------------------------------------------------------
# Traffic: elements read from and written to HBM, per tensor
# ---------------------------------------------------------------------------------------------


def _nonzero(counts) -> dict[str, int]:
    return {name: int(n) for name, n in sorted(dict(counts).items()) if n}


@dataclass(frozen=True)
class Traffic:
    """Elements moved between HBM and SRAM, per tensor name.

    Keeping the breakdown lets a reader see *which* tensor dominates ("K read 32 times"), and
    lets the tests compare the simulator with the closed form tensor by tensor.
    """

    reads: dict[str, int] = field(default_factory=dict)  # tensor name -> elements read from HBM
    writes: dict[str, int] = field(default_factory=dict)  # tensor name -> elements written to HBM

    def __post_init__(self):
        # Normalise (sorted, no zero entries) so that equal traffic compares equal.
        object.__setattr__(self, "reads", _nonzero(self.reads))
        object.__setattr__(self, "writes", _nonzero(self.writes))

    @property
    def elements_read(self) -> int:
        return sum(self.reads.values())

    @property
    def elements_written(self) -> int:
        return sum(self.writes.values())

    @property
    def total(self) -> int:
        """Elements read plus elements written."""
        return self.elements_read + self.elements_written

    def bytes_read(self, dtype_bytes: int = 2, stat_bytes: int = 4) -> int:
        return sum(n * (stat_bytes if t in STAT_TENSORS else dtype_bytes) for t, n in self.reads.items())

    def bytes_written(self, dtype_bytes: int = 2, stat_bytes: int = 4) -> int:
        return sum(n * (stat_bytes if t in STAT_TENSORS else dtype_bytes) for t, n in self.writes.items())

    def bytes(self, dtype_bytes: int = 2, stat_bytes: int = 4) -> int:
        """Bytes moved: ``dtype_bytes`` per element of Q, K, V, O, S, P and gradients (2 for
        bf16/fp16, 4 for fp32), ``stat_bytes`` per element of l, m, lse, delta (float32)."""
        return self.bytes_read(dtype_bytes, stat_bytes) + self.bytes_written(dtype_bytes, stat_bytes)

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(Counter(self.reads) + Counter(other.reads),
                       Counter(self.writes) + Counter(other.writes))

    def __mul__(self, k: int) -> Traffic:
        """``traffic * (batch * heads)``: the same per-head traffic, repeated."""
        return Traffic({t: n * k for t, n in self.reads.items()}, {t: n * k for t, n in self.writes.items()})

    __rmul__ = __mul__

    def __str__(self) -> str:
        names = sorted(set(self.reads) | set(self.writes))
        lines = [f"{'tensor':>6} {'read':>14} {'written':>14}"]
        lines += [f"{t:>6} {self.reads.get(t, 0):>14,} {self.writes.get(t, 0):>14,}" for t in names]
        lines.append(f"{'total':>6} {self.elements_read:>14,} {self.elements_written:>14,}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Blocks: how many there are, and which (Q block, K/V block) pairs a causal kernel visits
# ---------------------------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check_sizes(N: int, N_k: int, d: int, *blocks: int) -> None:
    for name, value in (("N", N), ("N_k", N_k), ("d", d)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    for b in blocks:
        if not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"block sizes: expected positive ints, got {blocks}")


def _keys_per_q_block(N: int, N_k: int, block_m: int, block_n: int, causal: bool) -> list[int]:
    """For each Q block, the number of key rows its K/V loop loads.

    Non-causal: all ``N_k``. Causal: Q block ``i`` ends at query ``q = min((i+1) block_m, N) - 1``,
    which sees keys ``0 .. q + off``; the loop runs over K/V blocks ``0 .. (q + off) // block_n``
    (none if ``q + off < 0``), and the last of those may be ragged, hence the ``min`` with N_k.
    """
    keys = []
    for i in range(_cdiv(N, block_m)):
        if not causal:
            keys.append(N_k)
            continue
        last_query = min((i + 1) * block_m, N) - 1
        n_blocks = max(0, (last_query + N_k - N) // block_n + 1)  # Python's // floors negatives
        keys.append(min(n_blocks * block_n, N_k))
    return keys


def _queries_per_kv_block(N: int, N_k: int, block_m: int, block_n: int, causal: bool) -> list[int]:
    """For each K/V block, the number of query rows an inner loop over Q blocks loads.

    Non-causal: all ``N``. Causal: K/V block ``j`` starts at key ``s = j block_n``; Q block ``i``
    is visited iff its last query ``q`` has ``q + off >= s``. That holds from block
    ``(s - off) // block_m`` (clamped at 0) to the last one, which is always visited because the
    last query sees every key. So the rows loaded are ``N - block_m * first_block``.
    """
    rows = []
    for j in range(_cdiv(N_k, block_n)):
        if not causal:
            rows.append(N)
            continue
        first_q_block = max(0, (j * block_n - (N_k - N)) // block_m)
        rows.append(N - first_q_block * block_m)
    return rows


# ---------------------------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------------------------


def standard_attention_io(N: int, d: int, *, N_k: int | None = None, block_r: int | None = None,
                          block_c: int | None = None, causal: bool = False,
                          backward: bool = False) -> Traffic:
    """HBM traffic of standard attention (the paper's Algorithm 0 and its backward), in elements.

    Standard attention is a chain of separate kernels, each reading its inputs from HBM and
    writing its result back:

    forward
        1. ``S = scale Q K^T`` (a GEMM): writes S (``N N_k``).
        2. ``P = softmax(S)`` row by row (the mask is applied here): reads S, writes P.
        3. ``O = P V`` (a GEMM): reads P, writes O (``N d``).

    backward (this function returns the backward alone; add the forward for a training step)
        1. ``dV = P^T dO``             reads P, dO; writes dV.
        2. ``dP = dO V^T``             reads dO, V; writes dP (``N N_k``).
        3. ``dS = P * (dP - rowsum(P * dP))``, row by row: reads P, dP; writes dS (``N N_k``).
        4. ``dQ = scale dS K``         reads dS, K; writes dQ.
        5. ``dK = scale dS^T Q``       reads dS, Q; writes dK.

    A tiled GEMM holds one row block of its output on chip and streams the other operand past
    it, so that operand is read once per row block: K and V once per block of ``block_r`` query
    rows (``T_r = ceil(N / block_r)`` times), Q and dO once per block of ``block_c`` key rows
    (``T_c`` times) in the GEMMs whose output rows are keys. The default blocks (all rows at
    once, ``T_r = T_c = 1``) give the paper's idealised count, each operand read once:

        forward:  reads ``3 N d + 2 N^2``, writes ``N d + 2 N^2``  -> ``4 N d + 4 N^2`` in all
        backward: reads ``5 N d + 5 N^2``, writes ``3 N d + 2 N^2``

    The ``N^2`` terms are the point: S, P (and dP, dS) cross HBM whole. ``causal`` changes
    nothing: the matrices are dense whatever the mask.

    Args:
        N: query rows; ``N_k`` key rows (default ``N``); ``d`` head dimension.
        block_r, block_c: row blocks of the GEMMs over queries and keys (default: all rows).
        causal: accepted for symmetry with the flash functions; the count does not change.
        backward: return the backward pass's traffic instead of the forward's.
    """
    N_k = N if N_k is None else N_k
    block_r = N if block_r is None else block_r
    block_c = N_k if block_c is None else block_c
    _check_sizes(N, N_k, d, block_r, block_c)
    t_r, t_c = _cdiv(N, block_r), _cdiv(N_k, block_c)
    nd, nkd, nn = N * d, N_k * d, N * N_k
    if not backward:
        reads = {
            "Q": nd,          # GEMM 1: each Q row block loaded once
            "K": t_r * nkd,   # GEMM 1: all of K streamed past each Q row block
            "S": nn,          # softmax reads S once
            "P": nn,          # GEMM 2: P read once
            "V": t_r * nkd,   # GEMM 2: all of V streamed past each O row block
        }
        writes = {"S": nn, "P": nn, "O": nd}
        return Traffic(reads, writes)
    reads = {
        "P": 2 * nn,               # dV GEMM and the dS row pass
        "dO": t_c * nd + nd,       # dV GEMM (streamed past each dV row block) and dP GEMM (once)
        "V": t_r * nkd,            # dP GEMM
        "dP": nn,                  # dS row pass
        "dS": 2 * nn,              # dQ and dK GEMMs
        "K": t_r * nkd,            # dQ GEMM
        "Q": t_c * nd,             # dK GEMM
    }
    writes = {"dV": nkd, "dP": nn, "dS": nn, "dQ": nd, "dK": nkd}
    return Traffic(reads, writes)


def flash1_block_sizes(M: int, d: int, *, backward: bool = False) -> tuple[int, int]:
    """Block sizes ``(B_r, B_c)`` from SRAM size ``M`` (elements), as in the paper's Algorithm 1.

    The paper sets ``B_c = ceil(M / 4d)`` so that K_j and V_j fill half of SRAM, and
    ``B_r = min(ceil(M / 4d), d)`` so that Q_i and O_i fit in the other half (and the score tile
    ``B_r x B_c`` stays below ``M / 4``). Two adjustments make the rule exact rather than
    asymptotic, so the simulator can run with it:

    * floor instead of ceil, so ``2 B_c d + 2 B_r d <= M`` always holds (the two agree when
      ``4d`` divides ``M``);
    * the backward keeps twice as many d-wide tiles on chip (K_j, V_j, dK_j, dV_j and Q_i, O_i,
      dO_i, dQ_i), so it uses ``M / 8d``. The paper reuses the forward's sizes there, which is
      fine for its Theta-bound but would need ``2M`` of SRAM.
    """
    tiles_per_side = 4 if backward else 2
    b_c = M // (2 * tiles_per_side * d)
    if b_c < 1:
        raise ValueError(f"M = {M} elements is too small for head_dim {d}: need at least "
                         f"{2 * tiles_per_side * d} to hold one row of each tile")
    return min(b_c, d), b_c


def flash1_io(N: int, d: int, M: int | None = None, *, N_k: int | None = None,
              block_r: int | None = None, block_c: int | None = None, causal: bool = False,
              backward: bool = False) -> Traffic:
    """HBM traffic of FlashAttention-1's loop order (paper Algorithms 1 and 4), in elements.

    Forward: ``O, l, m`` are zero-filled in HBM first (``N d + 2N`` writes). The outer loop loads
    K_j and V_j (each key row once in all: ``2 N_k d``). The inner loop, for every visited Q
    block, loads ``Q_i, O_i, l_i, m_i``, updates them, and writes ``O_i, l_i, m_i`` back. With
    ``R`` = query rows summed over visited (Q block, K/V block) pairs (``R = T_c N`` when not
    causal, about half that when causal):

        reads  = 2 N_k d  +  R (2d + 2)        (K, V once;  Q, O, l, m once per pair)
        writes = (N + R) (d + 2)               (initial O, l, m;  then once per pair)

    With ``T_c = N_k / B_c = 4 d N_k / M`` this is Theta(N^2 d^2 / M): the re-read O is the cost
    of keeping the K/V loop outside.

    Backward (Algorithm 4, without dropout): dQ is zero-filled in HBM (``N d`` writes; dK_j, dV_j
    accumulate on chip, so unlike the paper we do not zero-fill them in HBM). The outer loop
    loads K_j, V_j and finally writes dK_j, dV_j (``2 N_k d`` each way). The inner loop loads
    ``Q_i, O_i, dO_i, dQ_i, l_i, m_i`` and writes dQ_i back:

        reads  = 2 N_k d  +  R (4d + 2)
        writes = N d  +  2 N_k d  +  R d

    Block sizes come from ``M`` (:func:`flash1_block_sizes`) unless given.
    """
    N_k = N if N_k is None else N_k
    if block_r is None or block_c is None:
        if M is None:
            raise ValueError("flash1_io: give the SRAM size M, or both block_r and block_c")
        b_r, b_c = flash1_block_sizes(M, d, backward=backward)
        block_r = b_r if block_r is None else block_r
        block_c = b_c if block_c is None else block_c
    _check_sizes(N, N_k, d, block_r, block_c)
    R = sum(_queries_per_kv_block(N, N_k, block_r, block_c, causal))
    if not backward:
        reads = {"K": N_k * d, "V": N_k * d, "Q": R * d, "O": R * d, "l": R, "m": R}
        writes = {"O": (N + R) * d, "l": N + R, "m": N + R}
        return Traffic(reads, writes)
    reads = {"K": N_k * d, "V": N_k * d, "Q": R * d, "O": R * d, "dO": R * d, "dQ": R * d,
             "l": R, "m": R}
    writes = {"dQ": (N + R) * d, "dK": N_k * d, "dV": N_k * d}
    return Traffic(reads, writes)


def flash2_kernels_io(N: int, d: int, *, block_m: int, block_n: int, causal: bool = False,
                      backward: bool = False, N_k: int | None = None,
                      bwd_block_m: int | None = None, bwd_block_n: int | None = None,
                      ) -> dict[str, Traffic]:
    """HBM traffic of each of the project's Triton kernels (FlashAttention-2 order), in elements.

    Returns ``{kernel name: Traffic}`` with the forward kernel, and with ``backward`` the three
    backward kernels instead. ``K_vis`` is the key rows summed over Q blocks (``T_r N_k`` when not
    causal, :func:`_keys_per_q_block`), ``Q_vis`` the query rows summed over K/V blocks.

    ``_attn_fwd``: one program per Q block. Reads Q_i once, loops over the visited K/V blocks
    reading K_j and V_j, writes O_i and one float32 ``lse`` per row:
        reads ``N d + 2 d K_vis``;   writes ``N d + N``.

    ``_attn_bwd_preprocess``: ``delta = rowsum(dO * O)``: reads O and dO, writes delta
        reads ``2 N d``;             writes ``N``.

    ``_attn_bwd_dkdv``: one program per K/V block. Reads K_j, V_j once, loops over the visited
    Q blocks reading Q_i, dO_i, lse_i, delta_i, writes dK_j and dV_j once:
        reads ``2 N_k d + Q_vis (2d + 2)``;   writes ``2 N_k d``.

    ``_attn_bwd_dq``: one program per Q block. Reads Q_i, dO_i, lse_i, delta_i once, loops over
    the visited K/V blocks reading K_j and V_j, writes dQ_i once:
        reads ``N (2d + 2) + 2 d K_vis``;     writes ``N d``.

    Only the *outer* block size of each kernel matters when not causal (the inner loop reads the
    whole of the other tensor whatever its step); causal masks make the inner step matter a
    little, at the diagonal. ``bwd_block_m``/``bwd_block_n`` (default: the forward's) are the
    backward kernels' Q and K/V blocks.
    """
    N_k = N if N_k is None else N_k
    _check_sizes(N, N_k, d, block_m, block_n)
    if not backward:
        keys = sum(_keys_per_q_block(N, N_k, block_m, block_n, causal))
        return {"_attn_fwd": Traffic({"Q": N * d, "K": keys * d, "V": keys * d},
                                     {"O": N * d, "lse": N})}
    bm = block_m if bwd_block_m is None else bwd_block_m
    bn = block_n if bwd_block_n is None else bwd_block_n
    _check_sizes(N, N_k, d, bm, bn)
    keys = sum(_keys_per_q_block(N, N_k, bm, bn, causal))
    queries = sum(_queries_per_kv_block(N, N_k, bm, bn, causal))
    return {
        "_attn_bwd_preprocess": Traffic({"O": N * d, "dO": N * d}, {"delta": N}),
        "_attn_bwd_dkdv": Traffic(
            {"K": N_k * d, "V": N_k * d, "Q": queries * d, "dO": queries * d,
             "lse": queries, "delta": queries},
            {"dK": N_k * d, "dV": N_k * d}),
        "_attn_bwd_dq": Traffic(
            {"Q": N * d, "dO": N * d, "lse": N, "delta": N, "K": keys * d, "V": keys * d},
            {"dQ": N * d}),
    }


def flash2_io(N: int, d: int, *, block_m: int, block_n: int, causal: bool = False,
              backward: bool = False, N_k: int | None = None) -> Traffic:
    """HBM traffic of FlashAttention-2's loop order (the project's kernels), in elements.

    The sum over :func:`flash2_kernels_io`. Not causal, with ``T_r = ceil(N / block_m)``:

        forward reads  ``N d + 2 T_r N_k d``  (Q once; K, V once per Q block)
        forward writes ``N d + N``            (O once; lse)

    so the ``N^2`` term is ``2 N^2 d / block_m``: no N x N matrix ever reaches HBM, and a larger
    Q block divides the K/V traffic. Causal skips the pairs above the diagonal: with
    ``N = N_k`` and ``block_m = block_n = B`` dividing N, K and V are read
    ``sum_i (i+1) B = N (T_r + 1) / 2`` rows each instead of ``T_r N``, a little over half.
    """
    per_kernel = flash2_kernels_io(N, d, block_m=block_m, block_n=block_n, causal=causal,
                                   backward=backward, N_k=N_k)
    return sum(per_kernel.values(), Traffic())


def flash2_dram_io(N: int, d: int, *, block_m: int, block_n: int, causal: bool = False,
                   backward: bool = False, N_k: int | None = None, heads_in_flight: int = 1,
                   l2_bytes: int | None = None, dtype_bytes: int = 2,
                   bwd_block_m: int | None = None, bwd_block_n: int | None = None,
                   ) -> dict[str, Traffic]:
    """Predicted DRAM traffic of each Triton kernel when an L2 cache sits between SMs and DRAM.

    Every load a kernel issues goes to L2 (that is what :func:`flash2_kernels_io` counts); only
    misses go on to DRAM. The tensors the kernels re-read are re-read by programs that run at
    the same time: the launch order runs the Q blocks of one (batch, head) together, all
    streaming the same K/V blocks. So if the re-read tensors of the heads in flight fit in L2,
    each is fetched from DRAM once, and DRAM traffic is every tensor's size (Q, K, V, O once:
    the compulsory traffic). If they do not fit, we assume every re-read misses (an upper bound,
    the SM-to-L2 count itself).

    The re-read tensors are K and V (forward and dQ kernels) and Q, dO, lse, delta (dK/dV
    kernel). "Fit" means their bytes, times ``heads_in_flight``, are at most ``l2_bytes``
    (default: the H100's 50 MiB). ``heads_in_flight`` is how many (batch, head) pairs have
    programs running at once: the grid's first axis is the Q blocks, so one head's blocks run
    together, and 1 is right unless a head has fewer blocks than the GPU has program slots.

    Two things the model leaves out, which a measurement will show: L2 writes back lazily, so
    outputs still dirty in L2 when the kernel ends are not yet in its DRAM writes; and the H100's
    L2 is two partitions, so data used by SMs on both sides may be fetched twice.

    Returns ``{kernel name: Traffic}`` in elements per (batch, head), like
    :func:`flash2_kernels_io`.
    """
    N_k = N if N_k is None else N_k
    l2_bytes = H100_SXM.l2_bytes if l2_bytes is None else l2_bytes
    sizes = {"Q": N * d, "O": N * d, "dO": N * d, "dQ": N * d, "K": N_k * d, "V": N_k * d,
             "dK": N_k * d, "dV": N_k * d, "lse": N, "delta": N}
    per_kernel = flash2_kernels_io(N, d, block_m=block_m, block_n=block_n, causal=causal,
                                   backward=backward, N_k=N_k, bwd_block_m=bwd_block_m,
                                   bwd_block_n=bwd_block_n)
    out = {}
    for name, traffic in per_kernel.items():
        reread = [t for t, n in traffic.reads.items() if n > sizes[t]]
        reread_bytes = heads_in_flight * sum(
            sizes[t] * (4 if t in STAT_TENSORS else dtype_bytes) for t in reread)
        if reread_bytes <= l2_bytes:
            reads = {t: min(n, sizes[t]) for t, n in traffic.reads.items()}
        else:
            reads = dict(traffic.reads)
        out[name] = Traffic(reads, traffic.writes)
    return out


# ---------------------------------------------------------------------------------------------
# FLOPs and the roofline
# ---------------------------------------------------------------------------------------------


def flops(N: int, d: int, *, N_k: int | None = None, causal: bool = False,
          backward: bool = False) -> float:
    """Matmul FLOPs per (batch, head), counted as the FlashAttention papers do.

    Forward: two GEMMs (``Q K^T`` and ``P V``), each ``2 N N_k d``: ``4 N N_k d``. Backward: five
    GEMMs (dV, dP, dQ, dK and the recomputed S), 2.5 x the forward. Causal: half. The softmax's
    exponentials are not counted (they run on other units and are ``O(N^2)``, not ``O(N^2 d)``).
    ``backward=True`` returns the backward alone.
    """
    N_k = N if N_k is None else N_k
    f = 4.0 * N * N_k * d
    if backward:
        f *= 2.5
    if causal:
        f *= 0.5
    return f


class Roofline(NamedTuple):
    """A roofline estimate: the kernel can be no faster than either resource allows."""

    seconds: float          # max(compute_seconds, memory_seconds)
    compute_seconds: float  # flops / peak_flops
    memory_seconds: float   # bytes / bandwidth

    @property
    def bound(self) -> str:
        """``"compute"`` or ``"memory"``: the resource that sets the time."""
        return "compute" if self.compute_seconds >= self.memory_seconds else "memory"


def roofline(flops: float, nbytes: float, peak_flops: float, bandwidth: float) -> Roofline:
    """``time = max(flops / peak_flops, nbytes / bandwidth)``.

    The ridge point ``peak_flops / bandwidth`` (FLOPs per byte) separates the two regimes: a
    kernel with arithmetic intensity ``flops / nbytes`` below it is memory-bound.
    """
    compute = flops / peak_flops
    memory = nbytes / bandwidth
    return Roofline(max(compute, memory), compute, memory)


@dataclass(frozen=True)
class GPU:
    """The rates and sizes of one GPU that the model needs."""

    name: str
    peak_flops: float   # dense bf16 tensor-core rate, FLOP/s
    bandwidth: float    # HBM bandwidth, bytes/s
    l2_bytes: int       # L2 cache size, bytes
    smem_bytes: int     # shared memory one thread block may use, bytes (the "SRAM" M, in bytes)
    num_sms: int        # streaming multiprocessors

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which a kernel is compute-bound."""
        return self.peak_flops / self.bandwidth

    def roofline(self, flops: float, nbytes: float) -> Roofline:
        return roofline(flops, nbytes, self.peak_flops, self.bandwidth)


#: NVIDIA H100 SXM5 80 GB, datasheet figures (bf16 dense, without sparsity).
H100_SXM = GPU("H100 SXM (datasheet)", peak_flops=989.4e12, bandwidth=3.35e12,
               l2_bytes=50 * 2**20, smem_bytes=227 * 2**10, num_sms=132)

#: The H100 lent to this project, as measured there: an 8192^3 bf16 torch.matmul and a
#: device-to-device copy (bytes read plus bytes written, per second).
H100_MEASURED = GPU("H100 SXM (measured)", peak_flops=755e12, bandwidth=3.0e12,
                    l2_bytes=50 * 2**20, smem_bytes=227 * 2**10, num_sms=132)

#: NVIDIA A100 SXM4 80 GB, datasheet figures: the GPU of the FlashAttention papers.
A100_SXM = GPU("A100 SXM (datasheet)", peak_flops=312e12, bandwidth=2.039e12,
               l2_bytes=40 * 2**20, smem_bytes=163 * 2**10, num_sms=108)


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
