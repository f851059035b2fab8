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
# # 02 · Tiling: compute in small pieces that fit on chip
#
# **What you will learn**
#
# * a GPU has a huge, slow memory (HBM) and a tiny, fast one (SRAM, on each multiprocessor); a
#   kernel is fast when it reuses what it brought into SRAM;
# * blocked (tiled) matrix multiplication: tiles of side $T$ divide the memory traffic by $T$,
#   and $T$ is limited by how many tiles fit in SRAM;
# * the score matrix $S = QK^\top$ tiles even more easily, because the inner dimension $d$ is small;
# * the obstacle: the softmax needs a whole row of $S$, and a tile holds only a piece of it.
#
# **Read first:** [01 · Naive attention](01_naive_attention.ipynb) (the three steps and the safe
# softmax). We use `kernels.iocost` only for the sizes of an H100.
#
# **Words:** [glossary](GLOSSARY.md) (HBM, SRAM, tile). The exercises at the end check code you write.

# %%
import sys
from pathlib import Path

try:
    import kernels  # noqa: F401  (the repository must be importable)
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels  # noqa: F401

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from kernels.iocost import H100_SXM

rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Two memories
#
# The numbers the model of notebook 06 uses for an H100 SXM:

# %%
gpu = H100_SXM
print(f"{gpu.name}")
print(f"  HBM bandwidth          {gpu.bandwidth / 1e12:6.2f} TB/s")
print(f"  bf16 tensor-core peak  {gpu.peak_flops / 1e12:6.0f} TFLOP/s")
print(f"  L2 cache               {gpu.l2_bytes / 2**20:6.0f} MiB")
print(f"  shared memory (SRAM)   {gpu.smem_bytes / 2**10:6.0f} KiB per thread block, "
      f"{gpu.num_sms} multiprocessors")
flops_per_byte = gpu.peak_flops / gpu.bandwidth
print(f"to keep the tensor cores busy, each byte read from HBM must feed {flops_per_byte:.0f} FLOPs,")
print(f"each 2-byte bf16 number {2 * flops_per_byte:.0f} FLOPs")
assert 500 < 2 * flops_per_byte < 700

# %% [markdown]
# Every number fetched from HBM must take part in about 600 floating-point operations, or the
# arithmetic units wait for memory. Data brought into SRAM (a few hundred KiB per multiprocessor,
# and about ten times faster than HBM: the FlashAttention paper quotes about 19 TB/s against
# 1.5-2.0 TB/s on an A100) is cheap to reuse; the whole game is to **reuse each number many times
# while it sits in SRAM**.
#
# **Takeaway.** Computation is cheap; moving data from HBM is not. Count the elements moved.

# %% [markdown]
# ## 2. Blocked matrix multiplication
#
# $C = AB$ for $n \times n$ matrices: output element $C_{ij}$ needs row $i$ of $A$ and column $j$
# of $B$. Computed one element at a time from slow memory, that is $2n$ loads per element,
# $2n^3$ in all, and every number of $A$ is loaded $n$ times.
#
# Tiled: split the matrices into $T \times T$ tiles. An output tile $C_{IJ} = \sum_K A_{IK}
# B_{KJ}$ stays in fast memory while pairs of input tiles stream past it. Each pair of loaded tiles
# ($2T^2$ numbers) feeds $T^3$ multiply-adds, so every number loaded is used $T$ times instead of
# once, and the loads drop to
#
# $$ \underbrace{(n/T)^2}_{\text{output tiles}} \times \underbrace{(n/T)}_{\text{steps}}
#    \times \underbrace{2T^2}_{A_{IK},\,B_{KJ}} = \frac{2n^3}{T}. $$

# %%
def blocked_matmul(A, B, T):
    """C = A @ B tile by tile. Returns C and the number of elements loaded from slow memory."""
    n, m = A.shape
    p = B.shape[1]
    C = np.zeros((n, p))
    loads = 0
    for i in range(0, n, T):
        for j in range(0, p, T):
            acc = np.zeros((min(T, n - i), min(T, p - j)))  # C tile: stays in fast memory
            for k in range(0, m, T):
                a, b = A[i:i + T, k:k + T], B[k:k + T, j:j + T]  # two tiles loaded
                loads += a.size + b.size
                acc += a @ b
            C[i:i + T, j:j + T] = acc  # written once
    return C, loads


n = 256
A, B = rng.standard_normal((n, n)), rng.standard_normal((n, n))
tiles = [8, 16, 32, 64, 128, 256]
loads = []
for T in tiles:
    C, count = blocked_matmul(A, B, T)
    err = np.abs(C - A @ B).max()
    loads.append(count)
    print(f"T = {T:>3}: max error {err:.1e}, elements loaded {count:>10,} = 2n^3/T: {count == 2 * n**3 // T}")
    assert err < 1e-10 and count == 2 * n**3 // T
