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
# # 01 · Naive attention and its N × N matrix
#
# **What you will learn**
#
# * attention is three steps: scores, a softmax over each row of scores, a weighted sum of values;
# * the middle step works on an $N \times N$ matrix, so time and memory grow as $N^2$ (we measure
#   both on the machine at hand);
# * the *safe* softmax: why every implementation subtracts the row maximum before exponentiating.
#
# **Read first:** nothing but matrix multiplication. The code we call is `kernels/reference.py`
# (`attention_reference`, `attention_mask`), the plain oracle every fast kernel of this repository
# is tested against.
#
# **Words:** [glossary](GLOSSARY.md). The exercises at the end check code you write.
#
# Every claim in this series is followed by a line that checks it, so a notebook that runs to the
# end has verified what it says.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import attention_mask, attention_reference

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # no GPU: keep every size small so the notebook runs in seconds
torch.manual_seed(0)
print(f"device: {DEVICE}, small sizes: {SMALL}, kernels: {kernels.implementation()}")

# %% [markdown]
# ## 1. Attention in three steps
#
# Each of $N$ queries asks "which of the $N$ keys look like me?", and returns the matching mix of
# values. With $Q, K, V \in \mathbb{R}^{N \times d}$:
#
# $$
# S = \frac{Q K^\top}{\sqrt d} \in \mathbb{R}^{N \times N}, \qquad
# P_{ij} = \frac{e^{S_{ij}}}{\sum_{k} e^{S_{ik}}}, \qquad
# O = P V \in \mathbb{R}^{N \times d}.
# $$
#
# The $1/\sqrt d$ keeps the scores of order one when the entries of $q$ and $k$ are: a dot product
# of $d$ unit-variance terms has variance $d$.

# %%
N, d = 8, 4
q, k, v = (torch.randn(N, d, dtype=torch.float64) for _ in range(3))

S = q @ k.T / math.sqrt(d)  # (N, N) scores
P = torch.softmax(S, dim=-1)  # (N, N) probabilities, row by row
O = P @ v  # (N, d) outputs

# the repository's reference takes (batch, heads, seqlen, head_dim)
O_ref = attention_reference(q[None, None], k[None, None], v[None, None])[0, 0]
err = (O - O_ref).abs().max().item()
print(f"three steps vs attention_reference: max abs error {err:.1e}")
assert err < 1e-12

# %% [markdown]
# Two properties follow from the softmax. Each row of $P$ is a probability distribution (positive,
# summing to 1), so each output row is a *weighted average* of the value rows: every coordinate of
# $O$ lies between the smallest and the largest value in that column of $V$.

# %%
row_sums = P.sum(dim=-1)
print(f"row sums of P: min {row_sums.min():.15f}, max {row_sums.max():.15f}")
assert torch.allclose(row_sums, torch.ones(N, dtype=torch.float64)) and (P > 0).all()
assert ((O >= v.min(dim=0).values) & (O <= v.max(dim=0).values)).all()

# %% [markdown]
# A language model must not look at the future: query $i$ may only see keys $j \le i$. That is a
# *mask*: masked scores are set to $-\infty$ before the softmax, so they get probability
# $e^{-\infty} = 0$. `attention_mask` builds it (notebook 08 explains its general form, when the
# numbers of queries and keys differ).

# %%
causal = attention_mask(N, N, causal=True)  # (N, N) bool, True where query i may see key j
P_causal = torch.softmax(S.masked_fill(~causal, float("-inf")), dim=-1)
O_causal = attention_reference(q[None, None], k[None, None], v[None, None], causal=True)[0, 0]
err = (P_causal @ v - O_causal).abs().max().item()
print(f"causal: max abs error {err:.1e}; query 0 sees only key 0 with weight {P_causal[0, 0]:.1f}")
assert err < 1e-12 and P_causal[0, 0] == 1.0
assert torch.equal(causal, torch.ones(N, N, dtype=torch.bool).tril())

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
panels = [(S, "scores $S = QK^T/\\sqrt{d}$", "RdBu_r"), (P, "probabilities $P$", "viridis"),
          (P_causal, "probabilities $P$, causal", "viridis")]
for ax, (mat, title, cmap) in zip(axes, panels):
    im = ax.imshow(mat.numpy(), cmap=cmap)
    ax.set(title=title, xlabel="key position j", ylabel="query position i")
    fig.colorbar(im, ax=ax, fraction=0.046, label="value" if mat is S else "weight")
fig.suptitle(f"One head, N = {N} tokens: every query scores every key")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Takeaway.** Attention = one matrix product for the scores, a softmax along each row, one matrix
# product with the values. The rows of $P$ are probability distributions; a mask is $-\infty$ in
# the scores.

