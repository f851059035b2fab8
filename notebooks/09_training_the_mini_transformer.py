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
# * why the two curves still drift apart in bf16 on a GPU: rounding in different places,
#   compounded over the steps, not a bug;
# * what gradient clipping (`--grad-clip` of `minitransformer/train.py`) does, on a run that
#   diverges without it and trains with it, and why it matters less with AdamW;
# * what the kernel buys on a GPU: memory that stays flat as the context grows, where naive
#   attention's grows with it ($N^2$ per sequence) and runs out;
# * how generation uses the kernel's bottom-right causal alignment and split-KV decoding: each new
#   token is one query against the cached keys.
#
# **Read first:** [07 · The backward pass](07_backward.ipynb) (training needs it) and
# [08 · Masks, lengths and decoding](08_masks_lengths_and_decoding.ipynb) (the KV cache step).
#
# **Words:** [glossary](GLOSSARY.md) (KV cache, split-KV decoding). The exercises at the end check
# code you write: gradient clipping, the next-token loss, the rotary embedding.

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
import math
import tempfile
from types import SimpleNamespace

import matplotlib.pyplot as plt
import torch

from kernels import attention_reference, flash_attention, rel_err
from minitransformer import GPT, Config, train
from minitransformer import model as model_module
from minitransformer.checkpoint import load_checkpoint, model_from_checkpoint
from minitransformer.data import Vocab, get_batch, read_corpus, split, unigram_entropy
from minitransformer.model import KVCache

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # a tiny model on a CPU, a larger one on a GPU
ROOT = Path(kernels.__file__).resolve().parents[1]  # the checkout, wherever the notebook runs from
RESULTS = ROOT / "benchmarks" / "results" / "h100"
# The CPU tensors here are tiny: one CPU thread is faster than several that wait for each other
# (on a busy 2-core machine, many times faster).
torch.set_num_threads(1)
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
# interpreter would be far slower), and the training log says which ran. The model is tiny on a
# CPU and larger on a GPU. The corpus is the source of Python's standard library, read
# from this machine's Python installation: nothing is downloaded.

# %%
# The CPU sizes, also those of the short runs of sections 3 and 4
TINY = dict(n_layer=1, n_embd=32, block_size=32, batch_size=4, steps=30, warmup=5, max_chars=200_000)
if SMALL:
    sizes = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]
    sizes += ["--eval-interval", "15", "--eval-batches", "2"]
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
PRECISION = "float32 on the CPU" if SMALL else "bf16 autocast on the GPU"
print(f"{PRECISION}: largest difference between the two training curves {diff.max():.2e} "
      f"(first 10 steps: {diff[:10].max():.2e}, last 10: {diff[-10:].max():.2e})")
# On a CPU both run in float32: the curves agree to rounding, at every step. On a GPU training
# uses bf16 autocast, whose rounding differs between the two computations (section 3).
if SMALL:
    assert diff.max() < 1e-5
else:
    assert diff[:10].max() < 2e-2
assert loss["flash"][-1] < loss["flash"][0]  # and it learns

fig, ax = plt.subplots(figsize=(6.5, 3.8))
steps = range(1, len(loss["flash"]) + 1)
ax.plot(steps, loss["reference"], lw=4, alpha=0.4, label="reference (naive attention)")
ax.plot(steps, loss["flash"], lw=1.5, label="flash (tiled FlashAttention)")
ax.set(xlabel="optimizer step", ylabel="training loss (nats / character)",
       title="Same seed, same batches: the curves lie on top of each other")
ax.legend()
plt.show()

# %% [markdown]
# **Takeaway:** FlashAttention is not an approximation. The two runs differ by float rounding
# only, because the tiled algorithm computes the same softmax as the naive one (notebook 03).

# %% [markdown]
# ## 3. Why the curves drift apart in bf16
#
# On a GPU the model trains under bf16 autocast (`devices.autocast_for`): the matrix products run
# in bfloat16, which keeps 8 significant bits, so each rounding can be off by up to $2^{-8}$,
# about 0.4% (float32 keeps 24 bits: $6 \cdot 10^{-8}$). The two backends round in different
# places:
#
# * naive attention under autocast computes $S = QK^\top$ as a bf16 matrix (its row max and the
#   subtraction too); CUDA autocast runs `exp` and sums in float32, so the exponentials, their row
#   sums and the division are float32, and the normalised $P$ is rounded to bf16 for $PV$;
# * the kernel keeps $S$, the running max $m$ and sum $\ell$ and each tile of $P$ in fp32
#   registers, rounds a tile of *unnormalised* $P$ to bf16 just before its $PV$ product
#   (`tl.dot(p.to(v.dtype), v, acc)` in `kernels/flash_fwd.py`), divides by the fp32 $\ell$ at the
#   end, and adds the key tiles up in another order.
#
# So one attention call gives two outputs that differ by about bf16's rounding, where in float32
# they agree to about $10^{-7}$:

# %%
print(f"unit roundoff: bf16 {torch.finfo(torch.bfloat16).eps / 2:.1e}, "
      f"float32 {torch.finfo(torch.float32).eps / 2:.1e}")
q, k, v = (torch.randn(2, 1, 128, 32, device=DEVICE) for _ in range(3))
exact = attention_reference(q.double(), k.double(), v.double(), causal=True)
gaps = {}
for dtype in (torch.float32, torch.bfloat16):
    qd, kd, vd = (x.to(dtype) for x in (q, k, v))
    flash, naive = flash_attention(qd, kd, vd, causal=True), attention_reference(qd, kd, vd, causal=True)
    gaps[dtype] = rel_err(flash, naive)
    print(f"{str(dtype):>15}: flash vs float64 {rel_err(flash, exact):.1e}, naive vs float64 "
          f"{rel_err(naive, exact):.1e}, flash vs naive {gaps[dtype]:.1e}")
assert gaps[torch.float32] < 1e-5 and 1e-3 < gaps[torch.bfloat16] < 3e-2
assert gaps[torch.bfloat16] > 100 * gaps[torch.float32]

# %% [markdown]
# In training those differences do not stay put. Different outputs give slightly different
# gradients, the optimizer turns them into slightly different weights, and the next step starts
# from those: each step adds its own rounding difference on top of the gap the earlier steps
# left. The curves drift apart slowly while both go down alike.
#
# A CPU can show the compounding too, under CPU bf16 autocast. Here is the training loop of
# `minitransformer/train.py` on one page (its warmup and cosine schedule `train.lr_at`, its AdamW
# `train.make_optimizer`, the batches of `data.get_batch`, the clipping of section 4), small
# enough to run many times on a CPU. First it must be train.py's loop: in float32 it reproduces
# section 2's curve.

# %%
text, _ = read_corpus(None, TINY["max_chars"])
vocab = Vocab.from_text(text)
ids = vocab.encode(text)
train_ids, _ = split(ids, TINY["block_size"])
UNIGRAM = unigram_entropy(ids, vocab.size)  # the loss of a model that ignores the context


def short_run(*, backend="reference", optimizer="adamw", lr=3e-3, grad_clip=1.0, steps=TINY["steps"],
              warmup=TINY["warmup"], bf16=False, seed=0):
    """Train the TINY model on the CPU as train.main does; the loss and the gradient norm (before
    clipping) of every step, up to the first non-finite loss."""
    torch.manual_seed(seed)
    config = Config(vocab_size=vocab.size, block_size=TINY["block_size"], n_layer=TINY["n_layer"],
                    n_embd=TINY["n_embd"], backend=backend)
    model = GPT(config)
    args = SimpleNamespace(lr=lr, min_lr=lr / 10, warmup=warmup, steps=steps, weight_decay=0.1)
    if optimizer == "adamw":
        opt = train.make_optimizer(model, args)
    else:  # plain SGD with momentum: its step is proportional to the gradient
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses, norms = [], []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = train.lr_at(step, args)
        x, y = get_batch(train_ids, TINY["batch_size"], TINY["block_size"], seed=seed, step=step)  # (B, T)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # the global norm of all gradients; rescaled to grad_clip when above it (inf: never)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
        if not math.isfinite(losses[-1]):
            break
    return torch.tensor(losses), torch.tensor(norms)


if SMALL:  # section 2 ran these sizes on this CPU: the same loop, step for step
    same = short_run(backend="flash")[0]
    print(f"this loop vs train.main (section 2): largest difference {(same - loss['flash']).abs().max():.1e}")
    assert torch.equal(same, loss["flash"])

