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
# # 11 · Beyond one GPU: ring attention and data parallelism
#
# **What you will learn**
#
# * why partial attentions over **disjoint blocks of keys** combine exactly, by the same
#   log-sum-exp merge as the online softmax and split-KV decoding, so a sequence can be cut into
#   blocks that live on different devices;
# * the ring schedule of `kernels.ring_attention`: which key/value block each rank holds at each
#   step, and which pairs of blocks a causal mask lets it skip;
# * ring attention running for real across 2 and 3 CPU processes (gloo), equal to one
#   `flash_attention` call on the whole sequence (where Triton's interpreter can run the kernel
#   in those processes, or on the plain-PyTorch twin without Triton; section 4 says what runs
#   instead where neither can);
# * when the transfer of a block hides behind the computation on it: bytes per step against
#   FLOPs per step, with the H100's measured matmul rate and nominal link bandwidths;
# * data-parallel training (`torchrun`, DDP): what is averaged, and a check that two processes
#   train exactly like one process on the combined batch.
#
# **Read first:** [03 · The online softmax](03_online_softmax.ipynb) (merging partial softmaxes,
# section 4) and [08 · Masks, lengths and decoding](08_masks_lengths_and_decoding.ipynb) (the
# bottom-right causal alignment and split-KV decoding). Nothing here is a new kernel: ring
# attention calls the kernel of notebook 05 once per block and merges the results in PyTorch.
# Without Triton (macOS, Windows) `flash_attention` is its plain-PyTorch twin, and everything
# below runs on it but the one-GPU timing of section 2.
#
# **Words:** [glossary](GLOSSARY.md) (merge, lse, ring attention). The exercises at the end check
# code you write: the ring's merge step, and the causal work of each rank in two layouts.

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
import os
import subprocess
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from kernels import attention_reference, flash_attention, rel_err, ring_attention
from kernels._checks import interpreter_problem
from kernels.iocost import H100_MEASURED
from kernels.iocost import flops as attention_flops
from kernels.ring import merge_partials
from kernels.source import show_source
from minitransformer import GPT, Config, train
from minitransformer.checkpoint import load_checkpoint
from minitransformer.data import get_batch
from minitransformer.distributed import run_in_processes