# %% [markdown]
# ## 2. The $N \times N$ matrix: what it costs
#
# Per (batch, head), $Q, K, V, O$ hold $4Nd$ numbers, while $S$ and $P$ hold $2N^2$. The matrices
# dominate as soon as $2N^2 > 4Nd$, that is $N > 2d$: from $N = 257$ on for $d = 128$. A model
# has $d = 64$ or $128$ and sequences of thousands of tokens, so the matrices dwarf everything
# else. Count bytes for one attention layer of a 32-head model in bf16 (2 bytes per number):

# %%
heads, hd, bytes_per = 32, 128, 2
Ns = 2 ** np.arange(8, 18)  # 256 .. 131072 tokens
io_bytes = heads * 4 * Ns * hd * bytes_per  # Q, K, V, O
matrix_bytes = heads * 2 * Ns.astype(float) ** 2 * bytes_per  # S, P
print(f"{'N':>7} {'Q,K,V,O':>11} {'S,P':>11}")
for n, a, b in zip(Ns, io_bytes, matrix_bytes):
    print(f"{n:>7} {a / 2**20:>8.0f} MiB {b / 2**30:>7.1f} GiB")

assert all((big > small) == (n > 2 * hd) for n, small, big in zip(Ns, io_bytes, matrix_bytes))
print(f"S and P outweigh Q, K, V, O exactly when N > 2d = {2 * hd}")
H100_BYTES = 80e9
too_big = Ns[np.argmax(matrix_bytes > H100_BYTES)]
print(f"S and P of one layer no longer fit in an 80 GB H100 at N = {too_big}")
assert too_big == 32768

# %%
fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(Ns, io_bytes, "o-", label="Q, K, V, O: $4Nd$ numbers")
ax.loglog(Ns, matrix_bytes, "s-", label="S, P: $2N^2$ numbers")
ax.axhline(H100_BYTES, color="gray", ls="--", label="memory of one H100 (80 GB)")
ax.set(xlabel="sequence length N (tokens)", ylabel="bytes (one layer, 32 heads, bf16)",
       title="The N x N matrices outgrow everything else")
ax.set_xticks(Ns[::2], [str(n) for n in Ns[::2]])
ax.legend()
plt.show()

# %% [markdown]
# ### Measured on this machine
#
# Counting is one thing; let us watch the reference allocate. A `TorchDispatchMode` sees every
# operator PyTorch runs, so it can log the size of every tensor an operator returns (a new
# allocation; views such as a transpose share memory and are skipped). We record the largest
# tensor and the total allocated by one call of `attention_reference`, and time the call (best of
# several runs, which is robust to other programs sharing the machine).

# %%
class AllocationLog(TorchDispatchMode):
    """Logs the bytes of every new tensor an operator returns."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and not t._is_view():
                self.sizes.append(t.numel() * t.element_size())
        return out


def best_time(fn, repeats):
    """Shortest wall time of `repeats` calls, in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


head_dim = 64
if DEVICE == "cpu":  # one thread: on a shared machine, several threads wait for each other at
    torch.set_num_threads(1)  # short lengths and blur the growth with N that we measure
# on a GPU up to N = 32768: 4 GiB for one N x N float32 matrix, about 13 GiB at the peak of a call
seqlens = [256, 512, 1024, 2048, 4096] if SMALL else [512, 1024, 2048, 4096, 8192, 16384, 32768]
largest, total, seconds = [], [], []
for n in seqlens:
    q, k, v = (torch.randn(1, 1, n, head_dim, device=DEVICE) for _ in range(3))
    with AllocationLog() as log:
        attention_reference(q, k, v)
    largest.append(max(log.sizes))
    total.append(sum(log.sizes))
    seconds.append(best_time(lambda q=q, k=k, v=v: attention_reference(q, k, v), repeats=5))
    print(f"N = {n:>5}: largest tensor {largest[-1] / 2**20:7.1f} MiB, all allocations "
          f"{total[-1] / 2**20:7.1f} MiB ({total[-1] / (4 * n * n):.2f} N^2 floats), "
          f"{seconds[-1] * 1e3:7.2f} ms")

# the largest tensor is exactly one N x N float32 matrix
assert all(b == 4 * n * n for b, n in zip(largest, seqlens))
# all allocations together: a N^2 + b N + c bytes, a fixed number of N x N matrices plus vectors
n_arr = np.array(seqlens, dtype=float)
A = np.stack([n_arr**2, n_arr, np.ones_like(n_arr)], axis=1)
coef = np.linalg.lstsq(A, np.array(total, dtype=float), rcond=None)[0]
misfit = np.abs(A @ coef / np.array(total) - 1).max()
print(f"allocations = {coef[0] / 4:.2f} N^2 floats + {coef[1] / 4:.0f} N floats + ... "
      f"(worst misfit {misfit:.1e})")
