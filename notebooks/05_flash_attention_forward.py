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
# * the Triton kernel of this repository, `_attn_fwd` in `kernels/flash_fwd.py`, read completely,
#   line by line, against the NumPy version (the kernel is shown from the package, never copied
#   here), with the address arithmetic and the tile bookkeeping redone in a few lines of PyTorch;
# * the three stretches of its inner loop (masked edge, unmasked interior, masked edge): a map of
#   which tiles take which, for causal and windowed masks with fewer or more queries than keys;
# * why causal attention runs its longest query blocks first.
#
# At the end you write the tiled forward with a sliding window yourself, and the rule that sorts
# tiles into skipped, masked and full.
#
# **Read first:** [02 · Tiling](02_tiling.ipynb), [03 · Online softmax](03_online_softmax.ipynb)
# and [04 · A Triton primer](04_triton_primer.ipynb) (programs and the grid, `tl.arange`, pointer
# arithmetic, masked loads, `tl.constexpr`, `tl.dot`). Words: [glossary](GLOSSARY.md).
#
# Without Triton (macOS, Windows), the kernel's source is still shown, `flash_attention` runs the
# plain-PyTorch twin of `kernels/flash_torch.py` (the same tiled algorithm) through the same checks,
# and the few lines that need Triton itself (the launch table, constants and helpers of
# `kernels/tiles.py`) say what they would show.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import heapq
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle

from kernels import attention_mask, attention_reference, flash_attention, flash_torch
from kernels.band import Band
from kernels.iocost import flash2_kernels_io, simulate_flash1, simulate_flash2
from kernels.source import show_source, source_lines

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
# `kernels/flash_fwd.py` holds `_attn_fwd` and its inner loop `_fwd_blocks`, with the launch table
# and the launcher; the small helpers it shares with the backward and the other kernels (which
# tile, which sequence, which keys, the mask) are in `kernels/tiles.py`. We print every line of
# the kernel straight from the package (with the file's line numbers), in order, and redo in
# PyTorch whatever is not obvious. The files are read as text, so this works without Triton too.
#
# ### 3.1 The signature

# %%
show_source("kernels.flash_fwd:_attn_fwd", "def _attn_fwd(", "V_T: tl.constexpr")

# %% [markdown]
# It follows the house style: pointers, then strides grouped per tensor (a
# $(\text{batch}, \text{head}, \text{row}, \text{dim})$ stride for each, so any memory layout
# works without a copy), then sizes, then the compile-time meta-parameters in capitals. Each
# combination of meta-parameters compiles to its own kernel, so an `if FLAG:` on one of them costs
# nothing at run time: the branch not taken is not in the compiled code.
#
# The arguments the NumPy version does not have, or names differently:
#
# * `BLOCK_M`, `BLOCK_N`: query rows and keys per tile, the NumPy `block_m`, `block_n`;
#   `num_tiles` $= \lceil N_q / B_r \rceil$, query blocks per (batch, head).
# * `HEAD_DIM`: `head_dim` padded to a power of two $\ge 16$ (`tl.arange` and `tl.dot` need one);
#   the padding is masked.
# * `qk_scale`: $\text{softmax\_scale} \cdot \log_2 e$ (section 3.7), the NumPy `scale` in base 2.
# * `IS_LOCAL`, `window_left`, `window_right`: a causal mask or a window is on, and its band (the
#   NumPy `causal`); an unbounded side is passed as a bound that never binds.
# * `VARLEN`, `SEQUSED_K`, `cu_seqlens_*`, `seqused_k`: packed batches and KV caches;
#   `PACK_GQA`, `heads_q`, `group`: grouped-query attention, `group` query heads per kv head;
#   `split_size` and the split strides: split-KV decoding ($\ge N_k$ without splits). All three
#   are notebook 08's; switched off, the kernel is the NumPy loop.
# * `UPCAST`: convert bf16 tiles to fp32 (the interpreter's bf16 dot is wrong); `PRECISION`:
#   "ieee" (exact) fp32 dots for fp32 inputs, "tf32" otherwise.
# * `EVEN_N`: "every key length is a multiple of `BLOCK_N`". The launcher passes it, but **no
#   line of the kernel reads it** (section 3.7).
# * `TMA`, `V_T`, `k_desc`, `v_desc`: $K$ and $V$ tiles fetched by Hopper's copy engine through
#   tensor descriptors instead of computed addresses (on in the H200's launch tables, off here);
#   `FP8`, `ROUND_P` and the `*_descale_ptr`: the e4m3 forward. Both are notebook 13's; switched
#   off, these loads and scales are the pointer loads below.
#
# ### 3.2 Which tile am I?
#
# The grid replaces the NumPy version's outer loop: each program takes one query block `pid_m` of
# one (batch, head) `pid_bh`. Both come from the first grid axis, query blocks fastest, so the
# programs that run at the same time are the query blocks of one head and share its K and V in
# L2 (CUDA allows $2^{31} - 1$ programs on that axis, only 65,535 on the others):

# %%
show_source("kernels.tiles:tile_ids", "def tile_ids", "return pid % num_tiles")
print()
show_source("kernels.flash_fwd:_attn_fwd", "pid_m, pid_bh = tile_ids(num_tiles)", "off_hk = off_h // group")

# %% [markdown]
# Line by line: `tile_ids` splits the program id; with a causal mask or a window (`IS_LOCAL`) the
# query blocks of each head are taken **in reverse**, the last one (for causal, the longest) first:
# section 6 explains why. `pid_s` is the split-KV index of the second grid axis (0 here). Then the
# (batch, head) pair: without `PACK_GQA`, `pid_bh` is `batch * heads_q + head`, and with GQA the
# query head `off_h` reads kv head `off_h // group`; with `PACK_GQA` one program serves all `group`
# query heads of kv head `off_hk`. The `.to(tl.int64)`s keep the address products below from
# overflowing 32 bits on large tensors. The same decoding in PyTorch, for 3 query blocks and 2
# heads:

