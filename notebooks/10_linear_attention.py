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
# # 10 · Linear attention: a state instead of a KV cache
#
# **What you will learn**
#
# * how replacing softmax's $e^{q \cdot k}$ by a product of features $\phi(q) \cdot \phi(k)$
#   lets the matrix products be regrouped, $(\phi(Q)\phi(K)^\top)V = \phi(Q)(\phi(K)^\top V)$,
#   so the $N \times N$ matrix is never formed;
# * that the causal version is a recurrence on a $d \times d$ **state** $S_t$, and what a decay
#   $g$ (RetNet) and the normaliser add to it;
# * the chunked form that the Triton kernel `kernels.linear_attention` computes (diagonal tiles
#   inside a chunk, everything earlier through the state), checked against the recurrent and the
#   parallel forms, outputs and gradients;
# * the state as a compressed KV cache: generation costs the same at token ten and token ten
#   million, and the memory no longer grows with the context;
# * what it costs in FLOPs against FlashAttention, and at which sequence length the two cross;
# * what it loses: quality on the same training budget, and the ability to recall more than about
#   $d$ key-value pairs exactly.
#
# **Read first:** [01 · Naive attention](01_naive_attention.ipynb) (attention as a weighted
# average), [03 · The online softmax](03_online_softmax.ipynb) (a running state carried over
# blocks, the idea we meet again here) and [09 · Training the mini
# Transformer](09_training_the_mini_transformer.ipynb) (the model we retrain with linear attention).
# All the code is in `kernels/linear_attn.py` (read its docstring beside this notebook) and in the
# model's `Config(attention="linear")`. Without Triton (macOS, Windows) `linear_attention` runs the
# parallel form: every cell still runs, and the few that need the kernel itself say what they skip.
#
# **Words:** [glossary](GLOSSARY.md) (linear attention, KV cache). The exercises at the end check
# code you write: one chunk step of the chunked form, with the normaliser and with a decay.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import contextlib
import io
import math
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.patches import Patch

from kernels import (
    attention_reference,
    linear_attention,
    linear_attention_parallel,
    linear_attention_recurrent,
    linear_attention_step,
    rel_err,
)
from kernels.iocost import flops as softmax_flops
from kernels.linear_attn import DEFAULT_CHUNK, decay_matrix, padded_dim
from minitransformer import GPT, Config, train
from minitransformer.data import Vocab, read_corpus, unigram_entropy
from minitransformer.model import RecurrentState

ROOT = Path(kernels.__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed: its CSV reader comes from the checkout
    sys.path.insert(0, str(ROOT))
from benchmarks.results_csv import read_csv  # noqa: E402  (the format every benchmark writes)

if kernels.HAS_TRITON:  # the kernel's launch configuration (section 6) exists only in Triton
    from kernels.linear_attn import kernel_config

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"  # where the kernels run
SMALL = DEVICE == "cpu"  # a CPU (Triton's interpreter or the plain-PyTorch forms): small sizes
KERNELS = kernels.implementation()  # what flash_attention runs here, in words
if not kernels.HAS_TRITON:
    LINEAR_ATTENTION = "the parallel form (N x N: Triton is not installed)"
else:
    LINEAR_ATTENTION = "the chunked Triton kernel" + (", interpreted" if kernels.INTERPRET else "")
# The CPU tensors here are tiny: one CPU thread is faster than several that wait for each other
# (on a busy 2-core machine, many times faster).
torch.set_num_threads(1)
torch.manual_seed(0)
print(f"device: {DEVICE}, kernels: {KERNELS}; linear_attention runs {LINEAR_ATTENTION}")

# %% [markdown]
# ## 1. The kernel trick
#
# Softmax attention is a weighted average of the values, with weights from a similarity
# $\mathrm{sim}(q, k) = e^{q \cdot k / \sqrt d}$:
#
# $$ o_t = \frac{\sum_s \mathrm{sim}(q_t, k_s)\, v_s}{\sum_s \mathrm{sim}(q_t, k_s)} . $$
#
# Any positive similarity gives a weighted average. Pick one that factorises,
# $\mathrm{sim}(q, k) = \phi(q) \cdot \phi(k)$ for a feature map $\phi$ (Katharopoulos et al.,
# 2020, use $\phi(x) = \mathrm{elu}(x) + 1$, positive everywhere). Then the numerator, for all
# queries at once, is a product of three matrices, and matrix products are associative:
#
# $$ \underbrace{(\phi(Q)\,\phi(K)^\top)}_{N \times N}\,V
#    \;=\; \phi(Q)\,\underbrace{(\phi(K)^\top V)}_{d \times d} . $$
#
# Left to right costs $2N^2d + 2N^2d$ FLOPs and an $N \times N$ intermediate; right to left costs
# $2Nd^2 + 2Nd^2$ and a $d \times d$ one. The denominator is the same with $V$ replaced by a column
# of ones, $\phi(Q)(\phi(K)^\top \mathbf 1)$. (Softmax's $e^{q\cdot k}$ is also a product of
# features, but of infinitely many: random-feature methods such as Performer approximate it with
# a finite $\phi$. This notebook uses the exact, cheap $\phi$ instead, which defines a different
# attention.)

# %%
N, d = 512, 32
q, k, v = (torch.randn(N, d, dtype=torch.float64) for _ in range(3))
phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1  # the feature map of kernels/linear_attn.py, "elu1"
ones = torch.ones(N, 1, dtype=torch.float64)

left = (phi_q @ phi_k.T) @ torch.cat([v, ones], dim=1)  # (N, N) first, then (N, d + 1)
right = phi_q @ (phi_k.T @ torch.cat([v, ones], dim=1))  # (d, d + 1) first
out_left, out_right = left[:, :d] / left[:, d:], right[:, :d] / right[:, d:]
flops_left, flops_right = 2 * N * N * d + 2 * N * N * (d + 1), 2 * N * d * (d + 1) * 2
print(f"(phi(Q) phi(K)^T) V  vs  phi(Q) (phi(K)^T V): relative difference {rel_err(out_right, out_left):.1e}")
print(f"FLOPs: {flops_left:,} left to right, {flops_right:,} right to left ({flops_left / flops_right:.0f}x "
      f"fewer, N / d = {N // d})")
assert rel_err(out_right, out_left) < 1e-14

# %% [markdown]
# It is a different attention, not an approximation of softmax. For one query over 64 keys, the
# weights each key gets:

# %%
n_keys = 64
q1, keys = torch.randn(d, dtype=torch.float64), torch.randn(n_keys, d, dtype=torch.float64)
w_softmax = torch.softmax(keys @ q1 / math.sqrt(d), dim=0)
w_linear = (F.elu(keys) + 1) @ (F.elu(q1) + 1)
w_linear = w_linear / w_linear.sum()


def entropy(w):
    return -(w * w.log()).sum().item()


fig, ax = plt.subplots(figsize=(7.5, 3.2))
order = torch.argsort(w_softmax, descending=True)
ax.bar(np.arange(n_keys) - 0.2, w_softmax[order], width=0.4, label="softmax, $e^{q\\cdot k/\\sqrt{d}}$")
ax.bar(np.arange(n_keys) + 0.2, w_linear[order], width=0.4, label="linear, $\\phi(q)\\cdot\\phi(k)$, elu + 1")
ax.axhline(1 / n_keys, color="gray", ls=":", label="uniform, 1/64")
ax.set(xlabel="key (sorted by its softmax weight)", ylabel="attention weight",
       title="One query, 64 random keys: the weights it gives each key")
ax.legend()
plt.show()
print(f"largest weight: softmax {w_softmax.max():.3f}, linear {w_linear.max():.3f}; entropy (nats): "
      f"softmax {entropy(w_softmax):.2f}, linear {entropy(w_linear):.2f}, uniform {math.log(n_keys):.2f}")
assert entropy(w_linear) > entropy(w_softmax)

# %% [markdown]
# The linear weights are much flatter: a dot product of positive features changes slowly with the
# key, an exponential changes fast. A trained model can sharpen them only so much (section 7).
#
# **Takeaway.** With a similarity that factorises, attention regroups into
# $\phi(Q)(\phi(K)^\top V)$: $O(Nd^2)$ work and a $d \times d$ intermediate instead of
# $O(N^2 d)$ and $N \times N$.

# %% [markdown]
# ## 2. Causal: a running state
#
# A language model needs the causal mask, and a mask sits *between* $\phi(Q)$ and $\phi(K)^\top$:
# $((\phi(Q)\phi(K)^\top) \odot M) V$ does not regroup as it stands. But the mask only says that
# query $t$ sums over $s \le t$, so the sum over keys becomes a **prefix sum**:
#
# $$ S_t = \sum_{s \le t} \phi(k_s)\, v_s^\top = S_{t-1} + \phi(k_t)\, v_t^\top, \qquad
#    z_t = \sum_{s \le t} \phi(k_s) = z_{t-1} + \phi(k_t), \qquad
#    o_t = \frac{\phi(q_t)^\top S_t}{\phi(q_t)^\top z_t} . $$
#
# $S_t$ is a $d \times d$ matrix and $z_t$ a vector: the **state**. Each token adds one outer
# product to it and reads it once, $O(d^2)$ work whatever $t$ is: an RNN. In the code the state is
# stored as one $d \times (d+1)$ matrix, $z$ being the column that a value of $1$ appended to
# every $v_t$ produces.
#
# The package has both forms: `linear_attention_recurrent`, the loop over $t$ carrying $S$, and
# `linear_attention_parallel`, the masked $N \times N$ product (quadratic, but one line and the
# oracle of the tests). In float64 they agree to the last digits:

# %%
B, H, N, d = 2, 3, 100, 16
q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64) for _ in range(3))
for feature_map in ("elu1", None):
    rec, state = linear_attention_recurrent(q, k, v, feature_map=feature_map, return_state=True)
    par = linear_attention_parallel(q, k, v, feature_map=feature_map)
    print(f"feature_map={feature_map!s:>4}: recurrent vs parallel {rel_err(rec, par):.1e}; "
          f"state {tuple(state.shape)}")
    assert rel_err(rec, par) < 1e-13
    assert state.shape == (B, H, d, d + (feature_map is not None))

