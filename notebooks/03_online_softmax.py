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
# # 03 · The online softmax
#
# **What you will learn**
#
# * how a running max $m$ and a running sum $\ell$ give the softmax's statistics in **one pass**
#   over the scores, a block at a time;
# * why the partial sums (and the partial output $\sum_j e^{s_j - m} v_j$) are *rescaled* when the
#   max grows;
# * how two partial softmaxes merge: the operation is associative, so blocks can be combined in any
#   order, which is what split-KV decoding (notebook 08) relies on;
# * that the result equals the exact softmax to rounding, and the one corner case (a block with
#   every score masked) that needs care.
#
# **Read first:** [01](01_naive_attention.ipynb) (the safe softmax) and [02](02_tiling.ipynb)
# (why we want to see a row one tile at a time). This is the heart of FlashAttention: after this
# notebook, the algorithm of notebook 05 is bookkeeping. **Words:** [glossary](GLOSSARY.md).
#
# The online softmax is Milakov and Gimelshein's (2018): they computed the max and the sum in one
# pass to save a read of the row; FlashAttention carries the output along with them.

# %%
import sys
from pathlib import Path

try:
    import kernels  # noqa: F401  (the repository must be importable)
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels  # noqa: F401

import math
import random

import matplotlib.pyplot as plt
import numpy as np
import torch

from kernels import attention_mask, attention_reference, flash_attention_torch

torch.manual_seed(0)
random.seed(0)

# %% [markdown]
# ## 1. Max and sum in one pass
#
# The safe softmax needs $m = \max_j x_j$ and $\ell = \sum_j e^{x_j - m}$. The obvious way reads
# the row twice (once for the max, once for the sum). The online way reads it once, keeping the
# sum *relative to the max seen so far*. When a new score $x$ arrives:
#
# $$ m' = \max(m, x), \qquad \ell' = \ell \, e^{m - m'} + e^{x - m'} . $$
#
# The factor $e^{m - m'} \le 1$ re-expresses the old sum relative to the new max: each old term
# $e^{x_k - m}$ becomes $e^{x_k - m} e^{m - m'} = e^{x_k - m'}$. Start from $m = -\infty$,
# $\ell = 0$ (the first update gives $\ell' = 0 \cdot e^{-\infty} + e^0 = 1$).

# %%
def online_stats(xs):
    """(max, sum of exp(x - max)) in a single pass."""
    m, l = -math.inf, 0.0
    for x in xs:
        m_new = max(m, x)
        l = l * math.exp(m - m_new) + math.exp(x - m_new)
        m = m_new
    return m, l


xs = [random.gauss(0, 3) for _ in range(1000)]
m, l = online_stats(xs)
m_two_pass = max(xs)
l_two_pass = sum(math.exp(x - m_two_pass) for x in xs)
print(f"online:   m = {m:.6f}, l = {l:.12f}")
print(f"two-pass: m = {m_two_pass:.6f}, l = {l_two_pass:.12f}")
assert m == m_two_pass and abs(l - l_two_pass) / l_two_pass < 1e-13

# %% [markdown]
# ## 2. A block at a time, with the output
#
# A kernel works on blocks, not single numbers: the update takes a block $x_B$ at once,
# $m' = \max(m, \max x_B)$, $\ell' = \ell\, e^{m - m'} + \sum_{j \in B} e^{x_j - m'}$.
#
# For attention we need more than the statistics: the output $o = \sum_j P_j v_j$. Keep the
# **unnormalised** accumulator $\mathrm{acc} = \sum_j e^{x_j - m} v_j$, rescale it by the same
# factor $\alpha = e^{m - m'}$, and divide by $\ell$ only once at the very end:
#
# $$ \mathrm{acc}' = \alpha\,\mathrm{acc} + \sum_{j\in B} e^{x_j - m'} v_j, \qquad
#    o = \mathrm{acc} / \ell , \qquad \mathrm{lse} = m + \log \ell . $$
#
# The code below does it for many rows at once (a matrix of scores, one row per query), exactly
# as the kernel does for a block of queries.

# %%
def online_attention(s, v, block):
    """softmax(s, dim=1) @ v, visiting the columns of s (keys) `block` at a time.

    s: (rows, n) scores, v: (n, d) values. Returns the output, the log-sum-exp of each row and
    the history of (m, l, alpha) after each block."""
    rows, n = s.shape
    m = torch.full((rows,), -math.inf, dtype=s.dtype)
    l = torch.zeros(rows, dtype=s.dtype)
    acc = torch.zeros(rows, v.shape[1], dtype=s.dtype)
    history = []
    for start in range(0, n, block):
        s_blk = s[:, start:start + block]  # [rows, block]
        m_new = torch.maximum(m, s_blk.max(dim=1).values)
        alpha = torch.exp(m - m_new)  # rescales everything summed under the old max
        p = torch.exp(s_blk - m_new[:, None])  # [rows, block]
        l = alpha * l + p.sum(dim=1)
        acc = alpha[:, None] * acc + p @ v[start:start + block]
        m = m_new
        history.append((m.clone(), l.clone(), alpha.clone()))
    return acc / l[:, None], m + torch.log(l), history


