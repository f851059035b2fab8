# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · How many bytes move: the IO-cost model
#
# **What you will learn**
#
# * to count the elements each algorithm moves between HBM and SRAM: standard attention,
#   FlashAttention-1's loop order and FlashAttention-2's (this repository's kernels);
# * that a simulator, running the algorithms through an SRAM that counts every element, agrees with
#   those formulas *exactly*;
# * to watch FlashAttention-1's and FlashAttention-2's loop orders step by step: which tiles stay on
#   chip, which stream past, and what every step costs in HBM bytes;
# * how the traffic scales with the sequence length $N$, the SRAM size $M$ and the block size, and
#   the paper's Theorem 2 ($\Theta(N^2 d^2 / M)$) and Proposition 3 (nothing exact does better for
#   every $M$), checked by the slopes the simulator measures;
# * the roofline: when the bytes, and when the FLOPs, set the time;
# * how the model compares with Nsight Compute measurements of these kernels on an H100, and
#   what the L1 and L2 caches do to the numbers.
#
# **Read first:** [05 · The forward pass](05_flash_attention_forward.ipynb). Everything here is in
# `kernels/iocost/` (plain NumPy: it runs anywhere in milliseconds); read its package docstring
# for the conventions. The measurements come from `benchmarks/profile_iocost.py`, run on a GPU
# and committed under `benchmarks/results/h100/`.
#
# Words: [glossary](GLOSSARY.md) (HBM, SRAM, L2, program, wave, lse, loop order, roofline).

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import csv
import math
import os
import statistics

import matplotlib.pyplot as plt
import numpy as np
import torch

from kernels import attention_reference
from kernels.iocost import (
    H100_MEASURED,
    H100_SXM,
    draw_frame,
    draw_strip,
    flash1_block_sizes,
    flash1_io,
    flash2_dram_io,
    flash2_io,
    flops,
    loop_frames,
    simulate_flash1,
    simulate_flash2,
    simulate_standard,
    standard_attention_io,
)