ROOT = Path(kernels.__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed: its CSV reader comes from the checkout
    sys.path.insert(0, str(ROOT))
from benchmarks.results_csv import read_csv  # noqa: E402  (the format every benchmark writes)

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # a CPU (Triton's interpreter or the plain-PyTorch twin): small sizes
KERNELS = kernels.implementation()  # what flash_attention runs here, in words
# The ranks of sections 4 and 6 are CPU processes talking through gloo, and they run the kernel
# through Triton's interpreter, on a GPU machine too (without Triton: the twin, which needs no
# interpreter). None where that works; else the reason (Triton 3.6's interpreter with
# numpy >= 2.4, as on the GPU image this series was checked on).
CPU_RANKS_PROBLEM = interpreter_problem() if kernels.HAS_TRITON else None
RANKS_RUN = ("the plain-PyTorch twin" if not kernels.HAS_TRITON
             else "the kernel, interpreted" if CPU_RANKS_PROBLEM is None
             else "nothing: the interpreter cannot run the kernel here")
torch.manual_seed(0)
print(f"device: {DEVICE}, kernels: {KERNELS}; the CPU ranks of sections 4 and 6 run {RANKS_RUN}")

# %% [markdown]
# ## 1. Why split a sequence at all
#
# FlashAttention made attention's memory linear in the sequence length $N$, but linear can still
# be too much, and the work stays quadratic. Take one layer of a model with 32 heads of dimension
# 128 in bf16, and a sequence of a million tokens:

# %%
HEADS, HEAD_DIM, BYTES_BF16 = 32, 128, 2
N_LONG = 2**20
kv_bytes = 2 * HEADS * N_LONG * HEAD_DIM * BYTES_BF16  # K and V of one layer, batch 1
_, bench, _ = read_csv(ROOT / "benchmarks" / "results" / "h100" / "attention_tflops.csv")
OUR_FWD_FLOPS, OUR_BWD_FLOPS = (  # our kernel's best measured rates on the H100, FLOP/s
    1e12 * max(float(r["tflops"]) for r in bench if r["provider"] == "triton" and r["mode"] == mode)
    for mode in ("fwd", "bwd"))
fwd_seconds = HEADS * attention_flops(N_LONG, HEAD_DIM, causal=True) / OUR_FWD_FLOPS
print(f"K and V of one layer at N = {N_LONG:,}: {kv_bytes / 2**30:.0f} GiB")
print(f"causal attention forward of that layer at our kernel's best H100 rate "
      f"({OUR_FWD_FLOPS / 1e12:.0f} TFLOP/s): {fwd_seconds:.0f} s")
# a measured rate, so only sane bounds: below a bf16 matmul's ~800 TFLOP/s there, and the time follows
assert kv_bytes == 16 * 2**30 and 300e12 < OUR_FWD_FLOPS < 800e12 and 11 < fwd_seconds < 31

# %% [markdown]
# Sixteen GiB of keys and values per layer (a model has dozens of layers, and training keeps the
# activations of each), and a quarter of a minute or more of attention per layer for one forward pass.
# Splitting the sequence across GPUs divides both. **Context parallelism** cuts the
# sequence into $W$ contiguous blocks of $n = N / W$ positions, one per process ("rank"), each on
# its own GPU. Rank $r$ holds the queries, keys and values of positions $[rn, (r+1)n)$ and must
# produce the output of *its* queries, which need *every* key. The question of this notebook is
# how to compute exact attention when no rank ever holds all the keys.

# %% [markdown]
# ## 2. Why the merge works
#
# For one query, attention over a set of keys $S$ is
# $o_S = \sum_{j \in S} e^{s_j} v_j \,/\, Z_S$ with $Z_S = \sum_{j \in S} e^{s_j} = e^{\mathrm{lse}_S}$.
# Split the keys into disjoint blocks $A$ and $B$. The sums split too, $Z = Z_A + Z_B$, and
# $\sum_{A \cup B} e^{s_j} v_j = Z_A o_A + Z_B o_B$, hence
#
# $$ \mathrm{lse} = \log\!\left(e^{\mathrm{lse}_A} + e^{\mathrm{lse}_B}\right), \qquad
#    o = e^{\mathrm{lse}_A - \mathrm{lse}}\, o_A + e^{\mathrm{lse}_B - \mathrm{lse}}\, o_B . $$
#
# This is the merge of notebook 03 (section 4) and of split-KV decoding (notebook 08, section 5),
# one level further up: the partial results now come from different kernel *calls*, which may run
# on different GPUs at different times. `flash_attention(..., return_lse=True)` returns exactly the
# pair $(o_S, \mathrm{lse}_S)$ for the keys it was given, and `kernels.ring.merge_partials` is the
# formula above. Nothing is approximated, and the merge is associative and commutative, so any
# order of the blocks gives the same answer to rounding.
#
# On one process: cut $K, V$ into three blocks, one kernel call per block, merge, and compare with
# one call on the whole sequence and with a float64 reference.

# %%
W, n_local, d = 3, 40, 32  # 40: not a multiple of the kernel's block size
N = W * n_local
q, k, v = (torch.randn(1, 2, N, d, device=DEVICE) for _ in range(3))  # (batch, heads, N, head_dim), float32
blocks = [slice(j * n_local, (j + 1) * n_local) for j in range(W)]

out = torch.zeros(q.shape, device=DEVICE)  # nothing seen yet: output 0 with lse -inf weighs nothing
lse = torch.full(q.shape[:3], float("-inf"), device=DEVICE)  # (batch, heads, N)
for j in blocks:
    out_j, lse_j = flash_attention(q, k[:, :, j], v[:, :, j], return_lse=True)
    out, lse = merge_partials(out, lse, out_j, lse_j)

one_out, one_lse = flash_attention(q, k, v, return_lse=True)
ref64 = attention_reference(q.double(), k.double(), v.double())
print(f"merged blocks vs one call: output {rel_err(out, one_out):.1e}, lse {rel_err(lse, one_lse):.1e}")
print(f"vs float64 reference: merged {rel_err(out, ref64):.1e}, one call {rel_err(one_out, ref64):.1e}")
assert rel_err(out, one_out) < 1e-5 and rel_err(lse, one_lse) < 1e-5
assert rel_err(out, ref64) <= 2 * rel_err(one_out, ref64) + 1e-7

# %% [markdown]
# **Causal attention** adds one twist. Query block $i$ and key block $j$ of the same sequence are in
# one of three relations: $j < i$, every key is in the past of every query (no mask needed,
# `causal=False`); $j = i$, the diagonal block (`causal=True`: with as many keys as queries the
# kernel's bottom-right alignment of notebook 08 is the ordinary diagonal); $j > i$, every key is
# in the future, and the pair is **skipped**: it contributes nothing, so it is never computed.
#
# Here is the whole ring on one process: "rank" $r$ owns query block $r$, and at step $s$ it holds
# key block $(r - s) \bmod W$, the order in which the blocks reach it around the ring (section 3).

# %%
def ring_on_one_process(q, k, v, world_size, causal):
    """The ring schedule of kernels/ring.py, with the ranks taken one after the other."""
    n = q.shape[2] // world_size
    outs = []
    for rank in range(world_size):
        mine = slice(rank * n, (rank + 1) * n)
        out = torch.zeros(q[:, :, mine].shape, device=q.device)  # float32, as the merge returns
        lse = torch.full(q[:, :, mine].shape[:3], float("-inf"), device=q.device)
        for step in range(world_size):
            src = (rank - step) % world_size  # the key/value block this rank holds at this step
            if causal and src > rank:
                continue  # wholly in the future
            held = slice(src * n, (src + 1) * n)
            out_j, lse_j = flash_attention(q[:, :, mine], k[:, :, held], v[:, :, held],
                                           causal=causal and src == rank, return_lse=True)
            out, lse = merge_partials(out, lse, out_j, lse_j)
        outs.append(out)
    return torch.cat(outs, dim=2)  # (batch, heads, N, head_dim)


for causal in (False, True):
    ring = ring_on_one_process(q, k, v, W, causal)
    one = flash_attention(q, k, v, causal=causal)
    ref = attention_reference(q.double(), k.double(), v.double(), causal=causal)
    print(f"causal={causal!s:>5}: ring schedule vs one call {rel_err(ring, one):.1e}, "
          f"vs float64 {rel_err(ring, ref):.1e} (one call: {rel_err(one, ref):.1e})")
    assert rel_err(ring, one) < 1e-5 and rel_err(ring, ref) <= 2 * rel_err(one, ref) + 1e-7

# %% [markdown]
# Each rank meets the blocks in a different order (without a mask, rank 0 meets blocks 0, 2, 1 and
# rank 2 meets 2, 1, 0), which is harmless because the merge does not care about order.
#
# With a GPU, the same at a size where one would split: 65,536 tokens, 8 heads of 64, bf16, in 4
# blocks of 16,384. No float64 reference fits there (one $N \times N$ matrix per head is 32 GiB),
# so the oracle is one kernel call in float32 (exact fp32 dots); the bf16 schedule must be as close
# to it as one bf16 call is. On one GPU the schedule does the work of one call (the same FLOPs,
# minus the skipped blocks when causal) in $W^2$ smaller calls plus as many merges, which are
# element-wise and cheap next to a block: we time both (medians of `triton.testing.do_bench`).
# The blocks are long so that each kernel call outlasts the Python that launches the next one
# and the merge; with short blocks the schedule would time the host, not the GPU. (Without Triton
# this cell is skipped: it times the kernel, with Triton's `do_bench`.)

# %%
if not SMALL and not kernels.HAS_TRITON:
    print("Triton is not installed: the 65,536-token comparison is skipped "
          "(it times the Triton kernel with triton.testing.do_bench)")
elif not SMALL:
    from functools import partial

    from triton.testing import do_bench

    W_GPU, N_GPU, H_GPU, D_GPU = 4, 65536, 8, 64
    qg, kg, vg = (torch.randn(1, H_GPU, N_GPU, D_GPU, device=DEVICE, dtype=torch.bfloat16) for _ in range(3))
    print(f"{torch.cuda.get_device_name()}: N = {N_GPU:,} in {W_GPU} blocks of {N_GPU // W_GPU:,}, "
          f"{H_GPU} heads of {D_GPU}, bf16")
    for causal in (False, True):
        ring = ring_on_one_process(qg, kg, vg, W_GPU, causal)
        one = flash_attention(qg, kg, vg, causal=causal)
        oracle = flash_attention(qg.float(), kg.float(), vg.float(), causal=causal)
        err_ring, err_one = rel_err(ring, oracle), rel_err(one, oracle)
        ms_ring = do_bench(partial(ring_on_one_process, qg, kg, vg, W_GPU, causal), return_mode="median")
        ms_one = do_bench(partial(flash_attention, qg, kg, vg, causal=causal), return_mode="median")
        print(f"causal={causal!s:>5}: vs fp32 one call: ring schedule {err_ring:.1e}, one bf16 call "
              f"{err_one:.1e}; time: ring schedule {ms_ring:.2f} ms, one call {ms_one:.2f} ms "
              f"({ms_ring / ms_one:.2f}x)")
        assert err_ring <= 2 * err_one + 1e-3
        assert ms_ring < 1.5 * ms_one, f"{ms_ring / ms_one:.2f}x"  # the merges cost little next to the blocks
    del qg, kg, vg, ring, one, oracle

# %% [markdown]
# **Takeaway.** A partial attention is a pair $(o, \mathrm{lse})$; pairs over disjoint keys merge
# exactly. That is the whole mathematical content of ring attention; the rest is moving blocks.

# %% [markdown]
# ## 3. The ring schedule
#
# The ranks form a ring, $0 \to 1 \to \dots \to W-1 \to 0$. At every step each rank *starts*
# sending the key/value block it holds to the next rank and receiving one from the previous rank,
# then runs the kernel on the block it holds while the transfer is under way, and finally waits for
# the transfer and swaps buffers. After $W$ steps every query has met every key, and no rank ever
# held more than two key/value blocks (the one it computes with, the one arriving). The loop in the
# package:

# %%
show_source("kernels.ring:_ring_forward", "def _ring_forward", "return out")

# %% [markdown]
# The figure draws it for $W = 4$ with a causal mask: on the left ranks by steps, each cell naming
# the block the rank holds; on the right the same work as (query block, key block) pairs, each
# labelled with the step that computes it.

# %%
W_FIG = 4
ranks, steps = np.arange(W_FIG)[:, None], np.arange(W_FIG)[None, :]
held = (ranks - steps) % W_FIG  # held[r, s]: the key/value block rank r holds at step s
SKIP, DIAGONAL, FULL = 0, 1, 2
state = np.where(held > ranks, SKIP, np.where(held == ranks, DIAGONAL, FULL))  # under a causal mask

# every rank meets every block once, and at every step each block is on exactly one rank
assert all(sorted(row) == list(range(W_FIG)) for row in held)
assert all(sorted(col) == list(range(W_FIG)) for col in held.T)
computed = (state != SKIP).sum(axis=1)  # blocks computed by each rank
assert list(computed) == [r + 1 for r in range(W_FIG)] and computed.sum() == W_FIG * (W_FIG + 1) // 2
idle = 1 - computed.sum() / W_FIG**2
print(f"causal, {W_FIG} ranks: blocks computed per rank {computed.tolist()}; "
      f"{idle:.1%} of the rank-steps idle")

pair_state = np.full((W_FIG, W_FIG), SKIP)  # [query block i, key block j]
pair_step = np.full((W_FIG, W_FIG), -1)
for r in range(W_FIG):
    for s in range(W_FIG):
        pair_state[r, held[r, s]], pair_step[r, held[r, s]] = state[r, s], s
cmap = ListedColormap(["#e0e0e0", "#9ecae1", "#3182bd"])
fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(10, 4.4))
ax_l.imshow(state, cmap=cmap, vmin=0, vmax=2)
for r in range(W_FIG):
    for s in range(W_FIG):
        ax_l.text(s, r, f"K/V {held[r, s]}", ha="center", va="center",
                  color="white" if state[r, s] == FULL else "black")
