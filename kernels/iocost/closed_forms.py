"""The closed forms: HBM traffic of each algorithm as arithmetic on the sizes, in elements.

Each function says, in a comment per tensor, what is read or written how many times; the
simulator (:mod:`.simulator`) runs the same loops and must arrive at the same counts exactly.
:class:`Traffic` keeps the counts per tensor. Conventions: the package docstring.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .roofline import H100_SXM

#: Tensors that hold one float32 number per query row, whatever the input dtype.
STAT_TENSORS = frozenset({"l", "m", "lse", "delta"})

#: Names of the project's Triton kernels (kernels/flash_fwd.py, kernels/flash_bwd.py), in launch order.
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
