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
# # 12 · Performance: does fewer bytes mean faster?
#
# **What you will learn**
#
# * how the benchmarks count speed: FLOPs as the FlashAttention papers count them, TFLOP/s, and
#   every speed as a ratio to a reference timed in the same run;
# * TFLOP/s against $N$ for this kernel, SDPA's FlashAttention-2 and cuDNN backends and
#   FlexAttention on an H100: where this kernel is ahead, and where it falls short;
# * where each kernel sits on the roofline: FlashAttention moved attention past the ridge point,
#   and past it bytes no longer set the time;
# * the block-size sweep behind the launch tables: shared memory decides which tiles launch,
#   registers which of them run well, and the best configurations form a plateau, not a peak;
# * what an H200 (the H100's chip with 43% more memory bandwidth) changes: nothing measurable.
#
# **Read first:** [05 · The forward pass](05_flash_attention_forward.ipynb) (block sizes, the
# kernel), [06 · The IO model](06_io_cost_model.ipynb) (bytes, the roofline) and
# [07 · Backward](07_backward.ipynb) (the backward's kernels). Nothing here runs a kernel: the
# notebook reads the CSV files that `benchmarks/` wrote on the lent GPUs, so it runs on any CPU in
# seconds, with or without Triton. On a GPU, `make bench` adds your own measurements, and section
# 6 reads them.
#
# **Words:** [glossary](GLOSSARY.md) (TFLOP/s, arithmetic intensity, roofline, registers, SM,
# wave). The exercises at the end check code you write: the FLOP count, the forward's arithmetic
# intensity, and which tiles fit in shared memory.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import ast
import math
import re
import statistics

import matplotlib.pyplot as plt
import numpy as np
import torch

from kernels.iocost import H100_MEASURED, H100_SXM, H200_SXM, flash2_dram_io, standard_attention_io
from kernels.iocost import flops as flops_per_head

ROOT = Path(kernels.__file__).resolve().parents[1]  # the checkout, wherever the notebook runs from
if str(ROOT) not in sys.path:  # benchmarks/ is not installed: its readers come from the checkout
    sys.path.insert(0, str(ROOT))
from benchmarks.bench_attention import MODEL_DIM, TOKENS, read_rows  # noqa: E402
from benchmarks.bench_attention import flops as bench_flops  # noqa: E402
from benchmarks.results_csv import read_csv  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
H100_DIR, H200_DIR = RESULTS / "h100", RESULTS / "h200"
NOTES = (ROOT / "benchmarks" / "NOTES.md").read_text()
#: the committed runs (device folder -> date in the file's metadata line); a `make bench` on an H100
#: rewrites h100/attention_tflops.csv, and the asserts below pin the committed numbers only
COMMITTED = {"h100": "2026-11-23"}
MODES = ("fwd", "bwd")
NAMES = {"triton": "this kernel", "sdpa-flash": "SDPA FlashAttention-2", "sdpa-cudnn": "SDPA cuDNN",
         "flex": "FlexAttention", "sdpa-efficient": "SDPA memory-efficient", "sdpa-math": "SDPA math"}
print(f"results under {RESULTS}: {sorted(p.name for p in RESULTS.iterdir() if p.is_dir())}")

# %% [markdown]
# ## 1. How speed is counted
#
# `benchmarks/bench_attention.py` times each provider with `triton.testing.do_bench` (the median
# of many runs after a warm-up) and turns the time into TFLOP/s with the FlashAttention papers'
# count: the forward is two matrix products of $2 N_q N_k d$ FLOPs each (per batch and head), the
# backward five (the recomputed $S$, then $dV$, $dP$, $dQ$, $dK$), so 2.5 times the forward, and a
# causal mask halves both. The softmax's exponentials are not counted: they are $O(N^2)$, not
# $O(N^2 d)$, and run on other units. Shapes keep the tokens per call fixed: $16384 / N$ sequences
# of $N$ tokens, $2048 / d$ heads, so every call holds 16k tokens.
#
# Every row of the CSV holds the time and the rate; recompute one from the other, and the count
# from `kernels.iocost.flops` (the one notebook 06 uses):

# %%
meta, rows, comments = read_csv(H100_DIR / "attention_tflops.csv")
_, rows = read_rows(H100_DIR / "attention_tflops.csv")  # the same rows, shape columns as ints
COMMITTED_RUN = meta.get("date") == COMMITTED["h100"]
print(", ".join(f"{k}={v}" for k, v in meta.items()))
print("\n".join(comments))
print(f"{len(rows)} rows; providers: {', '.join(dict.fromkeys(r['provider'] for r in rows))}")
if not COMMITTED_RUN:
    print("this file is not the committed run (a later `make bench` rewrote it): the asserts on the "
          "committed numbers below are skipped")

worst = 0.0
for r in rows:
    f = bench_flops(int(r["batch"]), int(r["heads"]), r["seqlen"], r["head_dim"], r["causal"], r["mode"])
    per_head = {"fwd": flops_per_head(r["seqlen"], r["head_dim"], causal=bool(r["causal"])),
                "bwd": flops_per_head(r["seqlen"], r["head_dim"], causal=bool(r["causal"]), backward=True)}
    per_head["fwd_bwd"] = per_head["fwd"] + per_head["bwd"]
    assert f == int(r["batch"]) * int(r["heads"]) * per_head[r["mode"]]  # one count everywhere
    assert int(r["batch"]) == TOKENS // r["seqlen"] and int(r["heads"]) == MODEL_DIM // r["head_dim"]
    recomputed = f / (float(r["ms"]) * 1e-3) / 1e12
    rounding = 0.05 + recomputed * 0.00005 / float(r["ms"])  # TFLOP/s to 0.1, ms to 0.0001
    worst = max(worst, abs(recomputed - float(r["tflops"])) / rounding)
print(f"TFLOP/s recomputed from the times: the largest difference is {worst:.2f} of the columns' rounding")
assert worst <= 1.001

# %% [markdown]
# The rate is a derived number; the measurement is the time, and a time means little without the
# machine, the date and the versions beside it (the first line of every CSV). Two runs on the same
# shared machine differ by a few percent (`benchmarks/NOTES.md`, step 1), so **speeds are compared
# as ratios to a reference measured in the same process**, never as absolute numbers from two
# runs. The reference here is SDPA's FlashAttention-2 backend: `F.scaled_dot_product_attention`
# with `SDPBackend.FLASH_ATTENTION`, the kernel of the FlashAttention-2 paper as PyTorch ships it.
# Each shape's rows come from one process (the comment line above says which run measured what).
# The speed-up of $a$ over $b$ on one shape is then $t_b / t_a$, which is also the ratio of their
# TFLOP/s, since both did the same count of FLOPs.
#
# **Takeaway.** TFLOP/s = the papers' FLOP count / the median time; compare them as ratios within
# one run.

# %% [markdown]
# ## 2. TFLOP/s against $N$ on an H100
#
# bf16, head dims 64 and 128, causal or not, forward and backward, for the four providers that
# compete: this kernel, SDPA's FlashAttention-2 and cuDNN backends, and FlexAttention (PyTorch's
# attention compiled to Triton by `torch.compile`, measured at three lengths only: each shape
# compiles for tens of seconds).

# %%
def index_rows(rows):
    """{(provider, dtype, head_dim, causal, seqlen, mode): TFLOP/s}."""
    return {(r["provider"], r["dtype"], r["head_dim"], r["causal"], r["seqlen"], r["mode"]):
            float(r["tflops"]) for r in rows}