ax_l.set(xlabel="ring step s", ylabel="rank r (holds query block r)", xticks=range(W_FIG),
         yticks=range(W_FIG), title="Which K/V block each rank holds\n(blocks move one rank down per step)")
ax_r.imshow(pair_state, cmap=cmap, vmin=0, vmax=2)
for i in range(W_FIG):
    for j in range(W_FIG):
        label = f"step {pair_step[i, j]}" if pair_state[i, j] != SKIP else "skipped"
        ax_r.text(j, i, label, ha="center", va="center",
                  color="white" if pair_state[i, j] == FULL else "black")
ax_r.set(xlabel="key block j", ylabel="query block i", xticks=range(W_FIG), yticks=range(W_FIG),
         title=f"Causal: {W_FIG * (W_FIG + 1) // 2} of {W_FIG**2} block pairs computed")
fig.legend(handles=[Patch(color=cmap(2), label="computed, no mask (causal=False)"),
                    Patch(color=cmap(1), label="diagonal block (causal=True)"),
                    Patch(color=cmap(0), label="skipped: keys wholly in the future")],
           loc="lower center", ncol=3)
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()

# %% [markdown]
# Read a column of the left panel: at step $s$ rank $r$ holds block $r - s$, so after the first
# step the ranks at the top hold blocks from the future and sit idle, while the last rank computes
# at every step. With contiguous blocks the causal work is lopsided ($r + 1$ blocks for rank $r$),
# and since each step waits for the block from the previous rank, the ring goes at the pace of the
# last rank: $W - 1$ full blocks and the diagonal, nearly as long as a ring without a mask.
# The usual fix gives each rank two half-size blocks, $i$ and $2W - 1 - i$ ("zigzag"), so that
# everyone holds one early and one late piece of the sequence; `kernels/ring.py` does not do it
# (exercise 2 counts what it would change).
#
# **Takeaway.** $W$ steps, one block in flight per rank per step, memory $O(n)$ per rank; a causal
# mask removes almost half the pairs but, with contiguous blocks, not half the time.

