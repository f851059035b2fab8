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
# # 08 · Masks, lengths and decoding
#
# **What you will learn**
#
# * where the causal diagonal goes when there are more keys than queries (bottom-right, as in
#   FlashAttention) and why PyTorch's `is_causal` (top-left) differs;
# * sliding windows, and why they make the cost linear in $N$;
# * grouped-query attention (GQA): several query heads sharing one key/value head;
# * packed batches of sequences of different lengths, with no padding (`flash_attention_varlen`);
# * split-KV decoding (`flash_decode`): one new token against a long cache, split across programs
#   and merged with the log-sum-exp algebra of notebook 03; and how fast it is on an H100.
#
# **Read first:** [03](03_online_softmax.ipynb) (merging partial softmaxes) and
# [05](05_flash_attention_forward.ipynb) (the kernel and its key range). All of these features are
# the same kernel `_attn_fwd` with a different flag or grid (split-KV decoding adds one small
# merge kernel), so this notebook is about semantics and checks, not new kernels. Without Triton,
# `flash_attention` & co. are the plain-PyTorch twin (`kernels/flash_torch.py`, same semantics and
# checks): every check runs on it, and only the live GPU timing at the end of section 5 is
# skipped.
#
# **Words:** [glossary](GLOSSARY.md) (causal bottom-right, window, GQA, varlen, KV cache, split-KV
# decoding). The exercises at the end check code you write: the two masks and the split-KV merge.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import csv

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from kernels import (
    attention_mask,
    attention_reference,
    attention_varlen_reference,
    flash_attention,
    flash_attention_varlen,
    flash_decode,
)
from kernels.iocost import H100_MEASURED, H100_SXM
from kernels.ring import merge_partials

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # small sizes on a CPU (the interpreter, or the twin without Triton)
RESULTS = Path(kernels.__file__).resolve().parents[1] / "benchmarks" / "results" / "h100"
torch.manual_seed(0)
print(f"device: {DEVICE}, kernels: {kernels.implementation()}")


def max_err(x, ref):
    return (x.double() - ref.double()).abs().max().item()

# %% [markdown]
# ## 1. Causal masks when query and key lengths differ
#
# With $N_q$ queries and $N_k$ keys, where is the diagonal? This repository (like FlashAttention
# since 2.1) aligns it to the **bottom-right** corner: query $i$ sits at key position
# $i + N_k - N_q$ and sees key $j$ when $j \le i + N_k - N_q$. PyTorch's
# `scaled_dot_product_attention(is_causal=True)` aligns it to the **top-left**: $j \le i$. They agree
# only when $N_q = N_k$.

# %%
fig, axes = plt.subplots(1, 4, figsize=(12, 3.6), gridspec_kw=dict(width_ratios=[10, 10, 4, 4]))
panels = []
for nq, nk in ((4, 10), (10, 4)):
    panels.append((attention_mask(nq, nk, causal=True),
                   f"{nq} x {nk}, bottom-right\n(this repo, FlashAttention)"))
    panels.append((torch.ones(nq, nk, dtype=torch.bool).tril(), f"{nq} x {nk}, top-left\n(SDPA is_causal)"))
for ax, (mask, title) in zip(axes, panels):
    ax.imshow(mask.numpy(), cmap="Blues", vmin=0, vmax=1.3)
    ax.set(xlabel="key j", ylabel="query i", xticks=range(mask.shape[1]), yticks=range(mask.shape[0]))
    ax.set_title(title, fontsize=9)
fig.suptitle("Which keys each query sees (blue), queries x keys")
fig.tight_layout()
plt.show()

# %% [markdown]
# Why bottom-right? Think of generation with a cache: $L$ tokens are already processed, $n$ new
# ones arrive. The new queries are positions $L, \dots, L + n - 1$ of a sequence of $N_k = L + n$
# keys, so query $i$ of the new block is position $i + N_k - N_q$. The defining property:
# **causal attention of the last $N_q$ queries against all $N_k$ keys equals the last $N_q$ rows
# of causal attention over the whole sequence.** Bottom-right has it; top-left does not.