# When T does not divide n the edge tiles are smaller, and the exact count is 2 n^2 ceil(n / T):
# each of the ceil(n / T) column blocks of C reads all of A once, and B likewise per row block.
for T in (7, 48, 100):
    assert blocked_matmul(A, B, T)[1] == 2 * n**2 * math.ceil(n / T) != 2 * n**3 // T

# %% [markdown]
# The tiles must fit: an $A$ tile, a $B$ tile and the accumulator, $3T^2$ numbers. With the H100's
# 227 KiB and 2-byte numbers, $T \le 196$; kernels use powers of two, so $T = 128$, and each
# number is loaded $n / 128$ times instead of $n$.

# %%
bytes_per = 2
T_max = math.isqrt(gpu.smem_bytes // (3 * bytes_per))
print(f"largest square tile with 3 T^2 bf16 numbers in {gpu.smem_bytes // 1024} KiB: T = {T_max}")
assert 3 * T_max**2 * bytes_per <= gpu.smem_bytes < 3 * (T_max + 1) ** 2 * bytes_per

Ts = 2.0 ** np.arange(0, 9)
fig, ax = plt.subplots(figsize=(6.5, 4))
ax.loglog(Ts, 2 * n**3 / Ts, "-", color="tab:blue", label="$2n^3/T$")
ax.loglog(tiles, loads, "o", color="tab:blue", label="counted by blocked_matmul")
ax.set(xlabel="tile side T (elements)", ylabel=f"elements loaded, n = {n}",
       title="Tiling divides the traffic by the tile size")
ax2 = ax.twinx()
ax2.loglog(Ts, 3 * Ts**2 * bytes_per / 1024, "--", color="tab:red", label="fast memory needed, $3T^2$")
ax2.axhline(gpu.smem_bytes / 1024, color="tab:red", ls=":", label="H100 shared memory per block")
ax2.set_ylabel("fast memory needed (KiB, bf16)")
ax.set_xticks(Ts, [str(int(t)) for t in Ts])
ax.minorticks_off()
lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(lines, [ln.get_label() for ln in lines], loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# Which data does one output tile touch? A row panel of $A$ and a column panel of $B$:

# %%
def draw_tiles(ax, nt, highlight, title, color):
    ax.add_patch(Rectangle((0, 0), nt, nt, fill=False))
    for r, c in highlight:
        ax.add_patch(Rectangle((c, r), 1, 1, color=color, alpha=0.6))
    for t in range(nt + 1):
        ax.plot([0, nt], [t, t], color="gray", lw=0.5)
        ax.plot([t, t], [0, nt], color="gray", lw=0.5)
    ax.set(xlim=(0, nt), ylim=(nt, 0), aspect="equal", title=title, xticks=[], yticks=[])


nt, I, J = 6, 2, 4
fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
draw_tiles(axes[0], nt, [(I, k) for k in range(nt)], f"A: row panel {I}", "tab:blue")
draw_tiles(axes[1], nt, [(k, J) for k in range(nt)], f"B: column panel {J}", "tab:orange")
draw_tiles(axes[2], nt, [(I, J)], f"C: tile ({I}, {J}) on chip", "tab:green")
fig.suptitle("One output tile reads a row panel of A and a column panel of B, one tile pair at a time")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Takeaway.** Keep the output tile in fast memory and stream input tiles past it: traffic
# $2n^3/T$, fast memory $3T^2$. The largest tile that fits wins.

# %% [markdown]
# ## 3. Tiling the scores $S = QK^\top$
#
# In attention the inner dimension is the head dimension $d$ (64 or 128): small. A block of
# $B_r$ query rows $Q_i$ ($B_r \times d$) and a block of $B_c$ key rows $K_j$ ($B_c \times d$)
# fit in SRAM whole, and one product $S_{ij} = Q_i K_j^\top$ gives a complete
# $B_r \times B_c$ tile of scores: no loop over the inner dimension at all.
#
# Hold $Q_i$ and stream every $K_j$ past it: $Q$ is loaded once, $K$ once per query block,
# $N d + \lceil N / B_r \rceil N d$ elements, and no tile of $S$ ever needs to leave the chip *if
# the next step can consume it there*. Doubling $B_r$ halves the loads of $K$: a taller query
# block reuses each key tile more. (The IO model of notebook 06 calls the query block $B_m$, after
# the kernel's `BLOCK_M`: this is its $2N^2 d / B_m$ term, for $K$ and $V$.)

# %%
N, d, Br, Bc = 200, 64, 64, 32  # N deliberately not a multiple of the blocks
Q, K, V = (rng.standard_normal((N, d)) for _ in range(3))
scale = 1 / math.sqrt(d)

S_tiled = np.empty((N, N))
loaded = 0
for i in range(0, N, Br):
    q = Q[i:i + Br]  # loaded once per query block
    loaded += q.size
    for j in range(0, N, Bc):
        k = K[j:j + Bc]  # loaded once per (query block, key block)
        loaded += k.size
        S_tiled[i:i + Br, j:j + Bc] = scale * q @ k.T  # [Br, Bc]
err = np.abs(S_tiled - scale * Q @ K.T).max()
expected = N * d + math.ceil(N / Br) * N * d
print(f"tiled S: max error {err:.1e}; elements loaded {loaded:,} (N d + ceil(N/Br) N d = {expected:,})")
assert err < 1e-12 and loaded == expected

# %% [markdown]
# ### If the next step were element-wise, we would be done
#
# Suppose attention used an element-wise weight $f(S_{ij})$, such as a sigmoid, instead of a
# softmax. Then $O_i = \sum_j f(S_{ij}) V_j$: each tile of $S$ is turned into weights and
# multiplied into an accumulator for $O_i$ on the spot, and $S$ is never stored. One loop, fused:

# %%
def sigmoid(x):
    return 1 / (1 + np.exp(-x))


O_fused = np.zeros((N, d))
for i in range(0, N, Br):
    acc = np.zeros((min(Br, N - i), d))  # O_i accumulates on chip
    for j in range(0, N, Bc):
        s = scale * Q[i:i + Br] @ K[j:j + Bc].T  # [Br, Bc], never stored
        acc += sigmoid(s) @ V[j:j + Bc]
    O_fused[i:i + Br] = acc
err = np.abs(O_fused - sigmoid(scale * Q @ K.T) @ V).max()
print(f"fused element-wise attention: max error {err:.1e}")
assert err < 1e-10

# %% [markdown]
# ## 4. The obstacle: the softmax needs a whole row
#
# The softmax is not element-wise. With the safe softmax of notebook 01,
#
# $$ P_{ij} = \frac{e^{S_{ij} - m_i}}{\ell_i}, \qquad m_i = \max_j S_{ij}, \quad
#    \ell_i = \sum_j e^{S_{ij} - m_i}, $$
#
# and $m_i$, $\ell_i$ are taken over the **whole row**. A tile sees $B_c$ of the $N$ scores.
# Normalising each tile on its own gives the wrong answer:

# %%
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


S = scale * Q @ K.T
P_exact = softmax(S)
P_per_tile = np.concatenate([softmax(S[:, j:j + Bc]) for j in range(0, N, Bc)], axis=1)
err = np.abs(P_per_tile - P_exact).max()
print(f"softmax tile by tile: max error {err:.2f}; each row now sums to "
      f"{P_per_tile.sum(axis=1)[0]:.1f} instead of 1 ({math.ceil(N / Bc)} tiles)")
assert err > 0.1

# %% [markdown]
# But look at *how* it is wrong. Inside tile $t$ of row $i$, with its own max $m^{(t)}$ and sum
# $\ell^{(t)}$,
#
# $$ P_{ij} = \frac{e^{S_{ij} - m^{(t)}}}{\ell^{(t)}} \cdot
#    \underbrace{\frac{\ell^{(t)} e^{m^{(t)} - m_i}}{\ell_i}}_{\text{one number per (row, tile)}} . $$
#
# Every tile's local softmax is right *up to one scalar per row*. So a tile can be processed
# with only local knowledge, as long as we can fix it up later by a scale factor. That fix-up is
# the subject of notebook 03.

# %%
m_row = S.max(axis=1, keepdims=True)
l_row = np.exp(S - m_row).sum(axis=1, keepdims=True)
worst = 0.0
for j in range(0, N, Bc):
    s = S[:, j:j + Bc]
    m_t = s.max(axis=1, keepdims=True)
    l_t = np.exp(s - m_t).sum(axis=1, keepdims=True)
    fixed = softmax(s) * (l_t * np.exp(m_t - m_row) / l_row)  # one scalar per row
    worst = max(worst, np.abs(fixed - P_exact[:, j:j + Bc]).max())
print(f"local softmax x (l_t e^(m_t - m) / l): max error {worst:.1e}")
assert worst < 1e-14

# %%
row = 3
fig, axes = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
cols = np.arange(N)
axes[0].plot(cols, S[row], ".", ms=3, color="gray", label="scores $S_{ij}$")
for t, j in enumerate(range(0, N, Bc)):
    seg = slice(j, min(j + Bc, N))
    axes[0].hlines(S[row, seg].max(), j, seg.stop - 1, color="tab:orange",
                   label="tile max $m^{(t)}$" if t == 0 else None)
    for ax in axes:
        ax.axvline(j, color="k", lw=0.4, ls=":")
axes[0].axhline(S[row].max(), color="tab:red", ls="--", label="row max $m_i$")
axes[0].set(ylabel="score", title=f"Row {row} of S cut into tiles of {Bc} keys")
axes[0].legend(fontsize=8, loc="lower right")
axes[1].plot(cols, P_per_tile[row], color="tab:orange", label="softmax of each tile alone")
axes[1].plot(cols, P_exact[row], color="tab:blue", label="softmax of the whole row")
axes[1].set(xlabel="key position j", ylabel="probability $P_{ij}$", yscale="log",
            title="Per-tile softmax is off by one factor per tile")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **Takeaway.** Everything in attention tiles except the softmax's normalisation, and that is
# off by just one scalar per (row, tile). If we carry a running max and a running sum along the
# row, we can correct earlier tiles when later ones arrive.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# sizes (1 x 1 matrices, primes, tiles that do not divide the sizes) against a reference and
# prints `pass`, or the first wrong element and what it should be; it never stops the notebook,
# and nothing after it uses your function. Stuck? `show_solution("02.matmul_loads")` prints one
# answer (the answers live in `exercises/solutions/nb02.py`, out of sight).
#
# **1. The traffic, for any shapes.** Write `matmul_loads(n, m, p, T)`: the number of elements
# `blocked_matmul` loads to multiply an $n \times m$ matrix $A$ by an $m \times p$ matrix $B$ with
# tiles of side $T$, from a formula (no loop over tiles). The check counts tile pair by tile pair,
# on rectangles and on tiles that do not divide the sizes, where $2nmp/T$ is wrong.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def matmul_loads(n, m, p, T):
    raise NotImplementedError  # your code here


check("02.matmul_loads", matmul_loads)

# %% [markdown]
# **2. One output tile, as a GPU program computes it.** A GPU program does not load a ragged
# tile: it loads a whole $T \times T$ tile with the entries past the matrix's edge masked to 0
# (`tl.load(..., mask=..., other=0)` in Triton, notebook 04), and its accumulator is $T \times T$
# too. Write `tile_product(A, B, i, j, T)` for $A$ ($n \times m$) and $B$ ($m \times p$) NumPy
# arrays: the $T \times T$ tile $(i, j)$ of $C = AB$ (rows $iT$ to $iT + T - 1$, columns $jT$ to
# $jT + T - 1$), summed over every tile pair of the inner dimension, each tile zero-padded to
# $T \times T$; its entries outside $C$ come out 0. The check takes every tile of matrices whose
# three sizes are not multiples of $T$. (Padding with 0 is harmless in a product; for scores
# about to enter a softmax it is not, and notebook 05's kernel masks them to $-\infty$.)

# %%
def tile_product(A, B, i, j, T):
    raise NotImplementedError  # your code here


check("02.tile_product", tile_product)

# %% [markdown]
# **3. The softmax's statistics, one tile at a time.** A row of scores arrives as a list `tiles`
# of 1-D float64 arrays (the last one may be shorter), and only one tile fits on chip at a time.
# Write `softmax_stats(tiles)` returning `(m, l)`: the row's max $m$ and
# $\ell = \sum_j e^{x_j - m}$, in two passes over the tiles, the max first, then the sum. The
# check includes scores near 800, where $e^x$ overflows even float64, the max in the first and in
# the last tile, and a tile whose every score is masked ($-\infty$). Writing $P = e^{x - m} / \ell$
# then takes a third pass over the row: three reads where the element-wise weight of section 3
# needed one. Notebook 03 fuses the first two passes.

# %%
def softmax_stats(tiles):
    raise NotImplementedError  # your code here


check("02.softmax_stats", softmax_stats)

# %% [markdown]
# ## References
#
# * Hong, Kung, "I/O complexity: The red-blue pebble game", STOC 1981: with $M$ words of fast
#   memory, multiplying two $n \times n$ matrices moves $\Omega(n^3 / \sqrt M)$ words, which
#   square tiles of side about $\sqrt{M/3}$ attain up to a constant factor.
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: attention counted in HBM accesses, and the SRAM and HBM
#   bandwidths of an A100 (about 19 and 1.5-2.0 TB/s).
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   safe softmax reads its input twice before writing, and the two passes fuse into one.
# * Tillet, Kung, Cox, "Triton: an intermediate language and compiler for tiled neural network
#   computations", MAPL 2019: tiles as the unit a GPU program is written in.

# %% [markdown]
# ## What comes next
#
# [03 · Online softmax](03_online_softmax.ipynb): a running max $m$ and a running sum $\ell$ that
# are updated tile by tile, with a rescaling of what was accumulated before, give the exact
# softmax without ever seeing the whole row at once.
