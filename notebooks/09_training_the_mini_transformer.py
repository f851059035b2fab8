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
# # 09 · Training the mini Transformer with our kernel
#
# **What you will learn**
#
# * where the kernel sits in a real model: one call in the attention layer of a nanoGPT-style
#   character model (`minitransformer/model.py`);
# * that training with FlashAttention and with naive attention from the same seed gives the same
#   loss curve: the algorithm is exact, only the memory traffic changes;
# * what that buys on a GPU: memory that stays flat as the context grows, where naive attention
#   grows as $N^2$ and runs out;
# * how generation uses the kernel's bottom-right causal alignment and split-KV decoding: each new
#   token is one query against the cached keys.
#
# **Read first:** [07 · The backward pass](07_backward.ipynb) (training needs it) and
# [08 · Masks, lengths and decoding](08_masks_lengths_and_decoding.ipynb) (the KV cache step).

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import contextlib
import csv
import inspect
import io
import tempfile

import matplotlib.pyplot as plt
import torch

from minitransformer import model as model_module
from minitransformer import train
from minitransformer.checkpoint import load_checkpoint, model_from_checkpoint
from minitransformer.model import KVCache

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # a tiny model on a CPU, a larger one on a GPU
RESULTS = Path.cwd().parent / "benchmarks" / "results" / "h100"
print(f"device: {DEVICE}, kernels: {kernels.implementation()}")

# %% [markdown]
# ## 1. Where the kernel sits
#
# The model is a stack of pre-LayerNorm blocks; each block's attention layer projects the input to
# one head of queries, keys and values (the model is single-head: the head dimension is the model
# width), rotates queries and keys (rotary positions), and calls one attention function. That
# function is the only place the backend matters:

# %%
print(inspect.getsource(model_module.SelfAttention.forward))
print(inspect.getsource(model_module.attention))

# %% [markdown]
# In training the queries and keys have the same length and `causal=True` is the ordinary causal
# mask. During generation the query is the newest token and the keys are the whole cache: the
# bottom-right alignment of notebook 08 lets that one query see every cached key, and
# `flash_decode` computes it with the split-KV kernel.
#
# **Takeaway:** swapping naive attention for FlashAttention is a one-line change in the model.

# %% [markdown]
# ## 2. Same seed, same curve
#
# We train twice from one seed, on the same batches: once through our FlashAttention (`flash`),
# once through naive attention (`reference`). On a GPU `flash` is the Triton kernel; on a CPU, with
# or without Triton, it is the kernel's plain-PyTorch twin (the same tiled algorithm; Triton's
# interpreter would be about 100 times slower), and the training log says which ran. The model is
# tiny on a CPU and larger on a GPU. The corpus is the source of Python's standard library, read
# from this machine's Python installation: nothing is downloaded.

# %%
if SMALL:
    sizes = ["--n-layer", "1", "--n-embd", "32", "--block-size", "32", "--batch-size", "4",
             "--steps", "30", "--warmup", "5", "--eval-interval", "15", "--eval-batches", "2",
             "--max-chars", "200000"]
else:
    sizes = ["--n-layer", "2", "--n-embd", "128", "--block-size", "256", "--batch-size", "16",
             "--steps", "300", "--warmup", "30", "--eval-interval", "100", "--max-chars", "1000000"]
workdir = Path(tempfile.mkdtemp())
histories = {}
for backend in ("flash", "reference"):
    args = [*sizes, "--backend", backend, "--device", DEVICE, "--seed", "0", "--sample-chars", "0",
            "--out", str(workdir / backend)]
    with contextlib.redirect_stderr(io.StringIO()):  # keep the progress bars out of the notebook
        histories[backend] = train.main(args)

# %%
loss = {b: torch.tensor([row["train_loss"] for row in h]) for b, h in histories.items()}
diff = (loss["flash"] - loss["reference"]).abs()
print(f"largest difference between the two training curves: {diff.max():.2e} "
      f"(first 10 steps: {diff[:10].max():.2e})")
# On a CPU both run in float32: the curves agree to rounding. On a GPU training uses bf16
# autocast, whose rounding differs between the two computations and grows over the steps.
assert diff[:10].max() < (1e-4 if SMALL else 2e-2)
assert loss["flash"][-1] < loss["flash"][0]  # and it learns

fig, ax = plt.subplots(figsize=(6.5, 3.8))
steps = range(1, len(loss["flash"]) + 1)
ax.plot(steps, loss["reference"], lw=4, alpha=0.4, label="reference (naive attention)")
ax.plot(steps, loss["flash"], lw=1.5, label="flash (tiled FlashAttention)")
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss (nats / character)")
ax.set_title("Same seed, same batches: the curves lie on top of each other")
ax.legend()
plt.show()

# %% [markdown]
# **Takeaway:** FlashAttention is not an approximation. The two runs differ by float rounding
# only, because the tiled algorithm computes the same softmax as the naive one (notebook 03).

# %% [markdown]
# ## 3. What it buys: memory and speed vs sequence length
#
# `benchmarks/train_memory.py` times one training step of a 4-layer, width-128 model on an H100
# at sequence lengths from 1k to 64k (64k tokens per step) and records the peak GPU memory, for
# the three backends. The figure is made from the committed CSV, so it shows on any machine.

# %%
with open(RESULTS / "train_memory.csv") as f:
    rows = list(csv.DictReader(line for line in f if not line.startswith("#")))  # skip the metadata line