H100 = index_rows(rows)
SHAPES = sorted({(k[1], k[2], k[3], k[4]) for k in H100 if k[0] == "triton"})  # (dtype, d, causal, N)
PANELS = [(d, c) for d in (64, 128) for c in (0, 1)]
fig, axes = plt.subplots(2, 4, figsize=(15, 7), sharey="row")
for row_axes, mode in zip(axes, MODES):
    for ax, (d, causal) in zip(row_axes, PANELS):
        for name in ("triton", "sdpa-flash", "sdpa-cudnn", "flex"):
            pts = sorted((n, H100[name, "bf16", d, causal, n, mode]) for (dt, dd, cc, n) in SHAPES
                         if (dt, dd, cc) == ("bf16", d, causal)
                         and (name, "bf16", d, causal, n, mode) in H100)
            ax.plot(*zip(*pts), "o-", label=NAMES[name], lw=2.5 if name == "triton" else 1.2)
        ax.axhline(H100_MEASURED.peak_flops / 1e12, color="gray", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set(title=f"{mode}, d = {d}, {'causal' if causal else 'no mask'}",
               xlabel="sequence length N (batch = 16k / N)", ylim=(0, 800))
        ax.grid(alpha=0.3)
    row_axes[0].set_ylabel("TFLOP/s (dotted: bf16 matmul, measured)")
handles, labels = axes[0][0].get_legend_handles_labels()
fig.legend(handles, labels, loc="lower center", ncol=4)
fig.suptitle(f"Attention on the {meta['device']}, bf16 ({meta['date']}, torch {meta['torch']}, "
             f"triton {meta['triton']})")
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()

# %% [markdown]
# The same numbers as ratios to SDPA's FlashAttention-2 and to cuDNN, over every committed shape
# (bf16 at six lengths, fp16 at three):

# %%
def ratios(index, provider, baseline, mode, where=lambda dtype, d, causal, n: True):
    """{(dtype, d, causal, N): TFLOP/s of provider / TFLOP/s of baseline} over the shapes both
    measured in this file (the same run)."""
    return {s: index[(provider, *s, mode)] / index[(baseline, *s, mode)] for s in SHAPES
            if (provider, *s, mode) in index and (baseline, *s, mode) in index and where(*s)}


print(f"{'':>26}" + "".join(f"{f'd={d} ' + ('causal' if c else 'full'):>15}" for d, c in PANELS))
for mode in MODES:
    for base in ("sdpa-flash", "sdpa-cudnn", "flex"):
        line = f"{mode} / {NAMES[base]:<21}"
        for panel in PANELS:
            rs = ratios(H100, "triton", base, mode, lambda dt, dd, cc, n, panel=panel: (dd, cc) == panel)
            line += f"{min(rs.values()):>8.2f}-{max(rs.values()):.2f}"
        print(line)

long_fwd = ratios(H100, "triton", "sdpa-flash", "fwd", lambda dt, d, c, n: n >= 1024)
every_bwd = ratios(H100, "triton", "sdpa-flash", "bwd")
short_fwd = {s: r for s, r in ratios(H100, "triton", "sdpa-flash", "fwd").items() if r < 1}
print(f"\nforward / SDPA-FA2 at N >= 1024: {min(long_fwd.values()):.2f}x-{max(long_fwd.values()):.2f}x "
      f"(median {statistics.median(long_fwd.values()):.2f}x) over {len(long_fwd)} shapes")
print(f"backward / SDPA-FA2: {min(every_bwd.values()):.2f}x-{max(every_bwd.values()):.2f}x over "
      f"{len(every_bwd)} shapes")
for (dt, d, c, n), r in short_fwd.items():
    ms = next(float(x["ms"]) for x in rows if (x["provider"], x["dtype"], x["head_dim"], x["causal"],
                                               x["seqlen"], x["mode"]) == ("triton", dt, d, c, n, "fwd"))
    print(f"forward below SDPA-FA2: {dt} d={d} causal={c} N={n}: {r:.2f}x, one call {ms * 1e3:.0f} us")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
for ax, mode in zip(axes, MODES):
    for (d, causal), color in zip(PANELS, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        label = f"d={d}, {'causal' if causal else 'no mask'}"
        for base, style in (("sdpa-flash", "o-"), ("sdpa-cudnn", "s--")):
            rs = sorted((n, r) for (dt, dd, cc, n), r in ratios(H100, "triton", base, mode).items()
                        if (dt, dd, cc) == ("bf16", d, causal))
            other = "FA-2" if base == "sdpa-flash" else "cuDNN"
            ax.plot(*zip(*rs), style, color=color, label=f"{label} / {other}")
    ax.axhline(1, color="k", lw=1)
    ax.set_xscale("log", base=2)
    ax.set(title=f"{mode}: this kernel's speed over another's, same run", xlabel="sequence length N",
           ylabel="speed-up (x)")
    ax.grid(alpha=0.3)
axes[1].legend(fontsize=7, ncol=2)
fig.suptitle(f"bf16 on the {meta['device']}: above 1, this kernel is faster")
fig.tight_layout()
plt.show()

# %% [markdown]
# Against FlashAttention-2 the kernel is ahead everywhere but the two shortest forwards: every
# backward, and every forward from $N = 1024$ on, the bars the project set itself (forward
# $\ge 1.0\times$, backward $\ge 0.85\times$). Against cuDNN it is behind nearly everywhere: most
# at the shortest forwards and, at every length, in the **backward at head dim 128**.
# FlexAttention is level with it or behind forward, and ahead in that same backward. Asserted:

# %%
cudnn = {mode: ratios(H100, "triton", "sdpa-cudnn", mode) for mode in MODES}
flex = {mode: ratios(H100, "triton", "flex", mode) for mode in MODES}
cudnn_d128_bwd = [1 / r for (dt, d, c, n), r in cudnn["bwd"].items() if d == 128]
flex_d128_bwd = [1 / r for (dt, d, c, n), r in flex["bwd"].items() if d == 128]
ahead_of_cudnn = [(mode, s) for mode in MODES for s, r in cudnn[mode].items() if r >= 1]
print(f"cuDNN faster than this kernel at {sum(r < 1 for m in MODES for r in cudnn[m].values())} of "
      f"{sum(len(cudnn[m]) for m in MODES)} forward and backward shapes; this kernel ahead at "
      f"{ahead_of_cudnn}")
print(f"backward, head dim 128: cuDNN {min(cudnn_d128_bwd):.2f}x-{max(cudnn_d128_bwd):.2f}x this kernel's "
      f"speed, FlexAttention {min(flex_d128_bwd):.2f}x-{max(flex_d128_bwd):.2f}x")
for mode in MODES:
    fa2 = ratios(H100, "triton", "sdpa-flash", mode).values()
    behind = [1 / r for r in cudnn[mode].values()]
    print(f"{mode}: this kernel / SDPA-FA2 median {statistics.median(fa2):.2f}x; cuDNN / this kernel "
          f"{min(behind):.2f}x-{max(behind):.2f}x (median {statistics.median(behind):.2f}x)")
flex_over = {mode: [1 / r for r in flex[mode].values()] for mode in MODES}
print(f"FlexAttention / this kernel, all its shapes: forward {min(flex_over['fwd']):.2f}x-"
      f"{max(flex_over['fwd']):.2f}x, backward {min(flex_over['bwd']):.2f}x-{max(flex_over['bwd']):.2f}x")
if COMMITTED_RUN:
    assert len(long_fwd) == 32 and min(long_fwd.values()) >= 1.0  # forward >= 1.0x FA-2 from N = 1024
    assert len(every_bwd) == 36 and min(every_bwd.values()) >= 1.0  # backward ahead at every shape
    assert set(short_fwd) == {("bf16", 128, 0, 512), ("bf16", 128, 1, 512)}  # only at N = 512, d = 128
    assert ahead_of_cudnn == [("bwd", ("bf16", 64, 1, 512))]  # one shape of 72
    assert 1.35 < min(cudnn_d128_bwd) and max(cudnn_d128_bwd) < 1.65  # the widest gap
    assert all(1.1 < x < 1.35 for x in flex_d128_bwd)

# %% [markdown]
# **Takeaway.** On the H100 this kernel beats PyTorch's FlashAttention-2 backend at every shape but
# two short forwards, by a median 1.26 times forward and 1.22 times backward; cuDNN is faster
# still, by a median 1.27 times forward and 1.40 times backward, up to 1.6 times in the backward at
# head dim 128.

# %% [markdown]
# ## 3. Where each kernel sits on the roofline
#
# Notebook 06 drew the roofline from byte counts: a kernel takes at least
# $\max(\text{FLOPs}/\text{peak rate},\ \text{bytes}/\text{bandwidth})$, and the ridge point,
# peak / bandwidth, separates the memory-bound side (left) from the compute-bound side (right).
# Now put the *measured* rates on it.
#
# Which bytes? Every exact attention kernel must read $Q$, $K$, $V$ and write $O$ at least once:
# the compulsory traffic. The FlashAttention-style kernels move about that much to and from DRAM,
# because the L2 cache serves the re-reads of one head's $K$ and $V$ (notebook 06, section 9,
# measured this for our kernel; `flash2_dram_io` is that model). Standard attention, SDPA's `math`
# backend, also writes $S$ and $P$ ($N \times N$ each) and reads them back:
# `standard_attention_io`, the fewest bytes that chain of kernels can move. Each point below is one
# measured forward at that intensity.

# %%
def intensity(provider, d, causal, n):
    """FLOPs per DRAM byte of one forward (per batch and head), bf16."""
    f = flops_per_head(n, d, causal=bool(causal))
    if provider == "sdpa-math":
        return f / standard_attention_io(n, d).bytes(2)
    dram = flash2_dram_io(n, d, block_m=128, block_n=64, causal=bool(causal))["_attn_fwd"]
    return f / dram.bytes(2)  # the compulsory traffic: Q, K, V read once, O and lse written once


ROOF_PROVIDERS = ("triton", "sdpa-flash", "sdpa-cudnn", "flex", "sdpa-efficient", "sdpa-math")
points = {name: [(intensity(name, d, c, n), H100[name, dt, d, c, n, "fwd"], n) for (dt, d, c, n) in SHAPES
                 if dt == "bf16" and (name, dt, d, c, n, "fwd") in H100] for name in ROOF_PROVIDERS}

fig, ax = plt.subplots(figsize=(8.5, 5.5))
x = np.logspace(0.5, 4.3, 300)
for gpu, style in ((H100_SXM, "-"), (H100_MEASURED, "--")):
    ax.loglog(x, np.minimum(gpu.peak_flops, x * gpu.bandwidth) / 1e12, "k" + style, lw=1,
              label=f"roof: {gpu.name}, ridge {gpu.ridge:.0f} FLOP/byte")
for (name, pts), marker in zip(points.items(), "o^sDvx"):
    ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker, ms=6, alpha=0.75, label=NAMES[name])
ax.axvline(H100_MEASURED.ridge, color="gray", ls=":")
ax.set(xlabel="arithmetic intensity against DRAM (FLOP/byte; N grows to the right)",
       ylabel="measured TFLOP/s", ylim=(3, 1500),
       title=f"Forward, bf16, d = 64 and 128, causal or not, N = 512..16k: {meta['device']}")
ax.legend(fontsize=7, loc="lower right")
ax.grid(alpha=0.3, which="both")
plt.show()

ridge = H100_MEASURED.ridge
for name, pts in points.items():
    side = sorted({"compute" if i > ridge else "memory" for i, _, n in pts if n >= 1024})
    best = max(t for _, t, _ in pts)
    print(f"{NAMES[name]:>22}: intensity {min(p[0] for p in pts):6.0f}-{max(p[0] for p in pts):5.0f} "
          f"FLOP/byte ({'/'.join(side)}-bound side at N >= 1024); best {best:5.1f} TFLOP/s = "
          f"{best / (H100_MEASURED.peak_flops / 1e12):.0%} of the measured matmul rate")
assert all(i > ridge for name in ROOF_PROVIDERS[:5] for i, _, n in points[name] if n >= 1024)
assert all(i < ridge / 4 for i, _, _ in points["sdpa-math"])
if COMMITTED_RUN:
    assert all(t * 1e12 < H100_MEASURED.roofline(1.0, 1.0 / i).seconds ** -1 for pts in points.values()
               for i, t, _ in pts)  # every measurement under the measured roof
RIVALS = ("triton", "sdpa-flash", "sdpa-cudnn", "flex")
spread = [max(v) / min(v) for s in SHAPES if s[0] == "bf16"
          for v in [[H100[(p, *s, "fwd")] for p in RIVALS if (p, *s, "fwd") in H100]]]
over_math = [H100[("triton", *s, "fwd")] / H100[("sdpa-math", *s, "fwd")] for s in SHAPES
             if ("sdpa-math", *s, "fwd") in H100]
print(f"same shape, same bytes: the fastest of the four rivals is {min(spread):.1f}x-{max(spread):.1f}x "
      f"the slowest; this kernel is {min(over_math):.0f}x-{max(over_math):.0f}x standard attention "
      "(SDPA math)")
if COMMITTED_RUN:
    assert min(over_math) > 10 and max(spread) < 2.5

# %% [markdown]
# Two groups. SDPA's `math` backend, standard attention, sits far left of the ridge: its bytes
# set its time, and fewer bytes (FlashAttention) is what makes attention faster, by 15 to 59 times
# here. Every FlashAttention-style kernel sits right of the ridge from $N = 1024$ on (at $N = 512$
# the points lie at the ridge or left of it: exercise 4), where the roof is flat: **at the same
# bytes, the fastest of this kernel, FlashAttention-2, cuDNN and FlexAttention is 1.4 to 2.3 times
# the slowest** (SDPA's memory-efficient backend is slower still), and none reaches the measured
# matmul rate; cuDNN comes closest, at 88% of it. There fewer bytes no longer buys speed; what
# does is keeping the tensor cores busy: how the softmax between the two matrix products overlaps
# them, how many registers each tile needs, how the last wave of programs fills the SMs.
#
# The roof is a ceiling, not a forecast. Our kernel under Nsight Compute (notebook 06, section 9:
# batch 1 and 4 heads, so grids too small to fill the 132 SMs, up to a few waves) measured its DRAM
# bytes directly: far right of the ridge, and far below the roof.

# %%
_, ncu, _ = read_csv(H100_DIR / "iocost_ncu.csv")
fwd_ncu = [r for r in ncu if r["kernel"] == "_attn_fwd" and r["variant"] == "default"]
ncu_pts = [(float(r["model_flops"]) / (float(r["dram_read_bytes"]) + float(r["dram_write_bytes"])),
            float(r["model_flops"]) / (float(r["duration_ns"]) * 1e-9) / 1e12, float(r["waves_per_sm"]))
           for r in fwd_ncu]
fig, (ax_l, ax_r) = plt.subplots(1, 2, figsize=(12, 4.4))
ax_l.loglog(x, np.minimum(H100_MEASURED.peak_flops, x * H100_MEASURED.bandwidth) / 1e12, "k--", lw=1,
            label=f"roof: {H100_MEASURED.name}")
sc = ax_l.scatter([p[0] for p in ncu_pts], [p[1] for p in ncu_pts], c=np.log2([p[2] for p in ncu_pts]),
                  cmap="viridis")
fig.colorbar(sc, ax=ax_l, label="log2(waves of programs per SM)")
ax_l.axvline(ridge, color="gray", ls=":", label=f"ridge {ridge:.0f} FLOP/byte")
ax_l.set(xlabel="measured FLOP per DRAM byte", ylabel="measured TFLOP/s", ylim=(3, 1500),
         title="Our forward under Nsight Compute (batch 1, 4 heads)")
ax_l.legend(fontsize=8)
ax_r.semilogx([p[2] for p in ncu_pts], [p[1] for p in ncu_pts], "o")
ax_r.set_xscale("log", base=2)
ax_r.set(xlabel="waves of programs per SM (grid / (132 SMs x programs each holds))",
         ylabel="measured TFLOP/s", title="Below one wave, SMs sit idle")
ax_r.grid(alpha=0.3)
fig.tight_layout()
plt.show()

print(f"{len(ncu_pts)} forward launches, grids of {min(int(float(r['grid_size'])) for r in fwd_ncu)} to "
      f"{max(int(float(r['grid_size'])) for r in fwd_ncu)} programs ({min(p[2] for p in ncu_pts):.2f} to "
      f"{max(p[2] for p in ncu_pts):.2f} waves): FLOP per DRAM byte {min(p[0] for p in ncu_pts):.0f}-"
      f"{max(p[0] for p in ncu_pts):.0f}, TFLOP/s {min(p[1] for p in ncu_pts):.0f}-"
      f"{max(p[1] for p in ncu_pts):.0f}")
assert all(i > ridge for i, _, _ in ncu_pts)  # compute side, all of them
assert max(t for _, t, _ in ncu_pts) < 0.3 * H100_MEASURED.peak_flops / 1e12  # and far below the roof
for d in (64, 128):
    for causal in ("False", "True"):
        by_grid = sorted((float(r["waves_per_sm"]), p[1]) for r, p in zip(fwd_ncu, ncu_pts)
                         if int(r["head_dim"]) == d and r["causal"] == causal)
        assert by_grid[0][1] < by_grid[-1][1] / 4  # the smallest grid: under a quarter of the largest's rate

# %% [markdown]
# **Takeaway.** Fewer bytes made attention fast by moving it across the ridge. Past the ridge the
# kernels that move the same bytes differ by up to 2.3 times, and a grid that does not fill the GPU
# wastes most of it: speed is then a matter of the tensor cores, the registers and the grid.

# %% [markdown]
# ## 4. The block-size sweep
#
# `benchmarks/tune_attention.py` timed, at $N = 4096$ (bf16, 16k tokens), every forward
# configuration of $\text{BLOCK\_M} \in \{64, 128\}$, $\text{BLOCK\_N} \in \{32, 64, 128\}$,
# 4 or 8 warps and 2 to 4 pipeline stages, and 30 each for the backward's dK/dV and dQ kernels,
# per head dim and mask. Its best entries are the launch tables of `kernels/flash_fwd.py` and
# `kernels/flash_bwd.py`. The forward, every configuration:

# %%
tmeta, tune, _ = read_csv(H100_DIR / "tune_attention.csv")
for r in tune:
    for key in ("head_dim", "causal", "seqlen", "BLOCK_M", "BLOCK_N", "num_warps", "num_stages"):
        r[key] = int(r[key])
    r["tflops"] = float(r["tflops"]) if math.isfinite(float(r["ms"])) else float("nan")  # nan: no launch
print(", ".join(f"{k}={v}" for k, v in tmeta.items()), f": {len(tune)} rows")
TILES = [(bm, bn) for bm in (64, 128) for bn in (32, 64, 128)]
LAUNCH = [(w, s) for w in (4, 8) for s in (2, 3, 4)]

cmap = plt.get_cmap("viridis").copy()
cmap.set_bad("lightgray")  # configurations that did not launch
fig, axes = plt.subplots(1, 4, figsize=(17, 4.6), sharey=True, layout="constrained")
for ax, (d, causal) in zip(axes, PANELS):
    grid = np.array([[next(r["tflops"] for r in tune if r["kernel"] == "fwd" and r["head_dim"] == d
                           and r["causal"] == causal and (r["BLOCK_M"], r["BLOCK_N"]) == t
                           and (r["num_warps"], r["num_stages"]) == ws) for ws in LAUNCH] for t in TILES])
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=150, vmax=480)
    for i, j in np.ndindex(grid.shape):
        ax.text(j, i, "fail" if np.isnan(grid[i, j]) else f"{grid[i, j]:.0f}", ha="center", va="center",
                fontsize=8, color="black" if np.isnan(grid[i, j]) or grid[i, j] > 350 else "white")
    ax.set_xticks(range(len(LAUNCH)), [f"{w}w {s}s" for w, s in LAUNCH], fontsize=8)
    ax.set_yticks(range(len(TILES)), [f"{bm} x {bn}" for bm, bn in TILES], fontsize=8)
    ax.set(title=f"forward, d = {d}, {'causal' if causal else 'no mask'}", xlabel="warps, pipeline stages")
