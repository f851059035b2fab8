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
# # 05 · The FlashAttention forward pass
#
# **What you will learn**
#
# * the tiled algorithm: FlashAttention-1's loop order (the paper's Algorithm 1) and
#   FlashAttention-2's, which swaps the loops so that each block of queries is finished by one
#   program without writing anything intermediate;
# * a 30-line NumPy version of it, checked against naive attention;
# * the Triton kernel of this repository, `_attn_fwd` in `kernels/flash_fwd.py`, read line by line
#   against the NumPy version (the kernel is shown from the package, never copied here);
# * which tiles a causal mask lets the kernel skip, also when there are fewer or more queries than
#   keys.
#
# **Read first:** [02 · Tiling](02_tiling.ipynb) and [03 · Online softmax](03_online_softmax.ipynb).
#
# Without Triton (macOS, Windows), the kernel's source is still shown, `flash_attention` runs the
# plain-PyTorch twin of `kernels/flash_torch.py` (the same tiled algorithm) through the same checks,
# and the few lines that need Triton itself (the launch table, a constant of `kernels/tiles.py`)
# say what they would show.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import to_rgba
from matplotlib.patches import Patch, Rectangle

from kernels import attention_mask, attention_reference, flash_attention, flash_torch
from kernels.iocost import flash2_kernels_io, simulate_flash1, simulate_flash2
from kernels.source import show_source

if kernels.HAS_TRITON:  # the kernel's launch table and tile helpers import triton (Linux only)
    from kernels import flash_fwd, tiles

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # small sizes: the interpreter, or the twin on a CPU
RUNS = kernels.implementation()  # what flash_attention runs here, in words
torch.manual_seed(0)
rng = np.random.default_rng(0)
print(f"device: {DEVICE}, kernels: {RUNS}")

# %% [markdown]
# ## 1. Two loop orders
#
# Cut $Q$ into blocks $Q_i$ of $B_r$ rows and $K, V$ into blocks $K_j, V_j$ of $B_c$ rows. Every
# pair $(i, j)$ gives a score tile $S_{ij} = Q_i K_j^\top / \sqrt d$, and notebook 03 tells us how
# to fold the tiles of one row block into its output, one after another. What remains is the
# order of the two loops.
#
# **FlashAttention-1** (Dao et al. 2022, Algorithm 1) puts the key/value blocks outside:
#
# ```text
# O = 0, l = 0, m = -inf               (in HBM)
# for j over K/V blocks:               load K_j, V_j
#     for i over Q blocks:             load Q_i, O_i, l_i, m_i
#         S_ij = Q_i K_j^T / sqrt(d);  local max, exp, row sum
#         merge into (m_i, l_i, O_i);  write O_i, l_i, m_i back to HBM
# ```
#
# Each $K_j, V_j$ is read once, but the running output $O_i$ and its statistics go back and forth
# to HBM once per $(i, j)$ pair.
#
# **FlashAttention-2** (Dao 2023) puts the query blocks outside, and gives each one to its own
# program (thread block) running in parallel:
#
# ```text
# for i over Q blocks, in parallel:    load Q_i;  m = -inf, l = 0, acc = 0   (on chip)
#     for j over K/V blocks:           load K_j, V_j
#         S_ij = Q_i K_j^T / sqrt(d);  update m, l, acc (online softmax, unnormalised)
#     write O_i = acc / l and lse_i = m + log l, once
# ```
#
# Now $K$ and $V$ are read once per *query block*, but $O$ is written exactly once, nothing is
# read back, and the division by $\ell$ happens once at the end instead of at every step. This is
# the order of this repository's kernels.

# %% [markdown]
# ## 2. FlashAttention-2 in NumPy
#
# Nothing here is new: the loops of notebook 02, the online softmax with the `m_safe` guard of
# notebook 03, and the causal mask in its bottom-right form (query $i$ sees key $j$ when
# $j \le i + N_k - N_q$; notebook 08 explains why).