# %%
nk, nq, d = 90, 20, 32
q_all = torch.randn(1, 2, nk, d, device=DEVICE)
k, v = (torch.randn(1, 2, nk, d, device=DEVICE) for _ in range(2))
full = attention_reference(q_all, k, v, causal=True)[:, :, -nq:]  # last rows of the whole sequence
mine = flash_attention(q_all[:, :, -nq:], k, v, causal=True)
top_left = F.scaled_dot_product_attention(q_all[:, :, -nq:], k, v, is_causal=True)
explicit = F.scaled_dot_product_attention(q_all[:, :, -nq:], k, v,
                                          attn_mask=attention_mask(nq, nk, causal=True, device=DEVICE))
print(f"flash_attention(causal) vs last rows of the full sequence: {max_err(mine, full):.1e}")
print(f"SDPA with the bottom-right mask passed explicitly:         {max_err(explicit, full):.1e}")
print(f"SDPA is_causal=True (top-left):                            {max_err(top_left, full):.1e}")
assert max_err(mine, full) < 1e-5 and max_err(explicit, full) < 1e-5 and max_err(top_left, full) > 0.1

same = torch.randn(1, 2, 50, d, device=DEVICE)
agree = max_err(flash_attention(same, same, same, causal=True),
                F.scaled_dot_product_attention(same, same, same, is_causal=True))
print(f"equal lengths: the two conventions agree ({agree:.1e})")
assert agree < 1e-5

# %% [markdown]
# With more queries than keys, the first $N_q - N_k$ queries see no key at all: their output is
# 0 and their log-sum-exp $-\infty$ (notebook 05 checked it on the kernel).
#
# **Takeaway.** Causal = "no key after my own position", and with a cache my position is
# $i + N_k - N_q$. Pass `causal=True` to `flash_attention`, or an explicit mask to SDPA.

# %% [markdown]
# ## 2. Sliding windows
#
# `window_size=(left, right)`: query $i$ sees keys $j$ with
# $i + \mathrm{off} - \text{left} \le j \le i + \mathrm{off} + \text{right}$
# ($\mathrm{off} = N_k - N_q$; $-1$ means unbounded; `causal=True` is `right = 0`). Mistral-style
# local attention is `(w, 0)`.

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for ax, (ws, causal) in zip(axes, (((3, 0), False), ((2, 2), False), ((-1, -1), True))):
    ax.imshow(attention_mask(16, 16, causal=causal, window_size=ws).numpy(), cmap="Blues", vmin=0, vmax=1.3)
    ax.set(title=f"window_size={ws}" + (", causal" if causal else ""), xlabel="key j", ylabel="query i")
fig.suptitle("Sliding windows: a band around the diagonal")
fig.tight_layout()
plt.show()

n, d = 150, 64
q, k, v = (torch.randn(1, 2, n, d, device=DEVICE) for _ in range(3))
for ws in ((16, 0), (8, 8), (40, 3)):
    err = max_err(flash_attention(q, k, v, window_size=ws),
                  attention_reference(q.double(), k.double(), v.double(), window_size=ws))
    print(f"window {ws}: max error vs reference {err:.1e}")
    assert err < 1e-5

# %% [markdown]
# The narrowest window, `(0, 0)`, leaves each query one key, the one at its aligned position
# $i + N_k - N_q$: the softmax of a single score is 1, so the output is that key's value row.

# %%
nq, nk = 30, 50
q = torch.randn(1, 1, nq, 32, device=DEVICE)
k, v = (torch.randn(1, 1, nk, 32, device=DEVICE) for _ in range(2))
err = max_err(flash_attention(q, k, v, window_size=(0, 0)), v[:, :, nk - nq:])
print(f"window (0, 0), {nq} queries, {nk} keys: output equals v[i + N_k - N_q] within {err:.1e}")
assert err < 1e-6

# %% [markdown]
# The kernel's key range (`key_range`, notebook 05) covers only the band, so a program visits a
# fixed number of key blocks whatever $N$: the work is **linear** in $N$. Count the visited tiles
# (those with any visible score) for full, causal and windowed attention:

# %%
def visited_tiles(n, block, **mask_kw):
    mask = attention_mask(n, n, **mask_kw)
    t = n // block
    return int(mask.reshape(t, block, t, block).any(dim=(1, 3)).sum())