axes[0].set_ylabel("BLOCK_M x BLOCK_N")
fig.colorbar(im, ax=axes, label="TFLOP/s (gray: failed to launch)", shrink=0.8)
fig.suptitle(f"Every forward configuration at N = 4096, bf16 ({tmeta['device']}, {tmeta['date']})")
plt.show()
assert sum(r["kernel"] == "fwd" for r in tune) == 144 and all(
    sum(r["kernel"] == k for r in tune) == 120 for k in ("dkdv", "dq"))  # 36 and 30 per shape

# %% [markdown]
# Three things to read off it, one after the other: some configurations do not launch at all; at
# head dim 128 the largest tile is the best with 8 warps and the worst with 4; and the best few
# are within a few percent of each other.
#
# ### The plateau, and the launch tables

# %%
def best_of(kernel, d, causal, k=1):
    """The k fastest configurations of one kernel and shape, fastest first."""
    done = [r for r in tune if r["kernel"] == kernel and r["head_dim"] == d and r["causal"] == causal
            and not math.isnan(r["tflops"])]
    return sorted(done, key=lambda r: -r["tflops"])[:k]


def launch_table(path, name):
    """{(d, causal): [((bm, bn, warps, stages), options), ...]} of the launch table `name` in a
    kernels/ file, read from its syntax tree (nothing imported: the file needs Triton). `options`:
    what an entry adds to its four numbers, `dict(launch_config(...), KV_B=True)`."""
    tree = ast.parse(path.read_text())
    node = next(n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in n.targets))
    out = {}
    for key, value in zip(node.keys, node.values):
        d, causal = ast.literal_eval(key)
        entries = []
        for call in value.elts if isinstance(value, ast.Tuple) else [value]:  # the backward: (dK/dV, dQ)
            options = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
            if call.func.id == "dict":  # dict(launch_config(...), OPTION=...)
                call = call.args[0]
            entries.append((tuple(ast.literal_eval(arg) for arg in call.args), options))
        out[d, int(causal)] = entries
    return out