device_name = rows[0]["device"]
by_backend = {b: [r for r in rows if r["backend"] == b] for b in ("flash", "reference", "sdpa")}
fig, (ax_mem, ax_speed) = plt.subplots(1, 2, figsize=(11, 3.8))
for backend, rs in by_backend.items():
    ok = [r for r in rs if r["status"] == "ok"]
    n = [int(r["seqlen"]) for r in ok]
    style = dict(marker="o", label=backend, ls="--" if backend == "sdpa" else "-")
    ax_mem.plot(n, [float(r["peak_mem_mib"]) / 1024 for r in ok], **style)
    ax_speed.plot(n, [float(r["tokens_per_s"]) / 1e6 for r in ok], **style)
    for r in rs:
        if r["status"] != "ok":  # mark the lengths where the step did not fit in the GPU
            ax_mem.annotate("OOM", (int(r["seqlen"]), 0.9), xycoords=("data", "axes fraction"),
                            ha="center", color="C1", fontweight="bold")
for ax in (ax_mem, ax_speed):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length N (tokens)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
ax_mem.set_yscale("log")
ax_mem.set_ylabel("peak GPU memory of a step (GiB)")
ax_mem.set_title("Peak memory (flash and sdpa on one line)")
ax_speed.set_ylabel("training throughput (M tokens / s)")
ax_speed.set_title(f"One training step, {device_name}")
plt.show()

# %%
flash_mem = [float(r["peak_mem_mib"]) for r in by_backend["flash"] if r["status"] == "ok"]
ref_ok = [r for r in by_backend["reference"] if r["status"] == "ok"]
ref_oom = [int(r["seqlen"]) for r in by_backend["reference"] if r["status"] != "ok"]
growth = float(ref_ok[-1]["peak_mem_mib"]) / float(ref_ok[0]["peak_mem_mib"])
print(f"flash: peak memory {min(flash_mem):.0f}..{max(flash_mem):.0f} MiB over all lengths")
print(f"reference: {growth:.1f}x more memory from N={ref_ok[0]['seqlen']} to N={ref_ok[-1]['seqlen']}, "
      f"out of memory at N = {ref_oom}")
assert max(flash_mem) / min(flash_mem) < 1.1  # flat: O(N) memory at a fixed number of tokens
assert ref_oom and growth > 8  # quadratic: the naive matrices dominate
speedup = [float(f["tokens_per_s"]) / float(r["tokens_per_s"])
           for f, r in zip(by_backend["flash"], by_backend["reference"]) if r["status"] == "ok"]
print("flash / reference tokens per second:", [f"{s:.1f}" for s in speedup])
assert speedup[-1] > speedup[0] > 1  # the advantage grows with N

# %% [markdown]
# At a fixed number of tokens per step, the kernel's memory does not depend on the sequence
# length at all, while naive attention's grows as $N^2$ (its score and probability matrices are
# kept for the backward pass) until it no longer fits in 80 GB. PyTorch's own FlashAttention-2
# (`sdpa`) shares the flat memory; at this tiny single-head width it is still faster than our
# kernel at long N, which is what the benchmark notebook's tuning is for.
#
# **Takeaway:** the IO-aware algorithm turns an $O(N^2)$ memory cost into $O(N)$, which is what
# makes long contexts trainable at all.

# %% [markdown]
# ## 4. Sampling with the KV cache
#
# `generate()` runs the prompt once, then appends one token at a time: each step computes only the
# new token, whose query attends to the cached keys and values of everything before it. With the
# `flash` backend that step is `flash_decode` (on a CPU its twin, `flash_decode_torch`). We check
# that it gives the same tokens as recomputing the whole sequence at every step.

# %%
ckpt_path = workdir / "reference" / "ckpt.pt"
ckpt = load_checkpoint(ckpt_path)
net = model_from_checkpoint(ckpt, ckpt_path, backend="flash").to(DEVICE)
chars = ckpt["vocab"]
prompt = torch.tensor([[chars.index(c) for c in "def "]], device=DEVICE)  # (1, 4)
n_new = 40 if SMALL else 300
# sampled (temperature 0.8) with one seed for both: the same random draws, so the same text
cached = net.generate(prompt, n_new, temperature=0.8, use_cache=True,
                      generator=torch.Generator().manual_seed(0))
uncached = net.generate(prompt, n_new, temperature=0.8, use_cache=False,
                        generator=torch.Generator().manual_seed(0))
print("".join(chars[i] for i in cached[0].tolist()))
assert torch.equal(cached, uncached)

cache = KVCache()
net(prompt, cache=cache)
print(f"after the prompt, each layer caches keys of shape {tuple(cache.k[0].shape)} (B, 1, T, D)")
assert cache.k[0].shape[2] == prompt.shape[1]

# %% [markdown]
# With so little training (on a CPU) the text is little more than common characters; `make train`
# trains the full-size model for a couple of minutes and prints a sample that looks like Python.
#
# **Takeaway:** the KV cache turns generation into decoding, one query against a long cache, the
# case split-KV decoding (notebook 08) is built for.
#
# ### Try this
# 1. Train once more with `--backend sdpa` and add its curve to the figure of section 2. Does it
#    overlap too? (It should, to rounding: all three backends compute the same function.)
# 2. Add `--packed` to the training arguments: attention then stays within each file of the
#    corpus, through `kernels.flash_attention_varlen`. Check that flash and reference still agree.

# %% [markdown]
# ## What comes next
#
# This is the end of the FlashAttention road: from the naive $N \times N$ matrix (01), through
# tiling (02), online softmax (03), a Triton primer (04), the kernel (05), its IO cost (06) and backward pass (07), to
# masks and decoding (08) and a model that trains with it (09). The linear-attention notebook,
# another way past $N^2$, comes next in the series.