# %%
def flash_forward(Q, K, V, block_m, block_n, causal=False):
    """FlashAttention-2 forward, one 'program' per block of queries. Returns (O, lse)."""
    N, d = Q.shape
    N_k = K.shape[0]
    scale = 1 / math.sqrt(d)
    O, lse = np.zeros((N, d)), np.full(N, -np.inf)
    for i in range(0, N, block_m):  # the grid: programs run in parallel
        q = Q[i:i + block_m]  # Q_i: loaded once
        rows = np.arange(i, i + len(q))[:, None]
        m, l, acc = np.full(len(q), -np.inf), np.zeros(len(q)), np.zeros((len(q), d))
        for j in range(0, N_k, block_n):  # K_j, V_j stream past
            cols = np.arange(j, min(j + block_n, N_k))[None, :]
            visible = (cols <= rows + N_k - N) if causal else np.ones((len(q), cols.size), bool)
            if not visible.any():
                continue  # a tile above the diagonal is never loaded
            s = np.where(visible, scale * q @ K[j:j + block_n].T, -np.inf)  # [B_r, B_c]
            m_new = np.maximum(m, s.max(axis=1))
            m_safe = np.where(np.isneginf(m_new), 0.0, m_new)  # rows that saw no key yet
            p = np.exp(s - m_safe[:, None])
            alpha = np.exp(m - m_safe)
            l = alpha * l + p.sum(axis=1)
            acc = alpha[:, None] * acc + p @ V[j:j + block_n]
            m = m_new
        seen = l > 0  # a row with no visible key gets O = 0 and lse = -inf
        O[i:i + block_m] = np.where(seen[:, None], acc / np.where(seen, l, 1.0)[:, None], 0.0)
        lse[i:i + block_m] = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)
    return O, lse


def naive(Q, K, V, causal=False):
    """attention_reference on NumPy (N, d) arrays, float64: (O, lse)."""
    t = [torch.from_numpy(x)[None, None] for x in (Q, K, V)]
    out, lse = attention_reference(*t, causal=causal, return_lse=True)
    return out[0, 0].numpy(), lse[0, 0].numpy()


for N, N_k, causal in ((200, 200, False), (200, 200, True), (70, 200, True), (200, 70, True)):
    Q, K, V = rng.standard_normal((N, 32)), rng.standard_normal((N_k, 32)), rng.standard_normal((N_k, 32))
    O, lse = flash_forward(Q, K, V, block_m=64, block_n=32, causal=causal)
    O_ref, lse_ref = naive(Q, K, V, causal)
    err = np.abs(O - O_ref).max()
    seen = np.isfinite(lse_ref)  # rows that see at least one key
    assert np.array_equal(np.isfinite(lse), seen)
    err_lse = np.abs(lse[seen] - lse_ref[seen]).max()
    print(f"N_q={N:>3}, N_k={N_k:>3}, causal={causal!s:>5}: output error {err:.1e}, lse error {err_lse:.1e}")
    assert err < 1e-12 and err_lse < 1e-12

# %% [markdown]
# `kernels/iocost/simulator.py` holds the same two algorithms as simulators that count every
# element crossing between HBM and an explicit SRAM: `simulate_flash1` (Algorithm 1) and
# `simulate_flash2` (this loop order). Both compute the exact output; their traffic differs
# exactly where the loop order says it should: FlashAttention-1 reads the running output $O$ back
# once per K/V block.

# %%
N, d, B = 256, 32, 32
Q, K, V = (rng.standard_normal((N, d)) for _ in range(3))
O_ref, _ = naive(Q, K, V)
fa1 = simulate_flash1(Q, K, V, M=8192, block_r=B, block_c=B)
fa2 = simulate_flash2(Q, K, V, M=8192, block_m=B, block_n=B)
for name, sim in (("FlashAttention-1", fa1), ("FlashAttention-2", fa2)):
    err = np.abs(sim.out - O_ref).max()
    print(f"{name}: output error {err:.1e}; elements moved {sim.forward.total:,}\n{sim.forward}\n")
    assert err < 1e-12
T = N // B
assert fa1.forward.reads["O"] == T * N * d and "O" not in fa2.forward.reads
assert fa2.forward.writes["O"] == N * d and fa1.forward.writes["O"] == (T + 1) * N * d

# %% [markdown]
# **Takeaway.** Same arithmetic, same result; FlashAttention-2's order keeps the running output
# on chip, reads $K, V$ once per query block, and gives every query block to an independent
# program.

# %% [markdown]
# ## 3. The Triton kernel, line by line
#
# `kernels/flash_fwd.py` holds `_attn_fwd`, with its launch table and launcher; the small helpers
# it shares with the backward and the other kernels (which tile, which keys, the mask) are in
# `kernels/tiles.py`. We print excerpts of both straight from the package
# (with the file's line numbers), in the order of the NumPy version. The files are read as text,
# so this works without Triton too.