rows, n, d = 64, 300, 32
s = 2 * torch.randn(rows, n, dtype=torch.float64)
v = torch.randn(n, d, dtype=torch.float64)
out, lse, _ = online_attention(s, v, block=32)  # 300 is not a multiple of 32: a ragged last block
err_out = (out - torch.softmax(s, dim=1) @ v).abs().max().item()
err_lse = (lse - torch.logsumexp(s, dim=1)).abs().max().item()
print(f"online attention, float64: output error {err_out:.1e}, lse error {err_lse:.1e}")
assert err_out < 1e-13 and err_lse < 1e-13

# %% [markdown]
# ## 3. Watching the statistics evolve
#
# One row of 512 scores with an upward drift, so that the max keeps growing, visited 32 at a time.
# Three things to see: the running max steps up to the row max; the running sum $\ell$ is
# sometimes *shrunk* (by $\alpha < 1$) when the max grows, because it is re-measured against the
# new max; and $\alpha = 1$ exactly in every block that does not raise the max.

# %%
n_row, block = 512, 32
row = torch.randn(n_row, dtype=torch.float64) + torch.linspace(0, 4, n_row, dtype=torch.float64)
_, _, hist = online_attention(row[None, :], torch.zeros(n_row, 1, dtype=torch.float64), block)
m_hist = torch.stack([h[0][0] for h in hist]).numpy()
l_hist = torch.stack([h[1][0] for h in hist]).numpy()
a_hist = torch.stack([h[2][0] for h in hist]).numpy()
ends = np.arange(block, n_row + 1, block)

m_true = row.max().item()
l_true = torch.exp(row - m_true).sum().item()
raised = np.diff(np.concatenate([[-np.inf], m_hist])) > 0
print(f"blocks that raised the max: {raised.sum()} of {len(ends)}; alpha in the others: "
      f"{set(a_hist[~raised].tolist())}")
assert m_hist[-1] == m_true and abs(l_hist[-1] - l_true) < 1e-12 * l_true
assert (a_hist[~raised] == 1.0).all() and (a_hist[raised][1:] < 1.0).all()

# %%
fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
axes[0].plot(np.arange(n_row), row.numpy(), ".", ms=2, color="gray", label="scores $x_j$")
axes[0].step(ends, m_hist, where="post", color="tab:red", label="running max $m$ after the block")
axes[0].axhline(m_true, color="tab:red", ls=":", label="row max")
axes[0].set(ylabel="score", title=f"One row, {n_row} keys, blocks of {block}")
axes[1].plot(ends, l_hist, "o-", color="tab:blue", label="running sum $\\ell$ (relative to running $m$)")
axes[1].plot(ends, l_hist * np.exp(m_hist - m_true), "s--", color="tab:green", ms=4,
             label="same sum re-measured against the final max")
axes[1].axhline(l_true, color="tab:green", ls=":", label="exact $\\sum_j e^{x_j - \\max x}$")
axes[1].set(ylabel="sum (log scale)", yscale="log")
axes[2].bar(ends, a_hist, width=block * 0.8, color=np.where(raised, "tab:orange", "lightgray"))
axes[2].set(xlabel="keys seen (end of block)", ylabel="rescale $\\alpha = e^{m - m'}$",
            title="orange: the block raised the max, and everything before was rescaled")