def describe(bm, bn, warps, stages):
    return f"{bm}x{bn} {warps}w {stages}s"


FWD_TABLE = launch_table(ROOT / "kernels" / "flash_fwd.py", "_HOPPER_FWD")
BWD_TABLE = launch_table(ROOT / "kernels" / "flash_bwd.py", "_HOPPER_BWD")
print(f"{'kernel':>5} {'shape':>13} {'launch table':>18} {'TFLOP/s':>8} {'sweep best':>18} {'best':>6} "
      f"{'5th best':>8}")
retuned = []
H200_RETUNED = {("dkdv", 64, 1)}  # NOTES.md step 6: 2 stages once the GQA loop was compiled away
for d, causal in PANELS:
    for kernel, (cfg, options) in (("fwd", FWD_TABLE[d, causal][0]), ("dkdv", BWD_TABLE[d, causal][0]),
                                   ("dq", BWD_TABLE[d, causal][1])):
        top = best_of(kernel, d, causal, k=5)
        b = top[0]
        head = f"{kernel:>5} d={d:>3} {'causal' if causal else 'full':>6} {describe(*cfg):>18} "
        tail = (f" {describe(b['BLOCK_M'], b['BLOCK_N'], b['num_warps'], b['num_stages']):>18}"
                f" {b['tflops']:6.0f} {top[4]['tflops'] / b['tflops']:8.1%}")
        # TMA: how tiles load (step 7); OWN_DELTA: the dQ kernel computes delta itself (step 9);
        # PDL: when the dK/dV kernel may start (step 10). None of them changes the loop's blocks
        loop_options = {k: v for k, v in options.items() if k not in ("TMA", "OWN_DELTA", "PDL")}
        if loop_options or (kernel, d, causal) in H200_RETUNED:  # chosen after the H100 sweep
            retuned.append((kernel, d, causal, options))
            print(f"{head}{'-':>8}{tail}  + {options}: chosen later, on the H200")
            continue
        chosen = next(r for r in tune if (r["kernel"], r["head_dim"], r["causal"]) == (kernel, d, causal)
                      and (r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) == cfg)
        print(f"{head}{chosen['tflops']:8.0f}{tail}" + (f"  + {options}, on the H200" if options else ""))
        assert chosen["tflops"] >= 0.995 * b["tflops"]  # the table holds the sweep's best (ties within 0.5%)
        if kernel == "fwd":
            assert top[4]["tflops"] >= 0.9 * b["tflops"]  # five configurations within 10% of the best