# %% [markdown]
# ## 4. Running it across processes
#
# Now the real thing: separate processes, each holding only its own block, passing key/value
# blocks with `torch.distributed`'s point-to-point operations over **gloo**, the backend that works
# between CPU processes (NCCL plays that role between GPUs). On a GPU machine one would start the
# processes with `torchrun`; here `minitransformer.distributed.run_in_processes` does the same for
# a Python function: it spawns one process per rank, joins them into a process group, runs
# `fn(*args_per_rank[r], **kwargs)` on rank $r$ and returns the results in rank order (the tests use
# it too). The function must be importable by name, because spawned processes receive it by
# reference; `kernels.ring_attention` is.
#
# Each rank gets its own slice of $q, k, v$ and nothing else. Two cases: two ranks without a mask,
# and three ranks with a causal mask and grouped-query attention (4 query heads sharing 2 key/value
# heads: only keys and values travel, so GQA also shrinks the messages). Each run takes seconds,
# most of them spent starting processes that import PyTorch and Triton; the kernel calls, run by
# the interpreter on these small blocks, take a fraction of a second each. Without Triton the
# ranks run the same ring on the plain-PyTorch twin: the same messages, no interpreter.
#
# **On a GPU machine** the ranks are CPU processes all the same (gloo passes CPU tensors, and NCCL
# would need a GPU per rank), so they still run the kernel through Triton's interpreter. Where
# that interpreter cannot run the kernels (Triton 3.6 with numpy 2.4 or newer, as on the GPU
# image this series was checked on; `kernels._checks.interpreter_problem` names it), the cell
# says so and runs what one process can instead: the same blocks through the same schedule, rank
# after rank, on the GPU (`ring_on_one_process` of section 2). That checks the arithmetic of the
# ring, not its messages; `tests/test_distributed.py` skips its ring tests there for the same
# reason.

# %%
def split_along_sequence(tensors, world_size):
    """Rank r's blocks: positions [r n, (r + 1) n) of each tensor."""
    n = tensors[0].shape[2] // world_size
    return [tuple(t[:, :, r * n:(r + 1) * n] for t in tensors) for r in range(world_size)]


cases = [dict(world_size=2, causal=False, heads_q=2, heads_kv=2, n_local=48, head_dim=32),
         dict(world_size=3, causal=True, heads_q=4, heads_kv=2, n_local=24, head_dim=32)]
if CPU_RANKS_PROBLEM:
    print(f"Not run on this machine: ring_attention across CPU processes. Its ranks run the kernel "
          f"through Triton's interpreter, and here: {CPU_RANKS_PROBLEM}.\nRun instead: the same blocks "
          f"through the same schedule, rank after rank in this process, on {DEVICE}.")
else:
    print(f"ring_attention in each rank runs {RANKS_RUN}")
for case in cases:
    world, n_loc, dh = case["world_size"], case["n_local"], case["head_dim"]
    q = torch.randn(1, case["heads_q"], world * n_loc, dh)  # on the CPU, where the ranks are
    k, v = (torch.randn(1, case["heads_kv"], world * n_loc, dh) for _ in range(2))
    t0 = time.perf_counter()
    if CPU_RANKS_PROBLEM is None:
        outs = run_in_processes(ring_attention, split_along_sequence((q, k, v), world), causal=case["causal"])
        assert [o.shape[2] for o in outs] == [n_loc] * world
        ring = torch.cat(outs, dim=2)  # the ranks' blocks of the output, back in sequence order
        how = f"{world} processes"
    else:
        ring = ring_on_one_process(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), world, case["causal"]).cpu()
        how = f"{world} ranks in turn on {DEVICE}"
    seconds = time.perf_counter() - t0
    one = flash_attention(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), causal=case["causal"]).cpu()
    ref = attention_reference(q.double(), k.double(), v.double(), causal=case["causal"])
    print(f"{how}, causal={case['causal']}, q {tuple(q.shape)}, k/v {tuple(k.shape)}: "
          f"{seconds:.1f} s wall")
    print(f"    ring vs one flash_attention call: {rel_err(ring, one):.1e}; vs float64: "
          f"{rel_err(ring, ref):.1e} (one call: {rel_err(one, ref):.1e})")
    assert rel_err(ring, one) < 1e-5 and rel_err(ring, ref) <= 2 * rel_err(one, ref) + 1e-7