# %% [markdown]
# `feature_map=None` is the form without $\phi$ and without the normaliser, $o_t = \mathrm{scale}
# \cdot q_t^\top S_t$ (RetNet's, which normalises the output elsewhere in the model). Without a
# normaliser nothing keeps the output's size in check: with no decay $S_t$ is a sum of $t$ terms.
#
# **Takeaway.** Causal linear attention is a linear RNN whose hidden state is a $d \times d$
# matrix; the parallel form and the recurrence compute the same function.

# %% [markdown]
# ## 3. The decay
#
# Every past token weighs the same in $S_t$, however old. RetNet (Sun et al., 2023) multiplies the
# state by a constant $g \in (0, 1]$ at every step, one value per head:
#
# $$ S_t = g\, S_{t-1} + \phi(k_t)\, v_t^\top
#    \quad\Longrightarrow\quad
#    o_t \propto \sum_{s \le t} g^{\,t-s}\, (\phi(q_t)\cdot\phi(k_s))\, v_s . $$
#
# In matrix form, $O = ((\phi(Q)\phi(K)^\top) \odot D)\,V$ with $D_{ts} = g^{t-s}$ for $s \le t$
# and 0 above the diagonal: the causal mask is $D$ with $g = 1$. A token's weight halves every
# $\ln 2 / \ln(1/g)$ steps: 6.6 tokens for $g = 0.9$, 69 for $g = 0.99$. With the normaliser the
# decay also applies to $z_t$, so the output stays an average, now a recency-weighted one.

# %%
g = torch.tensor([0.9, 0.99, 1.0], dtype=torch.float64)  # one decay per head
rec = linear_attention_recurrent(q, k, v, decay=g)
par = linear_attention_parallel(q, k, v, decay=g)
D = decay_matrix(N, g, dtype=torch.float64)  # (heads, N, N)
print(f"with a decay per head {g.tolist()}: recurrent vs parallel {rel_err(rec, par):.1e}")
print(f"D[0, 10, 7] = {D[0, 10, 7]:.4f} = 0.9^3; D[0, 7, 10] = {D[0, 7, 10]:.0f} (the future)")
assert rel_err(rec, par) < 1e-13
assert torch.isclose(D[0, 10, 7], torch.tensor(0.9**3, dtype=torch.float64)) and D[0, 7, 10] == 0
assert torch.equal(D[2], decay_matrix(N, dtype=torch.float64))  # g = 1: the causal mask

# %% [markdown]
# **Takeaway.** The decay is one multiplication of the state per token, and in the parallel form
# a fixed lower-triangular matrix $D$ of powers of $g$.

# %% [markdown]
# ## 4. The chunked form: what the Triton kernel computes
#
# The recurrence does $O(Nd^2)$ work but one token at a time: a GPU needs matrix products. The
# parallel form is all matrix products but $O(N^2 d)$. The chunked form takes the best of both.
# Cut the sequence into chunks of $C$ tokens. For token $t = cC + i$ (chunk $c$, offset $i$), the
# keys split into the earlier chunks, which are summarised by the state $H_c$ left after chunk
# $c - 1$, and the keys of its own chunk:
#
# $$ o_t = g^{\,i+1}\, q_t^\top H_c \;+\; \sum_{j \le i} g^{\,i-j}\,(q_t\cdot k_{cC+j})\, v_{cC+j},
#    \qquad H_{c+1} = g^{C} H_c + \sum_{j < C} g^{\,C-1-j}\, k_{cC+j}\, v_{cC+j}^\top $$
#
# (with $\phi$ applied to $q, k$ beforehand, and the scale left out). Per chunk that is four
# matrix products: the $C \times C$ tile $Q_c K_c^\top$, masked by the diagonal block of $D$; that
# tile times $V_c$; $Q_c H_c$; and the state update $K_c^\top V_c$. The picture, for $N = 48$,
# $C = 16$, $g = 0.9$:

# %%
N_FIG, C_FIG, G_FIG = 48, 16, 0.9
D_fig = decay_matrix(N_FIG, torch.tensor([G_FIG]))[0].numpy()
chunk_of = np.arange(N_FIG) // C_FIG
INTRA, VIA_STATE, ZERO = 2, 1, 0
who = np.where(np.arange(N_FIG)[None, :] > np.arange(N_FIG)[:, None], ZERO,
               np.where(chunk_of[:, None] == chunk_of[None, :], INTRA, VIA_STATE))  # [t, s]

fig, (ax_d, ax_w) = plt.subplots(1, 2, figsize=(11, 4.8))
im = ax_d.imshow(np.where(D_fig > 0, D_fig, np.nan), norm=LogNorm(vmin=G_FIG ** (N_FIG - 1), vmax=1),
                 cmap="viridis")
fig.colorbar(im, ax=ax_d, label="weight $g^{t-s}$ (log scale)")
ax_d.set(xlabel="key position s", ylabel="query position t",
         title=f"The decay matrix D, g = {G_FIG}\n(blank: the future, D = 0)")
cmap = ListedColormap(["white", "#9ecae1", "#3182bd"])
ax_w.imshow(who, cmap=cmap, vmin=0, vmax=2)
for c in range(N_FIG // C_FIG):
    ax_w.text(c * C_FIG + 3, c * C_FIG + 12, f"tile\nchunk {c}", color="white", fontsize=8)
    if c:
        ax_w.text(C_FIG * c / 2 - 6, c * C_FIG + 9, f"via $H_{c}$", fontsize=9)
ax_w.set(xlabel="key position s", ylabel="query position t",
         title=f"Who computes each weight, chunks of C = {C_FIG}")
for ax in (ax_d, ax_w):
    for b in range(C_FIG, N_FIG, C_FIG):
        ax.axhline(b - 0.5, color="k", lw=0.8)
        ax.axvline(b - 0.5, color="k", lw=0.8)
fig.legend(handles=[Patch(color=cmap(2), label="intra-chunk: C x C tile of the parallel form"),
                    Patch(color=cmap(1), label="earlier chunks: through the state H_c (d x d)")],
           loc="lower center", ncol=2)
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()
n_tiles = N_FIG // C_FIG
assert (who == INTRA).sum() == n_tiles * C_FIG * (C_FIG + 1) // 2
assert (who > 0).sum() == N_FIG * (N_FIG + 1) // 2  # every causal pair, computed exactly once

# %% [markdown]
# The light blue region grows as $N^2$, but no one ever computes it entry by entry: it is
# $Q_c H_c$, a $C \times d$ by $d \times d$ product per chunk. Only the dark tiles on the diagonal
# are formed, $N/C$ of them, each $C \times C$.
#
# Now the check. The kernel runs in float32 (compiled on a GPU, in Triton's CPU interpreter
# without one), the oracle is the parallel form in float64, and beside the kernel's error we print
# what the parallel form itself makes in float32: the kernel should be no worse than about twice
# that. $N = 100$ is not a multiple of the chunk, so the last chunk is ragged; the backward pass
# is the kernel run three more times (see the docstring of `kernels/linear_attn.py`), checked
# against autograd through the parallel form. With a GPU, a longer case too: 2,000 tokens (again
# not a multiple of the chunk), head dim 64, the default chunk. (Without Triton, `linear_attention`
# *is* the parallel form, so its errors equal the fp32 column: the cell then checks the public
# function's input checks, dispatch and gradients, not a kernel.)

# %%
shapes = [(2, 2, 100, 32, 32)]  # (batch, heads, seqlen, head_dim, chunk_size)
if not SMALL:  # GPU sizes
    shapes.append((2, 4, 2000, 64, DEFAULT_CHUNK))
print(f"linear_attention runs {LINEAR_ATTENTION}")
KERNEL = "kernel" if kernels.HAS_TRITON else "linear_attention"  # what the first row is
for B, H, N, d, CHUNK in shapes:
    decays = torch.linspace(0.9, 0.99, H, device=DEVICE)  # one per head: 0.9, 0.99 for two heads
    cases = {"elu1, no decay": dict(feature_map="elu1", decay=None),
             "no feature map, decay per head": dict(feature_map=None, decay=decays)}
    for name, opts in cases.items():
        q, k, v, do = (torch.randn(B, H, N, d, device=DEVICE) for _ in range(4))
        results = {}
        for form, fn, dtype in (("kernel", linear_attention, torch.float32),
                                ("parallel fp32", linear_attention_parallel, torch.float32),
                                ("parallel fp64", linear_attention_parallel, torch.float64)):
            decay = None if opts["decay"] is None else opts["decay"].to(dtype)
            extra = dict(chunk_size=CHUNK) if form == "kernel" else {}
            qi, ki, vi = (x.detach().to(dtype).requires_grad_() for x in (q, k, v))  # fresh leaves
            out = fn(qi, ki, vi, decay=decay, feature_map=opts["feature_map"], **extra)
            out.backward(do.to(dtype))
            results[form] = (out, qi.grad, ki.grad, vi.grad)
        print(f"({B}, {H}, {N}, {d}), chunk {CHUNK}, {name}")
        for label, kern, par32, ref in zip(("out", "dq", "dk", "dv"), *results.values()):
            e_kernel, e_torch = rel_err(kern, ref), rel_err(par32, ref)
            print(f"   {label}: {KERNEL} {e_kernel:.1e}, parallel form in fp32 {e_torch:.1e}")
            assert e_kernel <= 2 * e_torch + 1e-6
            if not kernels.HAS_TRITON:  # the public function is the parallel form, exactly
                assert torch.equal(kern, par32)

# %% [markdown]
# And the chunk size is a choice of schedule, not of result (without Triton there are no chunks:
# the size is checked, then unused, and the three lines agree exactly):

# %%
N, d = 100, 32
q, k, v = (torch.randn(1, 2, N, d, device=DEVICE) for _ in range(3))
g = torch.tensor([0.95, 1.0], device=DEVICE)
ref = linear_attention_parallel(q.double(), k.double(), v.double(), decay=g.double(), feature_map=None)
print(f"linear_attention runs {LINEAR_ATTENTION}")
for chunk in (16, 32, 64):
    out = linear_attention(q, k, v, decay=g, feature_map=None, chunk_size=chunk)
    print(f"chunk {chunk:>2}: relative error vs float64 {rel_err(out, ref):.1e}")
    assert rel_err(out, ref) < 1e-5

# %% [markdown]
# **Takeaway.** Recurrent, parallel and chunked are three schedules of one function. The chunked
# one does $O(NCd + Nd^2)$ work in matrix products, carries a $d \times d$ state in fp32 through
# the chunks, and never stores anything of size $N \times N$, or even $N \times C$.

# %% [markdown]
# ## 5. The state is a compressed KV cache
#
# To generate token $t + 1$, softmax attention needs the keys and values of every earlier token:
# the KV cache, $2 \times N \times d$ numbers per head and layer, read in full at every step.
# Linear attention needs only $S_t$ (and $z_t$): $d \times (d + 1)$ numbers, whatever $N$ is. Each
# step is `linear_attention_step`: decay the state, add $\phi(k_t) v_t^\top$, read it with
# $\phi(q_t)$. First the claim: a prompt processed in one go by the chunked kernel, then tokens
# added one by one to its state, give the outputs of one call on the whole sequence.

# %%
B, H, n_prompt, n_new, d = 1, 2, 40, 24, 32
g = torch.tensor([0.9, 0.99], device=DEVICE)
q, k, v = (torch.randn(B, H, n_prompt + n_new, d, device=DEVICE) for _ in range(3))
whole = linear_attention_parallel(q.double(), k.double(), v.double(), decay=g.double())

out_prompt, state = linear_attention(q[:, :, :n_prompt], k[:, :, :n_prompt], v[:, :, :n_prompt],
                                     decay=g, return_state=True)  # the prefill, chunked
outs = [out_prompt]
for t in range(n_prompt, n_prompt + n_new):  # then one token at a time
    o_t, state = linear_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], state, decay=g)
    outs.append(o_t)