ROOT = Path(kernels.__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "h100"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Two memories, one unit
#
# HBM is the GPU's large memory (80 GB on an H100, 3.35 TB/s); SRAM is the shared memory beside
# each multiprocessor (227 KiB per thread block). A kernel reads its inputs from HBM into SRAM,
# computes, and writes results back. The model counts **elements** moved per (batch, head), as the
# FlashAttention paper does, with $M$ the SRAM size in elements; `Traffic.bytes()` converts (2
# bytes per bf16 element, 4 per float32 statistic such as $\mathrm{lse}$).

# %%
M_H100 = H100_SXM.smem_bytes // 2  # SRAM per thread block, in bf16 elements
print(f"H100 SRAM per thread block: {H100_SXM.smem_bytes // 1024} KiB = M = {M_H100:,} bf16 elements")
print(f"FlashAttention-1 blocks for d = 64 with that M: (B_r, B_c) = {flash1_block_sizes(M_H100, 64)}")
assert M_H100 == 116_224

# %% [markdown]
# ## 2. The closed forms
#
# **Standard attention** is three kernels, each reading its inputs from HBM and writing its result:
# $S = QK^\top$ (read $Q, K$, write $S$), $P = \mathrm{softmax}(S)$ (read $S$, write $P$),
# $O = PV$ (read $P, V$, write $O$). With each operand read once:
#
# $$ \text{standard forward} = \underbrace{4Nd}_{Q,K,V,O}
#    + \underbrace{4N^2}_{S,P\ \text{written and read}} . $$
#
# **FlashAttention-2** (one program per block of $B_m$ queries): $Q$ read once, $K$ and $V$ read
# once per query block ($T_r = \lceil N/B_m \rceil$ times), $O$ and $\mathrm{lse}$ written once:
#
# $$ \text{FA-2 forward} = Nd + 2\,T_r N d + Nd + N \;\approx\; \frac{2N^2 d}{B_m} + 2Nd . $$

# %%
N, d = 1024, 64
std = standard_attention_io(N, d)
fa2 = flash2_io(N, d, block_m=128, block_n=64)
print("standard attention, forward\n", std, sep="")
print("\nFlashAttention-2, forward, blocks 128 x 64\n", fa2, sep="")
T_r = math.ceil(N / 128)
assert std.total == 4 * N * d + 4 * N * N
assert fa2.elements_read == N * d + 2 * T_r * N * d and fa2.elements_written == N * d + N
print(f"\nstandard / FA-2 = {std.total / fa2.total:.2f}x the elements")

# %% [markdown]
# ## 3. A simulator proves the formulas
#
# `simulate_standard`, `simulate_flash1` and `simulate_flash2` run the algorithms in NumPy through an
# `SRAM` object of $M$ elements: the only way data reaches the arithmetic is `SRAM.load`, the only
# way results leave is `SRAM.store`, and both count. The outputs must equal naive attention and the
# counts must equal the closed forms, element for element, forward and backward, causal or not,
# with a length that is not a multiple of any block.

# %%
N, d, M = 100, 16, 2048
Q, K, V, dO = (rng.standard_normal((N, d)) for _ in range(4))
t = [torch.from_numpy(x)[None, None].requires_grad_() for x in (Q, K, V)]

for causal in (False, True):
    out_ref = attention_reference(*t, causal=causal)
    grads_ref = torch.autograd.grad(out_ref, t, torch.from_numpy(dO)[None, None])
    out_ref = out_ref[0, 0].detach().numpy()
    b_r, b_c = flash1_block_sizes(M, d)
    runs = {
        "standard": (simulate_standard(Q, K, V, M, causal=causal, dO=dO),
                     standard_attention_io(N, d, block_r=b_r, block_c=b_c, causal=causal),
                     standard_attention_io(N, d, block_r=b_r, block_c=b_c, causal=causal, backward=True)),
        "FA-1": (simulate_flash1(Q, K, V, M, causal=causal, dO=dO),
                 flash1_io(N, d, M, causal=causal), flash1_io(N, d, M, causal=causal, backward=True)),
        "FA-2": (simulate_flash2(Q, K, V, M, block_m=32, block_n=16, causal=causal, dO=dO),
                 flash2_io(N, d, block_m=32, block_n=16, causal=causal),
                 flash2_io(N, d, block_m=32, block_n=16, causal=causal, backward=True)),
    }
    for name, (sim, fwd, bwd) in runs.items():
        err = max(np.abs(sim.out - out_ref).max(),
                  *(np.abs(g - gr[0, 0].numpy()).max() for g, gr in zip(sim.grads, grads_ref)))
        print(f"causal={causal!s:>5} {name:>8}: forward {sim.forward.total:>7,} elements "
              f"(formula {fwd.total:>7,}), backward {sim.backward.total:>7,} (formula {bwd.total:>7,}); "
              f"max error of O, dQ, dK, dV {err:.0e}")
        assert sim.forward == fwd and sim.backward == bwd and err < 1e-12

# %% [markdown]
# The SRAM also *refuses* tiles that do not fit, so a block size can only be simulated if it is
# feasible:

# %%
try:
    simulate_flash2(Q, K, V, M=1024, block_m=32, block_n=16)
    refused = False
except ValueError as e:
    refused = True
    print("ValueError:", e)
assert refused

# %% [markdown]
# **Takeaway.** The formulas are not hand-waving: a simulator that can only move data through a
# counting SRAM produces the same numbers exactly, and the same outputs and gradients as naive
# attention.

# %% [markdown]
# ## 4. The two loop orders in motion
#
# Both orders compute the same pairs $(i, j)$: the score tile $S_{ij} = Q_i K_j^\top$ on chip,
# folded into each query row's running max $m$, running sum $\ell$ and unnormalised output
# $\mathrm{acc}$ by the online softmax of notebook 03 (Milakov and Gimelshein, 2018). What differs
# is which tiles stay on chip.
#
# * **FlashAttention-1** (the paper's Algorithm 1) holds $K_j, V_j$ and streams every $Q_i$ past
#   them. Between two visits of the same query rows their state waits in HBM, so every step reads
#   $Q_i, O_i, \ell_i, m_i$ and writes $O_i, \ell_i, m_i$ back.
# * **FlashAttention-2** holds $Q_i$ and its accumulator and streams every $K_j, V_j$ past them.
#   $m$, $\ell$ and $\mathrm{acc}$ never leave the chip; $O_i$ and $\mathrm{lse}_i$ are written
#   once, when the row of pairs ends.
#
# `loop_frames` runs both loops through the counting SRAM of section 3 and keeps one frame per
# step: the tiles on chip, the tiles read and written at that step, $m$, $\ell$, $\mathrm{acc}$, and
# the HBM traffic so far. Step 0 is the start; each later step is one pair. Here $N = 12$,
# $d = 8$, blocks of 4 rows: nine pairs.

# %%
N_a, d_a, B_a = 12, 8, 4
Q_a, K_a, V_a = (rng.standard_normal((N_a, d_a)) for _ in range(3))
frames = loop_frames(Q_a, K_a, V_a, block_m=B_a, block_n=B_a)
out_a = attention_reference(*(torch.from_numpy(x)[None, None] for x in (Q_a, K_a, V_a)))[0, 0].numpy()
for order in ("FA-1", "FA-2"):
    last = frames.of(order)[-1]
    err = np.abs(last.out - out_a).max()
    print(f"{order}: {last.step} pairs, {last.traffic.total:,} elements = {last.traffic.bytes():,} bytes "
          f"(closed form {frames.closed_form(order).total:,}); O reads {last.traffic.reads.get('O', 0):,}; "
          f"max error of O {err:.0e}")
    assert last.traffic == frames.closed_form(order) and err < 1e-12
assert sorted(f.pair for f in frames.fa1[1:]) == sorted(f.pair for f in frames.fa2[1:])  # same pairs

# %% [markdown]
# Move the slider to step through both orders at once (in Jupyter, with `ipywidgets`; a static page
# shows the strip after it). Orange tiles are read from HBM at that step, blue ones are held on chip
# from an earlier step, a red outline is a write to HBM. Below the tiles: the running $m$, $\ell$ and
# $\mathrm{acc}$ of the query block being worked on; at the bottom, the bytes so far, which end on
# the closed forms (dotted).

# %%
def show_step(step):
    draw_frame(frames, step)
    plt.show()


try:
    import ipywidgets
except ImportError:
    ipywidgets = None
if ipywidgets is None:
    print("ipywidgets is not installed (pip install ipywidgets): the strip below shows five steps")
elif os.environ.get("NOTEBOOK_HEADLESS") == "1":  # the test suite: no frontend to draw a slider
    print("headless run (NOTEBOOK_HEADLESS=1): no slider; the strip below shows five steps")
else:
    ipywidgets.interact(show_step, step=ipywidgets.IntSlider(value=4, min=0, max=frames.steps - 1,
                                                             description="step"))

# %%
STRIP = [0, 1, 3, 4, frames.steps - 1]
draw_strip(frames, STRIP)
plt.show()
for t in STRIP:
    print(f"step {t}: " + ", ".join(f"{o} {frames.at(o, t).traffic.bytes():>5,} bytes"
                                    for o in ("FA-1", "FA-2")))

# What the strip shows, asserted: FA-2 writes O_0 and lse_0 once, at the end of its first row of
# pairs (step 3); at step 4 FA-1 starts its second pass over Q, reading Q_0 and the partial O_0 again.
assert frames.fa2[3].stored == {("O", 0), ("lse", 0)}
assert {("K", 1), ("V", 1), ("Q", 0), ("O", 0), ("l", 0), ("m", 0)} <= frames.fa1[4].loaded
assert frames.fa2[4].loaded == {("Q", 1), ("K", 0), ("V", 0)}

# %% [markdown]
# Read the strip column by column. At step 1 both orders read $Q_0$ and $K_0, V_0$, but FA-1 also
# reads the $O_0, \ell_0, m_0$ it zero-filled at step 0 and writes them back. At step 3 FA-2 has
# seen every key for its first query block and writes $O_0$ and $\mathrm{lse}_0$, once; FA-1 has
# made one pass over $Q$ with $K_0, V_0$. At step 4 FA-1 loads $K_1, V_1$ and reads $Q_0$ and the
# partial $O_0$ again, while FA-2 loads $Q_1$ and streams $K_0, V_0$ a second time. Each order pays
# for what it keeps outside: FA-1 for a round trip of $O, \ell, m$ per pair, FA-2 for re-reading
# $K, V$ once per query block. To see the causal case, which skips the pairs above the diagonal,
# set `frames = loop_frames(Q_a, K_a, V_a, block_m=4, block_n=4, causal=True)` and run the slider
# cell again.
#
# **Takeaway.** The same pairs and the same arithmetic, in a different order, move different
# bytes; both counts land exactly on the closed forms.

# %% [markdown]
# ## 5. Bytes against $N$
#
# Forward pass, $d = 64$, bf16, per (batch, head). FlashAttention-1 gets the H100's $M$;
# FlashAttention-2 uses the blocks of this repository's kernel on an H100 (128 x 64). The dashed
# line is FlashAttention-2's **DRAM** traffic when $K$ and $V$ stay in the 50 MiB L2 cache while
# the query blocks of a head stream past them (`flash2_dram_io`); section 9 measures it.

# %%
d, BM, BN = 64, 128, 64
Ns = 2 ** np.arange(8, 17)
std_b = np.array([standard_attention_io(int(n), d).bytes(2) for n in Ns], dtype=float)
fa1_b = np.array([flash1_io(int(n), d, M_H100).bytes(2) for n in Ns], dtype=float)
fa2_b = np.array([flash2_io(int(n), d, block_m=BM, block_n=BN).bytes(2) for n in Ns], dtype=float)
dram_b = np.array([sum(t.bytes(2) for t in flash2_dram_io(int(n), d, block_m=BM, block_n=BN).values())
                   for n in Ns], dtype=float)

fig, ax = plt.subplots(figsize=(6.5, 4.2))
ax.loglog(Ns, std_b, "o-", label="standard attention")
ax.loglog(Ns, fa1_b, "s-", label=f"FlashAttention-1, M = {M_H100:,}")
ax.loglog(Ns, fa2_b, "^-", label=f"FlashAttention-2, {BM} x {BN} blocks")
ax.loglog(Ns, dram_b, "^--", label="FlashAttention-2, DRAM with L2 reuse")
ax.set(xlabel="sequence length N (tokens)", ylabel="bytes moved per (batch, head)",
       title=f"Forward pass, d = {d}, bf16")
ax.set_xticks(Ns[::2], [str(n) for n in Ns[::2]])
ax.minorticks_off()
ax.legend(fontsize=8)
plt.show()

slopes = {name: np.polyfit(np.log(Ns[-3:]), np.log(b[-3:]), 1)[0]
          for name, b in (("standard", std_b), ("FA-1", fa1_b), ("FA-2", fa2_b), ("FA-2 DRAM", dram_b))}
print("log-log slopes at large N:", ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
ratio = std_b[-1] / fa2_b[-1]
print(f"standard / FA-2 at N = {Ns[-1]}: {ratio:.2f}x; the N^2 coefficients give 4 / (2d/B_m) = "
      f"{4 / (2 * d / BM):.2f}")
assert abs(slopes["standard"] - 2) < 0.05 and abs(slopes["FA-2"] - 2) < 0.05
assert abs(slopes["FA-2 DRAM"] - 1) < 0.05
assert abs(ratio - 4 / (2 * d / BM)) < 0.05

# %% [markdown]
# Read the slopes carefully. The traffic between the SMs and memory is **still quadratic** in $N$
# for FlashAttention-2: every query block re-reads all of $K$ and $V$. What changes is the
# coefficient, $2d/B_m$ instead of 4 (here 1 against 4), and above all that nothing of size
# $N \times N$ is ever *stored*. The DRAM line is linear: with L2 holding a head's $K$ and $V$,
# DRAM sees each input once.
#
# FlashAttention-1 comes out *below* FlashAttention-2 here. That is the model being honest: with
# the whole SRAM given to key blocks ($B_c = M / 4d = 454$), Algorithm 1 re-reads $O$ rarely.
# Compared at equal block sizes, FlashAttention-2's order moves fewer elements (it never reads
# $O$ back), about $2d / (3d + 4)$ as many:

# %%
N = 4096
for B in (32, 64, 128, 256):
    e1 = flash1_io(N, d, block_r=B, block_c=B).total
    e2 = flash2_io(N, d, block_m=B, block_n=B).total
    print(f"blocks {B:>3} x {B:<3}: FA-1 {e1:>12,}  FA-2 {e2:>12,}  ratio {e2 / e1:.3f} "
          f"(2d/(3d+4) = {2 * d / (3 * d + 4):.3f})")
    assert e2 < e1 and abs(e2 / e1 - 2 * d / (3 * d + 4)) < 0.01

# %% [markdown]
# Why then do GPU kernels not use 454-row blocks? Their tiles live in registers as much as in
# shared memory (the accumulator of $B_m \times d$ and the score tile of $B_m \times B_n$ float32
# numbers per program), and a kernel needs several programs per multiprocessor to hide latency.
# Those limits, not $M$, give the 128 x 64 tiles; and FlashAttention-2's gains are parallelism
# (one independent program per query block) and fewer non-matmul operations, as much as bytes.
#
# **Takeaway.** Standard attention moves $\Theta(N^2)$ elements because $S$ and $P$ cross HBM;
# FlashAttention-2 moves $\Theta(N^2 d / B_m)$ between SMs and memory and only $\Theta(Nd)$ from
# DRAM when the cache holds $K$ and $V$.

# %% [markdown]
# ## 6. Bytes against $M$ and against the block size
#
# FlashAttention-1's traffic is $\Theta(N^2 d^2 / M)$ (the paper's Theorem 2, section 7 below):
# each doubling of SRAM halves it, down to the floor where one key block holds the whole sequence.
# FlashAttention-2's is $\Theta(N^2 d / B_m)$: each doubling of the query block halves the $K, V$
# reads, as long as the tiles ($2 B_m d + 2 B_n d$ elements) fit.

# %%
N, d = 4096, 64
Ms = 2 ** np.arange(10, 22)
fa1_M = np.array([flash1_io(N, d, int(m)).total for m in Ms], dtype=float)
mid = (Ms >= 2**11) & (Ms <= 2**16)
slope_M = np.polyfit(np.log(Ms[mid]), np.log(fa1_M[mid]), 1)[0]

blocks = 2 ** np.arange(4, 10)
fa2_B = np.array([flash2_io(N, d, block_m=int(b), block_n=64).total for b in blocks], dtype=float)
kv_reads = [flash2_io(N, d, block_m=int(b), block_n=64).reads["K"] for b in blocks]
sram_need = 2 * blocks * d + 2 * 64 * d

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
ax1.loglog(Ms, fa1_M, "s-", label="FlashAttention-1")
ax1.axhline(standard_attention_io(N, d).total, color="tab:blue", ls=":", label="standard attention")
ax1.axvline(M_H100, color="gray", ls="--", label="H100 SRAM per block")
ax1.set(xlabel="SRAM size M (elements)", ylabel="elements moved (forward)",
        title=f"FA-1 against SRAM size: slope {slope_M:.2f}, N = {N}, d = {d}")
ax1.legend(fontsize=8)
ax2.loglog(blocks, fa2_B, "^-", color="tab:green", label="FA-2 elements moved")
ax2.set(xlabel="query block B_m (rows); B_n = 64", ylabel="elements moved (forward)",
        title=f"FA-2 against the query block, N = {N}, d = {d}")
ax3 = ax2.twinx()
ax3.loglog(blocks, sram_need * 2 / 1024, "--", color="tab:red", label="tiles on chip (KiB, bf16)")
ax3.axhline(H100_SXM.smem_bytes / 1024, color="tab:red", ls=":", label="H100 SRAM per block")
ax3.set_ylabel("tiles on chip (KiB)")
kib_ticks = [16, 32, 64, 128, 256]
ax3.set_yticks(kib_ticks, [str(k) for k in kib_ticks])
for a in (ax2, ax3):
    a.minorticks_off()
ax2.set_xticks(blocks, [str(b) for b in blocks])
lines = ax2.get_legend_handles_labels()[0] + ax3.get_legend_handles_labels()[0]
ax2.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="center right")
fig.tight_layout()
plt.show()

print(f"FA-1 slope against M (M from 2^11 to 2^16): {slope_M:.2f}")
assert -1.1 < slope_M < -0.85
assert all(kv_reads[i] == 2 * kv_reads[i + 1] for i in range(len(blocks) - 1))
assert fa1_M[-1] == fa1_M[-2]  # floor: one key block already holds the whole sequence

# %% [markdown]
# **Takeaway.** More on-chip memory means fewer bytes, in both algorithms: FA-1 through the key
# block $B_c \propto M$, FA-2 through the query block $B_m$. The K/V reads halve exactly with each
# doubling of $B_m$.

# %% [markdown]
# ## 7. Theorem 2 and Proposition 3
#
# The FlashAttention paper (Dao et al. 2022, Section 3.2; the proofs are in its Appendix C) states:
#
# > **Theorem 2.** Let $N$ be the sequence length, $d$ be the head dimension, and $M$ be size of
# > SRAM with $d \le M \le Nd$. Standard attention (Algorithm 0) requires $\Theta(Nd + N^2)$ HBM
# > accesses, while FlashAttention (Algorithm 1) requires $\Theta(N^2 d^2 M^{-1})$ HBM accesses.
#
# **Proof idea** (the paper's). With an SRAM of size $M$, Algorithm 1 loads blocks of $K$ and $V$
# of size $\Theta(M)$ each, $B_c = \Theta(M/d)$ rows. For each block of $K$ and $V$ it iterates
# over all blocks of $Q$, so it makes $T_c = N / B_c = \Theta(Nd/M)$ passes over $Q$. Each pass
# loads $\Theta(Nd)$ elements ($Q$, and the partial $O$, $\ell$, $m$, which it also writes back),
# which amounts to $\Theta(Nd) \cdot \Theta(Nd/M) = \Theta(N^2 d^2 / M)$. $K$ and $V$ are read
# once, $\Theta(Nd)$, which $M \le Nd$ keeps below that. A pass is one column of FA-1's pairs in
# section 4. Standard attention writes $S$ and $P$ and reads them back: $\Theta(N^2)$ whatever $M$.
# (FlashAttention-2's order meets the same bound with the roles swapped: query blocks of
# $\Theta(M/d)$ rows, $\Theta(Nd/M)$ passes over $K$ and $V$.)
#
# The paper reads it this way: for typical $d$ (64-128) and $M$ (around 100 KB), $d^2$ is many
# times smaller than $M$, so FlashAttention needs many times fewer HBM accesses: the ratio of
# $N^2$ to $N^2 d^2 / M$ is $M / d^2$.

# %%
for hd in (64, 128):
    print(f"d = {hd}: M / d^2 = {M_H100:,} / {hd * hd:,} = {M_H100 / hd**2:.1f} (H100 SRAM per block, bf16)")
assert M_H100 / 128**2 > 7

# %% [markdown]
# **Checked by the simulator.** Run Algorithm 1 itself (`simulate_flash1`, blocks from $M$ by the
# paper's rule) across the theorem's range of $M$ at fixed $N$, and across $N$ at fixed $M$. The
# log-log slopes of the elements moved should be $-1$ in $M$ and $2$ in $N$. Standard attention
# (`simulate_standard`, its GEMMs in row blocks of $d$) should not depend on $M$ at all; its
# softmax holds a whole row of $S$, so it needs $M \ge N$. The block rule needs $M \ge 4d$, so the
# sweep starts at $16d$.

# %%
def slope(x, y):
    return np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0]