assert all(kernel == "dkdv" for kernel, *_ in retuned)  # only the backward's dK/dV was tuned again

# %% [markdown]
# The launch tables hold the sweep's winners (where two configurations tie within half a percent,
# either would do), except where the dK/dV kernel was tuned again later, on the H200: with a
# variant of its loop this sweep did not have (`NOTES.md`, step 5; the registers below say why),
# and at head dim 64 causal once its loop changed (step 6). Since step 7 the forward's entries
# also load $K$ and $V$ through tensor descriptors (`TMA`), and since step 8 the dQ kernel's too:
# the same blocks, the copies handed to Hopper's copy engine, measured on the H200 (notebook 13,
# section 6); since step 9 the dQ kernel computes $\delta$ itself (`OWN_DELTA`), which changes
# the order of the launches, not the loop, and since step 10 the dK/dV kernel starts while the
# dQ kernel's last programs run (`PDL`), which changes when a launch begins, not what it runs.
# Five forward configurations or more lie within 10% of the best at every shape,
# and the first few within a few percent, as much as two runs of a shared machine differ: a
# plateau, on which the exact winner is partly luck and a table measured once serves.
#
# ### What fails to launch: shared memory

# %%
failed = [r for r in tune if math.isnan(r["tflops"])]
print(f"{len(failed)} of {len(tune)} configurations did not launch:")
for r in failed:
    print(f"  {r['kernel']} d={r['head_dim']} causal={r['causal']}: {r['BLOCK_M']} x {r['BLOCK_N']}, "
          f"{r['num_warps']} warps, {r['num_stages']} stages")
assert {(r["kernel"], r["head_dim"], r["BLOCK_N"], r["num_stages"]) for r in failed} == {("fwd", 128, 128, 4)}
print(f"shared memory one program may use on an H100: {H100_SXM.smem_bytes // 2**10} KiB")

# %% [markdown]
# All eight are forward kernels at head dim 128 with 128-row key/value tiles and four pipeline
# stages, whatever the warps and the query tile. Triton **pipelines** the loop over key/value
# blocks: with `num_stages` $= s$ it keeps the tiles of the next iterations in shared memory, their
# loads in flight while the current one computes, beside the $Q$ tile that stays there for the whole
# loop. More stages hide more latency and cost shared memory, and an H100 gives one program at most
# 227 KiB (`H100_SXM.smem_bytes`). Exercise 3 asks you to write that budget; its check compares
# your answer with all 144 forward launches of this sweep. (We did not read Triton's allocation;
# the count of tiles the exercise asks for is the simplest one that agrees with every row.)
#
# ### What runs badly: registers
#
# At head dim 128 the $128 \times 128$ tile is the best configuration with 8 warps and the worst
# with 4, at half the speed. Where do the registers go? Each program keeps its output accumulator
# ($\text{BLOCK\_M} \times d$, float32) and its score tile $S$ ($\text{BLOCK\_M} \times
# \text{BLOCK\_N}$, float32) in registers, spread over $32 \times \text{warps}$ threads; a thread
# can address at most 255 32-bit registers, and what does not fit is **spilled** to local memory
# (HBM, behind the caches). The estimate below counts those two tiles only, so it is a lower bound
# on what a thread needs.

# %%
MAX_REGISTERS = 255  # 32-bit registers one thread can address (NVIDIA GPUs since Kepler)


def registers_at_least(bm, bn, d, warps):
    """fp32 values of acc (bm x d) and S (bm x bn) per thread: a lower bound on its registers."""
    return (bm * d + bm * bn) / (32 * warps)


print(f"{'d':>4} {'tile':>9} {'regs/thread, 4 warps':>21} {'best 4 warps':>13} {'best 8 warps':>13} "
      f"{'4 / 8':>6}  (forward, no mask | causal)")
by_warps = {}
for d in (64, 128):
    for bm, bn in TILES:
        cells = []
        for causal in (0, 1):
            best = {w: max(r["tflops"] for r in tune
                           if (r["kernel"], r["head_dim"], r["causal"], r["BLOCK_M"], r["BLOCK_N"],
                               r["num_warps"]) == ("fwd", d, causal, bm, bn, w))
                    for w in (4, 8)}
            by_warps[d, causal, bm, bn] = best[4] / best[8]
            cells.append(f"{best[4]:>5.0f} {best[8]:>5.0f} {best[4] / best[8]:>5.2f}")
        print(f"{d:>4} {bm:>4}x{bn:<4} {registers_at_least(bm, bn, d, 4):>21.0f}   " + " | ".join(cells))

over = {(d, c, bm, bn) for (d, c, bm, bn) in by_warps if registers_at_least(bm, bn, d, 4) > MAX_REGISTERS}
assert over == {(128, 0, 128, 128), (128, 1, 128, 128)}  # only the largest tile at head dim 128
assert all(by_warps[k] < 0.5 for k in over)  # 4 warps: less than half the speed of 8
assert all(by_warps[k] > 0.7 for k in by_warps if k[2] == 128 and k not in over)
narrow = [by_warps[d, c, 64, bn] for d in (64, 128) for c in (0, 1) for bn in (32, 64, 128)]
print(f"64-row tiles: 4 warps {min(narrow):.2f}x-{max(narrow):.2f}x as fast as 8")
assert min(narrow) > 1.2

# %% [markdown]
# Only one tile needs more than 255 registers per thread by this count, the $128 \times 128$ tile
# at head dim 128 with 4 warps (256 for the two tiles alone), and there 4 warps run at less than
# half the speed of 8, which halve the share of each thread. At head dim 64 the same tile needs 192
# and runs as fast with 4 warps as with 8. (The opposite happens with 64-row tiles: 8 warps are
# slower than 4 there, up to half as fast, at both head dims; this sweep does not say why, and we
# did not profile it.)
#
# **Measured spills.** The estimate counts two tiles; ptxas, the compiler's last stage, reports
# what a compiled kernel actually uses and spills. Two of the project's experiments read that report
# (`benchmarks/NOTES.md`). In the varlen forward, the $128 \times 128$ tile with 8 warps, which the
# dense kernel runs without spilling, spills in the packed-sequence kernel, whose extra live values
# (each sequence's start and length) push it over; the cure was a smaller tile for that case only.
# And the backward's dK/dV kernel at head dim 128 (on the H200, issue 20) holds two float32
# accumulators ($dK$, $dV$: $\text{BLOCK\_N} \times d$ each), its $K$ and $V$ tiles and four
# $\text{BLOCK\_N} \times \text{BLOCK\_M}$ float32 tiles ($S$, $P$, $dP$, $dS$): every configuration
# tried uses all 255 registers, and all but one of them spill.

# %%
spill = re.search(r"the varlen kernel spills (\d+) registers, the dense one none", NOTES.replace("\n", " "))
print("benchmarks/NOTES.md:", spill.group(0))
packed = launch_table(ROOT / "kernels" / "flash_fwd.py", "_HOPPER_FWD_PACKED")
print(f"kernels/flash_fwd.py, packed batches on Hopper: {packed}")
assert spill and int(spill.group(1)) > 0 and packed == {(128, 1): [((128, 64, 8, 3), {})]}