# %%
bf16_loss = {backend: short_run(backend=backend, bf16=True)[0] for backend in ("flash", "reference")}
bf16_diff = (bf16_loss["flash"] - bf16_loss["reference"]).abs()
fp32_diff = diff if SMALL else None  # section 2's runs: float32 on a CPU, bf16 on a GPU
print(f"bf16 autocast on the CPU: |flash - reference| {bf16_diff[0]:.1e} at step 1, "
      f"{bf16_diff[-10:].max():.1e} at most over the last 10 steps")
# the gap grows with the steps, far above float32's
assert bf16_diff[-10:].max() > 10 * max(bf16_diff[0].item(), 1e-7)
assert fp32_diff is None or bf16_diff.max() > 100 * fp32_diff.max()

fig, ax = plt.subplots(figsize=(6.5, 3.8))
ax.semilogy(range(1, len(bf16_diff) + 1), bf16_diff.clamp(min=1e-9), "o-", ms=3, label="bf16 autocast (CPU)")
ax.semilogy(range(1, len(diff) + 1), diff.clamp(min=1e-9), "s-", ms=3, label=f"section 2, {PRECISION}")
ax.set(xlabel="optimizer step", ylabel="|flash - reference| loss (nats / character)",
       title="Rounding differences compound over the steps (1e-9 stands for 0)")
ax.legend()
plt.show()

# %% [markdown]
# On this CPU, `flash` is the kernel's plain-PyTorch twin. It reads its tiles in fp32, but CPU
# autocast casts its tile products to bf16 (so $S$ and the unnormalised $P$ are rounded to bf16)
# while its running max, sum and accumulator stay fp32; naive attention under CPU autocast runs
# its whole softmax on bf16 tensors (CPU autocast, unlike CUDA's, leaves `exp` and sums in bf16).
# Neither rounds exactly like its GPU counterpart, but the two round differently from each other,
# and that is enough. On a GPU section 2 itself ran in bf16 with the Triton kernel, at the larger
# size: its curve in this figure is the drift there.
#
# **Takeaway:** the curves of two exact algorithms part in bf16 because each rounds in its own
# places and training compounds the differences; the check that the kernel is right is the
# float32 comparison (or the kernel's tests against a float64 oracle), not the bf16 curves.

# %% [markdown]
# ## 4. Gradient clipping
#
# `train.py` clips the gradient before each step (`--grad-clip`, 1.0 by default), with
# `torch.nn.utils.clip_grad_norm_`: it computes one norm over *all* the parameters' gradients,
# $\lVert g \rVert = \sqrt{\sum_i \lVert g_i \rVert^2}$, and if it is above the threshold $c$ multiplies
# every gradient by $c / \lVert g \rVert$. The direction of the step is kept; only its length is
# capped.
#
# Why it matters is easiest to see with plain SGD, whose step is $\mathrm{lr} \cdot g$. At a high
# learning rate one large gradient makes a large step, which can land where the gradients are
# larger still: the next step is larger again, and a few steps later the weights are infinite.
# Pascanu et al. (2013) met this in recurrent networks, whose loss has steep "cliffs", and
# proposed the clipping. Below, the TINY model trains with SGD (momentum 0.9) at learning rate
# 1.0 without warmup, once without clipping and once clipped at $c = 1$, from the same seed on the
# same batches; naive attention (the `reference` backend) is the faster of the two on a CPU, and
# section 2 showed they compute the same function.

# %%
CLIP, SGD_LR, SGD_STEPS = 1.0, 1.0, 100
runs = {clip: short_run(optimizer="sgd", lr=SGD_LR, grad_clip=clip, steps=SGD_STEPS, warmup=0)
        for clip in (0.0, CLIP)}
(loss_free, norm_free), (loss_clip, norm_clip) = runs[0.0], runs[CLIP]
print(f"SGD, lr {SGD_LR}, no clipping: the loss is {loss_free[-1]:.3g} at step {len(loss_free)} "
      f"(it started at {loss_free[0]:.2f}); the gradient norm reached "
      f"{norm_free[torch.isfinite(norm_free)].max():.2g}")
print(f"clipped at {CLIP}: {len(loss_clip)} steps, from {loss_clip[0]:.2f} to {loss_clip[-10:].mean():.2f} "
      f"nats/char over the last 10 (unigram entropy {UNIGRAM:.2f}); clipping was active on "
      f"{(norm_clip > CLIP).float().mean():.0%} of the steps")