assert misfit < 0.02

# %% [markdown]
# On log-log axes a power law $y = c N^p$ is a straight line of slope $p$. Memory tends to slope 2
# as the $N^2$ term takes over, on any machine. Time approaches slope 2 only once the $N^2$ work
# outweighs the fixed cost of a call, and that cost depends on the machine:
#
# * **on a CPU** the fixed cost is small and the matrices soon outgrow the caches, so the time
#   grows faster than $N$ across the whole range;
# * **on a GPU** every one of the dozen or so operators of `attention_reference` is a kernel
#   launch, each costing microseconds of host work, while the GPU does an $N = 2048$ matrix in
#   less time than that. So the time first sits on a *launch floor*: doubling $N$ leaves it
#   nearly flat (slope near 0) up to a few thousand tokens, and only past that does it turn up
#   to slope 2. (On an H200, the floor was about half a millisecond up to $N = 4096$; from there
#   the slope was about 1.6, 1.8 and 1.8 between successive sizes:
#   `benchmarks/results/h200/notebooks/01_naive_attention.txt`.)
#
# So we print the slope between successive sizes, to show where the floor ends, and fit both
# slopes over the three largest sizes. Memory is exact and asserted tightly. Time, measured on a
# machine others share, is asserted coarsely, for the machine at hand: on a CPU, that it grows
# faster than $N$ over the whole range; on a GPU, that it is flat at first and that over the
# largest sizes, past the floor, its slope is clearly above 1.

# %%
step_slopes = np.diff(np.log(seconds)) / np.diff(np.log(seqlens))  # between successive sizes
for (n0, n1), p in zip(zip(seqlens, seqlens[1:]), step_slopes):
    print(f"time, N = {n0:>5} -> {n1:>5}: log-log slope {p:5.2f}")
slope_mem = np.polyfit(np.log(seqlens[-3:]), np.log(total[-3:]), 1)[0]
slope_time = np.polyfit(np.log(seqlens[-3:]), np.log(seconds[-3:]), 1)[0]
print(f"log-log slope over the three largest sizes: memory {slope_mem:.2f}, time {slope_time:.2f} "
      f"(quadratic = 2)")
assert abs(slope_mem - 2) < 0.1
# Time on a shared machine is noisy, so the asserts on it are coarse.
if DEVICE == "cpu":
    # over the whole range it grows faster than N (quadratic would be (N_max / N_min)^2; linear,
    # N_max / N_min)
    assert seconds[-1] / seconds[0] > seqlens[-1] / seqlens[0]
else:
    # the launch floor: from the smallest size to the next the time hardly grows ...
    assert step_slopes[0] < 1, f"slope {step_slopes[0]:.2f} at the smallest sizes: no launch floor?"
    # ... and past it, over the largest sizes, the N^2 work sets the pace
    assert slope_time > 1.5, f"slope {slope_time:.2f} over N = {seqlens[-3]}..{seqlens[-1]}"
    floor_ends = next((n for n, p in zip(seqlens[1:], step_slopes) if p > 1.5), seqlens[-1])
    print(f"the time leaves the launch floor ({min(seconds) * 1e3:.2f} ms) by N = {floor_ends}")

fig, ax1 = plt.subplots(figsize=(6.5, 4))
ax1.loglog(seqlens, np.array(total) / 2**20, "o-", color="tab:blue", label="memory allocated")
ax1.set(xlabel="sequence length N (tokens)", ylabel="memory allocated (MiB)",
        title=f"attention_reference on {DEVICE}: d = {head_dim}, one head")
ax2 = ax1.twinx()
ax2.loglog(seqlens, np.array(seconds) * 1e3, "s--", color="tab:red", label="time per call")
ax2.set_ylabel("time per call (ms)")
ref = np.array(seqlens, dtype=float) ** 2
ax2.loglog(seqlens, ref / ref[-1] * seconds[-1] * 1e3, ":", color="gray", label="$\\propto N^2$")
ax1.set_xticks(seqlens, [str(n) for n in seqlens])
ax1.minorticks_off()
lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax1.legend(lines, [ln.get_label() for ln in lines], loc="upper left")
plt.show()

# %% [markdown]
# **Takeaway.** The naive algorithm materialises $S$ and $P$: memory grows as $N^2$ and, for long
# sequences, so does time, because every one of those $N^2$ numbers is written to memory and read
# back. FlashAttention will do the same arithmetic without ever storing them.

