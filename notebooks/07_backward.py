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
# # 07 · The backward pass: recompute, don't store
#
# **What you will learn**
#
# * why autograd on naive attention keeps the $N \times N$ probabilities $P$ for the backward pass,
#   and why that is exactly what FlashAttention must avoid (we measure what autograd saves);
# * the gradient formulas, including the identity $\delta_i = \sum_j P_{ij}\, dP_{ij} =
#   \mathrm{rowsum}(dO \circ O)_i$ that removes the need for a row of $dP$;
# * how the forward's log-sum-exp lets the backward recompute any tile of $P$ with one
#   exponential;
# * the three Triton kernels of the backward, read against the formulas, and a gradient check
#   against autograd of naive attention in float64.
#
# **Read first:** [05 · The forward pass](05_flash_attention_forward.ipynb) (the kernel's layout)
# and [06 · The IO model](06_io_cost_model.ipynb) (why bytes matter).
#
# Without Triton (macOS, Windows), the kernels' source is still shown, and `flash_attention` runs
# the plain-PyTorch twin of `kernels/flash_torch.py` (the same backward, recomputing $P$ from the
# lse) through the same checks.
#
# **Words:** [glossary](GLOSSARY.md) (lse, delta, recomputation). The exercises at the end check
# code you write: the gradients of one tile, then of a whole head.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import math
import re

import matplotlib.pyplot as plt
import numpy as np
import torch

from kernels import attention_reference, flash_attention
from kernels.iocost import flash2_io, simulate_flash2, standard_attention_io
from kernels.source import show_source, source_lines

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # small sizes: the interpreter, or the twin on a CPU
RUNS = kernels.implementation()  # what flash_attention runs here, in words
torch.manual_seed(0)
rng = np.random.default_rng(0)
print(f"device: {DEVICE}, kernels: {RUNS}")

# %% [markdown]
# ## 1. What the backward pass needs, and what autograd keeps
#
# Training needs $dQ, dK, dV$ given $dO = \partial L / \partial O$. Every formula below involves
# $P$, so autograd, differentiating naive attention step by step, **saves** $P$ (and more $N
# \times N$ tensors) during the forward pass, to use them in the backward. PyTorch lets us watch
# what is saved: `saved_tensors_hooks` calls a function on every tensor autograd stores. We count
# the bytes of distinct storages, leaving out $Q, K, V$ themselves (they exist anyway).