# %%
num_tiles, batch_heads, heads_q = 3, 2, 2
pid = torch.arange(num_tiles * batch_heads)  # tl.program_id(0) of every program, in launch order
pid_m, pid_bh = pid % num_tiles, pid // num_tiles  # tile_ids
pid_m_causal = num_tiles - 1 - pid_m  # if IS_LOCAL
print("program id     ", pid.tolist())
print("(batch, head)  ", [(int(bh // heads_q), int(bh % heads_q)) for bh in pid_bh])
print("query block    ", pid_m.tolist())
print("... if IS_LOCAL", pid_m_causal.tolist())
# a permutation within each head: every (head, query block) pair still runs exactly once
assert sorted(zip(pid_bh.tolist(), pid_m_causal.tolist())) == sorted(zip(pid_bh.tolist(), pid_m.tolist()))

# %% [markdown]
# ### 3.3 Where this sequence is
#
# `sequence` returns the first row and the length of this batch element's sequence. For a dense
# batch (`VARLEN` and `SEQUSED_K` off, as here) it is `(0, seqlen)` and both `if`s compile away;
# notebook 08 reads the rest. Each pointer is then moved to row `start` of this (batch, head): from
# here on the program sees one $(N, d)$ matrix per tensor, as the NumPy version does. (K and V
# use the kv head `off_hk`; `o_ptr` and `lse_ptr` also move to split `pid_s`.)

# %%
show_source("kernels.tiles:sequence", "start = 0", "return start, seqlen")
print()
show_source("kernels.flash_fwd:_attn_fwd", "start_q, seqlen_q = sequence(", "lse_ptr += pid_s")

# %% [markdown]
# ### 3.4 The tile's rows: `offs_m`, `q_rows`, `row_lo`, `row_hi`
#
# The NumPy version writes `Q[i:i + block_m]`; the kernel writes the addresses of that slice.

# %%
show_source("kernels.flash_fwd:_attn_fwd", "offs_r = pid_m * BLOCK_M", "row_hi = row_lo + BLOCK_M")

# %% [markdown]
# * `offs_r` numbers the tile's `BLOCK_M` rows, `offs_n` the keys of a key block, `offs_d` the
#   (padded) head dimension.
# * Without `PACK_GQA` (the `else` branch) a tile row is a query position: `offs_m = offs_r`, and
#   its offset in memory is `offs_m * stride_qm` (`q_rows`; `o_rows` for the output, and `lse` rows
#   are contiguous). A program whose first row is past the sequence returns at once: in a packed
#   batch the grid is sized for the longest sequence. `[row_lo, row_hi)` are the query positions
#   the tile covers, **including** the padded rows of a ragged last block (`row_hi` is not clamped
#   to `seqlen_q`): the key range below is computed for them, which is harmless, since their
#   output is never stored.
# * With `PACK_GQA` a tile row is a (query, head) pair: row `r` is query `r // group` of head
#   `r % group` of the group, so the `group` heads that share a K/V tile share one program and K
#   and V are read once for all of them (decoding, notebook 08). `q_rows` then adds a head stride.
#
# The same address arithmetic in PyTorch, on a tensor whose memory order is *not* (batch, head,
# row, dim) (a `(b, n, h, d)` tensor seen through a transpose, as a model's projections produce
# it). `flat` plays the memory, a pointer is an index into it, and a masked `tl.load(...,
# other=0.0)` reads only where the mask holds:

# %%
b, n, h, d = 2, 10, 4, 8
flat = torch.arange(b * n * h * d, dtype=torch.float64)  # the memory
q_demo = flat.view(b, n, h, d).transpose(1, 2)  # (b, h, n, d), a view: rows h*d apart, heads d apart
stride_qb, stride_qh, stride_qm, stride_qd = q_demo.stride()
print(f"strides (batch, head, row, dim): {q_demo.stride()}")


def masked_load(ptrs, mask):
    """tl.load(ptrs, mask=mask, other=0.0): read flat[ptrs] where mask holds, 0 elsewhere."""
    mask = mask.expand(ptrs.shape)  # broadcast, as Triton does
    tile = torch.zeros(ptrs.shape, dtype=flat.dtype)
    tile[mask] = flat[ptrs[mask]]
    return tile


BLOCK_M, HEAD_DIM, pid_m, off_b, off_h = 4, 8, 2, 1, 3  # the last query block: rows 8..11 of 10
offs_r = pid_m * BLOCK_M + torch.arange(BLOCK_M)
offs_d = torch.arange(HEAD_DIM)
offs_m = offs_r  # no PACK_GQA
q_rows = offs_m * stride_qm
mask_m = offs_m < n  # the ragged last block: rows 10 and 11 do not exist
base = off_b * stride_qb + off_h * stride_qh  # q_ptr += off_b * stride_qb + off_h * stride_qh
q_tile = masked_load(base + q_rows[:, None] + offs_d[None, :] * stride_qd, mask_m[:, None])
print("rows", offs_m.tolist(), "valid", mask_m.tolist())
assert torch.equal(q_tile[:2], q_demo[off_b, off_h, 8:10]) and (q_tile[2:] == 0).all()

group, off_hk = 2, 1  # PACK_GQA: 2 query heads per kv head; this program serves kv head 1
off_h = off_hk * group  # the group's first query head
pid_m = 1
offs_r = pid_m * BLOCK_M + torch.arange(BLOCK_M)
offs_m = offs_r // group  # the query position of each row
q_rows = offs_m * stride_qm + (offs_r % group) * stride_qh  # ... and its head
base = off_b * stride_qb + off_h * stride_qh
q_tile = masked_load(base + q_rows[:, None] + offs_d[None, :] * stride_qd, (offs_m < n)[:, None])
pairs = [(int(m), int(off_h + r % group)) for m, r in zip(offs_m, offs_r)]
print("PACK_GQA rows (query, head):", pairs)
print(f"row_lo, row_hi = {(pid_m * BLOCK_M) // group}, {((pid_m + 1) * BLOCK_M - 1) // group + 1}")
assert torch.equal(q_tile, torch.stack([q_demo[off_b, hh, m] for m, hh in pairs]))

# %% [markdown]
# ### 3.5 Load $Q_i$ once and set up the statistics
#
# The NumPy lines `q = Q[i:i + block_m]` and `m, l, acc = ...`. `mask_m` drops the rows past the
# end of the sequence and `mask_d` the padding of the head dimension (`HEAD_DIM` is `head_dim`
# rounded up to a power of two, at least 16: 40 becomes 64), in every load and store, which is why
# neither $N$ nor $d$ need be a multiple of anything. The statistics live in registers for the
# whole loop. `UPCAST` converts a bf16 tile to fp32 in the interpreter only (its bf16 `tl.dot` is
# wrong); on a GPU the tiles stay bf16 for the tensor cores.

# %%
show_source("kernels.flash_fwd:_attn_fwd", "mask_m = offs_m < seqlen_q", "acc = tl.zeros(")
if kernels.HAS_TRITON:
    print(f"\nHEAD_DIM for head_dim 40, 64, 100: {[tiles.padded_head_dim(x) for x in (40, 64, 100)]}")
    assert [tiles.padded_head_dim(x) for x in (40, 64, 100)] == [64, 64, 128]
else:
    print("\n(tiles.padded_head_dim, which gives HEAD_DIM, needs Triton: 40 -> 64, 100 -> 128)")

# %% [markdown]
# ### 3.6 The key range and the three stretches
#
# Instead of testing every tile and `continue`-ing (NumPy), the kernel computes, before its loop,
# the keys its rows can see, `[lo, hi)`, and which of them need no mask at all, `[full_lo,
# full_hi)`; it then runs the loop over `[lo, hi)` in three stretches. Bottom-right alignment
# (notebook 08): query $i$ sits at key position $i + \text{off}$, $\text{off} = N_k - N_q$, and
# sees key $j$ when $i + \text{off} - \text{left} \le j \le i + \text{off} + \text{right}$ (causal:
# right $= 0$, left unbounded).

# %%
show_source("kernels.flash_fwd:_attn_fwd", "lo, hi = key_range(", "FOLD_SCALE=FOLD_SCALE)")

# %% [markdown]
# **`key_range`**: the keys *some* row of the tile sees. The first row's first key is
# $\text{row\_lo} + \text{off} - \text{left}$, rounded down to a block so that every load is
# block-aligned; one past the last row's last key is $\text{row\_hi} + \text{off} + \text{right}$,
# capped at $N_k$. Then split-KV narrows it to this program's slice (a no-op without splits).
#
# **`full_range`**: the keys *every* row sees, and only real keys. Every row sees key $j$ when $j$
# is at or after the last row's first key, $\text{first} = \text{row\_hi} - 1 + \text{off} -
# \text{left}$, and before one past the first row's last key, $\text{last} = \text{row\_lo} +
# \text{off} + \text{right} + 1$; both are rounded *inwards* to blocks, and $\text{hi}$ stops at
# $\lfloor N_k / B_c \rfloor B_c$, so a ragged last key block (with padded keys) is never in it.
#
# **`split3`** clamps `[full_lo, full_hi)` into `[lo, hi)`, so that the three stretches
# `[lo, mid_lo)`, `[mid_lo, mid_hi)`, `[mid_hi, hi)` cut `[lo, hi)` into consecutive pieces (some
# empty), even when no block is full; **`stretch_range`** returns the piece of stretch 0, 1 or 2.

# %%
show_source("kernels.tiles:key_range", "def key_range", "return lo, hi")
print()
show_source("kernels.tiles:full_range", "lo = 0", "return lo, hi")
print()
show_source("kernels.tiles:split3", "def split3", "return a, b")
print()
show_source("kernels.tiles:stretch_range", "if stretch == 0:", "return mid_hi, hi")
print()
show_source("kernels.tiles:band_mask", "def band_mask", "return (cols")

# %% [markdown]
# ### 3.7 The loop
#
# The heart of it, the NumPy inner loop statement for statement. `tl.static_range(3)` unrolls the
# outer loop at compile time, so `stretch` is a constant in each copy and `stretch != 1` is decided
# by the compiler: the edge stretches (0 and 2) get the `tl.where` of the band mask and of the
# padded keys, the `m_safe` guard and the key masks in their loads; the interior (1) gets none of
# them, only the head-dimension mask `mask_d`. Section 5 draws which tiles take which stretch.
# `tl.range` is Python's `range` with options for the compiler; the one used here,
# `warp_specialize`, is an experiment that stays off (`WARP_SPEC`, notebook 13). So does
# `FOLD_SCALE`: it scales the row maxima instead of every score and puts `qk_scale` into the
# exponent, `exp2(s * qk_scale - m)`, one fused multiply-add per score as FlashAttention's CUDA
# has it; up to 3% faster on an H200, but the largest `p` of a row is then not exactly 1, and a
# one-hot row's output can miss its key's value by an ulp (`benchmarks/NOTES.md`, step 11).
#
# | NumPy (`flash_forward`) | kernel (`_fwd_blocks`) |
# | --- | --- |
# | `for j in range(0, N_k, block_n)` | `for start_n in tl.range(start, end, BLOCK_N, ...)`, per stretch |
# | `cols = np.arange(j, ...)` | `cols = start_n + offs_n`; `mask_n = cols < seqlen_k` |
# | `K[j:j + block_n].T` | `kt = tl.load(...)`, transposed by the strides (`TMA`: a row tile, `tl.trans`) |
# | `s = scale * q @ K_j.T` | `s = tl.dot(q, kt) * qk_scale` (base 2, below) |
# | `np.where(visible, s, -inf)` | `tl.where(valid, s, -inf)`, edges only: `mask_n`, `band_mask` |
# | `m_new`, `m_safe`, `p`, `alpha`, `l` | the same names, `exp2` for `exp`; `m_safe` on edges only |
# | `acc = alpha * acc + p @ V_j` | `acc = acc * alpha`, then `tl.dot(p, v, acc)` adds into `acc` |

# %%
show_source("kernels.flash_fwd:_fwd_blocks", "for stretch in tl.static_range(3):", "return acc, l_i, m_i")

# %% [markdown]
# Why the interior may drop `m_safe`: a row's max can stay $-\infty$ only after a tile in which it
# sees no key, and only an edge tile can be one; after an interior tile every row's max is finite.
# `p.to(v.dtype)` rounds the probabilities to the inputs' type, so that on a GPU the second matmul
# also runs on bf16 tensor cores; `acc` stays fp32.
#
# **`EVEN_N` does nothing.** `EVEN_N` is declared and the launcher computes it (below), but no line
# of `_attn_fwd` after its signature reads it, nor does `_fwd_blocks` take it. What keeps the
# `tl.where` out of the interior is the split above: `full_range` never lets a block with padded
# keys into the interior, so when $N_k$ is a multiple of `BLOCK_N` and nothing is masked, stretches
# 0 and 2 are simply empty and every block runs unmasked, whatever `EVEN_N` says. Being a
# constexpr, `EVEN_N` only makes Triton compile two identical variants of the kernel.

# %%
show_source("kernels.flash_fwd:launch_forward", "IS_LOCAL=band.is_local", "IS_LOCAL=band.is_local")
lines, first_line = source_lines("kernels.flash_fwd:_attn_fwd")
body = next(i for i, line in enumerate(lines) if line.startswith("):")) + 1  # after the signature
reads = [first_line + i for i, line in enumerate(lines[body:], body) if "EVEN_N" in line]
loop_lines, _ = source_lines("kernels.flash_fwd:_fwd_blocks")
print(f"lines of _attn_fwd's body that read EVEN_N: {reads}; in _fwd_blocks: "
      f"{sum('EVEN_N' in line for line in loop_lines)}")
assert not reads and not any("EVEN_N" in line for line in loop_lines)

# %% [markdown]
# **Base 2.** The host passes `qk_scale` $= \text{softmax\_scale} \cdot \log_2 e$, so that
# $2^{s \log_2 e} = e^{s}$ and the GPU's native `exp2` instruction can be used. The running max
# is then in base-2 units, and the epilogue converts the log-sum-exp back:
# $\mathrm{lse} = (m + \log_2 \ell) \ln 2$.
#
# ### 3.8 The epilogue
#
# The NumPy lines after the inner loop: divide by $\ell$ once, give rows that saw no key a zero
# output and $\mathrm{lse} = -\infty$, store (the padded rows are masked off by `mask_m`).

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
# of two, a window. The oracle is `attention_reference` in float64. In float32 the kernel uses
# exact fp32 dots, so its error is at rounding level. Without Triton the same checks run on the
# twin.

# %%
def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


cases = [  # (batch, heads, seqlen_q, seqlen_k, head_dim, causal, window_size)
    (2, 2, 100, 100, 64, False, (-1, -1)),
    (1, 2, 100, 100, 64, True, (-1, -1)),
    (1, 2, 45, 130, 40, True, (-1, -1)),
    (1, 2, 130, 45, 64, True, (-1, -1)),
    (1, 2, 110, 70, 64, False, (20, 8)),  # a window, fewer keys than queries: rows that see no key
]
if not SMALL:
    cases += [(2, 4, 1000, 1000, 128, True, (-1, -1)), (1, 4, 777, 2049, 64, False, (-1, -1))]
print(f"flash_attention ran: {RUNS}")
if kernels.HAS_TRITON:
    print("blocks on this machine:", flash_fwd.fwd_config(64, torch.float32))
else:
    print(f"blocks: the twin's default tiles, {flash_torch.BLOCK_M} x {flash_torch.BLOCK_N}; the "
          "kernel's launch table (fwd_config: blocks, warps, stages per GPU) needs Triton, on Linux")
for b, h, nq, nk, hd, causal, window in cases:
    q = torch.randn(b, h, nq, hd, device=DEVICE)
    k, v = (torch.randn(b, h, nk, hd, device=DEVICE) for _ in range(2))
    out, lse = flash_attention(q, k, v, causal=causal, window_size=window, return_lse=True)
    out_ref, lse_ref = attention_reference(q.double(), k.double(), v.double(), causal=causal,
                                           window_size=window, return_lse=True)
    finite = torch.isfinite(lse_ref)
    err = rel_err(out, out_ref)
    err_lse = (lse[finite].double() - lse_ref[finite]).abs().max().item()
    print(f"q {nq:>4} x k {nk:>4}, d {hd:>3}, causal {causal!s:>5}, window {window!s:>8}: "
          f"output rel. error {err:.1e}, "
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
# **Takeaway.** The kernel is the NumPy loop with four additions: address arithmetic and masks
# for ragged blocks, base-2 exponentials, a key range computed up front instead of tiles skipped
# one by one, and a loop cut in three so that only the tiles on the edges of the mask pay for it.
# It agrees with naive attention to rounding.

# %% [markdown]
# ## 5. Which tiles take which stretch
#
# For every (query block, key block) tile the kernel does one of four things: never loads it (it
# is outside `[lo, hi)`), or runs it in stretch 0 (masked: it cuts the first edge of the band, the
# window's left edge), 1 (unmasked interior) or 2 (masked: the other edge, the causal diagonal or
# the window's right edge, or a ragged last key block). We compute this with the Python twins of
# the kernel's helpers in `kernels/flash_torch.py`: `key_range` is `tiles.key_range`, and
# `block_is_full` asks of one block what `tiles.full_range` answers for a whole query block. A
# block lies before `mid_lo` exactly when it starts before the last row's first key, that is, when
# it is not full with respect to the left edge alone (the right edge moved to infinity). As in the
# kernel, the rows are all `BLOCK_M` of the tile and the keys all `BLOCK_N` of the block, padding
# included, and without `IS_LOCAL` the band's bounds play no part (both are infinite here).

# %%
NOT_LOADED = -1


def kernel_stretch(row_lo, start_n, seqlen_q, seqlen_k, block_m, block_n, band):
    """The stretch of _fwd_blocks (0, 1, 2) that runs key block start_n for the query block that
    starts at row_lo, or NOT_LOADED; from the Python twins of tiles.key_range and full_range."""
    left, right = band.bounds(seqlen_q, seqlen_k) if band.is_local else (math.inf, math.inf)  # IS_LOCAL
    row_hi = row_lo + block_m  # as the kernel's row_hi: not clamped to seqlen_q
    lo, hi = flash_torch.key_range(row_lo, row_hi, seqlen_q, seqlen_k, left, right, block_n)
    if not lo <= start_n < hi:
        return NOT_LOADED
    col_hi = start_n + block_n  # padded keys included
    if not flash_torch.block_is_full(row_lo, row_hi, start_n, col_hi, seqlen_q, seqlen_k, left, math.inf):
        return 0  # starts before the last row's first key: before mid_lo
    full = flash_torch.block_is_full(row_lo, row_hi, start_n, col_hi, seqlen_q, seqlen_k, left, right)
    return 1 if full and col_hi <= seqlen_k else 2  # full_range stops at seqlen_k // BLOCK_N blocks


def stretch_map(seqlen_q, seqlen_k, block_m, block_n, band):
    """(T_r, T_c) int array: kernel_stretch of every tile."""
    return np.array([[kernel_stretch(i * block_m, j * block_n, seqlen_q, seqlen_k, block_m, block_n, band)
                      for j in range(math.ceil(seqlen_k / block_n))]
                     for i in range(math.ceil(seqlen_q / block_m))])


# %% [markdown]
# Under the interpreter a `@triton.jit` helper is a Python function that can be called on plain
# integers, so there we also compute the map with the kernel's own `key_range`, `full_range`,
# `split3` and `stretch_range`, exactly as `_attn_fwd` chains them, and require the same answer on
# shapes of every kind (causal, windows on one or both sides, no mask; fewer and more queries than
# keys; ragged blocks). On a GPU or without Triton this check is skipped.

# %%
def stretch_map_triton(seqlen_q, seqlen_k, block_m, block_n, band):
    """The same map from the kernel's helpers themselves (interpreter only)."""
    left, right = band.bounds(seqlen_q, seqlen_k)
    codes = np.full((math.ceil(seqlen_q / block_m), math.ceil(seqlen_k / block_n)), NOT_LOADED)
    for i in range(codes.shape[0]):
        args = (i * block_m, (i + 1) * block_m, seqlen_q, seqlen_k, left, right, block_n, band.is_local)
        lo, hi = (np.asarray(x).item() for x in tiles.key_range(*args))
        full_lo, full_hi = (np.asarray(x).item() for x in tiles.full_range(*args))
        mid_lo, mid_hi = (np.asarray(x).item() for x in tiles.split3(lo, hi, full_lo, full_hi))
        for stretch in range(3):
            start, end = tiles.stretch_range(stretch, lo, mid_lo, mid_hi, hi)
            for start_n in range(start, end, block_n):
                codes[i, start_n // block_n] = stretch
    return codes


CHECK_SHAPES = [(nq, nk) for nq in (1, 30, 64, 100, 257) for nk in (1, 31, 64, 100, 257)]
CHECK_BANDS = [Band(), Band(-1, 0), Band(20, 0), Band(40, 24), Band(0, 70)]
CHECK_BLOCKS = [(32, 32), (64, 32), (16, 64)]
CHECK_CASES = [(shape, band, blocks) for shape in CHECK_SHAPES for band in CHECK_BANDS
               for blocks in CHECK_BLOCKS]
# a call of an interpreted helper costs milliseconds: a sample of the cases above
TRITON_CASES = [(shape, band, blocks) for shape in ((1, 1), (30, 257), (100, 100), (257, 31))
                for band in CHECK_BANDS for blocks in ((64, 32), (32, 64))]
if kernels.INTERPRET:
    for (nq, nk), band, (bm, bn) in TRITON_CASES:
        assert np.array_equal(stretch_map(nq, nk, bm, bn, band), stretch_map_triton(nq, nk, bm, bn, band)), \
            (nq, nk, band, bm, bn)
    print(f"the kernel's helpers give the same map on all {len(TRITON_CASES)} (shape, band, tile) cases")
else:
    print("(not interpreting: the map is not compared with the kernel's Triton helpers here)")

# %% [markdown]
# Three maps in tiles of 64 queries by 32 keys (the kernel's float32 tiles on a GPU): causal with
# more keys than queries; a window of 120 keys before and 40 after the diagonal with more queries
# than keys, so that the first queries see nothing; and no mask at all with a ragged key length.
# Gray cells are visible scores.

# %%
MAP_BM, MAP_BN = 64, 32
maps = [("causal", 150, 330, Band(-1, 0)), ("window (120, 40)", 330, 260, Band(120, 40)),
        ("no mask", 150, 200, Band())]
stretch_colors = {NOT_LOADED: "white", 0: "tab:orange", 1: "tab:blue", 2: "tab:red"}
stretch_names = {NOT_LOADED: "not loaded", 0: "stretch 0: masked, first edge", 1: "stretch 1: no mask",
                 2: "stretch 2: masked, other edge"}
fig, axes = plt.subplots(1, 3, figsize=(14, 5.2))
for ax, (title, nq, nk, band) in zip(axes, maps):
    codes = stretch_map(nq, nk, MAP_BM, MAP_BN, band)
    mask = attention_mask(nq, nk, causal=band.causal, window_size=(band.left, band.right)).numpy()
    ax.imshow(mask, cmap=ListedColormap(["white", "0.55"]), extent=(0, nk, nq, 0), interpolation="nearest")
    for (i, j), c in np.ndenumerate(codes):
        ax.add_patch(Rectangle((j * MAP_BN, i * MAP_BM), min(MAP_BN, nk - j * MAP_BN),
                               min(MAP_BM, nq - i * MAP_BM), facecolor=stretch_colors[c],
                               alpha=0.45 if c != NOT_LOADED else 0.0, edgecolor="k", lw=0.5))
    counts = {c: int((codes == c).sum()) for c in (1, 0, 2)}
    ax.set(title=f"{title}: {nq} queries x {nk} keys\n{counts[1]} unmasked, {counts[0] + counts[2]} masked, "
                 f"{int((codes == NOT_LOADED).sum())} not loaded",
           xlabel="key position j", ylabel="query position i", xlim=(0, nk), ylim=(nq, 0))
fig.legend(handles=[Patch(facecolor=stretch_colors[c], alpha=0.45 if c != NOT_LOADED else 1, edgecolor="k",
                          label=stretch_names[c]) for c in stretch_colors], loc="lower center", ncol=4)
fig.suptitle(f"Which stretch of the forward's loop runs each {MAP_BM} x {MAP_BN} tile "
             "(bottom-right aligned masks)")
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()

# %% [markdown]
# Reading the maps: causal masks have no stretch 0 (the left edge is unbounded), and each query
# block pays for the mask on the one or two key blocks its diagonal crosses. A window has two
# edges, one per masked stretch. Without a mask only the ragged last key block is masked, for its
# padded keys (this is what `EVEN_N` would have been for). Two properties make this correct, and
# we check them on every tile of every shape above: no tile with a visible score is left out, and
# no tile that runs unmasked holds a masked score or a padded key. The split is conservative: it
# may leave a wholly visible tile to a masked stretch (a few appear in the padded rows of a ragged
# last query block, which `row_hi` counts), never the reverse.

# %%
checked = conservative = 0
for (nq, nk), band, (bm, bn) in CHECK_CASES:
    codes = stretch_map(nq, nk, bm, bn, band)
    mask = attention_mask(nq, nk, causal=band.causal, window_size=(band.left, band.right)).numpy()
    for (i, j), c in np.ndenumerate(codes):
        tile = mask[i * bm:(i + 1) * bm, j * bn:(j + 1) * bn]
        padded = (j + 1) * bn > nk
        where = (nq, nk, band, bm, bn, i, j)
        assert c != NOT_LOADED or not tile.any(), where  # nothing visible is skipped
        assert c != 1 or (tile.all() and not padded), where  # the interior needs no mask
        conservative += c in (0, 2) and tile.all() and not padded
        checked += 1
print(f"{checked} tiles checked; {conservative} wholly visible tiles run masked (the conservative side)")

# %% [markdown]
# The IO model counts the same loads: the key rows each query block loads, summed over the causal
# maps (the loaded tiles, each of its real width), equal `flash2_kernels_io`'s count, which
# computes them from block arithmetic alone. Here in the block sizes the kernel uses on this
# machine (without Triton, the twin's default tiles, which it visits the same way).

# %%
if kernels.HAS_TRITON:
    cfg = flash_fwd.fwd_config(64, torch.float32)
    BM, BN = cfg["BLOCK_M"], cfg["BLOCK_N"]
else:
    BM, BN = flash_torch.BLOCK_M, flash_torch.BLOCK_N
print(f"tiles of {BM} x {BN}, as flash_attention uses here: {RUNS}")
for nq, nk in ((256, 256), (96, 256), (256, 96)):
    codes = stretch_map(nq, nk, BM, BN, Band(-1, 0))
    widths = np.array([min(BN, nk - j * BN) for j in range(codes.shape[1])])
    keys_loaded = int(((codes != NOT_LOADED) * widths).sum())
    model = flash2_kernels_io(nq, 64, block_m=BM, block_n=BN, causal=True, N_k=nk)["_attn_fwd"]
    print(f"{nq:>3} x {nk:>3}: key rows loaded, from the map {keys_loaded:>5}, "
          f"from the IO model {model.reads['K'] // 64:>5}")
    assert keys_loaded == model.reads["K"] // 64

# %% [markdown]
# **How much the split saves.** With as many queries as keys and square tiles, $T$ tiles per side,
# causal attention skips the $T(T-1)/2$ tiles above the diagonal, a fraction $(T-1)/2T$ that
# approaches one half, and masks only the $T$ tiles on it. Before the split every loaded tile paid
# for the mask; at $N = 4096$, in the tiles of the causal forward on an H100 (64 x 64 at head dim
# 64, 128 x 128 at 128: the launch table of `kernels/flash_fwd.py`), only a few percent do:

# %%
for n_seq, blk in ((256, 32), (4096, 64), (4096, 128)):
    codes = stretch_map(n_seq, n_seq, blk, blk, Band(-1, 0))
    T = n_seq // blk
    loaded, masked = int((codes != NOT_LOADED).sum()), int(np.isin(codes, (0, 2)).sum())
    print(f"N = {n_seq}, tiles {blk} x {blk}: T = {T}, skipped {(codes == NOT_LOADED).mean():.4f} "
          f"= (T-1)/2T = {(T - 1) / (2 * T):.4f}; masked {masked} of {loaded} loaded ({masked / loaded:.1%})")
    assert (codes == NOT_LOADED).sum() == T * (T - 1) // 2 and masked == T

# %% [markdown]
# Measured on an H100 (`benchmarks/NOTES.md`, step 1, bf16, $N = 4096$, the same block sizes
# before and after): the split raised the causal forward from 316 to 394 TFLOP/s at head dim 128
# (+25%) and from 263 to 345 at head dim 64 (+31%), more than the 10-20% predicted; non-causal was
# unchanged within the machine's run-to-run drift. At head dim 64 each tile's matmuls are half as
# long, so the mask was a larger share of each iteration.
#
# With more queries than keys, the first $N_q - N_k$ queries see nothing; the kernel runs an
# empty loop for them and writes zeros with $\mathrm{lse} = -\infty$:

# %%
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
# the work and traffic for square attention, and it applies the mask only to the tiles the band's
# edges cross (plus a ragged last key block): a few percent of the tiles at $N = 4096$. The twin
# makes the same choice block by block (`block_is_full`), on real rows and keys only.

# %% [markdown]
# ## 6. Longest rows first
#
# In a causal kernel the query blocks do unequal work: block $i$ of a square causal mask loads
# $i + 1$ key blocks, the last one all $T$. A GPU starts programs roughly in launch order (CUDA
# promises no order, but hands out blocks in about increasing index), each on the first SM with
# room; a program that starts late and runs long keeps one SM busy while the others have nothing
# left to do. `_attn_fwd` therefore reverses `pid_m` when `IS_LOCAL`: each head's longest query
# block is launched first and its shortest last, so the end of the grid is made of short programs
# that fill in around the long ones. (The reversal happens for windows too, where it changes
# little: there all blocks but the first few do equal work.)
#
# A model shows it: `SLOTS` programs run at once (132 SMs of an H100 with two programs each: an
# assumption, the real number depends on the registers and shared memory a program needs); each
# program starts, in launch order, when a slot falls free, and takes as long as its number of key
# blocks (the loads of $Q$ and the store of $O$ ignored). Causal, $N = 4096$, tiles of 64 x 64:

# %%
SLOTS = 132 * 2
N_SCHED, BLK = 4096, 64
blocks_per_tile = (stretch_map(N_SCHED, N_SCHED, BLK, BLK, Band(-1, 0)) != NOT_LOADED).sum(axis=1)  # [T]
T = len(blocks_per_tile)


def schedule(costs, slots):
    """(start, end) of each program: in launch order, each on the first slot to fall free."""
    free = [0] * slots
    start = []
    for c in costs:
        start.append(heapq.heappop(free))
        heapq.heappush(free, start[-1] + c)
    start = np.array(start)
    return start, start + np.asarray(costs)


def launch_costs(batch_heads, longest_first):
    """Key blocks of each program in launch order: tile_ids, with or without the reversal."""
    pid_m = np.tile(np.arange(T), batch_heads)
    return blocks_per_tile[T - 1 - pid_m if longest_first else pid_m]


print(f"{'batch x heads':>13} {'programs':>9} {'waves':>6} {'in order':>9} {'longest first':>14} "
      f"{'all sorted':>11} {'lower bound':>12}")
for bh in (8, 16, 128):  # 128: batch 4 x 32 heads, the 16k tokens of benchmarks/NOTES.md at head dim 64
    in_order = schedule(launch_costs(bh, False), SLOTS)[1].max()
    longest_first = schedule(launch_costs(bh, True), SLOTS)[1].max()
    all_sorted = schedule(np.sort(launch_costs(bh, True))[::-1], SLOTS)[1].max()  # every head's longest first
    bound = max(blocks_per_tile.sum() * bh / SLOTS, blocks_per_tile.max())
    print(f"{bh:>13} {bh * T:>9} {bh * T / SLOTS:>6.1f} {in_order:>9} {longest_first:>14} {all_sorted:>11} "
          f"{bound:>12.0f}")
    assert bound <= all_sorted <= longest_first <= in_order

# %%
fig, ax = plt.subplots(figsize=(8, 3.8))
bh = 8
orders = {"in order": launch_costs(bh, False), "longest first (the kernel)": launch_costs(bh, True),
          "all heads sorted": np.sort(launch_costs(bh, True))[::-1]}
for (label, costs), style in zip(orders.items(), ("tab:gray", "tab:green", "tab:purple")):
    start, end = schedule(costs, SLOTS)
    t = np.arange(end.max() + 1)
    busy = ((start[None, :] <= t[:, None]) & (t[:, None] < end[None, :])).sum(axis=1)
    ax.step(t, busy, where="post", color=style, ls=":" if label.startswith("all") else "-",
            label=f"{label}: done at {end.max()}")
ax.axhline(SLOTS, color="k", lw=0.5, ls=":")
ax.set(title=f"Causal forward, N = {N_SCHED}, {bh} (batch, head) pairs, {SLOTS} slots (model)",
       xlabel="time (key-block iterations)", ylabel="programs running", ylim=(0, SLOTS * 1.1))
ax.legend(loc="lower left")
fig.tight_layout()
plt.show()

# %% [markdown]
# In launch order the last programs of the grid are the last head's longest blocks: they start
# late and run on while most slots sit idle. Longest first, the tail is made of short blocks and
# the grid ends sooner. The gain is a share of the last wave, so it is largest for grids of a few
# waves and small for long grids. It stays far from the lower bound (total work over slots): the
# reversal works *within* each head, since query blocks are the fastest index of the grid, and the
# long blocks of the later heads still start late. Sorting all programs longest first ("all heads
# sorted") comes close to the bound, but it would spread each head's programs over the whole run,
# and the grid order exists so that the programs running together share one head's K and V in L2
# (section 3.2). The model counts no memory traffic, so it cannot weigh that. `benchmarks/NOTES.md`
# introduced the reversal in the same step as the three-stretch split and did not measure it
# apart.
#
# **Takeaway.** Unequal programs should start longest first; one line (`pid_m = num_tiles - 1 -
# pid_m`) does it for causal attention.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# shapes (one key, primes, ragged last blocks, fewer and more queries than keys) against the
# reference and prints `pass`, or the first wrong element and what it should be; it never stops the
# notebook, and nothing else in the notebook uses your function. Stuck?
# `show_solution("05.flash_forward_local")` prints one answer (the answers live in
# `exercises/solutions/nb05.py`, out of sight).
#
# **1. The tiled forward with a sliding window.** Write `flash_forward_local(q, k, v,
# softmax_scale, window_left, block_m, block_n)` for one head: `q` `(N_q, d)`, `k`, `v` `(N_k, d)`,
# float64 tensors. Each query sees the keys of a causal, bottom-right aligned window: query $i$
# sees key $j$ when $i + \text{off} - \text{left} \le j \le i + \text{off}$, $\text{off} = N_k -
# N_q$, with `window_left = -1` meaning no left bound (plain causal). Return `(out, lse)`,
# `out` `(N_q, d)` and `lse` `(N_q,)` in natural-log units; a row that sees no key gets zeros and
# $-\infty$. Loop over query blocks of `block_m` and key blocks of `block_n` (the last ones
# ragged) with the online softmax, scores scaled by `softmax_scale` (never $1/\sqrt d$: the check
# passes other scales). Skipping the blocks outside the window is optional (the result is the same;
# `kernels.flash_torch.key_range` and `block_is_full` do it for the twin).

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def flash_forward_local(q, k, v, softmax_scale, window_left, block_m, block_n):
    raise NotImplementedError  # your code here


check("05.flash_forward_local", flash_forward_local)

# %% [markdown]
# **2. Skip, mask or run plainly.** Write `tile_kind(i, j, seqlen_q, seqlen_k, block_m, block_n,
# causal)`: what the forward does with the tile of query block `i` and key block `j`. Return
# `"skip"` if no query of the block sees any key of it, `"full"` if every query of the block sees
# every key and the block has all `block_n` keys (no padding), `"masked"` otherwise. Only real
# queries count: the last query block may be ragged, and its missing rows are not queries (unlike
# the kernel's `row_hi`, which counts them). Masks are bottom-right aligned. Work it out from the
# tile's corners: the first and last query of the block, its first and last key. (Section 5's
# `kernel_stretch` answers the same question from the helpers; don't call it.) The check runs
# every tile of 25 shapes in four tile sizes, causal and not, where the diagonal meets a tile's
# corner exactly.

# %%
def tile_kind(i, j, seqlen_q, seqlen_k, block_m, block_n, causal):
    raise NotImplementedError  # your code here


check("05.tile_kind", tile_kind)

# %% [markdown]
# **3. Predict, then run.** Two (batch, head) pairs at $N = 4096$ make a grid of 128 causal
# programs, fewer than the model's 264 slots. Does launching the longest query blocks first make
# this grid finish sooner? Write your prediction in `prediction` (True: it finishes sooner; False:
# no change) before running the cell.

# %%
prediction = None  # your prediction: True or False

in_order = schedule(launch_costs(2, False), SLOTS)[1].max()
longest_first = schedule(launch_costs(2, True), SLOTS)[1].max()
sooner = bool(longest_first < in_order)
if prediction is None:
    print("write your prediction first")
else:
    print(f"in order: done at {in_order}; longest first: done at {longest_first}. "
          f"Your prediction was {'right' if prediction == sooner else 'wrong'}: one wave runs every "
          "program at once, so the grid ends with its longest program whatever the order.")

# %% [markdown]
# ## References
#
# * Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, "Attention Is All You
#   Need", 2017, arXiv:1706.03762 (scaled dot-product attention).
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867 (the
#   online softmax of the inner loop).
# * Rabe, Staats, "Self-attention Does Not Need O(n^2) Memory", 2021, arXiv:2112.05682 (attention
#   over key chunks with a running max and sum).
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135 (Algorithm 1, the first loop order).
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691 (the loop order of this kernel: query blocks outside, one program each).
# * Tillet, Kung, Cox, "Triton: an intermediate language and compiler for tiled neural network
#   computations", MAPL 2019 (the language of the kernel).
# * Beltagy, Peters, Cohan, "Longformer: The Long-Document Transformer", 2020, arXiv:2004.05150
#   (sliding-window attention, the windows of section 5 and of exercise 1).
# * This repository's measurements: `benchmarks/NOTES.md`, step 1 (the three-stretch split and the
#   reversed causal order, on an H100).

# %% [markdown]
# ## What comes next
#
# We claimed FlashAttention is fast because it moves fewer bytes. [06 · The IO-cost
# model](06_io_cost_model.ipynb) counts them: standard attention against both loop orders, as $N$,
# the SRAM size and the block sizes vary, a roofline, and Nsight Compute measurements of these very
# kernels on an H100 next to the model.