d_t, N_t, M_t = 8, 256, 256
Ms_t = [2**k for k in range(7, 12)]  # 16 d .. N d: key blocks B_c = M / 4d of 4 .. 64 rows
Q_t, K_t, V_t = (rng.standard_normal((N_t, d_t)) for _ in range(3))
fa1_vs_M = [simulate_flash1(Q_t, K_t, V_t, m).forward.total for m in Ms_t]
std_vs_M = [simulate_standard(Q_t, K_t, V_t, m, block_r=d_t, block_c=d_t).forward.total
            for m in Ms_t if m >= N_t]
Ns_t = [64, 128, 256, 512]
fa1_vs_N, std_vs_N = [], []
for n in Ns_t:
    q, k, v = (rng.standard_normal((n, d_t)) for _ in range(3))
    fa1_vs_N.append(simulate_flash1(q, k, v, M_t).forward.total)
    std_vs_N.append(simulate_standard(q, k, v, 2 * max(Ns_t), block_r=d_t, block_c=d_t).forward.total)

# The counts are T_c N (3d + 4) + N (3d + 2): per pass, Q, O, l, m read and O, l, m written; once,
# K, V read and O, l, m zero-filled. Above that Theta(N d) floor the slopes are exact.
def floor(n):
    return n * (3 * d_t + 2)