# %%
def saved_bytes(fn, q, k, v, **kw):
    """Bytes autograd saves for the backward of fn(q, k, v), beyond the inputs; and the largest tensor."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(q, k, v, **kw)
    for x in (q, k, v):
        storages.pop(x.untyped_storage().data_ptr(), None)
    return sum(storages.values()), max(storages.values())


d = 64
lengths = [64, 128, 256]
measured = {}
print(f"flash_attention: {RUNS}")
for n in lengths:
    q, k, v = (torch.randn(1, 1, n, d, device=DEVICE, requires_grad=True) for _ in range(3))
    measured[n] = (saved_bytes(attention_reference, q, k, v, causal=True),
                   saved_bytes(flash_attention, q, k, v, causal=True))
    (ref_total, ref_max), (fl_total, fl_max) = measured[n]
    print(f"N = {n:>3}: naive saves {ref_total / 1024:7.1f} KiB (largest {ref_max / 1024:6.1f} KiB = "
          f"{ref_max / (4 * n * n):.0f} x N^2 floats); flash saves {fl_total / 1024:5.1f} KiB")
    assert ref_max >= 4 * n * n and ref_total >= 3 * 4 * n * n  # at least three N x N matrices
    assert fl_total == 4 * (n * d + n)  # O and lse, nothing else

# %% [markdown]
# FlashAttention saves the output $O$ ($N d$ numbers) and one log-sum-exp per row ($N$ numbers),
# exactly; naive attention more than three $N \times N$ matrices. Extrapolated to a model (32 heads,
# bf16 $Q, K, V, O$) and counting only two of those matrices, $S$ and $P$, one layer at 32k tokens
# no longer fits in an H100's 80 GB, while $O$ and the lse take a fraction of a GB (the line below
# the figure prints both); and the backward's HBM traffic (from the IO model of notebook 06)
# follows the same pattern.

# %%
Ns = 2 ** np.arange(8, 17)
heads = 32
# S and P, two N x N matrices per head in bf16: a lower bound (section 1 measured at least three)
naive_saved = heads * 2 * Ns.astype(float) ** 2 * 2
p_alone = heads * Ns.astype(float) ** 2 * 2  # P alone, bf16
flash_saved = heads * (Ns * d * 2 + Ns * 4.0)  # O in bf16, lse in float32
std_bwd = [standard_attention_io(int(n), d, backward=True).bytes(2) for n in Ns]
fa2_bwd = [flash2_io(int(n), d, block_m=64, block_n=64, backward=True).bytes(2) for n in Ns]

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
ax1.loglog(Ns, naive_saved, "o-", label="naive: S and P (2 N^2 per head)")
ax1.loglog(Ns, flash_saved, "^-", label="FlashAttention: O and lse")
ax1.axhline(80e9, color="gray", ls="--", label="H100 memory (80 GB)")
ax1.set(xlabel="sequence length N (tokens)", ylabel="bytes saved for backward (one layer)",
        title=f"Activation memory, {heads} heads, d = {d}, bf16")
ax2.loglog(Ns, std_bwd, "o-", label="standard attention backward")
ax2.loglog(Ns, fa2_bwd, "^-", label="FlashAttention-2 backward, 64 x 64 blocks")
ax2.set(xlabel="sequence length N (tokens)", ylabel="bytes moved per (batch, head)",
        title=f"Backward HBM traffic (IO model), d = {d}")
for ax in (ax1, ax2):
    ax.set_xticks(Ns[::2], [str(n) for n in Ns[::2]])
    ax.minorticks_off()
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
at = Ns == 32768
print(f"one layer at N = 32768: S and P {naive_saved[at][0] / 1e9:.1f} GB "
      f"(P alone {p_alone[at][0] / 1e9:.1f} GB); O and lse {flash_saved[at][0] / 1e9:.2f} GB")
assert all(a < b for a, b in zip(fa2_bwd, std_bwd))
assert naive_saved[at][0] > 80e9 > flash_saved[-1]  # S and P of one layer outgrow an H100 at 32k

# %% [markdown]
# **Takeaway.** Autograd through naive attention stores $O(N^2)$ activations per head; the
# FlashAttention forward stores $O(Nd)$. The backward has to make do with $O$ and the
# log-sum-exp.

# %% [markdown]
# ## 2. The gradient formulas
#
# Forward: $S = c\,QK^\top$ (with $c = 1/\sqrt d$), $P = \mathrm{softmax}(S)$ row-wise, $O = PV$.
# Backward, by the chain rule, one matrix product at a time:
#
# $$ dV = P^\top dO, \qquad dP = dO\, V^\top, \qquad dS_{ij} = P_{ij}\,(dP_{ij} - \delta_i),
#    \qquad dQ = c\, dS\, K, \qquad dK = c\, dS^\top Q . $$
#
# The softmax's Jacobian brings in $\delta_i = \sum_j P_{ij}\, dP_{ij}$, a sum over a whole row of
# $dP$: the same obstacle as the forward's row sum. But it simplifies:
#
# $$ \delta_i = \sum_j P_{ij}\, (dO_i \cdot V_j) = dO_i \cdot \Big(\sum_j P_{ij} V_j\Big)
#    = dO_i \cdot O_i . $$
#
# So $\delta = \mathrm{rowsum}(dO \circ O)$ costs $O(Nd)$ and can be computed **before** the tiled
# loop, from the forward's output. Check both, against autograd, in float64:

# %%
N, d = 12, 8
c = 1 / math.sqrt(d)
q, k, v = (torch.randn(N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
dO = torch.randn(N, d, dtype=torch.float64)

S = c * q @ k.T
P = torch.softmax(S, dim=-1)
O = P @ v
dV = P.T @ dO
dP = dO @ v.T
delta = (dO * O).sum(dim=-1, keepdim=True)  # rowsum(dO * O)
dS = P * (dP - delta)
dQ, dK = c * dS @ k, c * dS.T @ q

auto = torch.autograd.grad(O, (q, k, v), dO)
errs = [(a - b).abs().max().item() for a, b in zip((dQ, dK, dV), auto)]
delta_err = (delta - (P * dP).sum(dim=-1, keepdim=True)).abs().max().item()
print(f"hand-written vs autograd: dQ {errs[0]:.1e}, dK {errs[1]:.1e}, dV {errs[2]:.1e}; "
      f"rowsum(dO*O) vs rowsum(P*dP): {delta_err:.1e}")
assert max(errs) < 1e-13 and delta_err < 1e-13

# %% [markdown]
# ## 3. Recomputing $P$ from the log-sum-exp
#
# The forward saved $\mathrm{lse}_i = m_i + \log \ell_i = \log \sum_j e^{S_{ij}}$. With it, any
# entry of $P$ is one exponential away, no max and no row sum needed:
#
# $$ P_{ij} = \frac{e^{S_{ij}}}{\sum_k e^{S_{ik}}} = e^{S_{ij} - \mathrm{lse}_i} . $$
#
# So a backward tile recomputes $S_{ij} = c\, Q_i K_j^\top$ (a matrix product, which the GPU is
# good at) and $P_{ij} = \exp(S_{ij} - \mathrm{lse}_i)$, instead of reading $N^2$ numbers from
# HBM. Check with the lse that the forward (`flash_attention`) returns:

# %%
n, d = 100, 64
q, k, v = (torch.randn(1, 1, n, d, device=DEVICE) for _ in range(3))
_, lse = flash_attention(q, k, v, causal=True, return_lse=True)  # (1, 1, n)
scale = 1 / math.sqrt(d)
S = (scale * q[0, 0].double() @ k[0, 0].double().T).masked_fill(
    ~kernels.attention_mask(n, n, causal=True, device=DEVICE), float("-inf"))
P_recomputed = torch.exp(S - lse[0, 0].double()[:, None])
P_exact = torch.softmax(S, dim=-1)
err = (P_recomputed - P_exact).abs().max().item()
print(f"lse from flash_attention ({kernels.IMPLEMENTATION}): exp(S - lse) vs softmax(S): "
      f"max error {err:.1e}; rows sum to 1 within {(P_recomputed.sum(-1) - 1).abs().max():.1e}")
assert err < 1e-5

# %% [markdown]
# The price is compute: the backward recomputes $S$ (one more matrix product). The papers count
# the backward as 2.5 times the forward's FLOPs (five products against two). Since attention is
# memory-bound without it, trading FLOPs for bytes is a good deal.
#
# **Takeaway.** The backward needs only $Q, K, V, O, dO$ and, per row, $\mathrm{lse}$ and
# $\delta$. From those, every tile of $P$, $dP$ and $dS$ is rebuilt on chip.

# %% [markdown]
# ## 4. The tiled backward, in NumPy, with its traffic
#
# `kernels.iocost.simulate_flash2` runs the repository's backward kernels in NumPy through a
# counting SRAM. Its gradients must equal autograd's, and its traffic must involve no $N \times N$
# tensor at all:

# %%
N, d = 150, 32
Q, K, V, dO = (rng.standard_normal((N, d)) for _ in range(4))
t = [torch.from_numpy(x)[None, None].requires_grad_() for x in (Q, K, V)]
ref_grads = torch.autograd.grad(attention_reference(*t, causal=True), t, torch.from_numpy(dO)[None, None])
sim = simulate_flash2(Q, K, V, M=16384, block_m=64, block_n=32, causal=True, dO=dO)
for name, g, r in zip(("dQ", "dK", "dV"), sim.grads, ref_grads):
    err = np.abs(g - r[0, 0].numpy()).max()
    print(f"{name}: max error {err:.1e}")
    assert err < 1e-12
for kern, traffic in sim.per_kernel.items():
    print(f"\n{kern}\n{traffic}")
tensors = set().union(*(set(t.reads) | set(t.writes) for t in sim.per_kernel.values()))
print("\ntensors that cross HBM in the backward:", sorted(tensors))
assert tensors <= {"Q", "K", "V", "O", "dO", "lse", "delta", "dQ", "dK", "dV"}

# %% [markdown]
# ## 5. The Triton kernels
#
# The backward is three launches (`attention_backward` in `kernels/flash_bwd.py`, beside the
# three kernels):
#
# 1. `_attn_bwd_preprocess`: $\delta = \mathrm{rowsum}(dO \circ O)$, one program per query block;
# 2. `_attn_bwd_dkdv`: one program per **key** block $j$; it holds $K_j, V_j$ and accumulators for
#    $dK_j, dV_j$ on chip, and loops over the query blocks;
# 3. `_attn_bwd_dq`: one program per **query** block $i$; it holds $Q_i, dO_i$ and an accumulator
#    for $dQ_i$, and loops over the key blocks, like the forward.
#
# Why two loops? $dK_j$ and $dV_j$ are sums over query blocks, $dQ_i$ a sum over key blocks. A
# single loop order owns one and would have to *add* into the other from many programs at once
# (atomic additions, as FlashAttention-2's own kernel does). Two kernels make every output owned by
# exactly one program, at the price of computing $S$ and $dP$ in both.

# %%
show_source("kernels.flash_bwd:_attn_bwd_preprocess", "# [BLOCK_M, HEAD_DIM]", "delta = tl.sum(")

# %% [markdown]
# On the host, $\delta$ also absorbs the gradient of the log-sum-exp when `return_lse=True` output
# is used in the loss ($\partial \mathrm{lse}_i / \partial S_{ij} = P_{ij}$, which enters $dS$
# exactly like $-\delta_i$):

# %%
show_source("kernels.flash_bwd:attention_backward", "if dlse is not None:", "delta = delta - dlse")

# %% [markdown]
# **The dK/dV kernel.** Its query range is the forward's key range seen from the other side: with
# a causal mask, key block $j$ is seen only by queries from about $j B_n - (N_k - N_q)$ on, so
# the loop starts there (this is why its programs do not run in step, notebook 06). The loop body
# comes in two arrangements of the same lines. The default (the `else:` branch) works in the
# transposed orientation (rows are keys): recompute $S^\top$ and
# $P^\top = \exp_2(S^\top - \mathrm{lse})$, then $dV \mathrel{+}= P^\top dO$, $dP^\top = V dO^\top$,
# $dS^\top = P^\top \circ (dP^\top - \delta)$, $dK \mathrel{+}= dS^\top Q$. With `KV_B` it keeps
# the forward's orientation, $S = QK^\top$, and transposes $P$ and $dS$ for the two accumulations,
# so that $K$ and $V$ are only ever the second operand of a dot. The launch table (`bwd_config`)
# picks it at head dim 128 on Hopper (64 x 64 blocks, 4 warps, 2 stages), where it measured faster;
# at head dim 64 it was slower (`benchmarks/NOTES.md`, steps 5 and 8; notebook 12). The outer
# `for g` loop runs over the query heads that share this kv head (GQA, notebook 08), so their
# contributions add up on chip too; without GQA (`ONE_HEAD`) its one trip is known when compiling
# and no loop is built, because a run-time loop around the query loop cost the kernel most of its
# spilled registers (step 6). `warp_specialize=WARP_SPEC and ...` is an experiment, off by default:
# on Hopper, Triton 3.6 did nothing with it or failed (notebook 13).
# `if TMA:` loads $Q$ and $dO$ through tensor descriptors, which Hopper's copy engine serves
# (on at head dim 128 in the H200's table, 1.03-1.16x; steps 7 and 8); in a packed batch the
# edge blocks then zero the rows past the sequence's end, which belong to the next sequence.

# %%
show_source("kernels.flash_bwd:_attn_bwd_dkdv", "lo = 0", "hi = tl.minimum((pid_n + 1)")
print()
show_source("kernels.flash_bwd:_dkdv_blocks", "for start_m in tl.range(start, end, BLOCK_M",
            "dk = tl.dot(dst")

# %% [markdown]
# **The dQ kernel** is the forward's loop with a different body: recompute $P$, then
# $dP = dO\,V^\top$, $dS = P \circ (dP - \delta)$, $dQ \mathrel{+}= dS\, K$; the scale $c$ is
# applied once at the end.

# %%
show_source("kernels.flash_bwd:_dq_blocks", "for start_n in range(start, end, BLOCK_N):", "dq = tl.dot(ds")

# %% [markdown]
# Counting the matrix products in the two kernels confirms the price of owning every output:
# four in dK/dV ($S^\top$, $dV$, $dP^\top$, $dK$, in either arrangement) and three in dQ ($S$,
# $dP$, $dQ$), seven in all, against the five a single loop with atomics needs. That single loop
# is here too, as an option (`ATOMIC_DQ`: each tile's $dQ$ added into an fp32 buffer with atomics,
# no dQ kernel); on an H200 it was slower at every shape measured, since its third accumulator
# does not fit beside the other two in registers (`benchmarks/NOTES.md`, step 6).

# %%
dkdv = "".join(source_lines("kernels.flash_bwd:_dkdv_blocks")[0])
kv_b, default = re.split(r"\n\s*else:\n", dkdv.split("if KV_B:", 1)[1], maxsplit=1)  # the two branches
atomic = {"_dkdv_blocks (default)": default.count("dq = tl.dot("),
          "_dkdv_blocks (KV_B)": kv_b.count("dq = tl.dot(")}
n_dots = {"_dkdv_blocks (default)": default.count("tl.dot(") - atomic["_dkdv_blocks (default)"],
          "_dkdv_blocks (KV_B)": kv_b.count("tl.dot(") - atomic["_dkdv_blocks (KV_B)"],
          "_dq_blocks": "".join(source_lines("kernels.flash_bwd:_dq_blocks")[0]).count("tl.dot(")}
print("tl.dot calls per iteration:", n_dots, "and, with ATOMIC_DQ, one more in dK/dV:", atomic)
assert n_dots == {"_dkdv_blocks (default)": 4, "_dkdv_blocks (KV_B)": 4, "_dq_blocks": 3}
assert set(atomic.values()) == {1}

# %% [markdown]
# ## 6. Gradient check against autograd
#
# The oracle: autograd through `attention_reference` in float64. The kernel computes in float32
# (exact fp32 dots), so relative errors should be at float32 rounding level. Shapes are awkward on
# purpose: lengths that are not multiples of the blocks, more keys than queries and the reverse.
# Without Triton the same checks run on the twin's backward.

# %%
def rel_err(x, ref):
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm()).item()


def gradients(fn, q, k, v, dO, **kw):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, **kw)
    return (out, *torch.autograd.grad(out, (q, k, v), dO))


cases = [  # (batch, heads, seqlen_q, seqlen_k, head_dim, causal)
    (1, 2, 80, 80, 32, False),
    (1, 2, 48, 96, 64, True),
    (2, 1, 96, 40, 64, True),
]
if not SMALL:
    cases += [(2, 4, 1000, 1000, 128, True), (1, 4, 333, 1024, 64, False)]
print(f"flash_attention: {RUNS}")
for b, h, nq, nk, hd, causal in cases:
    q = torch.randn(b, h, nq, hd, device=DEVICE)
    k, v = (torch.randn(b, h, nk, hd, device=DEVICE) for _ in range(2))
    dO = torch.randn(b, h, nq, hd, device=DEVICE)
    mine = gradients(flash_attention, q, k, v, dO, causal=causal)
    ref = gradients(attention_reference, q.double(), k.double(), v.double(), dO.double(), causal=causal)
    errs = {name: rel_err(x, r) for name, x, r in zip(("out", "dq", "dk", "dv"), mine, ref)}
    print(f"q {nq:>4} x k {nk:>4}, d {hd:>3}, causal {causal!s:>5}: "
          + ", ".join(f"{name} {e:.1e}" for name, e in errs.items()))
    assert max(errs.values()) < 1e-4

# %% [markdown]
# And in bfloat16, with the test suite's rule: the kernel's error against float64 may be at most
# about twice that of PyTorch's naive attention run in bfloat16, plus a rounding floor.

# %%
q, k, v, dO = (torch.randn(1, 2, 96, 64, device=DEVICE) for _ in range(4))
ref = gradients(attention_reference, q.double(), k.double(), v.double(), dO.double(), causal=True)
bf = [t.bfloat16() for t in (q, k, v, dO)]
mine = gradients(flash_attention, *bf, causal=True)
torch_bf16 = gradients(attention_reference, *bf, causal=True)
for name, x, lowp, r in zip(("out", "dq", "dk", "dv"), mine, torch_bf16, ref):
    e_kernel, e_torch = rel_err(x, r), rel_err(lowp, r)
    print(f"{name}: flash_attention ({kernels.IMPLEMENTATION}) {e_kernel:.1e}, PyTorch bf16 {e_torch:.1e}")
    assert e_kernel <= 2 * e_torch + 5e-3

# %% [markdown]
# **The log-sum-exp in the loss.** With `return_lse=True` the lse is an output too, and its
# gradient flows through the `delta - dlse` line of section 5. Checked against the float64
# reference, with a loss that uses both outputs:

# %%
q, k, v, dO = (torch.randn(1, 2, 64, 32, device=DEVICE) for _ in range(4))
g_lse = torch.randn(1, 2, 64, device=DEVICE)


def loss_grads(fn, dtype):
    x = [t.to(dtype).requires_grad_() for t in (q, k, v)]
    out, lse = fn(*x, causal=True, return_lse=True)
    loss = (out * dO.to(dtype)).sum() + (lse * g_lse.to(lse.dtype)).sum()
    return torch.autograd.grad(loss, x)


errs = [rel_err(a, b) for a, b in zip(loss_grads(flash_attention, torch.float32),
                                      loss_grads(attention_reference, torch.float64))]
print("with lse in the loss: dq, dk, dv relative errors", [f"{e:.1e}" for e in errs])
assert max(errs) < 1e-4

# %% [markdown]
# **Takeaway.** The Triton backward matches autograd through naive attention, float32 to rounding
# and bfloat16 within the precision's own error, without ever storing $P$ (and so does the twin,
# where Triton is missing).

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# shapes (one query, primes, tiles that do not divide the length, more keys than queries and the
# reverse) against autograd through naive attention in float64, and prints `pass`, or the first
# wrong element and what it should be; it never stops the notebook. Stuck?
# `show_solution("07.backward_tile")` prints one answer (the answers live in
# `exercises/solutions/nb07.py`, out of sight). Work in float64; `softmax_scale` is an argument,
# and the checks pass scales other than $1/\sqrt d$.
#
# **1. One tile of the backward.** Write `backward_tile(q_i, k_j, v_j, do_i, lse_i, delta_i,
# softmax_scale)`: query tile `q_i`, `do_i` `[block_m, d]`, key tile `k_j`, `v_j` `[block_n, d]`,
# `lse_i` and `delta_i` `[block_m]` (the forward's log-sum-exp and $\mathrm{rowsum}(dO \circ O)$
# of those rows). No mask: every query of the tile sees every key of it (the check's heads are
# not causal). Recompute $P_{ij}$ from the lse, then return the tile's contributions
# `(dq_i, dk_j, dv_j)` to $dQ_i$, $dK_j$, $dV_j$. The check cuts each head into tiles, square
# and ragged, calls your function on every one and compares the sums with autograd's gradients.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def backward_tile(q_i, k_j, v_j, do_i, lse_i, delta_i, softmax_scale):
    raise NotImplementedError  # your code here: P, then dV, dP, dS, dQ, dK


check("07.backward_tile", backward_tile)

# %% [markdown]
# **2. A whole head, causal.** Write `attention_backward(q, k, v, o, lse, do, softmax_scale,
# causal)` for one head: `q`, `o`, `do` `[seqlen_q, d]`, `k`, `v` `[seqlen_k, d]`, `lse`
# `[seqlen_q]`; return `(dq, dk, dv)`. You compute $\delta$ yourself, and with `causal` the mask
# is bottom-right (query $i$ sees key $j \le i + N_k - N_q$). With more queries than keys, the
# first $N_q - N_k$ rows see no key: their lse is $-\infty$, and their gradients must be 0, not
# NaN. Loop over tiles with `backward_tile` if you like; the check reads only the result.

# %%
def attention_backward(q, k, v, o, lse, do, softmax_scale, causal):
    raise NotImplementedError  # your code here


check("07.attention_backward", attention_backward)

# %% [markdown]
# **3. Predict, then run.** Causal query 0 sees only key 0, so $P_{00} = 1$ and $O_0 = V_0$. What
# is the largest entry of $|dQ_0|$, for any $Q, K, V, dO$? Write your number in `prediction`
# before running the cell, which measures it on the kernel. (Hint: what is $\delta_0$, and so
# $dS_{00}$?)

# %%
prediction = None  # your prediction: a number

q, k, v, dO = (torch.randn(1, 2, 64, 32, device=DEVICE) for _ in range(4))
_, dq, dk, dv = gradients(flash_attention, q, k, v, dO, causal=True)
measured = dq[0, :, 0].abs().max().item()
if prediction is None:
    print("write your prediction first")
else:
    print(f"largest |dQ_0| entry: {measured:.1e}; your prediction {prediction:.1e} was",
          "right" if abs(prediction - measured) <= 1e-4 + 0.1 * measured else "wrong")

# %% [markdown]
# ## References
#
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: the backward that recomputes $P$ tile by tile from the
#   saved softmax statistics instead of storing it, and the $\delta = \mathrm{rowsum}(dO \circ O)$
#   identity (its appendix B).
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: one log-sum-exp per row saved instead of $m$ and $\ell$, and a backward
#   parallelised over key blocks, with atomic additions into $dQ$ (section 5 explains why this
#   repository runs two kernels instead).
# * Rabe, Staats, "Self-attention Does Not Need O(n^2) Memory", 2021, arXiv:2112.05682: the
#   memory-efficient forward, and its backward through checkpointing.
# * Chen, Xu, Zhang, Guestrin, "Training Deep Nets with Sublinear Memory Cost", 2016,
#   arXiv:1604.06174: recomputation (gradient checkpointing), trading FLOPs for stored activations.

# %% [markdown]
# ## What comes next
#
# [08 · Masks, lengths and decoding](08_masks_lengths_and_decoding.ipynb): causal masks when there
# are more keys than queries, sliding windows, grouped-query attention, packed batches of
# different lengths, and split-KV decoding, which reuses the merge of notebook 03 across programs.