# %% [markdown]
# The processes computed the same attention as one call on the whole sequence, to float32
# rounding, without any of them holding all the keys (where they could not run, the schedule
# alone did, rank by rank). Gradients work too: `ring_attention` has its
# own backward, which runs the ring a second time; the gradient of a key block is accumulated as it
# travels with its block and arrives home after $W$ moves. `tests/test_distributed.py` checks the
# output and dq, dk, dv on 2 and 3 processes in float32 and bf16, for both `ring_attention` and the
# simpler `ring_attention_allgather` (gather every block onto every rank, then one kernel call:
# $O(N)$ memory per rank, the transfer not hidden).
#
# **Takeaway.** Ring attention = the kernel per block + `merge_partials` + one send and one
# receive per step. Exactness carries over from section 2 unchanged.

# %% [markdown]
# ## 5. When does the transfer hide behind the computation?
#
# Per ring step, each rank sends one key/value block and receives another while it computes its
# queries against the block it holds (`_pass_on` starts the transfer *before* the kernel call and
# `_wait` waits for it *after*). With batch $B$, $H$ query heads, $H_{kv}$ key/value heads, head
# dimension $d$ and $e$ bytes per element:
#
# $$ \text{bytes} = 2\,B\,H_{kv}\,n\,d\,e, \qquad \text{FLOPs} = 4\,B\,H\,n^2 d , $$
#
# (two matrix products of $2 n^2 d$ FLOPs per head; a causal mask halves the work on average). The
# transfer hides when $\text{FLOPs} / R \ge \text{bytes} / \beta$ for a matmul rate $R$ and a link
# bandwidth $\beta$ per direction, that is when
#
# $$ n \;\ge\; n^* = \frac{R}{\beta} \cdot \frac{e\,H_{kv}}{2H} . $$
#
# Bytes grow as $n$ and FLOPs as $n^2$: a long enough block always wins. $B$ and $d$ cancel;
# with bf16 ($e = 2$) and as many key/value heads as query heads, $n^* = R / \beta$ exactly.
#
# The rates. $R$: the bf16 matrix multiply measured on this project's H100 (about 755 TFLOP/s,
# `kernels.iocost.H100_MEASURED`) and our own kernel's best forward rate there (read above from
# `benchmarks/results/h100/attention_tflops.csv`). $\beta$: **nominal datasheet figures, not
# measured here**: NVLink 4 (H100 SXM) 900 GB/s per GPU in total, 450 GB/s in each direction; a
# PCIe 5 x16 slot about 64 GB/s per direction, for GPUs without NVLink.

# %%
NVLINK4_BYTES_PER_S = 450e9  # nominal, per direction (H100 SXM datasheet: 900 GB/s bidirectional)
PCIE5_X16_BYTES_PER_S = 64e9  # nominal, per direction
links = {"NVLink 4 (450 GB/s, nominal)": NVLINK4_BYTES_PER_S,
         "PCIe 5 x16 (64 GB/s, nominal)": PCIE5_X16_BYTES_PER_S}
rates = {f"bf16 matmul, measured ({H100_MEASURED.peak_flops / 1e12:.0f} TFLOP/s)": H100_MEASURED.peak_flops,
         f"our kernel's forward ({OUR_FWD_FLOPS / 1e12:.0f} TFLOP/s)": OUR_FWD_FLOPS}
B, H, H_KV, D = 1, HEADS, HEADS, HEAD_DIM


def step_bytes(n, heads_kv=H_KV):
    return 2 * B * heads_kv * n * D * BYTES_BF16  # K and V of one block


def step_flops(n, causal_fraction=1.0):
    return causal_fraction * B * H * attention_flops(n, D)  # 4 B H n^2 d


def crossover(rate, bandwidth, heads_q=H, heads_kv=H_KV, causal_fraction=1.0):
    """The block length n* at which compute time equals transfer time."""
    return rate / bandwidth * BYTES_BF16 * heads_kv / (2 * heads_q * causal_fraction)


print(f"{'n_local':>8} {'MB sent':>8}" + "".join(f"{name.split(' (')[0] + ' us':>16}" for name in links)
      + "".join(f"{'compute us @' + f'{r / 1e12:.0f}T':>18}" for r in rates.values()))
for n in (512, 1024, 2048, 4096, 8192, 16384):
    print(f"{n:>8} {step_bytes(n) / 1e6:>8.1f}"
          + "".join(f"{step_bytes(n) / b * 1e6:>16.1f}" for b in links.values())
          + "".join(f"{step_flops(n) / r * 1e6:>18.1f}" for r in rates.values()))

n_star = {(link, rate): crossover(r, b) for link, b in links.items() for rate, r in rates.items()}
for (link, rate), n_x in n_star.items():
    print(f"{link.split(' (')[0]:>9}, {rate.split(' (')[0]:>20}: "
          f"compute hides the transfer from n = {n_x:,.0f}")
for link, b in links.items():  # the closed form against the two times themselves
    for rate, r in rates.items():
        ns = n_star[link, rate]
        assert step_flops(0.99 * ns) / r < step_bytes(0.99 * ns) / b
        assert step_flops(1.01 * ns) / r > step_bytes(1.01 * ns) / b