dkdv = []  # the dK/dV configurations whose ptxas report the sweeps kept (N = 4096, head dim 128)
for name in ("bwd_sweep_1.csv", "bwd_sweep_2.csv"):
    smeta, srows, _ = read_csv(H200_DIR / name)
    for r in srows:
        stats = {k: int(v) for k, v in re.findall(r"([a-z]+) (\d+)", r["dkdv_stats"])}
        if stats:
            dkdv.append(dict(stats, speed=float(r["vs_flex"]), causal=int(r["causal"]), kv_b=int(r["kv_b"]),
                             tile=f"{r['block_m']}x{r['block_n']} {r['warps']}w {r['stages']}s"))
print(", ".join(f"{k}={v}" for k, v in smeta.items()), f": {len(dkdv)} dK/dV configurations with a report")

fig, ax = plt.subplots(figsize=(7.5, 4.6))
for causal in (0, 1):
    for kv_b, marker in ((0, "o"), (1, "^")):
        pts = [(r["spills"], r["speed"]) for r in dkdv if (r["causal"], r["kv_b"]) == (causal, kv_b)]
        if pts:
            ax.plot(*zip(*pts), marker, ls="", color=("tab:blue", "tab:orange")[causal], ms=7,
                    label=f"{'causal' if causal else 'no mask'}, {'KV_B' if kv_b else 'default'} loop")
fastest = max(dkdv, key=lambda r: r["speed"])
ax.annotate(fastest["tile"], (fastest["spills"], fastest["speed"]), xytext=(10, -4),
            textcoords="offset points", fontsize=8)
ax.set(xlabel="registers spilled per thread (ptxas; each thread uses all 255)",
       ylabel="backward speed / FlexAttention's (same run)",
       title=f"dK/dV kernel, head dim 128, N = 4096, bf16 ({smeta['device']})")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
plt.show()

ranks = [np.argsort(np.argsort([r[key] for r in dkdv])) for key in ("spills", "speed")]
rho = np.corrcoef(*ranks)[0, 1]
least = min(dkdv, key=lambda r: r["spills"])
print(f"rank correlation of spills and speed: {rho:.2f}; the fastest ({fastest['tile']}, "
      f"{'KV_B' if fastest['kv_b'] else 'default'}) spills {fastest['spills']} and runs at "
      f"{fastest['speed']:.2f}x FlexAttention; the fewest spills ({least['spills']}, {least['tile']}) "
      f"run at {least['speed']:.2f}x")
assert all(r["regs"] == MAX_REGISTERS for r in dkdv)  # every configuration at the limit
assert sum(r["spills"] == 0 for r in dkdv) == 1  # and all but one spill
assert -0.7 < rho < 0 and fastest["spills"] > 100 and least["speed"] < fastest["speed"] - 0.1

# %% [markdown]
# More spills go with less speed on the whole, but the count does not rank the configurations:
# the fastest spills over a hundred registers per thread and beats one that spills none by more
# than a tenth. A spill costs what the loads and stores of local memory cost *where* they fall in
# the loop, which a count cannot say. The dK/dV kernel at head dim 128 is where this kernel's
# backward loses to FlexAttention's (the dQ kernel already runs at Flex's rate, `NOTES.md` step 5),
# and its registers are the reason `NOTES.md` gives.

# %% [markdown]
# ### The three-stretch split: the largest single gain
#
# The tuning sweep ran after the change that gained most (notebook 05 reads it line by line): a
# causal row's key/value loop runs in three stretches, masked / unmasked / masked, so that only the
# blocks on the edge of the band build the mask. `NOTES.md` records the speeds before it (step 0, an
# earlier run); the sweep's rows at the launch configuration of that time (in `fwd_config` before
# the tuning commit, ebf5bec) give the speeds after it:

# %%
step0 = NOTES[NOTES.index("## Step 0"):NOTES.index("## Step 1")]
before = {(int(d), int(c == "yes")): float(fwd) for d, c, fwd in
          re.findall(r"^\| (\d+) \| (yes|no) \| (\d+) \|", step0, flags=re.MULTILINE)}