axes[0].legend(fontsize=8, loc="upper left")
axes[1].legend(fontsize=8, loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# The green curve is the one that only grows: measured against a fixed reference it is a plain
# running sum; the blue one jumps down because its reference (the running max) jumps up. The
# first block's $\alpha = e^{-\infty} = 0$ simply discards the empty initial state.
#
# **Takeaway.** Three numbers per row, $m$, $\ell$ and the accumulator, carried from block to
# block and rescaled by $\alpha = e^{m - m'}$ whenever the max grows, give the exact softmax
# output at the end. No block ever needs to see another.

# %% [markdown]
# ## 4. Merging two partial softmaxes
#
# Split a row's keys into two sets $a$ and $b$ and run the online softmax on each independently,
# giving $(m_a, \ell_a, \mathrm{acc}_a)$ and $(m_b, \ell_b, \mathrm{acc}_b)$. Both are measured
# against their own max; bring them to a common one:
#
# $$ m = \max(m_a, m_b), \quad \ell = \ell_a e^{m_a - m} + \ell_b e^{m_b - m}, \quad
#    \mathrm{acc} = \mathrm{acc}_a e^{m_a - m} + \mathrm{acc}_b e^{m_b - m} . $$
#
# The block update of section 2 is the special case where $b$ is one block. The merge is
# associative and commutative, so the pieces can be combined in *any* grouping and order.

# %%
def partial(s, v):
    """(m, l, acc) of one chunk of keys, computed on its own."""
    m = s.max(dim=1).values
    p = torch.exp(s - m[:, None])
    return m, p.sum(dim=1), p @ v


def merge(a, b):
    (m_a, l_a, acc_a), (m_b, l_b, acc_b) = a, b
    m = torch.maximum(m_a, m_b)
    wa, wb = torch.exp(m_a - m), torch.exp(m_b - m)
    return m, wa * l_a + wb * l_b, wa[:, None] * acc_a + wb[:, None] * acc_b


exact = torch.softmax(s, dim=1) @ v
bounds = [0, 17, 40, 100, 101, 180, 230, 260, 300]  # 8 chunks of uneven sizes
parts = [partial(s[:, lo:hi], v[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]


def finish(state):
    return state[2] / state[1][:, None]


left_to_right = parts[0]
for p in parts[1:]:
    left_to_right = merge(left_to_right, p)
level = parts
while len(level) > 1:  # a binary tree, as a parallel reduction would do it
    level = [merge(level[i], level[i + 1]) for i in range(0, len(level), 2)]
tree = level[0]
shuffled = parts[:]
random.shuffle(shuffled)
any_order = shuffled[0]
for p in shuffled[1:]:
    any_order = merge(any_order, p)

for name, state in (("left to right", left_to_right), ("tree", tree), ("shuffled", any_order)):
    err = (finish(state) - exact).abs().max().item()
    print(f"merge {name:>13}: max error {err:.1e}")
    assert err < 1e-13

# %% [markdown]
# The same merge in terms of **normalised** outputs and log-sum-exps (what a kernel stores when it
# writes a partial result to memory, $o = \mathrm{acc}/\ell$ and $\mathrm{lse} = m + \log\ell$):
#
# $$ \mathrm{lse} = \log\!\left(e^{\mathrm{lse}_a} + e^{\mathrm{lse}_b}\right), \qquad
#    o = e^{\mathrm{lse}_a - \mathrm{lse}}\, o_a + e^{\mathrm{lse}_b - \mathrm{lse}}\, o_b . $$
#
# The weights $e^{\mathrm{lse}_a - \mathrm{lse}}$ are the fractions of the total probability mass
# that each part holds; they add up to 1.

# %%
o_parts = [finish(p) for p in parts]
lse_parts = [p[0] + torch.log(p[1]) for p in parts]
lse_all = torch.logsumexp(torch.stack(lse_parts), dim=0)  # (rows,)
weights = torch.stack([torch.exp(x - lse_all) for x in lse_parts])  # (chunks, rows)
o_all = sum(w[:, None] * o for w, o in zip(weights, o_parts))
err = (o_all - exact).abs().max().item()
print(f"lse-form merge: output error {err:.1e}; weights sum to 1 within "
      f"{(weights.sum(0) - 1).abs().max():.1e}")
assert err < 1e-13 and torch.allclose(lse_all, torch.logsumexp(s, dim=1))

# %% [markdown]
# **Takeaway.** A partial softmax is a triple $(m, \ell, \mathrm{acc})$, or equivalently a pair
# $(\mathrm{lse}, o)$, and partials combine with an associative merge. FlashAttention merges them
# sequentially inside one program; split-KV decoding computes them in parallel programs and merges
# at the end.

# %% [markdown]
# ## 5. Equal to the exact softmax, to rounding
#
# In float32, the online result differs from the exact one only by rounding: the operations are
# reordered and each rescale adds one rounding, but nothing is approximated. Compare against a
# float64 reference, next to plain `torch.softmax` in float32 (the rounding any float32 code
# makes), for block sizes from 1 key to the whole row. The measure is the root-mean-square error
# over all 256 x 64 outputs: the largest single error is one draw from the tail, and moves by a
# tenth or more with the seed or with how a CPU's float32 matmul rounds.

# %%
rows, n, d = 256, 1024, 64
s64 = 3 * torch.randn(rows, n, dtype=torch.float64)
v64 = torch.randn(n, d, dtype=torch.float64)
exact = torch.softmax(s64, dim=1) @ v64
def rms(err):
    return err.pow(2).mean().sqrt().item()


torch_err = rms((torch.softmax(s64.float(), dim=1) @ v64.float()).double() - exact)
blocks = [1, 4, 16, 64, 256, 1024]
errors = []
for b in blocks:
    out32, _, _ = online_attention(s64.float(), v64.float(), block=b)
    errors.append(rms(out32.double() - exact))
    print(f"block {b:>4}: online float32 rms error {errors[-1]:.2e}  "
          f"(torch.softmax float32: {torch_err:.2e})")
    assert errors[-1] < 4 * torch_err
assert max(errors[2:5]) <= torch_err  # blocks of 16 to 256 keys
assert errors[0] == max(errors)  # a block of one key: the most rescales, the largest error

fig, ax = plt.subplots(figsize=(6, 3.6))
ax.loglog(blocks, errors, "o-", label="online softmax, float32")
ax.axhline(torch_err, color="gray", ls="--", label="torch.softmax, float32")
ax.set(xlabel="block size (keys per step)", ylabel="rms error vs float64",
       title=f"Online softmax vs exact: rounding only ({rows} rows x {n} keys)")
ax.set_xticks(blocks, [str(b) for b in blocks])
ax.minorticks_off()
ax.legend()
plt.show()

# %% [markdown]
# Every block size stays within a small multiple of float32's own rounding. A block of one key is
# the worst case, with one rescale per key (1024 of them per row); blocks of the sizes kernels use
# (16 to 256 keys) are as accurate as `torch.softmax` itself.
#
# **Takeaway.** The online softmax is exact arithmetic reorganised, not an approximation.

# %% [markdown]
# ## 6. The corner case: a block where every score is masked
#
# With a causal mask or a window, a row can meet a block in which all scores are $-\infty$
# (or, when there are more queries than keys, it may see no key at all). If that happens before
# the row has seen any key, $m$ and the block max are both $-\infty$, so $m' = -\infty$ and
# $e^{s - m'} = e^{-\infty + \infty} = \text{NaN}$, which then poisons everything after it.

# %%
s_row = torch.tensor([[-math.inf, -math.inf, 1.0, 2.0]])
v_row = torch.eye(4, dtype=torch.float32)
out_nan, _, _ = online_attention(s_row, v_row, block=2)
print("first block fully masked:", out_nan)
assert torch.isnan(out_nan).all()

# %% [markdown]
# The fix used by the kernel (`kernels/flash_fwd.py` and its PyTorch twin `kernels/flash_torch.py`,
# look for `m_safe`): subtract $0$ instead of $m'$ while $m'$ is still $-\infty$. Then
# $e^{-\infty - 0} = 0$, $\ell$ stays 0, and the row carries on unharmed; a row that never sees
# any key ends with $\ell = 0$ and is given output 0 and $\mathrm{lse} = -\infty$. Exercise 2 asks
# you to write it into the block update of section 2.
#
# Here the twin (`flash_attention_torch`) meets both cases. A causal window of 8 keys over 128
# tokens, in tiles of 64 queries by 64 keys: query $i$ sees keys $i - 8$ to $i$, so the second
# query block must visit key block 0 for its first rows (64 to 71), and rows 72 to 127 find that
# block fully masked. And a causal mask with more queries than keys, bottom-right aligned: the
# first queries see no key at all.

# %%
n_w, d_w, left, blk = 128, 16, 8, 64
q_w, k_w, v_w = (torch.randn(1, 1, n_w, d_w) for _ in range(3))
visible = attention_mask(n_w, n_w, window_size=(left, 0))  # (N, N): query i sees keys i - 8 .. i
first_block_masked = blk + torch.nonzero(~visible[blk:, :blk].any(dim=1)).flatten()
print(f"query block 1 (rows {blk}..{n_w - 1}): rows {first_block_masked[0]}..{first_block_masked[-1]} "
      f"see no key of key block 0")
assert first_block_masked.tolist() == list(range(blk + left, n_w))
out_w = flash_attention_torch(q_w, k_w, v_w, window_size=(left, 0), block_m=blk, block_n=blk)
ref_w = attention_reference(q_w.double(), k_w.double(), v_w.double(), window_size=(left, 0))
err_w = (out_w.double() - ref_w).abs().max().item()
print(f"with m_safe, window of {left}: max error {err_w:.1e}")
assert torch.isfinite(out_w).all() and err_w < 1e-5

out_e, lse_e = flash_attention_torch(q_w[:, :, :6], k_w[:, :, :4], v_w[:, :, :4], causal=True,
                                     return_lse=True)  # 6 queries, 4 keys: queries 0 and 1 see none
print("6 queries, 4 keys, causal: output rows 0, 1 =", out_e[0, 0, :2].abs().max().item(),
      "; lse =", [round(x, 3) for x in lse_e[0, 0].tolist()])
assert (out_e[0, 0, :2] == 0).all() and torch.isneginf(lse_e[0, 0, :2]).all()
assert torch.isfinite(lse_e[0, 0, 2:]).all()

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# shapes (one key, primes, ragged last blocks) against the reference and prints `pass`, or the
# first wrong element and what it should be; it never stops the notebook. Stuck?
# `show_solution("03.merge_lse")` prints one answer (the answers live in
# `exercises/solutions/nb03.py`, out of sight).
#
# **1. Base 2.** The kernel keeps the online sum in base 2, since $2^{x \log_2 e} = e^x$ and
# `exp2` is the cheaper instruction on a GPU. Write `online_stats_base2(xs)`: one pass over the
# list `xs`, returning `(m2, l2)` with `m2` the max of $x \log_2 e$ and `l2` the sum of
# $2^{x \log_2 e - m_2}$. (Then $\mathrm{lse} = (m_2 + \log_2 \ell_2) / \log_2 e$.)

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)

LOG2E = math.log2(math.e)


def online_stats_base2(xs):
    raise NotImplementedError  # your code here: online_stats of section 1, in base-2 units


check("03.online_stats_base2", online_stats_base2)

# %% [markdown]
# **2. One block, safely.** Write `online_step(m, l, acc, s_blk, v_blk)`: fold one block of scores
# `s_blk` `[rows, block]` and its values `v_blk` `[block, d]` into the state `m` `[rows]`, `l`
# `[rows]`, `acc` `[rows, d]` and return the new `(m, l, acc)`. The check starts from
# $m = -\infty$, $\ell = 0$, $\mathrm{acc} = 0$, and one row's *first* block is fully masked
# (every score $-\infty$), so the corner case of section 6 must be handled.

# %%
def online_step(m, l, acc, s_blk, v_blk):
    raise NotImplementedError  # your code here


check("03.online_step", online_step)

# %% [markdown]
# **3. Merge two normalised partials.** Write `merge_lse(o_a, lse_a, o_b, lse_b)` for the
# stored form of section 4: `o` `[rows, d]` normalised over its own keys, `lse` `[rows]` its
# log-sum-exp, $-\infty$ (with `o` = 0) for a row that saw no key. Return `(o, lse)` over both
# sets of keys; a row empty on both sides must stay `o` = 0, `lse` = $-\infty$, not NaN. This is
# the merge of split-KV decoding (notebook 08) and of ring attention (notebook 11).

# %%
def merge_lse(o_a, lse_a, o_b, lse_b):
    raise NotImplementedError  # your code here


check("03.merge_lse", merge_lse)

# %% [markdown]
# **4. Predict, then run.** Is `merge(a, b)` *bit-for-bit* equal to `merge(b, a)`, or only equal to
# rounding? Write your prediction in `prediction` (True for bit-for-bit) before running the cell.
# (Hint: which operations in `merge` are commutative in floating point?)

# %%
prediction = None  # your prediction: True or False

a, b = parts[1], parts[5]
same = all(torch.equal(x, y) for x, y in zip(merge(a, b), merge(b, a)))
if prediction is None:
    print("write your prediction first")
else:
    print("bit-for-bit identical:", same, "- your prediction was", "right" if prediction == same else "wrong")

# %% [markdown]
# ## References
#
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   running max and rescaled sum of sections 1 and 2, and their merge of partial results.
# * Rabe, Staats, "Self-attention Does Not Need O(n^2) Memory", 2021, arXiv:2112.05682: attention
#   over chunks of keys, merged with the same rescaling.
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: the online softmax with the output accumulator, tiled
#   on chip (Algorithm 1).
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the unnormalised accumulator divided by $\ell$ once at the end, and the
#   log-sum-exp kept for the backward.

# %% [markdown]
# ## What comes next
#
# [04 · A Triton primer](04_triton_primer.ipynb) introduces the language of the kernels (programs
# and the grid, pointers, masked loads, `tl.dot`) and ends with this notebook's block update as a
# one-head Triton kernel. Then [05 · The FlashAttention forward pass](05_flash_attention_forward.ipynb)
# puts tiling (notebook 02) and the online softmax together: one program per block of queries, keys
# and values streamed past it, $m$, $\ell$ and the accumulator kept on chip. First in NumPy, then
# line by line in the Triton kernel of this repository.