block, left = 64, 128
Ns = [256, 512, 1024, 2048]
counts = {name: [visited_tiles(n, block, **kw) for n in Ns] for name, kw in (
    ("full", {}), ("causal", dict(causal=True)), (f"window ({left}, 0)", dict(window_size=(left, 0))))}
for name, c in counts.items():
    print(f"{name:>16}: {c}")
T = np.array(Ns) // block
assert counts["full"] == list(T**2) and counts["causal"] == list(T * (T + 1) // 2)
# each query block sees at most left / block + 1 key blocks (fewer at the start)
assert counts[f"window ({left}, 0)"] == list(3 * T - 3)

fig, ax = plt.subplots(figsize=(6, 3.8))
for (name, c), marker in zip(counts.items(), "os^"):
    ax.loglog(Ns, c, marker + "-", label=name)
ax.set(xlabel="sequence length N (tokens)", ylabel=f"tiles computed ({block} x {block})",
       title="Work grows as N^2, N^2/2, or N with a window")
ax.set_xticks(Ns, [str(x) for x in Ns])
ax.minorticks_off()
ax.legend()
plt.show()

# %% [markdown]
# **Takeaway.** A window is the causal band cut off on the left; the kernel loops over the band
# only, so the cost per query is constant.

# %% [markdown]
# ## 3. Grouped-query attention
#
# With GQA, `heads_q` is a multiple of `heads_kv`, and query head $h$ reads kv head
# $h \,//\, (\text{heads}_q / \text{heads}_{kv})$. A decoding cache then holds $\text{heads}_q /
# \text{heads}_{kv}$ times fewer keys and values. A transparent check of the mapping: with keys
# all zero every query attends uniformly, so the output is the mean of the value rows; give kv
# head $g$ the value $g$ everywhere, and query head $h$ must return $h \,//\, \text{group}$.

# %%
heads_q, heads_kv, n, d = 8, 2, 40, 32
group = heads_q // heads_kv
q = torch.randn(1, heads_q, n, d, device=DEVICE)
k = torch.zeros(1, heads_kv, n, d, device=DEVICE)
v = torch.arange(heads_kv, dtype=torch.float32, device=DEVICE).view(1, heads_kv, 1, 1)
v = v.expand(1, heads_kv, n, d)  # kv head g holds the value g everywhere
out = flash_attention(q, k, v.contiguous())
which_kv = out[0, :, 0, 0].round().int().tolist()
print(f"query head -> kv head it read: {dict(enumerate(which_kv))}")
assert which_kv == [h // group for h in range(heads_q)]

k, v = (torch.randn(2, heads_kv, 70, d, device=DEVICE) for _ in range(2))
q = torch.randn(2, heads_q, 50, d, device=DEVICE)
expanded = attention_reference(q.double(), k.double().repeat_interleave(group, dim=1),
                               v.double().repeat_interleave(group, dim=1), causal=True)
err = max_err(flash_attention(q, k, v, causal=True), expanded)
print(f"GQA kernel vs reference with K, V repeated per query head: {err:.1e}")
assert err < 1e-5

# %% [markdown]
# **Takeaway.** GQA is an index computation in the kernel (`off_hk = off_h // group`); no copy of
# $K$ or $V$ is made. In the backward, the dK/dV kernel sums the contributions of the whole group
# on chip (notebook 07).

# %% [markdown]
# ## 4. Packed batches of different lengths
#
# A batch of sequences of lengths 5, 37, 0, 64 and 19 padded to 64 would spend most of its slots,
# and more of its score entries, on padding. Instead, concatenate them into one
# `(total_tokens, heads, head_dim)` tensor and describe the boundaries by `cu_seqlens`, the running
# sum of the lengths starting at 0. Each program of the kernel reads where its sequence starts, and
# programs past the end of a short sequence exit at once. Every sequence attends only within
# itself; causal masks are bottom-right per sequence.

# %%
lengths_q = [5, 37, 0, 64, 19]
lengths_k = [9, 37, 3, 64, 30]  # per sequence N_k >= N_q: a continuation with a cache, say
cu_q = torch.tensor([0, *np.cumsum(lengths_q)], dtype=torch.int32, device=DEVICE)
cu_k = torch.tensor([0, *np.cumsum(lengths_k)], dtype=torch.int32, device=DEVICE)
heads, d = 2, 32
q = torch.randn(sum(lengths_q), heads, d, device=DEVICE)
k, v = (torch.randn(sum(lengths_k), heads, d, device=DEVICE) for _ in range(2))
print("cu_seqlens_q =", cu_q.tolist(), " cu_seqlens_k =", cu_k.tolist())

packed = flash_attention_varlen(q, k, v, cu_q, cu_k, max(lengths_q), max(lengths_k), causal=True)
ref = attention_varlen_reference(q.double(), k.double(), v.double(), cu_q, cu_k, causal=True)
worst = 0.0
for b in range(len(lengths_q)):  # the same thing, one dense call per sequence
    qs, ks = slice(cu_q[b], cu_q[b + 1]), slice(cu_k[b], cu_k[b + 1])
    if lengths_q[b] == 0:
        continue
    dense = flash_attention(q[qs].transpose(0, 1)[None], k[ks].transpose(0, 1)[None],
                            v[ks].transpose(0, 1)[None], causal=True)  # (1, heads, n, d)
    worst = max(worst, max_err(packed[qs], dense[0].transpose(0, 1)))
print(f"packed vs per-sequence dense kernel: {worst:.1e}; vs float64 reference: {max_err(packed, ref):.1e}")
assert worst < 1e-5 and max_err(packed, ref) < 1e-5

# %%
max_len = max(lengths_q)
padded_slots, real = len(lengths_q) * max_len, sum(lengths_q)
padded_scores = len(lengths_q) * max_len * max(lengths_k)
real_scores = sum(a * b for a, b in zip(lengths_q, lengths_k))
print(f"padding to {max_len}: {1 - real / padded_slots:.0%} of the query slots and "
      f"{1 - real_scores / padded_scores:.0%} of the score entries would be padding")
assert real / padded_slots < 0.5

mask = torch.zeros(sum(lengths_q), sum(lengths_k), dtype=torch.bool)
for b in range(len(lengths_q)):
    mask[cu_q[b]:cu_q[b + 1], cu_k[b]:cu_k[b + 1]] = attention_mask(lengths_q[b], lengths_k[b], causal=True)
fig, ax = plt.subplots(figsize=(6, 5))
ax.imshow(mask.numpy(), cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
for c in cu_q.tolist():
    ax.axhline(c - 0.5, color="gray", lw=0.5)
for c in cu_k.tolist():
    ax.axvline(c - 0.5, color="gray", lw=0.5)
ax.set(xlabel="packed key index", ylabel="packed query index",
       title=f"Packed causal attention, lengths q {lengths_q}, k {lengths_k}")
ax.title.set_fontsize(9)
plt.show()

# %% [markdown]
# **Takeaway.** Packing turns a ragged batch into one tensor and a prefix sum; the kernel's grid
# covers the longest sequence and each program finds its rows through `cu_seqlens`. No FLOP is
# spent on padding.

# %% [markdown]
# ## 5. Split-KV decoding
#
# Generating a token means one query per sequence against the whole cache. The forward kernel's
# grid has one program per query block and (sequence, query head): with a single query, that is
# `batch * heads_q` programs, each walking the entire cache alone, one block after another, and
# the query heads of a GQA group each reading the same cache again. Even packing a group's query
# heads into one tile (as `flash_decode` does) leaves `batch * heads_kv` programs, too few to keep
# a GPU's memory system busy.
#
# **Split the keys instead.** `num_splits` programs each run the ordinary forward loop over one
# slice of the cache and write a partial output $o_s$ with its log-sum-exp $\mathrm{lse}_s$; a
# second small kernel merges them with the algebra of notebook 03:
#
# $$ \mathrm{lse} = \log \sum_s e^{\mathrm{lse}_s}, \qquad
#    o = \sum_s e^{\mathrm{lse}_s - \mathrm{lse}}\, o_s . $$
#
# First by hand: the dense kernel on three slices of a cache, merged two at a time by the merge of
# notebook 03 (`kernels.ring.merge_partials`, which ring attention uses in notebook 11). The Triton
# merge does all splits in one step, with one max over their lse (exercise 3 below).

# %%
L, d = 200, 64
q = torch.randn(1, 4, 1, d, device=DEVICE)
k_cache, v_cache = (torch.randn(1, 4, L, d, device=DEVICE) for _ in range(2))
bounds = [0, 64, 150, L]
parts = [flash_attention(q, k_cache[:, :, lo:hi], v_cache[:, :, lo:hi], return_lse=True)
         for lo, hi in zip(bounds, bounds[1:])]
merged, lse = parts[0]  # (1, heads, 1, d), (1, heads, 1)
for out_s, lse_s in parts[1:]:
    merged, lse = merge_partials(merged, lse, out_s, lse_s)
out_full, lse_full = flash_attention(q, k_cache, v_cache, return_lse=True)
print(f"merged slices vs one pass over the cache: output {max_err(merged, out_full):.1e}, "
      f"lse {max_err(lse, lse_full):.1e}")
assert max_err(merged, out_full) < 1e-5 and max_err(lse, lse_full) < 1e-5

# %% [markdown]
# Now `flash_decode`, which does the splitting and the merge in Triton. Each sequence has its own
# valid cache length (`cache_seqlens`; positions past it are never read), the query heads share kv
# heads (GQA), and whatever the number of splits, the answer must be the same. (The twin, without
# Triton, checks `num_splits` but walks the cache in one loop: there the split algebra is the cell
# above, and this cell checks `cache_seqlens` and GQA against the reference.)

# %%
batch, heads_q, heads_kv, max_len, d = 2, 8, 2, 256, 64
cache_seqlens = torch.tensor([256, 77], dtype=torch.int32, device=DEVICE)
q = torch.randn(batch, heads_q, 1, d, device=DEVICE)
k_cache, v_cache = (torch.randn(batch, heads_kv, max_len, d, device=DEVICE) for _ in range(2))
ref = torch.cat([attention_reference(q[b:b + 1].double(), k_cache[b:b + 1, :, :n].double(),
                                     v_cache[b:b + 1, :, :n].double())
                 for b, n in enumerate(cache_seqlens.tolist())])
outs = {}
for splits in (1, 2, 7):
    outs[splits], _ = flash_decode(q, k_cache, v_cache, cache_seqlens, num_splits=splits, return_lse=True)
    print(f"num_splits = {splits}: max error vs reference {max_err(outs[splits], ref):.1e}, "
          f"vs num_splits = 1 {max_err(outs[splits], outs[1]):.1e}")
    assert max_err(outs[splits], ref) < 1e-5 and max_err(outs[splits], outs[1]) < 1e-5
if kernels.HAS_TRITON:
    print("flash_decode ran the split-KV Triton kernel" + (", interpreted" if kernels.INTERPRET else ""))
else:
    print("flash_decode ran the plain-PyTorch twin: num_splits is checked, then unused "
          "(one loop walks the cache)")

# %% [markdown]
# A sequence whose cache is empty (`cache_seqlens[b] = 0`) sees no key: its output is 0 and its
# log-sum-exp $-\infty$, with or without splits (with Triton, every split of it is empty and the
# merge must not turn $e^{-\infty - (-\infty)}$ into NaN; the twin has no splits and checks the
# empty loop).

# %%
empty = torch.tensor([0, 40], dtype=torch.int32, device=DEVICE)
q = torch.randn(2, 4, 1, 32, device=DEVICE)
kc, vc = (torch.randn(2, 2, 64, 32, device=DEVICE) for _ in range(2))
for splits in (1, 3):
    out, lse = flash_decode(q, kc, vc, empty, num_splits=splits, return_lse=True)
    print(f"num_splits={splits}: output of the empty sequence all zero: {bool((out[0] == 0).all())}, "
          f"lse: {lse[0].flatten().tolist()}")
    assert (out[0] == 0).all() and torch.isneginf(lse[0]).all()

# %% [markdown]
# ### How fast, on an H100
#
# `benchmarks/bench_decode.py` measured one decoding step (batch 4, 32 query heads sharing 8 kv
# heads, $d = 128$, bf16, each step captured in a CUDA graph) for caches from 1k to 64k tokens,
# against the dense kernel with one query and against PyTorch's SDPA, in the same run. The figure
# and the CSV are committed; here they are read from the files (no GPU needed; on a GPU, rerun the
# script to regenerate them).

# %%
with open(RESULTS / "decode.csv") as f:
    header = f.readline().lstrip("# ").strip()
    rows = list(csv.DictReader(f))
print(header)
speed = {}
for r in rows:
    speed.setdefault(r["provider"], {})[int(r["cache_len"])] = r
cache_lens = sorted(speed["flash_decode"])

img = plt.imread(RESULTS / "decode.png")
fig, ax = plt.subplots(figsize=(7, 4.6))
ax.imshow(img)
ax.set_axis_off()
ax.set_title("benchmarks/results/h100/decode.png", fontsize=8)
plt.show()

# %%
cfg = rows[0]
programs = int(cfg["batch"]) * int(cfg["heads_kv"])  # one tile per (sequence, kv head) without splits
longest = cache_lens[-1]
print(f"without splits: {programs} programs for {H100_SXM.num_sms} multiprocessors; with "
      f"{speed['flash_decode'][longest]['num_splits']} splits: "
      f"{programs * int(speed['flash_decode'][longest]['num_splits'])}")
assert programs < H100_SXM.num_sms / 4


def cache_bytes(L):
    """Bytes one step reads: K and V, batch x kv heads x L x head_dim, 2 bytes each (bf16)."""
    return 2 * int(cfg["batch"]) * int(cfg["heads_kv"]) * L * int(cfg["head_dim"]) * 2


providers = ("flash_decode", "flash_attention", "sdpa")
bandwidth = {p: [cache_bytes(L) / (float(speed[p][L]["ms"]) * 1e-3) for L in cache_lens] for p in providers}
gains = [float(speed["flash_decode"][L]["tokens_per_s"]) / float(speed["flash_attention"][L]["tokens_per_s"])
         for L in cache_lens]
print(f"{'cache':>7} {'splits':>7} {'split-KV / dense':>17}"
      + "".join(f"{p + ' GB/s':>22}" for p in providers))
for i, L in enumerate(cache_lens):
    print(f"{L:>7} {speed['flash_decode'][L]['num_splits']:>7} {gains[i]:>16.1f}x"
          + "".join(f"{bandwidth[p][i] / 1e9:>22.0f}" for p in providers))
print(f"largest relative error against SDPA: {max(float(r['rel_err']) for r in rows):.1e}")

long = [i for i, L in enumerate(cache_lens) if L >= 8192]
slopes = {p: np.polyfit(np.log([cache_lens[i] for i in long]),
                        np.log([float(speed[p][cache_lens[i]]["tokens_per_s"]) for i in long]), 1)[0]
          for p in providers}
best = max(providers, key=lambda p: bandwidth[p][-1])
print("log-log slope of tokens/s against cache length (8k and up):",
      ", ".join(f"{p} {v:.2f}" for p, v in slopes.items()))
print(f"at {longest} tokens, {best} reads the cache at {bandwidth[best][-1] / 1e12:.2f} TB/s: "
      f"{bandwidth[best][-1] / H100_SXM.bandwidth:.0%} of the datasheet's "
      f"{H100_SXM.bandwidth / 1e12:.2f} TB/s "
      f"(a device-to-device copy measured {H100_MEASURED.bandwidth / 1e12:.1f} TB/s, reads plus writes)")
assert all(g > 1 for g in gains)  # splitting pays at every cache length
assert max(float(r["rel_err"]) for r in rows) < 1e-2
assert all(-1.2 < v < -0.8 for v in slopes.values())  # time proportional to the bytes of the cache
assert bandwidth[best][-1] > 0.7 * H100_SXM.bandwidth
# faster than DRAM can deliver only where the whole cache fits in L2 (the benchmark replays a step)
assert all(cache_bytes(L) <= H100_SXM.l2_bytes
           for p in providers for L, b in zip(cache_lens, bandwidth[p]) if b > H100_SXM.bandwidth)

# %% [markdown]
# What the numbers say. Splitting the cache makes decoding faster than the dense kernel at every
# length (third column). Decoding is **memory-bound**: each step reads the whole cache once to do
# two small matrix-vector products per head, so from 8k tokens on, the time of every
# implementation grows in proportion to the cache (slope $-1$ in tokens/s), and the right
# yardstick is bandwidth: the fastest path reads the cache at a large fraction of the H100's
# DRAM bandwidth. (The shortest caches fit in the 50 MiB L2 cache, and the benchmark
# replays the same step, so there the "bandwidth" could exceed what DRAM delivers.)
#
# With a GPU here, one step at the benchmark's shape is measured live, at a cache of 32,768
# tokens: the error against a float32 reference, and the time of `flash_decode` against the dense
# kernel with one query (medians of `triton.testing.do_bench_cudagraph`, as the benchmark does).
# The claim checked on this GPU is the file's: splitting pays. On a CPU the cell times nothing:
# the interpreter's times would say nothing about a GPU; nor does it without Triton, whose
# benchmark helpers and split-KV kernel it measures.

# %%
if not SMALL and kernels.HAS_TRITON:
    from functools import partial

    from triton.testing import do_bench_cudagraph

    batch, heads_q, heads_kv, L, d = 4, 32, 8, 32768, 128
    q = torch.randn(batch, heads_q, 1, d, device=DEVICE, dtype=torch.bfloat16)
    k_cache, v_cache = (torch.randn(batch, heads_kv, L, d, device=DEVICE, dtype=torch.bfloat16)
                        for _ in range(2))
    lengths = torch.full((batch,), L, dtype=torch.int32, device=DEVICE)  # every cache full
    ref = attention_reference(q.float(), k_cache.float(), v_cache.float())
    step_bytes = 2 * batch * heads_kv * L * d * 2  # K and V, bf16: what one step reads
    calls = {"flash_decode": partial(flash_decode, q, k_cache, v_cache, lengths, check_lengths=False),
             "flash_attention, one query": partial(flash_attention, q, k_cache, v_cache)}
    print(f"{torch.cuda.get_device_name()}: batch {batch}, {heads_q} query heads / {heads_kv} kv heads, "
          f"d = {d}, bf16, cache {L:,} tokens ({step_bytes / 2**20:.0f} MiB read per step)")
    ms = {}
    for name, fn in calls.items():
        err = ((fn().double() - ref.double()).norm() / ref.double().norm()).item()
        ms[name] = do_bench_cudagraph(fn, rep=100, return_mode="median")
        print(f"{name:>27}: {ms[name]:.3f} ms, {step_bytes / (ms[name] * 1e-3) / 1e9:,.0f} GB/s; "
              f"relative error vs float32 {err:.1e}")
        assert err < 1e-2  # bf16 rounding (the benchmark measured about 3e-3)
    print(f"split-KV / dense on this GPU: {ms['flash_attention, one query'] / ms['flash_decode']:.1f}x")
    assert ms["flash_decode"] < ms["flash_attention, one query"]  # splitting pays, measured here
else:
    here = " ".join(w for w, yes in (("on a CPU", SMALL), ("without Triton", not kernels.HAS_TRITON)) if yes)
    print(f"not measured {here}: the live timing needs a GPU and Triton; the H100 numbers above are "
          "the benchmark's")

# %% [markdown]
# **Takeaway.** Split-KV decoding is the online-softmax merge applied *across* programs: any
# split of the keys gives the same answer, so the number of splits is chosen to fill the GPU.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# shapes (one query, one key, more keys than queries and the reverse) against the repository's
# reference and prints `pass`, or the first wrong element and what it should be; it never stops
# the notebook. Stuck? `show_solution("08.causal_mask")` prints one answer (the answers live in
# `exercises/solutions/nb08.py`, out of sight). Build the masks with `torch.arange`, without
# calling `attention_mask`.
#
# **1. The bottom-right causal mask.** Write `causal_mask(seqlen_q, seqlen_k)`: a boolean
# `[seqlen_q, seqlen_k]` tensor, True where query $i$ sees key $j$, that is
# $j \le i + N_k - N_q$. The check includes one query against many keys (decoding) and many
# queries against one key, where the first rows see nothing.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def causal_mask(seqlen_q, seqlen_k):
    raise NotImplementedError  # your code here


check("08.causal_mask", causal_mask)

# %% [markdown]
# **2. The sliding window.** Write `window_mask(seqlen_q, seqlen_k, left, right)`: a boolean
# `[seqlen_q, seqlen_k]` tensor, True where
# $i + \mathrm{off} - \text{left} \le j \le i + \mathrm{off} + \text{right}$ with
# $\mathrm{off} = N_k - N_q$, and $-1$ meaning no bound on that side (so `(-1, 0)` is causal and
# `(-1, -1)` full attention).

# %%
def window_mask(seqlen_q, seqlen_k, left, right):
    raise NotImplementedError  # your code here


check("08.window_mask", window_mask)

# %% [markdown]
# **3. The split-KV merge.** Write `merge_splits(out_s, lse_s)`, the second kernel of
# `flash_decode` in PyTorch: `out_s` `[num_splits, rows, d]`, each split's output normalised over
# its own keys, `lse_s` `[num_splits, rows]` their log-sum-exp; return `(out, lse)` over all the
# keys, `[rows, d]` and `[rows]`. A split where a row sees no key has `lse` $= -\infty$ and
# `out` $= 0$; a row that sees no key in any split (an empty cache) must come out 0 and
# $-\infty$, not NaN; and one case has scores near 1000, where $e^{\mathrm{lse}}$ overflows even
# in float64. Do it as the kernel does, in one step: one max over the splits, one sum (a chain of
# two-way merges passes too, at one log per split). Then compare with `_merge_splits` in
# `kernels/decode.py`. The check is plain PyTorch: it means the same with or without Triton.

# %%
def merge_splits(out_s, lse_s):
    raise NotImplementedError  # your code here


check("08.merge_splits", merge_splits)

# %% [markdown]
# ## References
#
# * Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, "Attention Is All You
#   Need", NeurIPS 2017, arXiv:1706.03762: the causal mask of a decoder.
# * The bottom-right causal mask for $N_q \ne N_k$: flash-attn 2.1, release notes in the README of
#   github.com/Dao-AILab/flash-attention.
# * Child, Gray, Radford, Sutskever, "Generating Long Sequences with Sparse Transformers", 2019,
#   arXiv:1904.10509: fixed sparse patterns (local and strided) in place of full attention.
# * Beltagy, Peters, Cohan, "Longformer: The Long-Document Transformer", 2020, arXiv:2004.05150:
#   sliding-window attention, whose cost grows linearly in $N$.
# * Jiang et al., "Mistral 7B", 2023, arXiv:2310.06825: sliding-window attention in a released model.
# * Shazeer, "Fast Transformer Decoding: One Write-Head is All You Need", 2019, arXiv:1911.02150
#   (multi-query attention), and Ainslie, Lee-Thorp, de Jong, Zemlyanskiy, Lebrón, Sanghai, "GQA:
#   Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints", 2023,
#   arXiv:2305.13245.
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the forward kernel all of these variants reuse.
# * Dao, Haziza, Massa, Sizov, "Flash-Decoding for long-context inference", 2023,
#   crfm.stanford.edu/2023/10/12/flashdecoding.html: split-KV decoding and its log-sum-exp merge.
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   merge of partial softmaxes that split-KV decoding applies across programs.

# %% [markdown]
# ## What comes next
#
# This completes the tour of the kernels: the forward (05), its cost (06), the backward (07) and
# the variants a real model needs (08).
# [09 · Training the mini Transformer](09_training_the_mini_transformer.ipynb) puts them to work:
# `minitransformer/`, a small character-level Transformer, trains with these kernels (the same
# loss curve as naive attention from the same seed) and generates text one query at a time against
# its KV cache, with the bottom-right mask and `flash_decode` of this notebook. Then 10 (linear
# attention, another way past $N^2$), 11 (beyond one GPU: ring attention) and 12 (performance:
# does fewer bytes mean faster?).