OLD = {64: (128, 64, 4, 3), 128: (128, 64, 8, 3)}  # BLOCK_M, BLOCK_N, warps, stages before tuning
for d in (64, 128):
    for causal in (0, 1):
        after = next(r["tflops"] for r in tune
                     if (r["kernel"], r["head_dim"], r["causal"]) == ("fwd", d, causal)
                     and (r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"]) == OLD[d])
        gain = after / before[d, causal] - 1
        tuned = best_of("fwd", d, causal)[0]["tflops"] / after - 1  # the same run
        print(f"forward d={d:>3} {'causal' if causal else 'no mask':>7}: {before[d, causal]:.0f} -> "
              f"{after:.0f} TFLOP/s ({gain:+.0%}, across two runs); then tuning: {tuned:+.0%} (the sweep's "
              "best, same run)")
        assert 0 <= tuned < 0.1
        if causal:
            assert gain > 0.2  # +25% and +31%: far beyond the drift between runs
        else:
            assert abs(gain) < 0.08  # non-causal: nothing to gain, unchanged within the drift

# %% [markdown]
# A quarter to a third more speed for causal attention; the unmasked kernel, which the split
# leaves as it was, moved by -6% and +1%, about what two runs differ by. Work removed from the
# inner loop (a compare and a select per score, on all but one or two blocks per row) counted for
# more than any launch configuration: tuning then added 0-9% to the forward.
#
# **Takeaway.** Shared memory decides which tiles can launch (the pipeline's stages cost a $K$ and
# a $V$ tile each), registers decide which of them run well (too few can halve the speed), and among
# the rest the speed is flat within a few percent. Removing work from the inner loop beat all of it.

# %% [markdown]
# ## 5. The H200: more bandwidth, the same speed
#
# An H200 is the H100's chip (the same 132 SMs, the same tensor cores, the same peak rate) with
# HBM3e memory: 4.8 TB/s instead of 3.35 (datasheet figures). If attention were memory-bound, it
# would run up to 43% faster there. The check after the layout refactor (`results/h200/
# attention_layout_check.csv`, bf16, $N$ = 1k, 4k, 16k, forward and backward) timed this kernel
# and SDPA's FlashAttention-2 backend, the same shapes as the H100 sweep; cuDNN and FlexAttention
# were timed on the H200 for the backward only, later (section 7).

# %%
hmeta, hrows = read_rows(H200_DIR / "attention_layout_check.csv")
H200 = index_rows(hrows)
print(", ".join(f"{k}={v}" for k, v in hmeta.items()), f"; providers: {sorted({k[0] for k in H200})}")
print(f"bandwidth H200 / H100 (datasheets) {H200_SXM.bandwidth / H100_SXM.bandwidth:.2f}x; "
      f"ridge {H100_SXM.ridge:.0f} -> {H200_SXM.ridge:.0f} FLOP/byte")
BOTH = ("triton", "sdpa-flash")
same_shapes = sorted({k[1:] for k in H200  # (dtype, d, causal, N, mode) that both files hold for both
                      if all((p, *k[1:]) in index for index in (H100, H200) for p in BOTH)})
speed = {p: [H200[(p, *s)] / H100[(p, *s)] for s in same_shapes] for p in ("triton", "sdpa-flash")}
ratio_h100 = [H100[("triton", *s)] / H100[("sdpa-flash", *s)] for s in same_shapes]
ratio_h200 = [H200[("triton", *s)] / H200[("sdpa-flash", *s)] for s in same_shapes]
shift = [b - a for a, b in zip(ratio_h100, ratio_h200)]
for p, v in speed.items():
    print(f"{NAMES[p]:>22}: TFLOP/s on the H200 / on the H100 {min(v):.2f}x-{max(v):.2f}x "
          f"(median {statistics.median(v):.2f}x), {len(v)} shapes")
print(f"this kernel / SDPA-FA2: H100 {min(ratio_h100):.2f}x-{max(ratio_h100):.2f}x, H200 "
      f"{min(ratio_h200):.2f}x-{max(ratio_h200):.2f}x; per shape the ratio moved by {min(shift):+.2f} to "
      f"{max(shift):+.2f} ({sum(abs(s) <= 0.03 for s in shift)} of {len(shift)} within 0.03)")

fig, ax = plt.subplots(figsize=(6.5, 4.4))
for p, marker in (("triton", "o"), ("sdpa-flash", "s")):
    ax.plot([H100[(p, *s)] for s in same_shapes], [H200[(p, *s)] for s in same_shapes], marker,
            label=NAMES[p])
lim = (0.9 * min(H100[("sdpa-flash", *s)] for s in same_shapes),
       1.1 * max(H100[("triton", *s)] for s in same_shapes))
gain = H200_SXM.bandwidth / H100_SXM.bandwidth
ax.plot(lim, lim, "k-", lw=1, label="the same speed")
ax.plot(lim, [gain * v for v in lim], "k:", lw=1, label=f"{gain - 1:.0%} faster (bandwidth-bound)")
ax.set(xlim=lim, ylim=lim, xlabel=f"TFLOP/s on the H100 ({meta['date']})",
       ylabel=f"TFLOP/s on the H200 ({hmeta['date']})",
       title="24 shapes (bf16, fwd and bwd), two machines, two runs")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

if COMMITTED_RUN:
    assert len(same_shapes) == 24 and all(0.9 < v < 1.1 for vs in speed.values() for v in vs)
    assert max(abs(s) for s in shift) <= 0.10 and min(ratio_h200) > 0.99 and min(ratio_h100) > 1.0

# %% [markdown]
# Both kernels run at the H100's speed on the H200, within the few percent that separate two runs,
# and the ratio of one to the other carries over shape by shape. 43% more bandwidth bought nothing:
# both are compute-bound, as their place on the roofline said. What would help on Hopper is what
# the H200 does not change, the use of its tensor cores (section 7).
#
# **Takeaway.** A bandwidth upgrade is the experiment that answers this notebook's question: for
# FlashAttention-style kernels, fewer bytes (or faster bytes) no longer means faster.

# %% [markdown]
# ## 6. Your own GPU: `make bench`
#
# `make bench` runs `benchmarks/bench_attention.py` (and the decoding, training-memory and linear
# attention benchmarks) on a CUDA GPU and writes `benchmarks/results/<gpu>/attention_tflops.csv`,
# `<gpu>` being the second word of the device's name (`h100`, `a100`, ...). The cell below finds
# every such file under this checkout and shows, for each run that is not the committed one, this
# kernel's speed over SDPA's FlashAttention-2 in that run. Without a GPU, or before you have run
# it, it says so.

# %%
mine = None
if torch.cuda.is_available():
    mine = torch.cuda.get_device_name().split()[1].lower()  # the Makefile's RESULTS folder
    print(f"this machine: {torch.cuda.get_device_name()} -> benchmarks/results/{mine}/")
else:
    print("no CUDA GPU here: `make bench` needs one (it times compiled kernels)")
runs = {p.parent.name: p for p in sorted(RESULTS.glob("*/attention_tflops.csv"))}
for folder, path in runs.items():
    rmeta, rrows = read_rows(path)
    committed = COMMITTED.get(folder) == rmeta.get("date")
    print(f"{path.relative_to(ROOT)}: {rmeta.get('device')}, {rmeta.get('date')}"
          + (" (the committed run, sections 2-3)" if committed else " (yours)"))
    if committed:
        continue
    index, shapes = index_rows(rrows), sorted({k[1:5] for k in index_rows(rrows) if k[0] == "triton"})
    print(f"    {'shape':>28} " + "".join(f"{m + ' / FA-2':>12}" for m in MODES))
    for s in shapes:
        cells = [f"{index[('triton', *s, m)] / index[('sdpa-flash', *s, m)]:>11.2f}x"
                 if ("triton", *s, m) in index and ("sdpa-flash", *s, m) in index else f"{'-':>12}"
                 for m in MODES]
        print(f"    {'{} d={} causal={} N={}'.format(*s):>28} " + "".join(cells))
if mine is not None and mine not in runs:
    print("no results for this GPU yet: run `make bench`, then this cell again")
assert "h100" in runs  # the committed sweep is always there

# %% [markdown]
# ## 7. Where the kernel falls short, plainly
#
# * **cuDNN is faster at 71 of the 72 forward and backward shapes** measured on the H100: by 1.07
#   to 1.92 times forward (the most at $N = 512$), and 1.39 to 1.61 times in the backward at head
#   dim 128, the widest gap at long sequences.
#   FlexAttention, which is also Triton, is 1.1 to 1.3 times faster than this kernel in that
#   backward too.
# * **The shortest forwards**: at $N = 512$ and head dim 128 the kernel is slower than
#   FlashAttention-2 (0.91 times causal, 0.97 without the mask). Those calls last a few hundred
#   microseconds; why the kernel loses there was not measured.
# * **On the H200** the backward was measured against cuDNN and FlexAttention in one run
#   (`results/h200/bwd_explore_rows.csv`, issue 20): the same picture, below.

# %%
emeta, erows, _ = read_csv(H200_DIR / "bwd_explore_rows.csv")
h200_bwd = {(int(r["head_dim"]), int(r["causal"]), int(r["seqlen"])):  # (cuDNN / ours, Flex / ours), same run
            (1 / float(r["vs_cudnn"]), 1 / float(r["vs_flex"])) for r in erows if r["variant"] == "ours"}
print(", ".join(f"{k}={v}" for k, v in emeta.items()))
print(f"{'backward':>24} {'cuDNN / ours':>13} {'Flex / ours':>12}")
for (d, causal, n), (cu, fl) in sorted(h200_bwd.items()):
    print(f"{f'd={d} ' + ('causal' if causal else 'full') + f' N={n}':>24} {cu:12.2f}x {fl:11.2f}x")
d128 = [cu for (d, _, _), (cu, _) in h200_bwd.items() if d == 128]
print(f"head dim 128: cuDNN {min(d128):.2f}x-{max(d128):.2f}x this kernel's speed on the H200 "
      f"(on the H100: {min(cudnn_d128_bwd):.2f}x-{max(cudnn_d128_bwd):.2f}x)")
assert all(1.4 < cu < 1.55 for cu in d128) and all(cu > 1.2 for cu, _ in h200_bwd.values())
_, sweep2, _ = read_csv(H200_DIR / "bwd_sweep_2.csv")
loops = {}
for r in sweep2:  # head dim 128 without a mask: the dK/dV entry before and after the KV_B change
    cfg = (int(r["block_m"]), int(r["block_n"]), int(r["warps"]), int(r["stages"]), int(r["kv_b"]))
    if (int(r["head_dim"]), int(r["causal"])) == (128, 0) and cfg in ((64, 128, 8, 2, 0), (64, 64, 4, 2, 1)):
        loops.setdefault(cfg, []).append(float(r["vs_flex"]))
print(f"dK/dV at head dim 128 without a mask, N = 4096 and 16384, speed / FlexAttention's: before "
      f"{loops[64, 128, 8, 2, 0]}, with KV_B {loops[64, 64, 4, 2, 1]}")
assert min(loops[64, 64, 4, 2, 1]) > max(loops[64, 128, 8, 2, 0])

# %% [markdown]
# cuDNN's backward is about 1.5 times this kernel's at head dim 128 on the H200 too, and 1.26 to
# 1.39 times at head dim 64. (These rows are the kernel just before its last change: for head dim
# 128 without a mask the dK/dV kernel now runs the `KV_B` loop of section 4, which
# `bwd_sweep_2.csv` puts at about 0.92x FlexAttention's backward instead of about 0.85x.)
#
# The backward's gap has a visible cause: our backward is two kernels, dK/dV (one program per key
# block) and dQ (one per query block), and the dQ kernel recomputes $S = QK^\top$ and
# $dP = dO\,V^\top$, which the dK/dV kernel also computed. The profiling run of section 3 recorded,
# beside each launch, the FLOPs of that kernel's loops (`model_flops` of `iocost_ncu.csv`: a count
# of the matrix products in the source, not a measurement); in units of one product, $2 N^2 d$ per
# head:

# %%
products = {}
for r in ncu:
    if r["causal"] == "False" and float(r["model_flops"]) > 0:
        unit = 2 * int(r["batch"]) * int(r["heads"]) * int(r["seqlen"]) ** 2 * int(r["head_dim"])
        products.setdefault(r["kernel"], set()).add(float(r["model_flops"]) / unit)
print("matrix products per (query block, key block) pair:", {k: sorted(v) for k, v in products.items()})
executed = sum(max(v) for k, v in products.items() if k != "_attn_fwd")
credited = 2.5 * max(products["_attn_fwd"])  # the FLOP count of section 1
print(f"the FLOP count credits the backward with {credited:.0f} products; the kernels execute "
      f"{executed:.0f}, so their tensor cores run at {executed / credited:.1f}x the backward's reported "
      "TFLOP/s")
assert products == {"_attn_fwd": {2.0}, "_attn_bwd_dkdv": {4.0}, "_attn_bwd_dq": {3.0}} and executed == 7

# %% [markdown]
# Seven products where the count credits five: the kernels do 1.4 times the matrix work the
# reported rate assumes, recomputation that a single-kernel backward (FlashAttention-2's, which
# adds each tile's $dQ$ share into memory with atomic additions) avoids. `NOTES.md` ("What was not
# done") lists it as the step that would bring the backward towards cuDNN, with FlashAttention-3's
# warp specialisation (loads by some warps, matrix products by others, the softmax of one tile
# overlapping the products of the next) for the forward.
#
# **Takeaway.** The kernel is faster than PyTorch's FlashAttention-2 and slower than cuDNN; what
# separates it from cuDNN is how well it feeds the tensor cores, not how many bytes it moves.

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases against a reference and prints `pass`, or the first wrong case and what it should be; it
# never stops the notebook, and the rest of the notebook does not use your function. Stuck?
# `show_solution("12.attention_flops")` prints one answer (the answers live in
# `exercises/solutions/nb12.py`, out of sight).
#
# **1. The FLOP count.** Write `attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal,
# mode)`, the FLOPs of attention as section 1 counts them, for `mode` `"fwd"`, `"bwd"` or
# `"fwd_bwd"` (both). A causal mask halves the count whatever the lengths (the papers' convention).
# The check includes `seqlen_q != seqlen_k` and a single decoding query.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    raise NotImplementedError  # your code here


check("12.attention_flops", attention_flops)

# %% [markdown]
# **2. The forward's intensity, as the IO model counts it.** Write `forward_intensity(seqlen,
# head_dim, block_m, dtype_bytes)`: FLOPs per byte of one head's forward (no mask, as many keys as
# queries), with the bytes of notebook 06's model of our forward kernel: one program per block of
# `block_m` queries (the last one may be ragged) reads its $Q$ block once and all of $K$ and $V$,
# writes its $O$ block once and one float32 `lse` per row; $Q$, $K$, $V$, $O$ take `dtype_bytes`
# per element. (In bf16 the answer comes out near `block_m` for long sequences, below the H100's
# ridge: what saves the kernel is that L2, not DRAM, serves those re-reads of $K$ and $V$.)

# %%
def forward_intensity(seqlen, head_dim, block_m, dtype_bytes):
    raise NotImplementedError  # your code here


check("12.forward_intensity", forward_intensity)

# %% [markdown]
# **3. Which tiles fit.** Write `fits_in_smem(block_m, block_n, head_dim, num_stages, dtype_bytes,
# smem_bytes)`: `True` when the forward's tiles fit in `smem_bytes` of shared memory, counting the
# $Q$ tile ($\text{BLOCK\_M} \times d$) once and, for each of the `num_stages` pipeline stages, one
# $K$ and one $V$ tile ($\text{BLOCK\_N} \times d$ each), `dtype_bytes` per element (a budget met to
# the byte fits). The check compares your answer with every forward configuration of the sweep
# of section 4 (bf16 on the H100): it must say "does not fit" for exactly the eight that failed to
# launch.

# %%
def fits_in_smem(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=H100_SXM.smem_bytes):
    raise NotImplementedError  # your code here


check("12.fits_in_smem", fits_in_smem)

# %% [markdown]
# **4. Predict, then run.** The causal forward at $N = 512$, head dim 128, bf16: by its compulsory
# traffic ($Q$, $K$, $V$ read once, $O$ written once, section 3), is it on the memory-bound or the
# compute-bound side of the H100's ridge? Write `"memory"` or `"compute"` in `prediction`, then run
# the cell. (Hint: the causal mask halves the FLOPs; does it halve the bytes?)

# %%
prediction = None  # your prediction: "memory" or "compute"

f = flops_per_head(512, 128, causal=True)
compulsory = flash2_dram_io(512, 128, block_m=128, block_n=64, causal=True)["_attn_fwd"].bytes(2)
outcome = H100_MEASURED.roofline(f, compulsory).bound
if prediction is None:
    print("write your prediction first")
else:
    print(f"{f / compulsory:.0f} FLOP/byte against a ridge of {H100_MEASURED.ridge:.0f}: {outcome}-bound; "
          f"your prediction was {'right' if prediction == outcome else 'wrong'}")

# %% [markdown]
# ## References
#
# * Williams, Waterman, Patterson, "Roofline: an insightful visual performance model for multicore
#   architectures", Communications of the ACM, 2009: the roofline and the ridge point (section 3).
# * Dao, Fu, Ermon, Rudra, Ré, "FlashAttention: Fast and Memory-Efficient Exact Attention with
#   IO-Awareness", 2022, arXiv:2205.14135: fewer HBM bytes as the way to faster attention, the
#   question of this notebook.
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the FLOP count (section 1) and the benchmark shapes (16k tokens, width 2048)
#   used here (its section 4.1), the loop order of this kernel and of SDPA's flash backend, and the
#   single-kernel backward with atomic $dQ$ (section 7).
# * Shah, Bikshandi, Zhang, Thakkar, Ramani, Dao, "FlashAttention-3: Fast and Accurate Attention
#   with Asynchrony and Low-precision", 2024, arXiv:2407.08608: warp specialisation and the overlap
#   of softmax and matrix products on Hopper, what separates this kernel from cuDNN.
# * Dong, Feng, Guessous, Liang, He, "Flex Attention: A Programming Model for Generating Optimized
#   Attention Kernels", 2024, arXiv:2412.05496: FlexAttention.
# * Tillet, Kung, Cox, "Triton: an intermediate language and compiler for tiled neural network
#   computations", MAPL 2019: the language, its blocks and its software pipelining (`num_stages`).

# %% [markdown]
# ## What comes next
#
# The kernel is faster than PyTorch's FlashAttention-2 and slower than cuDNN, and this notebook
# says where the difference lies: not in the bytes moved, but in how the Hopper GPU's tensor
# cores are fed. [13 · What Hopper adds](13_what_hopper_adds.ipynb) takes that up: TMA copies
# through tensor descriptors, asynchronous warpgroup matrix products, warp specialisation, what
# FlashAttention-3 does with them, and what this repository has measured so far. Beside it:
#
# * run `make bench` on your GPU and read your ratios in section 6;
# * try the single-kernel backward of FlashAttention-2 (`NOTES.md`, "What was not done") and
#   measure it against the counts of section 7;
# * go back to [01](01_naive_attention.ipynb): every number in this notebook rests on the exact
#   arithmetic the first eleven checked.
