"""How many bytes attention moves: a closed-form IO model, a simulator that proves it, a roofline.

What the reader will learn here: FlashAttention does the same arithmetic as standard attention
(a little more, in fact); it is faster because it moves fewer elements between HBM (the GPU's
large, slow memory) and SRAM (the small, fast memory beside each multiprocessor). This package
counts those elements for three algorithms, per (batch, head):

* standard attention, which writes the ``N x N`` scores ``S`` and probabilities ``P`` to HBM and
  reads them back: Theta(N d + N^2) elements;
* FlashAttention-1's loop order (paper: Dao et al. 2022, Algorithm 1 and 4): outer loop over K/V
  blocks, inner loop over Q blocks, with the partial output ``O`` and the statistics ``l, m``
  re-read and re-written on every outer step: Theta(N^2 d^2 / M) for SRAM size ``M``;
* FlashAttention-2's loop order, which is the order of this project's Triton kernels: outer over
  Q blocks (Q read and O written once), inner over K/V blocks (K and V read once per Q block).

Three kinds of evidence sit side by side, one module each:

1. **Closed forms** (:mod:`.closed_forms`: ``standard_attention_io``, ``flash1_io``,
   ``flash2_io``): arithmetic on the sizes, with a comment saying what is read or written how
   many times.
2. **A simulator** (:mod:`.simulator`: ``simulate_standard``, ``simulate_flash1``,
   ``simulate_flash2``): the tiled algorithm run in NumPy through an explicit :class:`SRAM` of
   ``M`` elements. The only way data reaches the arithmetic is ``SRAM.load`` and the only way
   results leave is ``SRAM.store``, and both count every element. The tests check that the
   counts equal the closed forms *exactly*, and that the outputs equal naive attention.
3. **A roofline** (:mod:`.roofline`: ``roofline``, :class:`GPU`): time >= max(FLOPs / peak
   rate, bytes / bandwidth), which turns the counts into a prediction of which resource bounds a kernel.

``benchmarks/profile_iocost.py`` then compares ``flash2_kernels_io`` with what Nsight Compute
measures on an H100: the bytes L2 delivers to the SMs and the bytes the SMs store (what this
model's "HBM" is at the level of one kernel), and the DRAM traffic behind L2, which
``flash2_dram_io`` predicts with an L2-reuse term. Between the two, caches absorb re-reads that the
model counts: L1 when programs on one SM load the same block, Hopper's L2 request coalescer when
programs on different SMs load it at the same moment, and L2 itself for DRAM.

Conventions, used in every module of the package:

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

from .closed_forms import (
    FLASH2_KERNELS,
    STAT_TENSORS,
    Traffic,
    flash1_block_sizes,
    flash1_io,
    flash2_dram_io,
    flash2_io,
    flash2_kernels_io,
    standard_attention_io,
)
from .frames import Frame, LoopFrames, draw_frame, draw_strip, loop_frames
from .roofline import A100_SXM, GPU, H100_MEASURED, H100_SXM, H200_SXM, Roofline, flops, roofline
from .simulator import SRAM, Simulation, simulate_flash1, simulate_flash2, simulate_standard

__all__ = [
    "A100_SXM",
    "FLASH2_KERNELS",
    "Frame",
    "LoopFrames",
    "GPU",
    "H100_MEASURED",
    "H100_SXM",
    "H200_SXM",
    "Roofline",
    "SRAM",
    "STAT_TENSORS",
    "Simulation",
    "Traffic",
    "draw_frame",
    "draw_strip",
    "flash1_block_sizes",
    "flash1_io",
    "loop_frames",
    "flash2_dram_io",
    "flash2_io",
    "flash2_kernels_io",
    "flops",
    "roofline",
    "simulate_flash1",
    "simulate_flash2",
    "simulate_standard",
    "standard_attention_io",
]