generated = torch.cat(outs, dim=2)
print(f"prefill by {LINEAR_ATTENTION}, then {n_new} steps, vs the whole sequence at once: relative error "
      f"{rel_err(generated, whole):.1e}; state {tuple(state.shape)} {state.dtype} after every step")
assert rel_err(generated, whole) < 1e-5 and state.shape == (B, H, d, d + 1)

# %% [markdown]
# The mini Transformer does the same with `Config(attention="linear")`: its `generate` carries a
# `RecurrentState` (one state per layer) instead of a `KVCache`. Sampling with it gives the tokens
# that recomputing the whole sequence at every step gives, and the state does not grow (an
# untrained model is enough to check that; section 7 trains one):

# %%
tiny = dict(vocab_size=40, block_size=32, n_layer=2, n_embd=32, backend="reference")
torch.manual_seed(0)
net_linear = GPT(Config(**tiny, attention="linear")).eval()
net_softmax = GPT(Config(**tiny)).eval()
prompt = torch.randint(0, 40, (1, 5))
cached = net_linear.generate(prompt, 40, temperature=1.0, use_cache=True,
                             generator=torch.Generator().manual_seed(0))
uncached = net_linear.generate(prompt, 40, temperature=1.0, use_cache=False,
                               generator=torch.Generator().manual_seed(0))
assert torch.equal(cached, uncached)


def memory_bytes(net, n_tokens):
    """Bytes of what generation carries after n_tokens tokens: a KV cache or the recurrent state."""
    cache = net.new_cache()
    with torch.no_grad():
        net(torch.randint(0, 40, (1, n_tokens)), cache=cache)
    held = cache.states if isinstance(cache, RecurrentState) else cache.k + cache.v
    return type(cache).__name__, sum(t.nbytes for t in held)


L, C = tiny["n_layer"], tiny["n_embd"]
for n_tokens in (8, 16, 31):
    (kind_s, kv), (kind_l, st) = memory_bytes(net_softmax, n_tokens), memory_bytes(net_linear, n_tokens)
    print(f"after {n_tokens:>2} tokens: {kind_s} {kv:>6,} bytes, {kind_l} {st:>6,} bytes")
    assert kv == 2 * L * n_tokens * C * 4  # K and V, fp32, per layer
    assert st == L * C * (C + 1) * 4  # one (C, C + 1) fp32 state per layer, whatever n_tokens

# %% [markdown]
# (The mini Transformer's softmax cache stops growing at its window of `block_size` tokens; a
# model with full attention over its context keeps every token.) At scale: a model shaped like
# Llama-2-7B (32 layers, 32 heads of 128) keeps a bf16 KV cache; the linear state, kept in fp32
# as the kernel does, is $d(d+1)$ numbers per head and layer:

# %%
LAYERS, HEADS, HEAD_DIM, BYTES_BF16, BYTES_FP32 = 32, 32, 128, 2, 4
Ns = 2.0 ** np.arange(6, 21)
kv_cache = 2 * LAYERS * HEADS * Ns * HEAD_DIM * BYTES_BF16  # K and V, every token
state_bytes = LAYERS * HEADS * HEAD_DIM * (HEAD_DIM + 1) * BYTES_FP32 * np.ones_like(Ns)
n_equal = HEAD_DIM + 1  # 2 N d * 2 bytes = d (d + 1) * 4 bytes
print(f"KV cache at N = {Ns[-1]:,.0f}: {kv_cache[-1] / 2**30:.0f} GiB per sequence; "
      f"linear state: {state_bytes[0] / 2**20:.1f} MiB at any N; equal at N = {n_equal}")
assert np.isclose(2 * n_equal * HEAD_DIM * BYTES_BF16, HEAD_DIM * (HEAD_DIM + 1) * BYTES_FP32)
assert kv_cache[-1] == 512 * 2**30 and state_bytes[0] == 64.5 * 2**20

fig, ax = plt.subplots(figsize=(7, 4.2))
ax.loglog(Ns, kv_cache / 2**20, "o-", label="softmax: KV cache, bf16")
ax.loglog(Ns, state_bytes / 2**20, "s-", label="linear: state $d \\times (d+1)$, fp32")
ax.axvline(n_equal, color="gray", ls=":", label=f"equal at N = {n_equal}")
ax.set_xscale("log", base=2)
ax.set(xlabel="context length N (tokens)", ylabel="memory per sequence (MiB)",
       title=f"What generation keeps: {LAYERS} layers x {HEADS} heads x d = {HEAD_DIM}")
ax.grid(alpha=0.3, which="both")
ax.legend()
plt.show()

# %% [markdown]
# Beyond 129 tokens the state is the smaller, and at a million tokens the cache is 512 GiB
# against 64.5 MiB. Time follows the bytes: each generated token reads the whole KV cache ($4Nd$
# FLOPs per head for $2Nd$ numbers, so decoding is memory-bound, notebook 08), while a step of
# linear attention reads and writes a fixed $d \times (d+1)$ state.
#
# **Takeaway.** The state is a KV cache compressed to a fixed size: $O(1)$ memory and time per
# generated token. The compression is lossy, which section 7 measures.