slopes_t = {"FA-1 in M": slope(Ms_t, fa1_vs_M), "FA-1 in N": slope(Ns_t, fa1_vs_N),
            "standard in N": slope(Ns_t, std_vs_N),
            "FA-1 in M, above the floor": slope(Ms_t, [t - floor(N_t) for t in fa1_vs_M]),
            "FA-1 in N, above the floor": slope(Ns_t, [t - floor(n) for t, n in zip(fa1_vs_N, Ns_t)])}
print("log-log slopes measured on the simulator:", ", ".join(f"{k} {v:.3f}" for k, v in slopes_t.items()))
print(f"standard attention, N = {N_t}, M = {[m for m in Ms_t if m >= N_t]}: {std_vs_M} elements")

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
ax1.loglog(Ms_t, fa1_vs_M, "s-", label="FA-1 (simulate_flash1)")
ax1.loglog(Ms_t, [fa1_vs_M[0] * Ms_t[0] / m for m in Ms_t], ":", color="gray", label="slope -1")
ax1.loglog([m for m in Ms_t if m >= N_t], std_vs_M, "o-", label="standard (simulate_standard)")
ax1.axvspan(d_t, N_t * d_t, color="tab:green", alpha=0.07, label="theorem's range d <= M <= N d")
ax1.set(xlabel="SRAM size M (elements)", ylabel="elements moved (forward)",
        title=f"Against M: N = {N_t}, d = {d_t}")