# %%
show_source("kernels.flash_fwd:_attn_fwd", "def _attn_fwd(", "PRECISION: tl.constexpr")

# %% [markdown]
# **The signature** follows the house style: pointers, then strides grouped per tensor (a
# $(\text{batch}, \text{head}, \text{row}, \text{dim})$ stride for each, so any memory layout
# works), then sizes, then the compile-time meta-parameters in capitals. `BLOCK_M` and `BLOCK_N`
# are the NumPy version's `block_m` and `block_n`. Several flags (`VARLEN`, `SEQUSED_K`,
# `PACK_GQA`, the split index) serve notebook 08; with them off, the kernel is the NumPy loop.
#
# **Which tile am I?** The grid replaces the outer loop: each program takes one query block
# `pid_m` of one (batch, head). Both come from the first grid axis, query blocks fastest, so the
# programs that run at the same time are the query blocks of one head and share its K and V in
# L2 (CUDA allows 2**31 - 1 programs on that axis, only 65,535 on the others):

# %%
show_source("kernels.tiles:tile_ids", "def tile_ids", "return pid % num_tiles")
show_source("kernels.flash_fwd:_attn_fwd", "pid_m, pid_bh = tile_ids(num_tiles)", "off_hk = off_h // group")

# %% [markdown]
# Each pointer is then moved to the first row of this (batch, head): from here on the program
# sees one $(N, d)$ matrix per tensor, as the NumPy version does.

# %%
show_source("kernels.flash_fwd:_attn_fwd", "q_ptr += off_b * stride_qb", "lse_ptr += pid_s")

# %% [markdown]
# **Load $Q_i$ once and set up the statistics**, the NumPy lines `q = Q[i:i + block_m]` and
# `m, l, acc = ...`. `offs_m` are the query rows of the tile (with `PACK_GQA` off, simply
# `pid_m * BLOCK_M + arange(BLOCK_M)`); rows past the end of the sequence (the ragged last block)
# are masked off in every load and store (`mask_m`), which is why $N$ need not be a multiple of
# the block. The statistics live in registers for the whole loop:

# %%
show_source("kernels.flash_fwd:_attn_fwd", "mask_m = offs_m < seqlen_q", "acc = tl.zeros(")

# %% [markdown]
# **The key range.** Instead of testing every tile and `continue`-ing (NumPy), the kernel computes
# the range of key positions its rows can see, and loops over that range only. `key_range` does
# it for causal masks and windows, and `band_mask` is the element-wise version of the same
# predicate, applied inside the tiles that straddle the diagonal:

# %%
show_source("kernels.flash_fwd:_attn_fwd", "lo, hi = key_range(", "hi = tl.minimum(hi, (pid_s")
print()
show_source("kernels.tiles:key_range", "def key_range", "return lo, hi")
print()
show_source("kernels.tiles:band_mask", "def band_mask", "return (cols")

# %% [markdown]
# **The loop**, the heart of it, and the NumPy inner loop statement for statement. It runs in three
# stretches, unrolled at compile time (`tl.static_range`): the key blocks at the first edge of the
# band, `[lo, mid_lo)`, with the mask; the blocks every row of the tile sees wholly,
# `[mid_lo, mid_hi)`, without it (`stretch != 1` is a compile-time constant, so that loop carries
# no `tl.where` at all); the blocks at the other edge, `[mid_hi, hi)`, with it again.
#
# | NumPy (`flash_forward`) | kernel (`_attn_fwd`) |
# | --- | --- |
# | `for j in range(0, N_k, block_n)` | `for start_n in range(start, end, BLOCK_N)` (in `_fwd_blocks`) |
# | `K[j:j + block_n].T` | `kt = tl.load(...)`, loaded already transposed through the strides |
# | `s = scale * q @ K_j.T` | `s = tl.dot(q, kt) * qk_scale` (in base 2, see below) |
# | `np.where(visible, s, -inf)` | `tl.where(valid, s, -inf)`: padding columns and `band_mask` |
# | `m_new`, `m_safe`, `p`, `alpha`, `l` | the same names, `exp2` instead of `exp` |
# | `acc = alpha * acc + p @ V_j` | `acc = acc * alpha`, then `tl.dot(p, v, acc)` adds into `acc` |