nv, pcie = links
fast, ours = rates
assert np.isclose(n_star[nv, ours], OUR_FWD_FLOPS / NVLINK4_BYTES_PER_S)  # n* = R / beta: bf16, H_kv = H
# our rate is a measurement (re-measured, it moves by a few percent): bands of +-10% around the prose
assert 1000 < n_star[nv, ours] < 1230 and 1600 < n_star[nv, fast] < 1750  # "about 1,100" and "1,700"
assert 7100 < n_star[pcie, ours] < 8700 and 11500 < n_star[pcie, fast] < 12000  # "7,900" and "11,800"

# %%
ns = np.logspace(8, 16, 200, base=2)
fig, ax = plt.subplots(figsize=(7.5, 4.6))
for (name, b), style in zip(links.items(), ("-", "--")):
    ax.loglog(ns, step_bytes(ns) / b * 1e6, "k" + style, label=f"send K, V: {name}")
for (name, r), color in zip(rates.items(), ("tab:blue", "tab:orange")):
    ax.loglog(ns, step_flops(ns) / r * 1e6, color=color, label=f"compute: {name}")
ax.loglog(ns, step_flops(ns, 0.5) / OUR_FWD_FLOPS * 1e6, ":", color="tab:orange",
          label="compute: our kernel, causal work balanced (half)")
for (link, _), n_x in n_star.items():
    ax.plot(n_x, step_bytes(n_x) / links[link] * 1e6, "o", color="tab:red", ms=5)
ax.set_xscale("log", base=2)
ax.set(xlabel="block length per rank n (tokens)", ylabel="time per ring step (microseconds)",
       title=f"One ring step, forward: B={B}, {H} heads, d={D}, bf16\n"
             "red dots: compute time = transfer time; right of a dot the transfer hides")
ax.grid(alpha=0.3, which="both")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# With our kernel on NVLink, compute covers the transfer from blocks of about 1,100 tokens per
# rank (about 1,700 at the full matmul rate: **a faster kernel needs longer blocks** to hide the
# same bytes). On PCIe the crossover moves to about 7,900 and 11,800 tokens. Three refinements:
#
# * **Causal masks**: a balanced (zigzag) layout computes half a block per step on average, so the
#   crossover doubles; with contiguous blocks the busiest rank computes full blocks and sets the pace.
# * **GQA** sends only the $H_{kv}$ key/value heads: 32 query heads sharing 8 divide $n^*$ by 4.
# * **Backward**: per step the ring moves the key/value block *and* the gradient accumulated for
#   it, twice the bytes, for 2.5 times the FLOPs. If both moves overlap the compute, the crossover
#   is 0.8 times the forward's at the same rate, and about 650 tokens on NVLink at our backward
#   kernel's lower measured rate (also read from the CSV). `_ring_backward` overlaps only the
#   key/value move: it waits for the gradient's move at once, so that transfer is exposed there.
#
# For the million-token sequence of section 1 on 8 GPUs, each block is 131,072 tokens, far past
# every crossover. The model ignores the latency of each message and assumes the kernel keeps its
# rate on blocks of one rank's size; the link figures are nominal, so treat $n^*$ as an order of
# magnitude, to be checked by measurement on a multi-GPU machine.

# %%
gqa = crossover(OUR_FWD_FLOPS, NVLINK4_BYTES_PER_S, heads_kv=8)
balanced = crossover(OUR_FWD_FLOPS, NVLINK4_BYTES_PER_S, causal_fraction=0.5)
bwd_flop_factor = attention_flops(1, D, backward=True) / attention_flops(1, D)  # 2.5


def backward_hides(n, rate):
    """Backward step: K, V and their gradients travel (2x bytes), 2.5x the FLOPs are computed."""
    return bwd_flop_factor * step_flops(n) / rate >= 2 * step_bytes(n) / NVLINK4_BYTES_PER_S


base = n_star[nv, ours]
backward_same_rate = base * 2 / bwd_flop_factor
backward_ours = crossover(OUR_BWD_FLOPS, NVLINK4_BYTES_PER_S) * 2 / bwd_flop_factor
print(f"NVLink, our kernel: n* = {base:,.0f}; causal balanced {balanced:,.0f}; GQA 32/8 {gqa:,.0f}; "
      f"backward {backward_same_rate:,.0f} at the forward's rate, {backward_ours:,.0f} at our backward's "
      f"{OUR_BWD_FLOPS / 1e12:.0f} TFLOP/s")
assert np.isclose(balanced, 2 * base) and np.isclose(gqa, base / 4) and bwd_flop_factor == 2.5
assert np.isclose(backward_same_rate, 0.8 * base) and 600 < backward_ours < 700  # "about 650"
for n_x, rate in ((backward_same_rate, OUR_FWD_FLOPS), (backward_ours, OUR_BWD_FLOPS)):
    assert not backward_hides(0.99 * n_x, rate) and backward_hides(1.01 * n_x, rate)
n_8gpus = N_LONG // 8
ratio = (step_bytes(n_8gpus) / PCIE5_X16_BYTES_PER_S) / (step_flops(n_8gpus) / H100_MEASURED.peak_flops)
print(f"1M tokens on 8 GPUs: n = {n_8gpus:,}; even over PCIe the transfer takes {ratio:.0%} of the compute")
assert n_8gpus == 131072 and ratio < 0.1

# %% [markdown]
# **Takeaway.** Per step a rank sends $O(n)$ bytes and computes $O(n^2)$ FLOPs, so past a block
# length $n^*$ the transfers cost nothing but memory for a second buffer: $n^* = R/\beta$ for bf16
# multi-head attention, about a thousand tokens on NVLink and about ten thousand on PCIe.