ax1.legend(fontsize=8)
ax2.loglog(Ns_t, fa1_vs_N, "s-", label=f"FA-1, M = {M_t}")
ax2.loglog(Ns_t, std_vs_N, "o-", label="standard")
ax2.loglog(Ns_t, [fa1_vs_N[0] * (n / Ns_t[0]) ** 2 for n in Ns_t], ":", color="gray", label="slope 2")
ax2.set(xlabel="sequence length N (tokens)", ylabel="elements moved (forward)",
        title=f"Against N: d = {d_t}")
ax2.set_xticks(Ns_t, [str(n) for n in Ns_t])
ax2.minorticks_off()
ax2.legend(fontsize=8)
fig.suptitle("Theorem 2 on the simulator: FA-1 moves Theta(N^2 d^2 / M), standard attention Theta(N d + N^2)")
fig.tight_layout()
plt.show()

assert abs(slopes_t["FA-1 in M"] + 1) < 0.1 and abs(slopes_t["FA-1 in N"] - 2) < 0.1
assert abs(slopes_t["FA-1 in M, above the floor"] + 1) < 1e-9
assert abs(slopes_t["FA-1 in N, above the floor"] - 2) < 1e-9
assert len(set(std_vs_M)) == 1 and abs(slopes_t["standard in N"] - 2) < 0.1
assert all(t == flash1_io(N_t, d_t, m).total for t, m in zip(fa1_vs_M, Ms_t))

# %% [markdown]
# The raw slopes sit a little inside $-1$ and $2$: the $\Theta(Nd)$ floor ($K$, $V$ read once,
# $O, \ell, m$ zero-filled once) does not shrink with $M$ or grow like $N^2$, and the $\Theta$ of
# the theorem absorbs it. Above the floor the slopes are exact.
#
# The second result of Section 3.2 is a lower bound:
#
# > **Proposition 3.** Let $N$ be the sequence length, $d$ be the head dimension, and $M$ be size
# > of SRAM with $d \le M \le Nd$. There does not exist an algorithm to compute exact attention with
# > $o(N^2 d^2 M^{-1})$ HBM accesses for all $M$ in the range $[d, Nd]$.
#
# The argument: at $M = \Theta(Nd)$ the bound is $\Theta(N^2 d^2 / (Nd)) = \Theta(Nd)$, and any
# algorithm must read its input $Q, K, V$ (and write $O$), $\Omega(Nd)$ accesses; so none can beat
# $N^2 d^2 / M$ by more than a constant there. It is a lower bound over a subrange of $M$; the
# paper leaves parameterized lower bounds in terms of $M$ as future work. On the simulator, at
# $M = Nd$ Algorithm 1
# moves a fixed multiple of the $4Nd$ elements any algorithm must move, whatever $N$:

# %%
at_top = []
for n in Ns_t:
    q, k, v = (rng.standard_normal((n, d_t)) for _ in range(3))
    at_top.append(simulate_flash1(q, k, v, n * d_t).forward.total / (4 * n * d_t))  # Q, K, V read; O written
print("FA-1 at M = N d, elements / (4 N d):", ", ".join(f"N = {n}: {r:.3f}" for n, r in zip(Ns_t, at_top)))
assert np.allclose(at_top, at_top[0]) and at_top[0] < 5

# %% [markdown]
# **Takeaway.** Theorem 2's $\Theta(N^2 d^2 / M)$ is the number of passes over $Q$, $\Theta(Nd/M)$,
# times the $\Theta(Nd)$ each pass moves; the simulator measures slopes $-1$ in $M$ and $2$ in $N$.
# Proposition 3 says no exact algorithm improves on it for every $M$, because at $M = \Theta(Nd)$ it
# is already just the cost of reading the input.

# %% [markdown]
# ## 8. The roofline
#
# A kernel can be no faster than its arithmetic allows, nor than its bytes allow:
#
# $$ t \ge \max\!\left(\frac{\text{FLOPs}}{\text{peak FLOP/s}},\
#    \frac{\text{bytes}}{\text{bandwidth}}\right). $$
#
# The ratio FLOPs / bytes is the **arithmetic intensity**; above the *ridge point*
# (peak / bandwidth, 295 FLOP/byte on an H100 with datasheet numbers) the arithmetic sets the time,
# below it the memory does. Attention's forward has $4N^2d$ FLOPs (two matrix products).

# %%
d = 64
Ns_r = [1024, 4096, 16384]
points = {}
for n in Ns_r:
    f = flops(n, d)
    points.setdefault("standard attention (HBM)", []).append((f, standard_attention_io(n, d).bytes(2)))
    points.setdefault("FA-2 if every load went to HBM", []).append(
        (f, flash2_io(n, d, block_m=BM, block_n=BN).bytes(2)))
    points.setdefault("FA-2 DRAM, L2 holding K, V", []).append(
        (f, sum(t.bytes(2) for t in flash2_dram_io(n, d, block_m=BM, block_n=BN).values())))

fig, ax = plt.subplots(figsize=(7, 4.5))
intensity = np.logspace(0, 4.2, 200)
for gpu, style in ((H100_SXM, "-"), (H100_MEASURED, "--")):
    ax.loglog(intensity, np.minimum(gpu.peak_flops, intensity * gpu.bandwidth) / 1e12, style,
              color="k", lw=1, label=f"roof: {gpu.name}")
print(f"{'':>32}" + "".join(f"{'N = ' + str(n):>26}" for n in Ns_r))
for (name, pts), marker in zip(points.items(), "osD"):
    xs = [f / b for f, b in pts]
    ys = [H100_SXM.roofline(f, b) for f, b in pts]
    ax.loglog(xs, [f / r.seconds / 1e12 for (f, _), r in zip(pts, ys)], marker, ms=8, label=name)
    print(f"{name:>32}" + "".join(f"{x:>9.0f} FLOP/B {r.bound:>8}" for x, r in zip(xs, ys)))