# %% [markdown]
# ## 3. The safe softmax
#
# Floating-point numbers have a largest value: `exp` overflows to `inf` once its argument passes
# $\ln(\text{max})$, which is only about 11.1 in float16 and 88.7 in float32 (and bfloat16, which
# shares float32's exponent range).

# %%
for dtype in (torch.float16, torch.bfloat16, torch.float32):
    limit = math.log(torch.finfo(dtype).max)
    below, above = torch.exp(torch.tensor([limit - 0.1, limit + 0.1], dtype=dtype))
    print(f"{str(dtype):>15}: exp overflows past x = {limit:5.2f}: exp({limit - 0.1:.1f}) = "
          f"{below.item():.3g}, exp({limit + 0.1:.1f}) = {above.item()}")
    assert torch.isfinite(below) and torch.isinf(above)

# %%
x = np.linspace(0, 100, 500)
fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.semilogy(x, np.exp(x), color="gray", label="exp(x)")
for dtype, color, name in ((torch.float16, "tab:blue", "float16"),
                           (torch.float32, "tab:orange", "float32 (bfloat16 alike)")):
    largest = torch.finfo(dtype).max
    ax.axhline(largest, color=color, ls="--", label=f"largest {name}: {largest:.3g}")
    ax.axvline(math.log(largest), color=color, ls=":",
               label=f"exp overflows past x = {math.log(largest):.1f}")
ax.set(xlabel="x (a score)", ylabel="exp(x)", title="Where exp leaves the representable range")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# Multiplying numerator and denominator by the same $e^{-c}$ changes nothing:
#
# $$
# \mathrm{softmax}(x)_j = \frac{e^{x_j}}{\sum_k e^{x_k}} = \frac{e^{x_j - c}}{\sum_k e^{x_k - c}}
# \quad\text{for any } c .
# $$
#
# With $c = m = \max_k x_k$ every exponent is $\le 0$, so no term overflows; and the largest term
# is exactly $e^0 = 1$, so the sum lies in $[1, N]$: it can neither overflow nor underflow to zero.
# This is the *safe softmax*; `attention_reference` does it with a detached row max.

# %%
def naive_softmax(x):
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def safe_softmax(x):
    m = x.max(dim=-1, keepdim=True).values
    e = torch.exp(x - m)
    return e / e.sum(dim=-1, keepdim=True)


logits = torch.tensor([10.0, 11.0, 12.0], dtype=torch.float16)
exact = torch.softmax(logits.double(), dim=-1)
print("exact (float64):  ", exact.numpy().round(4))
print("naive (float16):  ", naive_softmax(logits).numpy())
print("safe  (float16):  ", safe_softmax(logits).numpy())
err = (safe_softmax(logits).double() - exact).abs().max().item()
print(f"safe softmax error {err:.1e}")
assert torch.isnan(naive_softmax(logits)).any() and err < 1e-3

# %% [markdown]
# Logits of 12 are not exotic. With queries and keys whose entries have standard deviation
# $\sigma$, the scaled scores have standard deviation $\sigma^2$; large activations (a known
# feature of trained transformers) push row maxima past 11 or 89. Count the rows whose naive
# softmax turns into NaN:

# %%
rows, n_keys, hd = 256, 256, 64
print(f"{'sigma':>6} {'max |score|':>12} {'NaN rows fp16':>14} {'NaN rows fp32':>14} {'safe fp32 err':>14}")
nan_rows = {}
for sigma in (1.0, 2.0, 4.0, 8.0):
    qs, ks = sigma * torch.randn(rows, hd), sigma * torch.randn(n_keys, hd)
    scores = qs @ ks.T / math.sqrt(hd)
    exact = torch.softmax(scores.double(), dim=-1)
    bad16 = torch.isnan(naive_softmax(scores.half())).any(dim=-1).float().mean().item()
    bad32 = torch.isnan(naive_softmax(scores)).any(dim=-1).float().mean().item()
    safe_err = (safe_softmax(scores).double() - exact).abs().max().item()
    nan_rows[sigma] = (bad16, bad32)
    print(f"{sigma:>6} {scores.abs().max():>12.1f} {bad16:>14.0%} {bad32:>14.0%} {safe_err:>14.1e}")
    assert safe_err < 1e-6
assert nan_rows[1.0] == (0.0, 0.0) and nan_rows[4.0][0] == 1.0 and nan_rows[8.0][1] > 0.5