# %%
show_source("kernels.flash_fwd:_fwd_blocks", "for stretch in tl.static_range(3):", "m_i = m_new")

# %% [markdown]
# Two details. `EVEN_N` is a compile-time flag: when the key length is a multiple of `BLOCK_N`
# and there is no mask, the `tl.where` disappears from the compiled loop. And the kernel works in
# **base 2**: the host passes `qk_scale` $= \text{softmax\_scale} \cdot \log_2 e$, so that
# $2^{s \log_2 e} = e^{s}$ and the GPU's native `exp2` instruction can be used. The running max
# is then in base-2 units, and the epilogue converts the log-sum-exp back:
# $\mathrm{lse} = (m + \log_2 \ell) \ln 2$.
#
# **The epilogue**, the NumPy lines after the inner loop: divide by $\ell$ once, give rows that saw
# no key a zero output and $\mathrm{lse} = -\infty$, store.

# %%
show_source("kernels.flash_fwd:_attn_fwd", "empty = l_i == 0.0", "tl.store(lse_ptr")
s = torch.linspace(-30, 0, 301, dtype=torch.float64)
err = (torch.exp2(s * math.log2(math.e)) - torch.exp(s)).abs().max().item()
print(f"\nexp2(s * log2(e)) vs exp(s): max error {err:.1e}")
assert err < 1e-15
if kernels.HAS_TRITON:
    print(f"LOG2E = {tiles.LOG2E} = log2(e): {math.isclose(tiles.LOG2E, math.log2(math.e))}")
    assert math.isclose(tiles.LOG2E, math.log2(math.e))
else:
    print("(the kernel's constant tiles.LOG2E is importable only with Triton, on Linux; "
          "the twin uses exp and log directly)")

# %% [markdown]
# ## 4. Equal to naive attention
#
# Run the kernel (compiled on a GPU, interpreted on a CPU) on awkward shapes: lengths that are not
# multiples of the blocks, fewer and more queries than keys, a head dimension that is not a power
# of two. The oracle is `attention_reference` in float64. In float32 the kernel uses exact fp32
# dots, so its error is at rounding level. Without Triton the same checks run on the twin.

# %%
def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


cases = [  # (batch, heads, seqlen_q, seqlen_k, head_dim, causal)
    (2, 2, 100, 100, 64, False),
    (1, 2, 100, 100, 64, True),
    (1, 2, 45, 130, 40, True),
    (1, 2, 130, 45, 64, True),
]
if not SMALL:
    cases += [(2, 4, 1000, 1000, 128, True), (1, 4, 777, 2049, 64, False)]
print(f"flash_attention ran: {RUNS}")
if kernels.HAS_TRITON:
    print("blocks on this machine:", flash_fwd.fwd_config(64, torch.float32))
else:
    print(f"blocks: the twin's default tiles, {flash_torch.BLOCK_M} x {flash_torch.BLOCK_N}; the "
          "kernel's launch table (fwd_config: blocks, warps, stages per GPU) needs Triton, on Linux")
for b, h, nq, nk, hd, causal in cases:
    q = torch.randn(b, h, nq, hd, device=DEVICE)
    k, v = (torch.randn(b, h, nk, hd, device=DEVICE) for _ in range(2))
    out, lse = flash_attention(q, k, v, causal=causal, return_lse=True)
    out_ref, lse_ref = attention_reference(q.double(), k.double(), v.double(), causal=causal, return_lse=True)
    finite = torch.isfinite(lse_ref)
    err = rel_err(out, out_ref)
    err_lse = (lse[finite].double() - lse_ref[finite]).abs().max().item()
    print(f"q {nq:>4} x k {nk:>4}, d {hd:>3}, causal {causal!s:>5}: output rel. error {err:.1e}, "
          f"lse max error {err_lse:.1e}")
    assert err < 1e-5 and err_lse < 1e-4
    assert torch.equal(torch.isfinite(lse), finite)  # the same rows see no key

# %% [markdown]
# In bfloat16 nothing is exact, so the right question is *how does the kernel compare with plain
# PyTorch in the same precision?* The test suite's rule: at most about twice PyTorch's error, plus
# a rounding floor. The kernel keeps the scores, the softmax and the accumulator in float32 and
# rounds only its inputs and its output, so its error is of the same order as PyTorch's.