for x, n in zip([f / b for f, b in points["FA-2 DRAM, L2 holding K, V"]], Ns_r):
    ax.annotate(f"N={n}", (x, H100_SXM.peak_flops / 1e12), textcoords="offset points", xytext=(-15, 8),
                fontsize=7)
ax.axvline(H100_SXM.ridge, color="gray", ls=":", label=f"ridge {H100_SXM.ridge:.0f} FLOP/byte")
ax.set(xlabel="arithmetic intensity (FLOP/byte)", ylabel="attainable TFLOP/s",
       title=f"Roofline, attention forward, d = {d}, bf16", ylim=(5, 2000))
ax.legend(fontsize=7, loc="lower right")
plt.show()

assert all(H100_SXM.roofline(f, b).bound == "memory" for f, b in points["standard attention (HBM)"])
assert all(H100_SXM.roofline(f, b).bound == "memory" for f, b in points["FA-2 if every load went to HBM"])
assert all(H100_SXM.roofline(f, b).bound == "compute" for f, b in points["FA-2 DRAM, L2 holding K, V"])

# %% [markdown]
# Standard attention sits at about $d/2 = 32$ FLOP/byte whatever $N$: memory-bound, an order of
# magnitude below the ridge. FlashAttention-2's SM-side traffic gives an intensity of about $B_m$
# (128) FLOP/byte, still below the ridge *if* all of it came from HBM; it does not: the re-reads of
# $K$ and $V$ are served by L2, and the intensity against DRAM grows like $N/2$, well into the
# compute-bound region. Whether that is what happens on real hardware is a question for a
# profiler.
#
# **Takeaway.** The roofline turns byte counts into a verdict. Standard attention is memory-bound;
# FlashAttention-2 is compute-bound provided the L2 cache absorbs its re-reads.

# %% [markdown]
# ## 9. Measured on an H100
#
# `benchmarks/profile_iocost.py` ran these Triton kernels (forward, and the three backward kernels
# of notebook 07) under Nsight Compute on an H100, for $N$ from 1k to 16k, $d$ = 64 and 128,
# causal or not, with several block sizes: 200 kernel launches. For each launch it recorded
# counters at three places of the memory path, beside the model's prediction:
#
# 1. **at the SMs**: bytes L2 delivers to the multiprocessors and bytes they store: what the
#    model's "HBM traffic" is at the level of one kernel;
# 2. **at the L2 slices**, behind Hopper's L2 request coalescer;
# 3. **at DRAM**, where only L2 misses arrive; the model for it is `flash2_dram_io`.
#
# We recompute every summary from the committed CSV (no GPU needed).

# %%
NUMERIC = ("seqlen", "head_dim", "sm_read_bytes", "sm_write_bytes", "lts_read_bytes",
           "lrc_to_sm_read_bytes", "lrc_from_lts_read_bytes", "dram_read_bytes", "dram_write_bytes",
           "model_read_bytes", "model_write_bytes", "model_dram_read_bytes", "model_dram_write_bytes",
           "l1_load_hit_rate_pct", "waves_per_sm")
with open(RESULTS / "iocost_ncu.csv", newline="") as f:
    rows = csv.DictReader(line for line in f if not line.startswith("#"))  # past the metadata line
    launches = [{k: (float(v) if k in NUMERIC else v) for k, v in row.items()} for row in rows]
for r in launches:
    r["causal"] = r["causal"] == "True"
    r["sm_ratio"] = ((r["sm_read_bytes"] + r["sm_write_bytes"])
                     / (r["model_read_bytes"] + r["model_write_bytes"]))
    r["sm_read_ratio"] = r["sm_read_bytes"] / r["model_read_bytes"]
    r["sm_write_ratio"] = r["sm_write_bytes"] / r["model_write_bytes"]
    r["lts_ratio"] = r["lts_read_bytes"] / r["model_read_bytes"]
    r["dram_ratio"] = r["dram_read_bytes"] / r["model_dram_read_bytes"]

first = launches[0]
print(f"{len(launches)} launches on {first['device']}, {first['date']}, {first['dtype']}, "
      f"triton {first['triton']}, batch {first['batch']} x {first['heads']} heads")
KERNELS = ("_attn_fwd", "_attn_bwd_preprocess", "_attn_bwd_dkdv", "_attn_bwd_dq")
assert {r["kernel"] for r in launches} == set(KERNELS)


def within(x, tol=0.15):
    return abs(x - 1) <= tol

# %% [markdown]
# ### At the SMs: the model's own level

# %%
n = len(launches)
match = [r for r in launches if within(r["sm_ratio"])]
miss = [r for r in launches if not within(r["sm_ratio"])]
print(f"bytes at the SMs (read + written) within 15% of the model: {len(match)}/{n} launches")
print(f"writes: measured / model from {min(r['sm_write_ratio'] for r in launches):.4f} "
      f"to {max(r['sm_write_ratio'] for r in launches):.4f}")
print(f"the {len(miss)} others: measured / model {min(r['sm_ratio'] for r in miss):.2f} .. "
      f"{max(r['sm_ratio'] for r in miss):.2f}, N in {sorted({int(r['seqlen']) for r in miss})}, "
      f"waves per SM >= {min(r['waves_per_sm'] for r in miss):.2f}")
median_l1 = statistics.median(r["l1_load_hit_rate_pct"] for r in match)
print(f"L1 hit rate: matching launches median {median_l1:.1f}% (max "
      f"{max(r['l1_load_hit_rate_pct'] for r in match):.1f}%), others "
      f"{min(r['l1_load_hit_rate_pct'] for r in miss):.1f}% .. "
      f"{max(r['l1_load_hit_rate_pct'] for r in miss):.1f}%")

assert len(match) >= 0.85 * n
assert all(within(r["sm_write_ratio"], 0.01) for r in launches)  # stores: exactly the model
assert all(r["sm_ratio"] < 1 and r["sm_read_ratio"] < 0.85 for r in miss)  # fewer reads, never more
assert all(r["waves_per_sm"] >= 1.9 for r in miss)  # about two waves of programs per SM, or more
assert all(r["l1_load_hit_rate_pct"] > median_l1 for r in miss)

# %% [markdown]
# The stores match exactly in every launch, and the reads match in most. Every launch that misses
# reads *less* than the model, never more, and all of them run about two or more waves of programs
# per multiprocessor. That is the L1 cache: when a multiprocessor runs
# several programs of the same head, one after another or side by side, a $K$ or $V$ block that
# one program loaded can still be in L1 when the next asks for it, and then L2 never delivers it.
# The model counts that load; the SMs' counter does not see it. Their L1 hit rates are above the
# median of the launches that match (the right-hand panel: the further below the model, the more
# L1 hits).