# %% [markdown]
# ## 6. Data-parallel training
#
# Ring attention splits one sequence; **data parallelism** splits the batch, the other and more
# common way to use several GPUs. Every rank holds a full copy of the model. At each step:
#
# 1. every rank draws the same global batch (from the seed and the step number) and keeps its own
#    rows, `r, r + W, r + 2W, ...` (`minitransformer.data.get_batch(..., rank=r, world_size=W)`);
# 2. it computes the mean loss of its rows and the gradient of that loss;
# 3. `DistributedDataParallel` **averages the gradients** over the ranks (an all-reduce, started
#    bucket by bucket while the backward pass is still running);
# 4. every rank takes the same optimizer step from the same weights, so the copies stay identical
#    without the weights ever being sent (after one broadcast at the start).
#
# Step 3 is exact because the shards are of equal size: the mean of the per-rank mean losses is the
# mean loss of the global batch, and gradients are linear. The arithmetic, on one process:

# %%
ids = torch.randint(0, 60, (4000,), generator=torch.Generator().manual_seed(0))
x, y = get_batch(ids, 8, 32, seed=0, step=5)  # the global batch, (8, 32)
shards = [get_batch(ids, 8, 32, seed=0, step=5, rank=r, world_size=2) for r in range(2)]
assert torch.equal(x[0::2], shards[0][0]) and torch.equal(x[1::2], shards[1][0])  # rank r: rows r::2

torch.manual_seed(0)
net = GPT(Config(vocab_size=60, block_size=32, n_layer=1, n_embd=16, backend="reference"))


def gradients(xb, yb):
    net.zero_grad()
    net(xb, yb)[1].backward()
    return [p.grad.clone() for p in net.parameters()]


whole = gradients(x, y)
per_rank = [gradients(xs, ys) for xs, ys in shards]
averaged = [(a + b) / 2 for a, b in zip(*per_rank)]
err = max((a - w).abs().max().item() / w.abs().max().item() for a, w in zip(averaged, whole))
print(f"mean of the two ranks' gradients vs the gradient on the whole batch: {err:.1e} (relative)")
assert err < 1e-5

# %% [markdown]
# The command line, on a machine with two GPUs (`--device cuda`, NCCL) or, as below, with two CPU
# processes (gloo):
#
# ```bash
# OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 -m minitransformer.train --device cpu
# ```
#
# `torchrun` starts two copies of the command and tells each its `RANK` and `WORLD_SIZE`;
# `minitransformer/distributed.py` joins them into a group, picks the rows of each batch and wraps
# the model in DDP; only rank 0 prints and writes the checkpoint. Here a tiny run of four steps,
# started by `run_in_processes` (the same start, for a function: `train.main` with the same
# arguments), against the same run in this single process on the whole batch. The corpus is the
# beginning of Python's standard library on this machine; nothing is downloaded.
#
# Training itself is plain PyTorch (`--backend reference`), but rank 0 of `run_in_processes` ends
# the run with one validation batch through the `flash` backend, whose log line names what ran
# (the kernel or its plain-PyTorch twin). Where the interpreter cannot run
# (`CPU_RANKS_PROBLEM`, section 4) the cell starts the same run with `torchrun` itself, whose ranks
# import `kernels` as this process does: compiled for the GPU, so a run on the CPU leaves that
# batch out. Only rank 0 writes, so there the losses of the two processes are read from its
# checkpoint.

# %%
workdir = Path(tempfile.mkdtemp())
tiny = ["--device", "cpu", "--backend", "reference", "--n-layer", "1", "--n-embd", "16",
        "--block-size", "32", "--batch-size", "4", "--steps", "4", "--warmup", "2", "--eval-interval", "2",
        "--eval-batches", "1", "--sample-chars", "0", "--max-chars", "100000", "--seed", "0"]
t0 = time.perf_counter()
if CPU_RANKS_PROBLEM is None:
    histories_ddp = run_in_processes(train.main, [([*tiny, "--out", str(workdir / "ddp")],)] * 2)
    assert histories_ddp[0] == histories_ddp[1]  # both ranks logged the same (global) losses
else:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "minitransformer.train", *tiny, "--out", str(workdir / "ddp")]
    result = subprocess.run(torchrun, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("data parallel: 2 processes, 2 sequences each per step") == 1
    histories_ddp = [load_checkpoint(workdir / "ddp" / "ckpt.pt")["history"]]  # rank 0's
ddp_seconds = time.perf_counter() - t0
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    history_one = train.main([*tiny, "--out", str(workdir / "one")])

print(f"2 processes: {ddp_seconds:.1f} s wall, most of it starting the processes")
print(f"{'step':>4} {'loss, 2 processes':>18} {'loss, 1 process':>16}")
for row_d, row_1 in zip(histories_ddp[0], history_one, strict=True):
    print(f"{row_1['step']:>4} {row_d['train_loss']:>18.7f} {row_1['train_loss']:>16.7f}")
    assert abs(row_d["train_loss"] - row_1["train_loss"]) < 1e-5
w_ddp, w_one = (load_checkpoint(workdir / run / "ckpt.pt")["model"] for run in ("ddp", "one"))
weight_err = max((w_ddp[name] - w_one[name]).abs().max().item() for name in w_one)
print(f"final weights: largest difference {weight_err:.1e}")
assert weight_err < 1e-6

# %% [markdown]
# Two processes, each on half of every batch, end with the weights of one process on the whole
# batch, to float rounding. `tests/test_distributed.py` checks the same with `torchrun` itself, and
# that a run interrupted under one process resumes under two. (In Jupyter, what the processes print
# shows in the cell too: the first lines and the progress bar are rank 0's own output, as under
# `torchrun`; rank 1 prints nothing.)
#
# What travels: once per step, the gradients, as many numbers as the model has parameters,
# whatever the batch size; the all-reduce overlaps the backward pass bucket by bucket. For the
# default model of `make train` that is little:

# %%
default_params = GPT(Config()).num_params()
print(f"default mini Transformer: {default_params:,} parameters = {4 * default_params / 1e6:.1f} MB "
      f"of float32 gradients per step to average")
assert default_params < 1_000_000

# %% [markdown]
# **Takeaway.** Data parallelism changes who computes which rows, not what is computed: with
# gradients averaged over equal shards, $W$ processes reproduce one process on the global batch.

# %% [markdown]
# ## 7. Measured on two GPUs?
#
# Not in this workplace. The measurement that belongs here is the training throughput (tokens per
# second) of the mini Transformer on one and on two GPUs of one host,
# `benchmarks/results/h200x2/ddp_tokens_per_s.csv`. The two-GPU machine was not available to this
# project, so **it has not been measured**, and ring attention has not run on GPUs at all: every
# number about several devices in this notebook is either computed on CPU processes (sections 4
# and 6; on one GPU, rank after rank, where those processes cannot run the kernel) or an estimate
# from nominal link speeds (section 5). The cell below shows the file if it
# exists and says so if it does not; it invents nothing.

# %%
measured = ROOT / "benchmarks" / "results" / "h200x2" / "ddp_tokens_per_s.csv"
if measured.exists():
    with open(measured) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    print(f"{measured.relative_to(ROOT)}:")
    for line in lines:
        print("   ", line)
else:
    print(f"not measured: {measured.relative_to(ROOT)} does not exist (no two-GPU machine was available)")

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases against a float64 reference and prints `pass`, or the first wrong element and what it
# should be; it never stops the notebook, and the rest of the notebook does not use your function.
# Stuck? `show_solution("11.ring_merge")` prints one answer (the answers live in
# `exercises/solutions/nb11.py`, out of sight).
#
# **1. The ring's step.** At every step a rank holds its running result over the blocks seen so far,
# `out` `(batch, heads, n, head_dim)` and `lse` `(batch, heads, n)`, and the kernel hands it the
# partial `(out_b, lse_b)` over the block just received, normalised over that block alone. Write
# `ring_merge(out, lse, out_b, lse_b)`, returning the new `(out, lse)`; the ring starts from
# `out = 0`, `lse = -inf`. The check runs whole rings of 1 to 5 ranks on one process, with ragged
# blocks and causal masks with windows, and visits the future blocks too (a ring that does not skip
# them): rows that see none of a block arrive with `lse_b = -inf`, and padding rows see no key at
# all, so they must end as `out = 0`, `lse = -inf`, not NaN.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def ring_merge(out, lse, out_b, lse_b):
    raise NotImplementedError  # your code here: section 2's formula, safe for rows with no key


check("11.ring_merge", ring_merge)

# %% [markdown]
# **2. Who waits in a causal ring.** Cut the sequence into $2W$ equal chunks; each rank holds two.
# `"contiguous"`: rank $r$ holds chunks $2r$ and $2r + 1$ (section 3's blocks, halved);
# `"zigzag"`: chunks $r$ and $2W - 1 - r$. At step $s$ rank $r$ computes its two query chunks
# against the two key/value chunks of rank $(r - s) \bmod W$. Count the work in chunk pairs: a key
# chunk wholly in the past of a query chunk costs 1, the same chunk (its diagonal) $\tfrac12$, a
# chunk in the future 0. Write `causal_work(world_size, layout)`, returning a NumPy array `work`
# of shape `(W, W)` with `work[r, s]` the work of rank $r$ at step $s$. Every step waits for its
# busiest rank, so the ring's time follows `work.max(axis=0).sum()`, not the total: when it
# passes, the check prints that pace for both layouts at $W = 8$.

# %%
def causal_work(world_size, layout):
    raise NotImplementedError  # your code here


check("11.causal_work", causal_work)

# %% [markdown]
# ## References
#
# * Liu, Zaharia, Abbeel, "Ring Attention with Blockwise Transformers for Near-Infinite Context",
#   2023, arXiv:2310.01889: key/value blocks passed around a ring of devices, each transfer hidden
#   behind the computation on the block held (sections 3 to 5).
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   merge of partial softmaxes that makes the blocks combine exactly (section 2).
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the kernel each rank calls, and its log-sum-exp output.
# * Jacobs, Tanaka, Zhang, Zhang, Song, Rajbhandari, He, "DeepSpeed Ulysses: System Optimizations
#   for Enabling Training of Extreme Long Sequence Transformer Models", 2023, arXiv:2309.14509:
#   sequence parallelism by all-to-all exchanges of heads instead of a ring.
# * Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020,
#   arXiv:2006.15704: `DistributedDataParallel`, its gradient buckets and the all-reduce that
#   overlaps the backward pass (section 6).

# %% [markdown]
# ## What comes next
#
# From the $N \times N$ matrix of notebook 01 to attention spread over several processes, every
# notebook so far has checked that the kernel computes the right thing and counted what it moves.
# [12 · Performance](12_performance.ipynb) asks whether it is fast: the measured TFLOP/s of this
# kernel against PyTorch's FlashAttention-2, cuDNN and FlexAttention, where each sits on the
# roofline, and the block-size sweep behind the launch tables. Beyond the series:
#
# * implement the zigzag layout in `kernels/ring.py` (exercise 2 gives the counts to check) and
#   compare the per-rank work of the two layouts;
# * on a machine with two or more GPUs, run the `torchrun` command of section 6 with
#   `--device cuda` and time ring attention per step, to put measured numbers where section 7 has
#   none and to test the crossover estimate of section 5;
# * read how ring attention and the alternative that exchanges heads instead of sequence blocks
#   with all-to-all collectives (DeepSpeed-Ulysses) trade communication for memory.