# %% [markdown]
# The opposite failure: when every score is very negative (say $-1000$, as when a softmax sits on
# top of large negative biases), each $e^{x}$ underflows to 0 and the naive softmax is $0/0$; the
# safe one gives the uniform distribution. One row the shift cannot save: a query whose keys are
# all masked has every score $-\infty$, so its max is $-\infty$ and $x - m = -\infty - (-\infty)$
# is NaN. `attention_reference` returns 0 for such a row (a query that sees no key); exercise 3
# asks you to do the same.

# %%
x = torch.full((5,), -1000.0)
print("every score -1000:  naive", naive_softmax(x).numpy(), " safe", safe_softmax(x).numpy())
assert torch.isnan(naive_softmax(x)).all() and torch.allclose(safe_softmax(x), torch.full((5,), 0.2))
x = torch.full((5,), -math.inf)
print("every score -inf:   safe", safe_softmax(x).numpy())
assert torch.isnan(safe_softmax(x)).all()

# %% [markdown]
# **Takeaway.** Subtract the row maximum before `exp`: the result is mathematically unchanged and
# numerically safe. The price is that the maximum of a *whole row* must be known before any
# probability can be computed, which is exactly what notebook 02 runs into and notebook 03 solves.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases (one query and one key, primes, fewer queries than keys) against a float64 reference and
# prints `pass`, or the first wrong element and what it should be; it never stops the notebook,
# and nothing after it uses your function. Stuck? `show_solution("01.attention")` prints one
# answer (the answers live in `exercises/solutions/nb01.py`, out of sight).
#
# **1. Attention with fewer queries than keys.** Write `attention(q, k, v, causal)` in the three
# steps of section 1: `q` is $(N_q, d)$, `k` and `v` are $(N_k, d)$ (float64 tensors), and it
# returns $O$, $(N_q, d)$. For `causal`, build the mask yourself with `torch.arange` (not
# `attention_mask`). It is aligned to the bottom-right corner: query $i$ sits at key position
# $i + N_k - N_q$ and sees the keys $j \le i + N_k - N_q$, so the last query sees every key (in
# decoding, the new tokens come after the cached ones). The check compares with
# `attention_reference` on $N_q < N_k$, where this differs from the top-left mask $j \le i$; when
# causal it keeps $N_q \le N_k$, so every query sees at least one key.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def attention(q, k, v, causal):
    raise NotImplementedError  # your code here: scores, mask, softmax, weighted sum


check("01.attention", attention)

# %% [markdown]
# **2. The bytes of the score matrix.** Write `score_bytes(batch, heads, seqlen_q, seqlen_k,
# dtype)`: the bytes that $S$ of one attention call takes, for a whole batch, each head with its
# own $N_q \times N_k$ matrix, in the torch `dtype` (`dtype.itemsize` is its bytes per element).
# The table of section 2 counts two such matrices, $S$ and $P$. The check compares with
# `torch.empty(...).nbytes` on small sizes and covers four dtypes.

# %%
def score_bytes(batch, heads, seqlen_q, seqlen_k, dtype):
    raise NotImplementedError  # your code here


check("01.score_bytes", score_bytes)

# %% [markdown]
# **3. A softmax for masked rows.** Write `masked_softmax(x)`: the softmax along the last axis of
# a float32 tensor of shape $(\ldots, n)$, any number of leading axes. It must survive scores near
# $1000$ (including a single $1000$ among zeros: is the row mean a safe shift?), rows of $-1000$,
# and keys masked with $-\infty$; a row whose every score is $-\infty$ must come out all zeros, as
# in `attention_reference`, not NaN. The `safe_softmax` of section 3 fails only that last case.

# %%
def masked_softmax(x):
    raise NotImplementedError  # your code here


check("01.masked_softmax", masked_softmax)

# %% [markdown]
# ## References
#
# * Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, "Attention Is All You
#   Need", NeurIPS 2017, arXiv:1706.03762: scaled dot-product attention, $\mathrm{softmax}(QK^\top
#   / \sqrt d)\,V$, and its causal mask.
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   safe softmax and the extra pass over memory its max costs (their online version is notebook 03).
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: the $N \times N$ matrices of standard attention as the
#   bottleneck of memory and time.
# * The bottom-right causal mask for $N_q \ne N_k$: flash-attn 2.1, release notes in the README of
#   github.com/Dao-AILab/flash-attention.

# %% [markdown]
# ## What comes next
#
# The $N \times N$ matrix is the problem; the cure is to never hold more than a small *tile* of it.
# [02 · Tiling](02_tiling.ipynb) shows how matrix products are computed tile by tile in fast
# on-chip memory, and why the softmax, which needs a whole row, seems to forbid it.