assert len(loss_free) < SGD_STEPS and not math.isfinite(loss_free[-1])  # diverged, and stopped
assert len(loss_clip) == SGD_STEPS and torch.isfinite(loss_clip).all()
assert loss_clip[-10:].mean() < loss_clip[0] - 0.5  # and trained

fig, (ax_loss, ax_norm) = plt.subplots(1, 2, figsize=(11, 3.8))
for (losses, norms), label in ((runs[0.0], "no clipping"), (runs[CLIP], f"clipped at {CLIP}")):
    ok = torch.isfinite(losses)
    line, = ax_loss.semilogy(torch.arange(1, len(losses) + 1)[ok], losses[ok], label=label)
    ax_norm.semilogy(torch.arange(1, len(norms) + 1)[torch.isfinite(norms)], norms[torch.isfinite(norms)],
                     color=line.get_color(), label=label)
    if not ok.all():
        ax_loss.plot(ok.sum().item(), losses[ok][-1], "x", ms=10, mew=2, color=line.get_color(),
                     label=f"next step: loss {losses[-1].item()}")
ax_loss.axhline(UNIGRAM, color="gray", ls=":", label=f"unigram entropy ({UNIGRAM:.2f})")
ax_norm.axhline(CLIP, color="gray", ls="--", label=f"threshold c = {CLIP}")
ax_loss.set(xlabel="optimizer step", ylabel="training loss (nats / character)",
            title=f"SGD at lr {SGD_LR}: with and without clipping")
ax_norm.set(xlabel="optimizer step", ylabel="gradient norm before clipping",
            title="The gradient norm the clipping sees")
for a in (ax_loss, ax_norm):
    a.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Without clipping the gradient norm grows by orders of magnitude, step after step, until the
# loss is NaN (the first line above says at which step). Clipped, no gradient is longer than
# $c$, so no step is longer than $\mathrm{lr} \cdot c / (1 - 0.9)$ (the momentum adds up at most
# ten of them), and the same learning rate trains.
#
# **With AdamW, as `train.py` trains, clipping matters less.** Adam divides each coordinate of
# the gradient by a running root mean square of its recent values, so multiplying every gradient
# by one factor changes nothing, and a step is about $\mathrm{lr}$ per coordinate whatever the
# gradient's norm. Clipping rescales different steps by different factors, so it still acts on
# Adam through the steps whose norm is far above their neighbours': an outlier batch, which it
# keeps from dominating the running averages. That is what `--grad-clip 1.0` guards against. At
# `train.py`'s default learning rate, the same short run with and without it:

# %%
adam = {clip: short_run(lr=3e-3, grad_clip=clip, steps=SGD_STEPS) for clip in (0.0, CLIP)}
active = (adam[CLIP][1] > CLIP).float().mean()
end = {clip: adam[clip][0][-10:].mean().item() for clip in adam}
print(f"AdamW, lr 3e-3: clipping active on {active:.0%} of the steps; last 10 steps at {end[CLIP]:.3f} "
      f"clipped, {end[0.0]:.3f} not (difference {abs(end[CLIP] - end[0.0]):.3f} nats/char)")
assert active > 0.3 and abs(end[CLIP] - end[0.0]) < 0.1  # clipped often, to little effect

# %% [markdown]
# **Takeaway:** gradient clipping caps the length of a step, not its direction. With SGD that is
# the difference between diverging and training at a high learning rate; AdamW already bounds
# its steps, and clipping is its guard against a rare outlier gradient.

# %% [markdown]
# ## 5. What it buys: memory and speed vs sequence length
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
assert ref_oom and growth > 8  # tokens x N per layer at fixed tokens: the naive matrices dominate
speedup = [float(f["tokens_per_s"]) / float(r["tokens_per_s"])
           for f, r in zip(by_backend["flash"], by_backend["reference"]) if r["status"] == "ok"]
print("flash / reference tokens per second:", [f"{s:.1f}" for s in speedup])
assert speedup[-1] > speedup[0] > 1  # the advantage grows with N

# %% [markdown]
# At a fixed number of tokens per step, the kernel's memory does not depend on the sequence
# length at all, while naive attention's grows in proportion to $N$: its score and probability
# matrices, kept for the backward pass, each hold batch $\times N^2$ = tokens $\times N$ entries
# per layer, until they no longer fit in 80 GB. PyTorch's own FlashAttention-2 (`sdpa`) shares
# the flat memory; at this tiny single-head width it is still faster than our kernel at long N.
# Where the kernel's time goes, and how its block sizes were tuned, is the subject of
# [12 · Performance](12_performance.ipynb).
#
# **Takeaway:** the IO-aware algorithm turns an $O(N^2)$ memory cost into $O(N)$, which is what
# makes long contexts trainable at all.