# %%
q, k, v = (torch.randn(1, 2, 100, 64, device=DEVICE) for _ in range(3))
ref64 = attention_reference(q.double(), k.double(), v.double(), causal=True)
bf = [t.bfloat16() for t in (q, k, v)]
err_kernel = rel_err(flash_attention(*bf, causal=True), ref64)
err_torch = rel_err(attention_reference(*bf, causal=True), ref64)
print(f"bfloat16: flash_attention ({kernels.IMPLEMENTATION}) {err_kernel:.1e}, "
      f"PyTorch in bf16 {err_torch:.1e}")
assert err_kernel <= 2 * err_torch + 5e-3

# %% [markdown]
# **Takeaway.** The kernel is the NumPy loop with three additions: masks for ragged blocks, base-2
# exponentials, and a key range computed up front instead of skipped tile by tile. It agrees
# with naive attention to rounding.

# %% [markdown]
# ## 5. Which tiles a causal mask skips
#
# Classify every (query block, key block) tile: **skipped** (no query of the block sees any key of
# it: the loop never loads it), **masked** (straddles the diagonal: loaded, and `band_mask`
# applied), **full** (every score visible). We use the block sizes the kernel uses on this
# machine (without Triton, the twin's default tiles, which it skips the same way), and three
# shapes: as many queries as keys; fewer (a continuation, such as a prompt followed by new
# tokens); and more (the first queries then see no key at all).

# %%
if kernels.HAS_TRITON:
    cfg = flash_fwd.fwd_config(64, torch.float32)
    BM, BN = cfg["BLOCK_M"], cfg["BLOCK_N"]
else:
    BM, BN = flash_torch.BLOCK_M, flash_torch.BLOCK_N
print(f"tiles of {BM} x {BN}, as flash_attention uses here: {RUNS}")


def tile_classes(seqlen_q, seqlen_k, block_m, block_n, **mask_kw):
    """(T_r, T_c) array: 0 skipped, 1 masked, 2 full; and the element mask."""
    mask = attention_mask(seqlen_q, seqlen_k, **mask_kw).numpy()
    tr, tc = math.ceil(seqlen_q / block_m), math.ceil(seqlen_k / block_n)
    classes = np.zeros((tr, tc), dtype=int)
    for i in range(tr):
        for j in range(tc):
            tile = mask[i * block_m:(i + 1) * block_m, j * block_n:(j + 1) * block_n]
            classes[i, j] = 0 if not tile.any() else (2 if tile.all() else 1)
    return classes, mask


shapes = [(256, 256), (96, 256), (256, 96)]
colors = {0: "white", 1: "tab:orange", 2: "tab:blue"}
fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), gridspec_kw=dict(width_ratios=[1, 1, 0.6]))
for ax, (nq, nk) in zip(axes, shapes):
    classes, mask = tile_classes(nq, nk, BM, BN, causal=True)
    ax.imshow(mask, cmap="Greys", vmin=0, vmax=3, extent=(0, nk, nq, 0), interpolation="nearest")
    for (i, j), c in np.ndenumerate(classes):
        ax.add_patch(Rectangle((j * BN, i * BM), min(BN, nk - j * BN), min(BM, nq - i * BM),
                               facecolor=to_rgba(colors[c], 0.35 if c else 0.0), edgecolor="k", lw=0.5))
    ax.plot([max(0, nk - nq), nk], [max(0, nq - nk), nq], "r-", lw=1)
    skipped = (classes == 0).mean()
    ax.set(title=f"{nq} queries x {nk} keys\n{skipped:.0%} of tiles skipped",
           xlabel="key position j", ylabel="query position i")
axes[0].legend(handles=[Patch(facecolor=colors[c], alpha=0.5 if c else 1, edgecolor="k", label=lab)
                        for c, lab in ((0, "skipped"), (1, "masked"), (2, "full"))], loc="upper right")
fig.suptitle(f"Causal (bottom-right) attention in tiles of {BM} x {BN}\ngray: visible scores; red: "
             "the diagonal j = i + N_k - N_q")
fig.tight_layout()
plt.show()

# %% [markdown]
# Check the picture against the IO model: the keys the kernel loads for each query block are
# exactly the key blocks the picture does not skip (`flash2_kernels_io` computes this from block
# arithmetic alone, the way the kernel's `key_range` does).