# %% [markdown]
# ## 6. FLOPs against $N$: where linear attention overtakes FlashAttention
#
# Count the matrix-product FLOPs per token of the forward pass, per head, as `kernels.iocost`
# does (a multiply-add is 2 FLOPs).
#
# **Causal softmax attention.** The query at position $t$ meets $t + 1$ keys: $2(t+1)d$ FLOPs for
# its scores and $2(t+1)d$ for its output, $4(t+1)d$. Averaged over the positions of a sequence
# of length $N$ that is about $4d \cdot N/2 = 2Nd$ per token: the $2N^2 d$ of
# `iocost.flops(N, d, causal=True)` divided by $N$. Per token, it grows with $N$.
#
# **Chunked linear attention.** Read off the kernel's loop: per chunk of $C$ rows, with keys of
# width $d_k$ and values of width $d_v$,
#
# | product | shapes | FLOPs |
# |---|---|---|
# | `s = q @ kt` (the tile) | $[C, d_k] \times [d_k, C]$ | $2C^2 d_k$ |
# | `o = q @ state` | $[C, d_k] \times [d_k, d_v]$ | $2C d_k d_v$ |
# | `o += s @ v` | $[C, C] \times [C, d_v]$ | $2C^2 d_v$ |
# | `state += kt @ v` | $[d_k, C] \times [C, d_v]$ | $2C d_k d_v$ |
#
# so $2C(d_k + d_v) + 4 d_k d_v$ per token: with $d_k = d_v = d$, $\mathbf{4Cd + 4d^2}$, flat in
# $N$. The kernel computes the whole $C \times C$ tile and masks it by multiplying with $D$, so
# the causal half is not saved. The two are equal at
#
# $$ 2Nd = 4Cd + 4d^2 \iff N^* = 2C + 2d , $$
#
# 256 tokens for $d = 64$ with the default $C = 64$. The backward pass is three more runs of the
# same kernel, $3\times$ the forward, against $2.5\times$ for FlashAttention's, so for forward and
# backward $3.5 \cdot 2Nd = 4(4Cd + 4d^2)$, $N^* = 16(C + d)/7$.
#
# The `elu1` form pays for its normaliser: the extra value column makes $d_v = d + 1$, which the
# kernel pads to its next block of columns (a power of two), nearly doubling the value side.
# (Without Triton, `kernel_config` cannot be asked for the block: the cell takes all the value
# columns as one padded block, as the interpreter's configuration does.)

# %%
def linear_flops_per_token(d, chunk=DEFAULT_CHUNK, dim_v=None):
    """Matmul FLOPs per token of the chunked kernel's forward, at the widths its tiles really have."""
    dim_v = d if dim_v is None else dim_v
    # value columns per program: the launch configuration's, or without Triton all of them, padded
    block_v = kernel_config(d, dim_v)["BLOCK_V"] if kernels.HAS_TRITON else padded_dim(dim_v)
    d_k = padded_dim(d)
    d_v = math.ceil(dim_v / block_v) * block_v  # value columns, in whole blocks
    return 2 * chunk * (d_k + d_v) + 4 * d_k * d_v


if not kernels.HAS_TRITON:
    print("Triton is not installed: no kernel_config to ask, so each tile's value columns are counted "
          "as one block padded to a power of two (the interpreter's configuration)")


def softmax_flops_per_token(n, d):
    return softmax_flops(n, d, causal=True) / n  # 2 N d