# %% [markdown]
# ## 6. Sampling with the KV cache
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

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases against a reference and prints `pass`, or the first wrong case and what it should be; it
# never stops the notebook, and the rest of the notebook does not use your function. Stuck?
# `show_solution("09.clip_grad_norm_")` prints one answer (the answers live in
# `exercises/solutions/nb09.py`, out of sight).
#
# **1. Global-norm clipping.** Write `clip_grad_norm_(grads, max_norm)` as section 4 describes
# it: `grads` is a list of tensors of any shapes (a scalar among them); scale them *in place*, all
# by the same factor, so that their global norm is at most `max_norm`, and return the global norm
# before clipping, as `torch.nn.utils.clip_grad_norm_` does. The check includes gradients that
# are each below `max_norm` but not together, a norm below `max_norm` (nothing may change) and
# all-zero gradients.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def clip_grad_norm_(grads, max_norm):
    raise NotImplementedError  # your code here


check("09.clip_grad_norm_", clip_grad_norm_)

# %% [markdown]
# **2. The next-token loss.** The model's `forward` takes `targets` already shifted by
# `data.get_batch` (`x, y = windows[:, :-1], windows[:, 1:]`). Do the shift yourself: write
# `next_token_loss(logits, tokens)`, where `tokens` `(B, T)` are the characters the model read and
# `logits` `(B, T, V)` its output, row `t` being its prediction *after* reading `tokens[:, t]`.
# Return the mean cross-entropy, in nats, of those predictions against the characters that
# follow, over the `B (T - 1)` positions that have one. The check includes `T = 2` and logits in
# the thousands (compute the log-softmax stably).

# %%
def next_token_loss(logits, tokens):
    raise NotImplementedError  # your code here


check("09.next_token_loss", next_token_loss)

# %% [markdown]
# **3. Rotary position, one vector.** Write `rotate(x, pos, base)`: the rotary embedding that
# `minitransformer.model.apply_rotary` gives a query or key `x` `(D,)` at position `pos`. The
# feature pairs are `(x[i], x[i + D/2])`, not neighbours, and pair `i` turns by the angle
# $\mathrm{pos} \cdot \mathrm{base}^{-2i/D}$, counter-clockwise. The check includes position 0,
# `D = 2`, positions up to 100 and a base other than 10,000.

# %%
def rotate(x, pos, base):
    raise NotImplementedError  # your code here


check("09.rotate", rotate)

# %% [markdown]
# ## References
#
# * Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin, "Attention Is All You
#   Need", NeurIPS 2017, arXiv:1706.03762: the decoder-only Transformer's block, and training it
#   on next-token cross-entropy.
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: exact attention in $O(N)$ memory, what section 5 measures.
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the loop order of the kernel this model trains with.
# * Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural networks", ICML 2013,
#   arXiv:1211.5063: exploding gradients and clipping the gradient's norm (section 4).
# * Loshchilov, Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101:
#   AdamW, the optimizer of `train.py`; Kingma, Ba, "Adam: A Method for Stochastic Optimization",
#   ICLR 2015, arXiv:1412.6980: the per-coordinate normalisation of section 4.
# * Micikevicius et al., "Mixed Precision Training", ICLR 2018, arXiv:1710.03740: training with
#   16-bit products and float32 weights, as autocast does (section 3).
# * Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
#   Embedding", 2021, arXiv:2104.09864: the rotary positions of the model (exercise 3).
# * Karpathy, nanoGPT, github.com/karpathy/nanoGPT: the layout of `minitransformer/`.

# %% [markdown]
# ## What comes next
#
# Softmax attention's $N \times N$ matrix is gone from memory, but not from the arithmetic: the
# work still grows as $N^2$, and generation still keeps a KV cache that grows with the context.
# [10 · Linear attention](10_linear_attention.ipynb) changes the function instead: a feature map in
# place of the exponential turns attention into a recurrence on a fixed-size state, trained with a
# chunked Triton kernel, and retrains this model with it to see what that costs.