# %%
for nq, nk in shapes:
    classes, _ = tile_classes(nq, nk, BM, BN, causal=True)
    widths = np.array([min(BN, nk - j * BN) for j in range(classes.shape[1])])
    keys_loaded = int(((classes > 0) * widths).sum())
    model = flash2_kernels_io(nq, 64, block_m=BM, block_n=BN, causal=True, N_k=nk)["_attn_fwd"]
    print(f"{nq:>3} x {nk:>3}: key rows loaded, from the picture {keys_loaded:>5}, "
          f"from the IO model {model.reads['K'] // 64:>5}")
    assert keys_loaded == model.reads["K"] // 64

# %% [markdown]
# With as many queries as keys and square tiles, $T$ tiles per side, the skipped tiles are the
# $T(T-1)/2$ strictly above the diagonal: a fraction $(T-1)/2T$, approaching one half. With more
# queries than keys, the first $N_q - N_k$ queries see nothing; the kernel runs an empty loop for
# them and writes zeros with $\mathrm{lse} = -\infty$:

# %%
classes, _ = tile_classes(256, 256, 32, 32, causal=True)
T = 256 // 32
print(f"square, T = {T}: skipped fraction {(classes == 0).mean():.4f} = (T-1)/2T = {(T - 1) / (2 * T):.4f}")
assert (classes == 0).sum() == T * (T - 1) // 2

nq, nk = 256, 96
q = torch.randn(1, 1, nq, 64, device=DEVICE)
k, v = (torch.randn(1, 1, nk, 64, device=DEVICE) for _ in range(2))
out, lse = flash_attention(q, k, v, causal=True, return_lse=True)
blind = nq - nk  # queries before the first key's position
print(f"flash_attention ({kernels.IMPLEMENTATION}), {nq} queries, {nk} keys: rows 0..{blind - 1} "
      f"all zero: {bool((out[0, 0, :blind] == 0).all())}, "
      f"lse -inf: {bool(torch.isneginf(lse[0, 0, :blind]).all())}; row {blind} sees key 0 only")
assert (out[0, 0, :blind] == 0).all() and torch.isneginf(lse[0, 0, :blind]).all()
assert torch.allclose(out[0, 0, blind], v[0, 0, 0], atol=1e-6)

# %% [markdown]
# **Takeaway.** The causal kernel never loads the tiles above the diagonal, which saves about half
# the work and traffic for square attention. Bottom-right alignment shifts the diagonal by
# $N_k - N_q$; the tiles it crosses are the only ones that pay for a mask.

# %% [markdown]
# ## Try this
#
# 1. Taller query blocks load each key tile fewer times, but skip less precisely near the
#    diagonal. Change `bm, bn` below (try 16 x 64, 128 x 16) and predict the skipped fraction
#    before you run; the check compares your tiles with the IO model again.

# %%
bm, bn = 16, 64
nq, nk = 200, 300
classes, _ = tile_classes(nq, nk, bm, bn, causal=True)
widths = np.array([min(bn, nk - j * bn) for j in range(classes.shape[1])])
keys_loaded = int(((classes > 0) * widths).sum())
model = flash2_kernels_io(nq, 64, block_m=bm, block_n=bn, causal=True, N_k=nk)["_attn_fwd"]
print(f"tiles {bm} x {bn}: skipped {(classes == 0).mean():.0%}, key rows loaded {keys_loaded}")
assert keys_loaded == model.reads["K"] // 64

# %% [markdown]
# 2. Run `flash_forward` with `block_m=1, block_n=1`: one query and one key per "tile". It is
#    still exact (the online softmax of notebook 03 with a block of one).

# %%
Q, K, V = (rng.standard_normal((20, 8)) for _ in range(3))
O1, _ = flash_forward(Q, K, V, block_m=1, block_n=1, causal=True)
err = np.abs(O1 - naive(Q, K, V, causal=True)[0]).max()
print(f"1 x 1 tiles: error {err:.1e}")
assert err < 1e-12

# %% [markdown]
# ## What comes next
#
# We claimed FlashAttention is fast because it moves fewer bytes. [06 · The IO-cost
# model](06_io_cost_model.ipynb) counts them: standard attention against both loop orders, as $N$,
# the SRAM size and the block sizes vary, a roofline, and Nsight Compute measurements of these very
# kernels on an H100 next to the model.