Ns = 2.0 ** np.arange(6, 15)
fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), sharey=True)
crossings = {}
for ax, d in zip(axes, (64, 128)):
    soft = np.array([softmax_flops_per_token(n, d) for n in Ns])
    lin = linear_flops_per_token(d) * np.ones_like(Ns)
    lin_elu1 = linear_flops_per_token(d, dim_v=d + 1) * np.ones_like(Ns)
    n_star = 2 * DEFAULT_CHUNK + 2 * d
    n_star_bwd = 16 * (DEFAULT_CHUNK + d) / 7
    crossings[d] = (n_star, n_star_bwd, lin_elu1[0] / lin[0])
    ax.loglog(Ns, soft, "o-", label="causal softmax (FlashAttention): $2Nd$")
    ax.loglog(Ns, lin, "s-", label=f"chunked linear, C = {DEFAULT_CHUNK}: $4Cd + 4d^2$")
    ax.loglog(Ns, lin_elu1, "s--", label="chunked linear, elu1 (padded value columns)")
    ax.axvline(n_star, color="gray", ls=":", label=f"equal at N* = 2C + 2d = {n_star}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="sequence length N (tokens)", title=f"forward FLOPs per token and head, d = {d}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    # the crossing, found on the curves themselves
    fine = np.arange(16, 4096)
    first = fine[np.array([softmax_flops_per_token(n, d) for n in fine]) >= linear_flops_per_token(d)][0]
    assert first == n_star
axes[0].set_ylabel("FLOPs per token (matrix products)")
plt.show()
for d, (n_star, n_star_bwd, elu1_ratio) in crossings.items():
    print(f"d = {d:>3}: forward N* = {n_star}; forward + backward N* = {n_star_bwd:.0f}; "
          f"elu1 costs {elu1_ratio:.2f}x the plain form per token")
assert crossings[64][:2] == (256, 16 * 128 / 7) and crossings[128][0] == 384
assert 1.5 < crossings[64][2] < 2
fewer = softmax_flops_per_token(16384, 64) / linear_flops_per_token(64)
print(f"N = 16384, d = 64: softmax does {fewer:.0f}x the FLOPs per token of chunked linear attention")
assert fewer == 64

# %% [markdown]
# So by FLOPs, linear attention wins from a few hundred tokens: at $N = 16\,384$ and $d = 64$ it
# does 64 times less work. FLOPs are not time, though. FlashAttention's work is large square
# matrix products that run at a large fraction of the tensor cores' peak; the linear kernel walks
# its chunks one after the other inside a program (one program per batch x head x block of value
# columns), keeps an fp32 state, and with few sequences in a batch leaves multiprocessors idle
# (see the end of the kernel's docstring). Where the *times* cross is a measurement.
#
# ### Measured on a GPU
#
# `benchmarks/bench_linear.py` times both kernels on a GPU, at a fixed number of tokens per
# batch, and wrote `benchmarks/results/h100/linear_vs_softmax.csv` on an H100 (providers `flash`,
# `sdpa-flash`, `linear`, `linear-elu1`; a median time per call `ms` and per token
# `us_per_token` for each `seqlen`, `head_dim` and `mode`). The file is committed, so the cell
# below plots it on any machine.

# %%
MEASURED = ROOT / "benchmarks" / "results" / "h100" / "linear_vs_softmax.csv"

meta, rows, _ = read_csv(MEASURED)
meta = ", ".join(f"{k}={v}" for k, v in meta.items())  # device, date, versions
print(f"{MEASURED.relative_to(ROOT)}: {len(rows)} rows; {meta}")
head_dims = sorted({int(r["head_dim"]) for r in rows})
modes = [m for m in ("fwd", "fwd_bwd") if any(r["mode"] == m for r in rows)]
fig, axes = plt.subplots(len(head_dims), len(modes), figsize=(6 * len(modes), 4 * len(head_dims)),
                         squeeze=False)
for i, hd in enumerate(head_dims):
    for j, mode in enumerate(modes):
        ax = axes[i][j]
        for provider in dict.fromkeys(r["provider"] for r in rows):
            pts = sorted((int(r["seqlen"]), float(r["us_per_token"])) for r in rows
                         if (r["provider"], int(r["head_dim"]), r["mode"]) == (provider, hd, mode))
            if pts:
                ax.loglog(*zip(*pts), "o-", label=provider)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="sequence length N (batch x N fixed)", ylabel="time per token (us, median)",
               title=f"{mode}, head_dim {hd}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
fig.suptitle(f"measured: {meta}", fontsize=9)
fig.tight_layout()
plt.show()

def ms(provider, hd, n, mode="fwd"):
    return next(float(r["ms"]) for r in rows if (r["provider"], int(r["head_dim"]), int(r["seqlen"]),
                                                 r["mode"]) == (provider, hd, n, mode))

n_max = max(int(r["seqlen"]) for r in rows)
for hd in head_dims:
    ns = sorted({int(r["seqlen"]) for r in rows if int(r["head_dim"]) == hd})
    first = next((n for n in ns if ms("linear", hd, n) <= ms("flash", hd, n)), None)
    print(f"head_dim {hd}: linear no slower than flash from N = {first} on (FLOP model: "
          f"N* = {2 * DEFAULT_CHUNK + 2 * hd}); at N = {n_max:,}: flash / linear = "
          f"{ms('flash', hd, n_max) / ms('linear', hd, n_max):.1f}x forward, "
          f"{ms('flash', hd, n_max, 'fwd_bwd') / ms('linear', hd, n_max, 'fwd_bwd'):.1f}x fwd+bwd")
    # the claim of this section, checked on the measurement: at long N linear attention wins
    assert ms("linear", hd, n_max) < ms("flash", hd, n_max)
    assert ms("linear", hd, n_max, "fwd_bwd") < ms("flash", hd, n_max, "fwd_bwd")

# %% [markdown]
# With a GPU in this session (not in the interpreter), the cell below also times a few sizes
# live, forward only, at a fixed number of tokens: FlashAttention, causal, against the linear
# kernel in its RetNet form (no feature map, a decay), and checks the claim of this section on
# this GPU: at the longest sequence linear attention is the faster. On a CPU it times nothing (the
# interpreter's times would say nothing about a GPU); the claim was checked above on the file.
# Without Triton it times nothing either: there is no chunked kernel to time.

# %%
if DEVICE == "cuda" and kernels.HAS_TRITON:
    from functools import partial

    from triton.testing import do_bench

    from kernels import flash_attention

    TOKENS, LIVE_HEADS, LIVE_D = 65536, 4, 64  # as benchmarks/bench_linear.py
    g_live = 0.99  # one float for every head: a tensor's values would be checked on the host, a sync per call
    print(f"{torch.cuda.get_device_name()}, bf16, d = {LIVE_D}, {LIVE_HEADS} heads, "
          f"{TOKENS:,} tokens per call")
    for n in (512, 2048, 8192, 32768):
        q, k, v = (torch.randn(TOKENS // n, LIVE_HEADS, n, LIVE_D, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        with torch.no_grad():  # medians after do_bench's warm-up
            t_flash = do_bench(partial(flash_attention, q, k, v, causal=True), return_mode="median")
            t_linear = do_bench(partial(linear_attention, q, k, v, decay=g_live, feature_map=None),
                                return_mode="median")
        print(f"N = {n:>6}: flash {t_flash:.3f} ms, linear {t_linear:.3f} ms, "
              f"flash / linear {t_flash / t_linear:.2f}")
    assert t_linear < t_flash  # at the longest N, measured here: linear attention wins
elif DEVICE == "cuda":
    print("Triton is not installed: nothing timed (the chunked kernel and do_bench are Triton's); "
          "the claim was checked above on the file")
else:
    print("no GPU here: nothing timed")

# %% [markdown]
# **Takeaway.** Per token, causal softmax attention costs $2Nd$ FLOPs and chunked linear attention
# $4Cd + 4d^2$: equal at $N^* = 2C + 2d$, a few hundred tokens. The clock agrees in kind but not in
# degree: on the H100, forward, linear attention was already the faster at the shortest length
# measured (512 tokens) for head dim 64, but for head dim 128 the crossover came only at 2,048
# tokens, later than $N^* = 384$: our flash kernel runs its matmuls at a far higher fraction of
# the tensor cores' peak than the linear kernel, whose programs walk their chunks one after
# another and multiply by an fp32 state. At 64k tokens linear attention was 3.6x (d = 64) and
# 1.9x (d = 128) faster forward.

# %% [markdown]
# ## 7. What linear attention loses
#
# ### (a) Quality on the same budget
#
# Train the mini Transformer of notebook 09 twice from the same seed on the same batches, once
# with softmax attention and once with `--attention linear` (elu1 features, the normaliser, the
# model's default decay `Config.decay`), everything else equal: 2 layers of width 48,
# context 64, 250 steps, on the first 300,000 characters of Python's standard library. Both train
# through the `reference` backend (plain PyTorch, fast on a CPU; for linear attention that is the
# parallel form). Then once more with another seed, to see how much of the gap is luck. The runs
# stay on the CPU on every machine, so a GPU reader sees the same numbers.

# %%
MAX_CHARS = 300_000
sizes = ["--n-layer", "2", "--n-embd", "48", "--block-size", "64", "--batch-size", "16", "--steps", "250",
         "--warmup", "20", "--eval-interval", "25", "--eval-batches", "8", "--max-chars", str(MAX_CHARS),
         "--backend", "reference", "--device", "cpu", "--sample-chars", "0"]
workdir = Path(tempfile.mkdtemp())
print(f"linear attention with the model's default decay g = {Config.decay}")
histories = {}
for seed in (0, 1):
    for attention in ("softmax", "linear"):
        args = [*sizes, "--attention", attention, "--seed", str(seed),
                "--out", str(workdir / f"{attention}{seed}")]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            histories[attention, seed] = train.main(args)

text, _ = read_corpus(None, MAX_CHARS)
vocab = Vocab.from_text(text)
unigram = unigram_entropy(vocab.encode(text), vocab.size)  # the best loss with no context at all
val = {key: [(r["step"], r["val_loss"]) for r in h if r["val_loss"] != ""] for key, h in histories.items()}

fig, ax = plt.subplots(figsize=(7, 4.2))
for (attention, seed), pts in val.items():
    ax.plot(*zip(*pts), "o-" if seed == 0 else "x--", alpha=1.0 if seed == 0 else 0.5,
            color="tab:blue" if attention == "softmax" else "tab:orange", label=f"{attention}, seed {seed}")
ax.axhline(unigram, color="gray", ls=":", label=f"unigram entropy of the corpus ({unigram:.2f})")
ax.set(xlabel="optimizer step", ylabel="validation loss (nats / character)",
       title="Mini Transformer, same budget: softmax vs linear attention")
ax.legend()
plt.show()

final = {key: pts[-1][1] for key, pts in val.items()}
for seed in (0, 1):
    gap = final["linear", seed] - final["softmax", seed]
    print(f"seed {seed}: final validation loss softmax {final['softmax', seed]:.3f}, linear "
          f"{final['linear', seed]:.3f}; linear - softmax = {gap:+.3f} nats/char")
spread = {a: abs(final[a, 0] - final[a, 1]) for a in ("softmax", "linear")}
print(f"seed-to-seed spread of the final loss: softmax {spread['softmax']:.3f}, "
      f"linear {spread['linear']:.3f}")
assert all(loss < unigram - 0.5 for loss in final.values())  # both learn far more than letter frequencies
# Which ends lower: softmax, on each seed. The gap (about 0.1 nats here) was positive in every run
# we tried (seeds 0 to 2, 200 to 300 steps); a longer run or another decay can change its size.
assert all(final["linear", seed] > final["softmax", seed] for seed in (0, 1))
assert min(final["linear", s] - final["softmax", s] for s in (0, 1)) > max(spread.values())  # beyond luck

# %% [markdown]
# Both models learn, far below the unigram baseline. On this budget softmax attention ends lower
# on both seeds, by more than the seed-to-seed spread; still, this is one tiny model, 250 steps
# and one decay, so read the gap as a direction, not a measurement of linear attention at large.
# Why softmax is ahead is no mystery: a single head of elu1 features gives flat weights
# (section 1), and the decay imposes a fixed recency profile where softmax can look back sharply
# at the one character that matters (the matching bracket, the name defined ten characters ago).
# Larger linear-attention models close much of the gap with many heads, learned or
# data-dependent decays (gated linear attention, Mamba-2) and better update rules (DeltaNet);
# none of that is in this repository.
#
# ### (b) Recall: how many pairs fit in a $d \times d$ state
#
# No training needed for this one. Write $n$ key-value pairs into the state,
# $S = \sum_i k_i v_i^\top$, then read it with each key: $k_j^\top S = \sum_i (k_j\cdot k_i)\, v_i$.
# That is $v_j$ plus **crosstalk** from every other pair, which vanishes only if the keys are
# orthogonal, and at most $d$ keys of dimension $d$ can be. Softmax attention over the same pairs
# weighs them by $e^{\beta\, k_j\cdot k_i}$: with sharp keys (a large $\beta$, as trained models
# learn) the matching pair takes all the weight, whatever $n$ is; it keeps every pair, after all.
#
# We measure the relative error $\|\hat V - V\|/\|V\|$ of reading all $n$ values back (1 means
# nothing retrieved) for $d = 32$, over 8 draws (one norm over all of them):
#
# * **linear, random unit keys**: $S$ from the package (`feature_map=None`, no decay, scale 1);
#   the crosstalk predicts an error of about $\sqrt{(n-1)/d}$;
# * **linear, keys as orthogonal as possible**: orthonormal while $n \le d$ (exact recall), a
#   tight frame beyond (rows of an $n \times d$ matrix with orthonormal columns, scaled to unit
#   norm on average): error exactly 0 up to $n = d$, then about $\sqrt{n/d - 1}$;
# * **linear, elu1**: the model's form, random keys through $\phi$ with the normaliser;
# * **the best any $d \times d$ state can do** when it is read as $k_j^\top S$: the least-squares
#   $S = K^+ V$ (the target of DeltaNet's delta rule). Each column of $KS$ lies in the column
#   space of $K$, $d$ dimensions out of $n$, so once $n > d$ the error is about $\sqrt{1 - d/n}$
#   for random values;
# * **softmax**, random unit keys, $\beta = 20$ (`attention_reference` with `softmax_scale=20`).

# %%
D_REC, DRAWS, BETA = 32, 8, 20.0
gen = torch.Generator().manual_seed(0)


def random_keys(n):
    return F.normalize(torch.randn(DRAWS, 1, n, D_REC, generator=gen, dtype=torch.float64), dim=-1)


def orthogonal_keys(n):
    """Orthonormal rows while n <= d; beyond, a tight frame: K^T K = (n / d) I."""
    if n <= D_REC:
        basis, _ = torch.linalg.qr(torch.randn(DRAWS, 1, D_REC, n, generator=gen, dtype=torch.float64))
        return basis.transpose(-2, -1)  # (DRAWS, 1, n, d), orthonormal rows
    basis, _ = torch.linalg.qr(torch.randn(DRAWS, 1, n, D_REC, generator=gen, dtype=torch.float64))
    return basis * math.sqrt(n / D_REC)  # orthonormal columns, rows of unit norm on average


def recall_linear(keys, values, feature_map=None):
    """Write the pairs into the state with the package, read it back with the keys."""
    _, state = linear_attention_parallel(keys, keys, values, feature_map=feature_map, scale=1.0,
                                         return_state=True)  # (DRAWS, 1, d, d [+ 1])
    if feature_map is None:
        return keys @ state  # k_j^T S
    read = (F.elu(keys) + 1) @ state  # phi(k_j)^T [S, z]
    return read[..., :-1] / read[..., -1:]


ns = [2, 4, 8, 16, 24, 32, 40, 48, 64, 96, 128, 192, 256]
errors = {name: [] for name in ("linear, random keys", "linear, orthogonal keys", "linear, elu1",
                                "best d x d state (least squares)", f"softmax, beta = {BETA:.0f}")}
for n in ns:
    values = torch.randn(DRAWS, 1, n, D_REC, generator=gen, dtype=torch.float64)
    keys, orth = random_keys(n), orthogonal_keys(n)
    best = keys @ torch.linalg.lstsq(keys, values).solution
    soft = attention_reference(keys, keys, values, softmax_scale=BETA)
    for name, out in zip(errors, (recall_linear(keys, values), recall_linear(orth, values),
                                  recall_linear(keys, values, "elu1"), best, soft)):
        errors[name].append(rel_err(out, values))

fig, ax = plt.subplots(figsize=(7.5, 4.5))
for (name, errs), style in zip(errors.items(), ("o-", "s-", "v-", "k--", "^-")):
    ax.plot(ns, errs, style, label=name)
ax.axvline(D_REC, color="gray", ls=":", label=f"n = head_dim = {D_REC}")
ax.set_xscale("log", base=2)
ax.set(xlabel="key-value pairs written n", ylabel="relative error of the values read back",
       title=f"Associative recall, head_dim {D_REC}, no training", ylim=(-0.05, 3.0))
ax.legend(fontsize=8)
plt.show()

err = {name: dict(zip(ns, errs)) for name, errs in errors.items()}
orth_err, best_err = err["linear, orthogonal keys"], err["best d x d state (least squares)"]
soft_err = err[f"softmax, beta = {BETA:.0f}"]
print(f"{'n':>4}" + "".join(f"{name[:24]:>26}" for name in errors))
for i, n in enumerate(ns):
    print(f"{n:>4}" + "".join(f"{errs[i]:>26.3f}" for errs in errors.values()))
below = [n for n in ns if n <= D_REC]
above = [n for n in ns if n > D_REC]
assert max(orth_err[n] for n in below) < 1e-12 and max(best_err[n] for n in below) < 1e-12  # exact up to d
assert all(orth_err[a] < orth_err[b] for a, b in zip(above, above[1:]))  # then it grows with n
assert orth_err[2 * D_REC] > 0.8 and best_err[2 * D_REC] > 0.6  # theory: 1 and 0.71 at n = 2d
assert all(best_err[n] > 0.9 * math.sqrt(1 - D_REC / n) for n in above)
assert all(abs(err["linear, random keys"][n] / math.sqrt((n - 1) / D_REC) - 1) < 0.15 for n in ns if n >= 8)
assert max(soft_err.values()) < 1e-3  # softmax stays near zero at every n

# %% [markdown]
# The kink is at $n = d$ exactly. Up to $d$ pairs, a linear-attention state can hold them
# perfectly if the keys are orthogonal; beyond, no $d \times d$ state read by a product with the
# key, however it is written, can hold them all: the best one (dashed) is already at 0.71 for $2d$
# pairs and tends to 1. Random keys are worse from the start (the crosstalk grows as
# $\sqrt{n/d}$), and the elu1 features, all positive and so never orthogonal, barely recall
# anything: the read-out is close to the mean of all the values. Softmax attention over the same
# pairs is exact to three decimals at every $n$; its memory is the KV cache, which grows with
# $n$. That is the trade: a fixed-size state has a fixed capacity.
#
# **Takeaway.** Linear attention compresses the past into $d^2$ numbers. On a small training budget
# that cost some loss here; on recall it costs exactness as soon as more than $d$ things must be
# remembered: one reason why hybrid models keep a few softmax layers.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases against a reference and prints `pass`, or the first wrong case and what it should be; it
# never stops the notebook, and the rest of the notebook does not use your function. Stuck?
# `show_solution("10.chunk_step")` prints one answer (the answers live in
# `exercises/solutions/nb10.py`, out of sight).
#
# Both exercises are one iteration of the kernel's loop over chunks, in PyTorch on one head: what
# the earlier chunks left in the state comes in, one chunk of tokens is processed (its own keys
# through a causal $C \times C$ tile, the earlier ones through the state), and the state goes out
# for the next chunk. The check cuts a sequence into chunks of ragged sizes (1 to 13 tokens,
# including a single-token chunk), carries *your* state from one call to the next, and compares
# every chunk's outputs and state with the package's recurrence (`linear_attention_recurrent`,
# section 2) in float64.
#
# **1. A chunk with the normaliser.** The `elu1` form without decay. Write `chunk_step(q, k, v,
# S, z)`: `q`, `k` `(C, d)` are already feature-mapped ($\phi(q_t)$, $\phi(k_t)$), `v` `(C, d)`;
# `S` `(d, d)` is $\sum_s \phi(k_s) v_s^\top$ and `z` `(d,)` is $\sum_s \phi(k_s)$ over every token of
# the earlier chunks (zeros before the first). Return `(out, S, z)`: `out` `(C, d)` with row $i$
# equal to $o_t$ of section 2 (numerator over denominator, every key up to and including token
# $t$ counted once), and the state after the chunk's last token. Row $i$ must not see the keys
# after it in its own chunk.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def chunk_step(q, k, v, S, z):
    raise NotImplementedError  # your code here


check("10.chunk_step", chunk_step)

# %% [markdown]
# **2. A chunk with a decay.** The kernel's core of section 4: no feature map and no normaliser,
# a decay `g` (a float in (0, 1]) and a `scale`. Write `chunk_step_decay(q, k, v, H, g, scale)`:
# `q`, `k`, `v` `(C, d)` one chunk, `H` `(d, d)` the state after the previous chunk's last token.
# Return `(out, H)`: `out` `(C, d)`, row $i$ being
# $\mathrm{scale}\,(g^{i+1} q_i^\top H + \sum_{j \le i} g^{i-j} (q_i \cdot k_j)\, v_j)$, and the
# state after this chunk's last token. The last chunk of a sequence can be shorter than the
# others: use the chunk's own length `C = len(q)`. The check uses `g` = 1, 0.9 and 0.5.

# %%
def chunk_step_decay(q, k, v, H, g, scale):
    raise NotImplementedError  # your code here


check("10.chunk_step_decay", chunk_step_decay)

# %% [markdown]
# ## References
#
# * Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast Autoregressive Transformers
#   with Linear Attention", ICML 2020, arXiv:2006.16236: the feature map $\mathrm{elu}(x) + 1$, the
#   normaliser, and causal linear attention as a recurrence (sections 1 and 2).
# * Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei, "Retentive Network: A Successor to Transformer for
#   Large Language Models", 2023, arXiv:2307.08621: the decay per head and the chunkwise form
#   (sections 3 and 4).
# * Choromanski et al., "Rethinking Attention with Performers", ICLR 2021, arXiv:2009.14794: random
#   features that approximate softmax's kernel (section 1).
# * Yang, Wang, Shen, Panda, Kim, "Gated Linear Attention Transformers with Hardware-Efficient
#   Training", ICML 2024, arXiv:2312.06635: chunked linear attention on tensor cores, and
#   data-dependent decays (sections 4 and 7).
# * Schlag, Irie, Schmidhuber, "Linear Transformers Are Secretly Fast Weight Programmers", ICML
#   2021, arXiv:2102.11174: the state's limited capacity and the delta rule (section 7).
# * Dao, Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms Through Structured
#   State Space Duality", ICML 2024, arXiv:2405.21060: Mamba-2 (section 7).
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135, and Dao, "FlashAttention-2", 2023, arXiv:2307.08691: the
#   softmax kernel compared against in section 6.

# %% [markdown]
# ## What comes next
#
# Linear attention avoids the $N^2$ by changing the function; [11 · Beyond one
# GPU](11_beyond_one_gpu.ipynb) keeps exact softmax attention and spreads the sequence over
# several devices instead: ring attention, built on the same log-sum-exp merge as notebook 03, and
# data-parallel training of the mini Transformer.