# %%
colors = dict(zip(KERNELS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.3))
for kern in KERNELS:
    sel = [r for r in launches if r["kernel"] == kern]
    ax1.scatter([r["seqlen"] * (1.06 if r["causal"] else 0.94) for r in sel], [r["sm_ratio"] for r in sel],
                s=18, alpha=0.7, color=colors[kern], label=kern.removeprefix("_attn_"))
ax1.axhspan(0.85, 1.15, color="green", alpha=0.1, label="within 15%")
ax1.set(xscale="log", xlabel="sequence length N (causal drawn right of each N)",
        ylabel="measured / model", title="Bytes at the SMs (read + written) / flash2_kernels_io")
seqlens = sorted({int(r["seqlen"]) for r in launches})
ax1.set_xticks(seqlens, [str(s) for s in seqlens])
ax1.minorticks_off()
ax1.legend(fontsize=7)
sc = ax2.scatter([r["l1_load_hit_rate_pct"] for r in launches], [r["sm_read_ratio"] for r in launches],
                 c=[r["waves_per_sm"] for r in launches], cmap="viridis", s=18)
fig.colorbar(sc, ax=ax2, label="waves of programs per SM")
ax2.axhspan(0.85, 1.15, color="green", alpha=0.1)
ax2.set(xlabel="L1 load hit rate (%)", ylabel="SM reads: measured / model",
        title="Reads below the model come with extra L1 hits")
fig.suptitle(f"Nsight Compute on {first['device']}: the IO model at the SMs")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### At the L2 slices: the request coalescer
#
# Behind the SMs, Hopper's L2 request coalescer (LRC) merges identical reads that several SMs issue
# at about the same moment, so the L2 slices can see fewer reads than the SMs receive. Its two
# counters give a *coalescing factor*: bytes it passed on towards the SMs / bytes it fetched from
# the slices. Then the slices should see the SMs' reads divided by that factor.

# %%
for r in launches:
    r["coalescing"] = r["lrc_to_sm_read_bytes"] / r["lrc_from_lts_read_bytes"]
    r["lts_explained"] = r["lts_read_bytes"] / (r["sm_read_bytes"] / r["coalescing"])
print(f"{'kernel':<22}{'causal':>7}{'L2-slice reads / model':>26}{'coalescing factor':>24}")
for kern in KERNELS:
    for causal in (False, True):
        sel = [r for r in launches if r["kernel"] == kern and r["causal"] == causal]
        lts = [r["lts_ratio"] for r in sel]
        co = [r["coalescing"] for r in sel]
        print(f"{kern:<22}{causal!s:>7}{statistics.median(lts):>12.2f} ({min(lts):.2f}..{max(lts):.2f})"
              f"{statistics.median(co):>13.2f} ({min(co):.2f}..{max(co):.2f})")
explained = sum(within(r["lts_explained"]) for r in launches)
print(f"L2-slice reads below 85% of the model in {sum(r['lts_ratio'] < 0.85 for r in launches)}/{n} "
      f"launches, above 115% in {sum(r['lts_ratio'] > 1.15 for r in launches)}")
print(f"L2-slice reads = SM reads / coalescing factor, within 15%, in {explained}/{n} launches")


def coalescing(kern, causal):
    return [r["coalescing"] for r in launches if r["kernel"] == kern and r["causal"] == causal]


assert all(r["lts_ratio"] <= 1.15 for r in launches)
assert explained >= 0.95 * n
assert all(within(r["lts_ratio"]) for r in launches if r["kernel"] == "_attn_bwd_preprocess")
assert statistics.median(coalescing("_attn_fwd", False)) > 2
assert max(coalescing("_attn_bwd_dkdv", True)) < 1.1
MERGED = [("_attn_fwd", False), ("_attn_fwd", True), ("_attn_bwd_dq", False), ("_attn_bwd_dq", True),
          ("_attn_bwd_dkdv", False)]  # the kernels whose programs walk the same blocks in step
assert all(1.5 < statistics.median(coalescing(kern, causal)) < 3.1 for kern, causal in MERGED)

# %% [markdown]
# Three readings of the table. The preprocessing kernel of the backward pass reads each element
# once: nothing to merge, and the slices see exactly the model. The kernels whose programs of one
# head walk through the same blocks in step (the forward and dQ kernels over $K, V$; the
# non-causal dK/dV kernel over $Q, dO$) get their reads merged, by a median factor of 1.6 to 3.
# And the causal dK/dV kernel gets nothing merged: each of its programs starts
# its loop at a different query block (the causal `lo` depends on the key block, see notebook 07),
# so no two programs ask for the same block at the same moment.

# %% [markdown]
# ### At DRAM: the L2-reuse model
#
# `flash2_dram_io` predicts that when one head's re-read tensors fit in L2, DRAM delivers each of
# them once. The measurement agrees:

# %%
dram_match = [r for r in launches if within(r["dram_ratio"])]
print(f"DRAM reads within 15% of the L2-reuse model: {len(dram_match)}/{n} launches "
      f"(measured / model {min(r['dram_ratio'] for r in launches):.3f} .. "
      f"{max(r['dram_ratio'] for r in launches):.3f})")
for r in launches:
    if not within(r["dram_ratio"]):
        print(f"  outside: {r['kernel']} N={int(r['seqlen'])} d={int(r['head_dim'])} causal={r['causal']}: "
              f"{r['dram_ratio']:.3f}")
write_share = statistics.median(r["dram_write_bytes"] / r["model_dram_write_bytes"] for r in launches)
print(f"DRAM writes during the kernel / model (median): {write_share:.4f}")
assert len(dram_match) >= 0.95 * n
assert write_share < 0.1

# %% [markdown]
# DRAM *writes* are not compared: L2 writes back lazily, so the outputs are mostly still in L2 when
# a kernel ends (the median launch writes almost nothing to DRAM while it runs).
#
# The L2-reuse term assumes the re-read tensors of the heads in flight fit in L2. When L2 is smaller
# than one head's $K$ and $V$, the model assumes every re-read misses, and DRAM traffic falls back to
# the count at the SMs:

# %%
N, d = 8192, 64
kv_bytes = 2 * N * d * 2  # one head's K and V in bf16
small_l2 = flash2_dram_io(N, d, block_m=BM, block_n=BN, l2_bytes=kv_bytes // 2)["_attn_fwd"]
big_l2 = flash2_dram_io(N, d, block_m=BM, block_n=BN, l2_bytes=kv_bytes)["_attn_fwd"]
print(f"DRAM reads: L2 too small {small_l2.bytes_read():,} B, L2 large enough {big_l2.bytes_read():,} B")
assert small_l2 == flash2_io(N, d, block_m=BM, block_n=BN)  # every re-read misses: the SM-level count
assert big_l2.reads == {"K": N * d, "Q": N * d, "V": N * d}  # each input once

# %%
default = [r for r in launches
           if r["variant"] == "default" and r["kernel"] == "_attn_fwd" and not r["causal"]]
fig, ax = plt.subplots(figsize=(7, 4.5))
for hd, color in ((64, "tab:blue"), (128, "tab:orange")):
    sel = sorted((r for r in default if r["head_dim"] == hd), key=lambda r: r["seqlen"])
    x = [r["seqlen"] for r in sel]
    ax.loglog(x, [r["model_read_bytes"] for r in sel], "-", color=color, label=f"model, d={hd}")
    ax.loglog(x, [r["sm_read_bytes"] for r in sel], "o", color=color, label=f"delivered to SMs, d={hd}")
    ax.loglog(x, [r["lts_read_bytes"] for r in sel], "s", mfc="none", color=color,
              label=f"at L2 slices, d={hd}")
    ax.loglog(x, [r["model_dram_read_bytes"] for r in sel], "--", color=color,
              label=f"L2-reuse model, d={hd}")
    ax.loglog(x, [r["dram_read_bytes"] for r in sel], "x", color=color, ms=8, label=f"DRAM, d={hd}")
ax.set(xlabel="sequence length N (tokens)", ylabel="bytes read (batch 1 x 4 heads)",
       title="Forward kernel, not causal, default blocks: model and measurement")
ax.set_xticks(seqlens, [str(s) for s in seqlens])
ax.minorticks_off()
ax.legend(fontsize=7, ncol=2)
plt.show()

# %% [markdown]
# The picture in one glance: the SMs receive what the model says (dots on the solid lines), a little
# less where L1 helps; the L2 slices serve less than that, thanks to coalescing; and DRAM
# delivers only the compulsory bytes (crosses on the dashed lines), linear in $N$, which is why
# the kernel can be compute-bound. The full set of panels is in
# `benchmarks/results/h100/iocost_ncu.png`.
#
# **Takeaway.** The model predicts the bytes at the SMs (stores exactly, loads within 15% in most
# launches; the exceptions are L1 hits the model does not know about), and with its L2-reuse term
# the bytes at DRAM. Between the two, caches remove most of the re-reads the model counts.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` compares it with the
# simulator of section 3 on awkward sizes (one row, primes, blocks that divide nothing, $N \ne N_k$
# both ways) and prints `pass`, or the first case that differs with the simulator's count per
# tensor; it never stops the notebook. Stuck? `show_solution("06.standard_forward_io")` prints one
# answer (the answers live in `exercises/solutions/nb06.py`, out of sight).
#
# **1. Standard attention, counted.** Write `standard_forward_io(N, N_k, d, block_r)`, returning
# `(elements read, elements written)` of the three kernels of section 2 for $N$ queries, $N_k$ keys
# and head dimension $d$, when both GEMMs hold a row block of `block_r` queries on chip and stream
# all of $K$ (for $S = QK^\top$) or of $V$ (for $O = PV$) past it; the last row block may be
# ragged. Section 2's $4Nd + 4N^2$ is the case `block_r` $= N = N_k$.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def standard_forward_io(N, N_k, d, block_r):
    raise NotImplementedError  # your code here


check("06.standard_forward_io", standard_forward_io)

# %% [markdown]
# **2. FlashAttention-2's forward, causal or not.** Write
# `fa2_forward_io(N, N_k, d, block_m, block_n, causal)`, returning `(elements read, elements
# written)` of the forward kernel: one program per block of `block_m` queries reads its $Q$ block
# once, loops over the $K/V$ blocks of `block_n` rows from the first to the last one any of its
# queries can see, and writes its $O$ block and one $\mathrm{lse}$ per row once. The causal mask is
# bottom-right (query $i$ sees key $j$ iff $j \le i + N_k - N$); a $Q$ block that sees no key loads
# no $K/V$ block, and a ragged last $K/V$ block moves only the rows that exist.

# %%
def fa2_forward_io(N, N_k, d, block_m, block_n, causal):
    raise NotImplementedError  # your code here


check("06.fa2_forward_io", fa2_forward_io)

# %% [markdown]
# **3. The backward pass against the forward.** As $N$ grows (not causal, $N = N_k$), FA-2's
# forward moves about $c_f N^2$ elements and its backward $c_b N^2$. Write
# `backward_over_forward(d, block_m, block_n, fwd_block_m)` returning $c_b / c_f$. The forward's
# programs hold `fwd_block_m` queries each and stream $K$ and $V$ past them. The backward (notebook
# 07) has a preprocessing kernel that reads $O$ and $dO$ once, and two kernels that loop:
# `_attn_bwd_dkdv`, one program per block of `block_n` keys, streams every row of $Q$ and $dO$
# ($d$ numbers each) and of $\mathrm{lse}$ and $\delta$ (one number each) past its $K_j, V_j$;
# `_attn_bwd_dq`, one program per block of `block_m` queries, streams $K$ and $V$ past its
# $Q_i, dO_i$. The check takes both coefficients from the simulator's counts, for 64 x 64 backward
# blocks beside section 5's 128 x 64 forward ($d = 64$), and for blocks that tell the loops apart.

# %%
def backward_over_forward(d, block_m, block_n, fwd_block_m):
    raise NotImplementedError  # your code here


check("06.backward_over_forward", backward_over_forward)

# %% [markdown]
# ## References
#
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: Algorithm 1 (FlashAttention-1's loop order), Theorem 2
#   and Proposition 3 (Section 3.2; proofs in Appendix C).
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the loop order with query blocks outside, this repository's kernels.
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   running max and sum that both loop orders update.
# * Williams, Waterman, Patterson, "Roofline: an insightful visual performance model for multicore
#   architectures", CACM 2009.

# %% [markdown]
# ## What comes next
#
# The backward pass needs $P$, the very matrix we refused to store. [07 ·
# Backward](07_backward.ipynb) recomputes it, tile by tile, from the log-sum-exp the forward
# saved, and checks the Triton gradients against autograd.
