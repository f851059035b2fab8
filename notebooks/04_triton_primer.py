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
# # 04 · A Triton primer
#
# **What you will learn**
#
# * how a Triton kernel runs: a **grid** of programs, each finding its block of the work from
#   `tl.program_id`;
# * how a program addresses memory: offsets from `tl.arange` and **strides**, **masked** loads and
#   stores (and what `other=` is for), block sizes and flags as `tl.constexpr`;
# * the block operations FlashAttention needs: `tl.dot`, `tl.max`, `tl.sum`, `tl.exp`, `tl.exp2`,
#   `tl.where`;
# * three kernels, each beside its NumPy version: a vector add, a row softmax, and
#   FlashAttention-2's forward for one head, diffed line by line against NumPy.
#
# At the end you write a tile's offsets, a masked kernel, a row log-sum-exp kernel and the loop of
# a causal attention kernel yourself, and run them in Triton's interpreter.
#
# **Read first:** [03 · Online softmax](03_online_softmax.ipynb): the attention kernel here is its
# block update in Triton. **Words:** [glossary](GLOSSARY.md) (kernel, program, grid, constexpr,
# interpreter).
#
# **Where it runs.** Triton compiles kernels for a GPU. On a machine without one, `import kernels`
# sets `TRITON_INTERPRET=1` before Triton is first imported, and the same kernels run on CPU tensors
# through Triton's interpreter, which executes each block operation in NumPy: slowly, so the sizes
# here are tiny. Without Triton (it ships Linux wheels only), this notebook still shows every
# kernel's source, runs the NumPy versions, and the exercises that launch a kernel say `skip`.

# %%
import sys
from pathlib import Path

try:
    import kernels
except ModuleNotFoundError:  # nbmake runs a notebook from notebooks/: the repository is one up
    sys.path.insert(0, str(Path.cwd().parent))
    import kernels

import ast
import difflib
import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

from kernels import attention_reference
from kernels.primer_numpy import LOG2E, add_numpy, attention_numpy, next_power_of_2, softmax_numpy
from kernels.source import show_source, source_lines

if kernels.HAS_TRITON:  # kernels/primer.py imports triton (Linux only)
    import triton
    import triton.language as tl  # noqa: F401  (for the kernels you write in the exercises)

    from kernels import primer

DEVICE = "cuda" if torch.cuda.is_available() and not kernels.INTERPRET else "cpu"
SMALL = DEVICE == "cpu"  # the interpreter: tiny sizes
torch.manual_seed(0)
rng = np.random.default_rng(0)
if not kernels.HAS_TRITON:
    print("Triton is not installed (Linux wheels only): the kernels are shown as text, their NumPy "
          "versions run, and the exercises that launch a kernel report skip.")
elif kernels.INTERPRET:
    print(f"Triton {triton.__version__}, interpreter (TRITON_INTERPRET=1): kernels run on CPU tensors")
else:
    print(f"Triton {triton.__version__}, compiling for {torch.cuda.get_device_name()}")

# %% [markdown]
# ## 1. Programs and the grid
#
# A kernel is a Python function decorated with `@triton.jit`, which Triton compiles for the GPU.
# `kernel[grid](arguments)` launches it as a **grid** of *programs*: the same code runs once per
# program, in any order and many at a time, and each asks `tl.program_id(0)` which one it is (a
# grid may have up to three axes, `tl.program_id(1)` and `(2)` for the others). A tensor argument
# arrives as a **pointer** to its first element; integers and floats arrive as scalars.
#
# A program works on a **block**: `tl.arange(0, BLOCK)` is the vector $0, 1, \dots, \text{BLOCK}-1$,
# so `pid * BLOCK + tl.arange(0, BLOCK)` are the indices of the elements program `pid` owns, and
# `x_ptr + offs` is a block of pointers, which `tl.load` reads in one go. With
# `triton.cdiv(n, BLOCK)` $= \lceil n / \text{BLOCK} \rceil$ programs, the last one runs past the end
# of the tensor unless $n$ is a multiple of the block; `mask = offs < n` switches its extra lanes
# off, in the load and in the store. The vector add, in full:

# %%
show_source("kernels.primer:add_kernel", "@triton.jit", "tl.store(")

# %% [markdown]
# The **host wrapper** is ordinary Python that runs on the CPU: it checks its inputs (a wrong one
# gets a `TypeError` or `ValueError` naming the argument), allocates the output and launches. The
# grid may be a tuple, or a function of the launch's meta-parameters, as here: Triton calls it with
# `meta["BLOCK"]`, so the grid follows whatever block the call passes.

# %%
show_source("kernels.primer:add", "floats = (", "return out")

# %% [markdown]
# The NumPy version writes the grid as what it means, a loop over program ids (on a GPU the
# iterations run at the same time), and the masked load and store as two helpers of
# `kernels/primer_numpy.py`: `load(x, offs, mask)` is `x[offs]` where the mask holds, and
# `store(out, offs, mask, value)` writes only there.

# %%
show_source("kernels.primer_numpy:add_numpy", "def add_numpy", "return out")
show_source("kernels.primer_numpy:load", "def load", "return np.where")

# %%
BLOCK = 16
for n in (1, 37, 1000):  # one element, a prime, more programs than fit on the figure below
    x, y = torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)
    want = x.double() + y.double()
    out_np = add_numpy(x.cpu().double().numpy(), y.cpu().double().numpy(), BLOCK=BLOCK)
    err_np = np.abs(out_np - want.cpu().numpy()).max()
    line = f"n = {n:>4}: {-(-n // BLOCK):>2} programs of {BLOCK}; NumPy error {err_np:.1e}"
    assert err_np == 0
    if kernels.HAS_TRITON:
        err = (primer.add(x, y, block=BLOCK).double() - want).abs().max().item()
        line += f", add_kernel error {err:.1e} (one float32 rounding)"
        assert err <= 1e-6 * want.abs().max().item()
    print(line)
if kernels.HAS_TRITON:
    try:
        primer.add(x, y[:-1])
    except ValueError as error:
        print(f"add(x, y[:-1]) -> ValueError: {error}")
        assert str(error).startswith("y:")

# %% [markdown]
# Which lanes of which program touch memory, for $n = 37$ and blocks of 16: three programs, the
# last one with 11 lanes masked off.

# %%
n = 37
programs = -(-n // BLOCK)
lanes = np.arange(programs)[:, None] * BLOCK + np.arange(0, BLOCK)[None, :]  # offs of each program
fig, ax = plt.subplots(figsize=(9, 2.4))
colors = plt.cm.tab10(np.arange(programs))
for pid in range(programs):
    for lane in range(BLOCK):
        offs = lanes[pid, lane]
        active = offs < n
        ax.add_patch(plt.Rectangle((offs, pid), 0.9, 0.8, facecolor=colors[pid] if active else "white",
                                   edgecolor=colors[pid], hatch=None if active else "///"))
ax.axvline(n - 0.05, color="k", lw=1.5)
ax.text(n + 0.5, 0.5, f"end of the tensor (n = {n})", fontsize=9, va="center")
ax.set(xlim=(0, programs * BLOCK), ylim=(programs, -0.2), xlabel="element index offs = pid * BLOCK + lane",
       ylabel="program id (pid)", yticks=np.arange(programs) + 0.4, yticklabels=range(programs),
       title=f"add_kernel on n = {n}: cdiv({n}, {BLOCK}) = {programs} programs of BLOCK = {BLOCK} lanes")
ax.legend(handles=[Patch(facecolor="tab:gray", label="lane loads and stores (mask True)"),
                   Patch(facecolor="white", edgecolor="tab:gray", hatch="///", label="lane masked off")],
          loc="lower left", fontsize=8)
fig.tight_layout()
plt.show()
assert (lanes >= n).sum() == programs * BLOCK - n == 11

# %% [markdown]
# **Takeaway.** A kernel is written for *one* program, which finds its block from
# `tl.program_id`; the grid says how many there are; the mask keeps the last one inside the tensor.

# %% [markdown]
# ## 2. Pointers and strides
#
# Memory is flat. A 2-D tensor puts element $(i, j)$ at `i * stride(0) + j * stride(1)` elements
# after its first one, and the strides, not the shape, say how it is laid out: a transposed view
# swaps them, a slice of the columns keeps the row stride of the wider matrix. A kernel that takes
# its strides as arguments therefore reads any of these layouts in place, without a copy. That is
# why the attention kernels of this repository take a group of four strides per tensor.

# %%
storage = torch.arange(6 * 11)  # 66 elements of flat memory, holding their own offsets
views = {"contiguous 6 x 11": storage.view(6, 11), "transposed, 11 x 6": storage.view(6, 11).t(),
         "columns 2..8 of it, 6 x 7": storage.view(6, 11)[:, 2:9]}
for name, t in views.items():
    i, j = torch.meshgrid(torch.arange(t.shape[0]), torch.arange(t.shape[1]), indexing="ij")
    computed = t.storage_offset() + i * t.stride(0) + j * t.stride(1)  # what a kernel computes
    print(f"{name:>26}: strides {t.stride()}, first element at offset {t.storage_offset()}")
    assert torch.equal(storage[computed], t)  # the offsets find every element

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), gridspec_kw=dict(width_ratios=[11, 6, 7]),
                         layout="constrained")
for ax, (name, t) in zip(axes, views.items()):
    im = ax.imshow(t.numpy(), cmap="viridis", vmin=0, vmax=storage.numel() - 1)
    for (i, j), offset in np.ndenumerate(t.numpy()):
        ax.text(j, i, offset, ha="center", va="center", fontsize=7, color="w" if offset < 40 else "k")
    ax.set(title=f"{name}\nstrides {t.stride()}", xlabel="column j", ylabel="row i")
fig.colorbar(im, ax=axes, label="offset in memory (elements)", shrink=0.8)
fig.suptitle("One buffer of 66 elements seen through three (shape, strides): each cell shows where it lives")
plt.show()

# %% [markdown]
# A tile of a matrix is a block of rows times a block of columns. With `offs_m` (the tile's rows)
# and `offs_n` (its columns) from `tl.arange`, broadcasting gives the `[BLOCK_M, BLOCK_N]` block of
# offsets `offs_m[:, None] * stride_m + offs_n[None, :] * stride_n` in one expression, and a 2-D mask
# in the same way. Exercise 1 asks you to write exactly that.
#
# **Masked lanes and `other=`.** A masked lane reads nothing; `tl.load(..., other=v)` gives it the
# value `v` (without `other` the value is undefined). In the vector add that does not matter, since
# the masked lanes are never stored. In a softmax it does: the padded lanes take part in the max and
# in the sum, so they must read $-\infty$, the one value that changes neither. Here is what a
# padding of 0 does to a row whose scores are all negative:

# %%
row = np.array([-3.0, -1.0, -2.0, -5.0, -4.0])  # every score below 0
exact = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
for other in (0.0, -np.inf):
    padded = np.concatenate([row, np.full(3, other)])  # a block of 8 lanes, 3 of them masked
    p = np.exp(padded - padded.max())
    softmax = (p / p.sum())[:5]
    err = np.abs(softmax - exact).max()
    print(f"other = {other:>4}: max of the block {padded.max():>4}, softmax {np.round(softmax, 3)}, "
          f"error {err:.1e}")
    assert (err == 0) == (other == -np.inf)

# %% [markdown]
# With 0 the padding wins the max and adds three terms $e^{0 - 0} = 1$ to the sum. With
# $-\infty$ each padded term is $e^{-\infty} = 0$ and the max is the row's own.
#
# **Takeaway.** Offsets are indices times strides; masks say which lanes exist; `other=` is what a
# missing lane contributes, and must be the neutral value of whatever the kernel does next
# ($-\infty$ for a max, 0 for a sum or a dot).

# %% [markdown]
# ## 3. A row softmax: reductions and a flag
#
# One program per row (the grid is `(n_rows,)`), one block holding the whole row: `BLOCK_N` is the
# next power of two at least `n_cols`, since `tl.arange` needs a power of two. The row is read
# through its strides with `other=-inf`; `tl.max` and `tl.sum` reduce the block to one number;
# `tl.exp` is elementwise. The Triton tutorial's fused softmax does the same.

# %%
show_source("kernels.primer:softmax_kernel", "@triton.jit", "tl.store(")

# %% [markdown]
# **`tl.constexpr`.** `BLOCK_N` and `CAUSAL` are compile-time constants: Triton compiles one kernel
# per combination of their values and caches it. Block sizes must be constants because the shapes
# of blocks are fixed when the kernel is compiled. A flag costs nothing: `if CAUSAL:` is decided by
# the compiler, so the kernel compiled with `CAUSAL=False` has no trace of the `tl.where` line. The
# kernel of notebook 05 carries several flags this way (`IS_LOCAL`, `VARLEN`, `PACK_GQA`, ...), and
# each call gets a kernel with only the code it needs. (`CAUSAL` here keeps the columns $j \le i$
# of row $i$, the causal mask of a square score matrix.)
#
# Check both flags, on a transposed input, against `torch.softmax` in float64. The rows include
# one far below 0 and one far above (where $e^{x}$ overflows float32 unless the max is subtracted
# first):

# %%
def causal_rows(x):
    """x with the columns j > i of row i set to -inf."""
    return x.masked_fill(torch.ones(x.shape, dtype=torch.bool, device=x.device).triu(1), -math.inf)


x = (3 * torch.randn(37, 5, device=DEVICE)).t()  # 5 rows of 37, transposed: strides (1, 5)
x[0] -= 50.0
x[1] += 100.0
print(f"x: shape {tuple(x.shape)}, strides {x.stride()}; BLOCK_N = next_power_of_2({x.shape[1]}) = "
      f"{next_power_of_2(x.shape[1])}")
for causal in (False, True):
    want = torch.softmax((causal_rows(x) if causal else x).double(), dim=1)
    err_np = np.abs(softmax_numpy(x.cpu().double().numpy(), causal=causal) - want.cpu().numpy()).max()
    line = f"CAUSAL={causal!s:>5}: NumPy error {err_np:.1e}"
    assert err_np < 1e-14
    if kernels.HAS_TRITON:
        err = (primer.softmax(x, causal=causal).double() - want).abs().max().item()
        err_torch = (torch.softmax(causal_rows(x) if causal else x, dim=1).double() - want).abs().max().item()
        line += f", softmax_kernel error {err:.1e} (torch.softmax in float32: {err_torch:.1e})"
        assert err <= 2 * err_torch + 1e-7
    print(line)

# %% [markdown]
# **Takeaway.** Reductions (`tl.max`, `tl.sum`) turn a block into a number; `other=-inf` makes the
# padding neutral for both; a `tl.constexpr` flag selects code at compile time, for free.

# %% [markdown]
# ## 4. `tl.dot`, and the rules of tiles
#
# `tl.dot(a, b)` multiplies an `[M, K]` block by a `[K, N]` block on the tensor cores and returns
# `[M, N]`. Three rules, each of which the kernel of notebook 05 follows:
#
# * **every side at least 16.** The compiler refuses a smaller `tl.dot` (Triton's interpreter does
#   not check, so code that runs here could fail to compile on a GPU: the wrapper below checks for
#   both). Tiny problems are padded up with masks, which is why 05 pads `head_dim` to `HEAD_DIM`
#   and masks the extra columns with `mask_d`;
# * **powers of two** for every block shape, because `tl.arange` needs them;
# * **float32 inputs are multiplied in TF32 on a GPU** by default, which rounds them to fewer
#   bits; `input_precision="ieee"` asks for exact float32, which this primer uses (05's `PRECISION`
#   meta-parameter chooses per dtype). `tl.dot(p, v, acc)` adds the product into `acc` in place of
#   `acc + tl.dot(p, v)`, the form 05 uses.
#
# **Base 2.** $e^{x} = 2^{x \log_2 e}$, and `exp2` is the cheaper instruction on a GPU. Multiplying
# the softmax scale by $\log_2 e$ once, on the host (`qk_scale`), puts the scores in base-2 units,
# and every exponential in the loop becomes `tl.exp2`. The running max is then in base-2 units too,
# and $\mathrm{lse} = (m + \log_2 \ell) \ln 2$ converts back:

# %%
s = rng.standard_normal(1000) * 10
err = np.abs(np.exp2(s * LOG2E) - np.exp(s)) / np.exp(s)
m2, l2 = (s * LOG2E).max(), np.exp2(s * LOG2E - (s * LOG2E).max()).sum()
err_lse = abs((m2 + np.log2(l2)) * math.log(2) - np.log(np.exp(s - s.max()).sum()) - s.max())
print(f"exp2(s * log2 e) vs exp(s): max relative error {err.max():.1e}; lse from base 2: error {err_lse:.1e}")
assert err.max() < 1e-13 and err_lse < 1e-12

# %%
if kernels.HAS_TRITON:
    try:
        primer.attention(*(torch.randn(8, 16, device=DEVICE) for _ in range(3)), block_m=8)
    except ValueError as error:
        print("attention(..., block_m=8):", error)
else:
    print("(without Triton the wrapper cannot be called; it refuses block_m=8: tl.dot needs at least 16)")

# %% [markdown]
# ## 5. FlashAttention-2's forward, next to its NumPy version
#
# Everything is now in place for the forward of notebook 03's online softmax on tiles, for one
# head in float32: one program per block of `BLOCK_M` queries loads its $Q_i$ once, keeps the
# running max `m_i`, the running sum `l_i` and the unnormalised output `acc` on chip, streams the
# keys and values past in blocks of `BLOCK_N`, and writes $O_i$ once. No causal mask, no batch,
# no flags; the ragged last blocks are handled by the masks `mask_m` and `mask_n`.
#
# The NumPy version first (`attention_numpy` in `kernels/primer_numpy.py`), written with the
# kernel's names, its grid as the outer loop:

# %%
show_source("kernels.primer_numpy:attention_numpy", "def attention_numpy", "return O")

# %% [markdown]
# The kernel's signature lists its arguments in the order every kernel of the repository uses:
# pointers, strides (one pair per tensor, so any layout works), sizes, then the `tl.constexpr`
# meta-parameters in capitals. The host wrapper computes `qk_scale` and launches one program per
# query block:

# %%
show_source("kernels.primer:attention_kernel", "@triton.jit", "HEAD_DIM: tl.constexpr):")
show_source("kernels.primer:attention", "qk_scale = LOG2E", "BLOCK_M=block_m")

# %% [markdown]
# And the kernel's body, printed as a diff against the NumPy version: `same` marks a line that is
# identical in both, `np→tl` a line that is identical once `np.` reads `tl.`, and the lines that
# differ are printed as a pair, the NumPy lines first.

# %%
def statements(target):
    """The statements of a function's body in source order, without its signature and docstring:
    (key, lines) pairs, ``key`` naming what a statement sets (``q``, ``m_i``) or calls (``store``)."""
    text = textwrap.dedent("".join(source_lines(target)[0]))
    lines = text.splitlines()
    body = ast.parse(text).body[0].body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    def walk(nodes):  # a loop or an if: its header line, then its body
        for node in nodes:
            yield node
            if isinstance(node, (ast.For, ast.If)):
                yield from walk(node.body)

    out = []
    for node in walk(body):
        last = node.lineno if isinstance(node, (ast.For, ast.If)) else node.end_lineno
        if isinstance(node, ast.Assign):
            key = ast.unparse(node.targets[0])
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            key = ast.unparse(node.value.func).split(".")[-1]  # store and tl.store: "store"
        else:
            key = None
        out.append((key, lines[node.lineno - 1:last]))
    return out


def code(lines):
    """A statement's code without comments and indentation, for comparing."""
    return " ".join(line.split("  #")[0].strip() for line in lines)


def diff(numpy_target, triton_target):
    """Print the Triton function's body aligned with the NumPy one's, statement by statement: the
    same (or the same with np. -> tl.) once, different ones as a pair, NumPy first. Returns how
    many of the Triton version's lines fall under each tag."""
    a, b = statements(numpy_target), statements(triton_target)
    counts = dict(same=0, np_tl=0, different=0)

    def show(tag, lines):
        for line in lines:
            print(f"{tag:>7} | {line}")

    matcher = difflib.SequenceMatcher(None, [code(x[1]).replace("np.", "tl.") for x in a],
                                      [code(x[1]) for x in b], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for (_, la), (_, lb) in zip(a[i1:i2], b[j1:j2]):
                tag = "same" if code(la) == code(lb) else "np→tl"
                counts["same" if tag == "same" else "np_tl"] += len(lb)
                show(tag, lb)
            continue
        left, pending = list(a[i1:i2]), []  # NumPy statements to print; Triton ones without a pair
        for key, lb in b[j1:j2]:  # each Triton statement below the NumPy one that sets the same name
            counts["different"] += len(lb)
            match = next((i for i, (k, _) in enumerate(left) if k is not None and k == key), None)
            if match is None:
                pending.append(lb)
                continue
            for _, la in left[:match + 1]:
                show("NumPy", la)
            for lines in [*pending, lb]:
                show("Triton", lines)
            left, pending = left[match + 1:], []
        for _, la in left:
            show("NumPy", la)
        for lines in pending:
            show("Triton", lines)
    return counts


counts = diff("kernels.primer_numpy:attention_numpy", "kernels.primer:attention_kernel")
kernel_lines = sum(counts.values())
print(f"\nthe kernel's body: {kernel_lines} lines; {counts['same']} identical to the NumPy version's, "
      f"{counts['np_tl']} identical once np. reads tl., {counts['different']} different")
assert kernel_lines <= 30

# %% [markdown]
# What differs is where the data comes from, not the arithmetic:
#
# * **the grid.** NumPy's outer loop over `start_m` becomes `tl.program_id(0) * BLOCK_M`;
# * **loads and stores.** Slicing becomes pointer arithmetic with the strides and a masked
#   `tl.load` (`other=0.0`: a padded query row or key row reads zeros) and a masked `tl.store`, so
#   the rows past `seqlen_q` are never written;
# * **the matrix products** become `tl.dot` (`tl.trans(k)` gives $K_j^\top$; 05 loads $K_j^\top$
#   directly through the strides instead), and the statistics get an explicit dtype, float32;
# * **the padded keys** of the ragged last block: the loads give them zeros, so their scores are 0,
#   not absent; `tl.where(mask_n, s, -inf)` removes them (the NumPy version's `load` also gives
#   zeros, so it needs the same line).
#
# No row ever sees only masked keys here (every row sees key 0 in the first block), so the
# running max is finite after the first block and $e^{-\infty - (-\infty)}$ never happens. With a
# sliding window, or a causal mask with more queries than keys, it can: exercise 4 and 05's kernel
# add the `m_safe` guard of notebook 03 for that.
#
# Run both on ragged sizes against naive attention in float64 (`attention_reference`):

# %%
sizes = [(1, 1), (50, 37), (37, 50)] if SMALL else [(1, 1), (1000, 777), (777, 1000)]
for seqlen_q, seqlen_k in sizes:
    q = torch.randn(seqlen_q, 16, device=DEVICE)
    k, v = (torch.randn(seqlen_k, 16, device=DEVICE) for _ in range(2))
    want = attention_reference(*(t.double()[None, None] for t in (q, k, v)))[0, 0]
    out_np = attention_numpy(*(t.cpu().double().numpy() for t in (q, k, v)))
    err_np = np.abs(out_np - want.cpu().numpy()).max()
    line = f"seqlen_q {seqlen_q:>4}, seqlen_k {seqlen_k:>4}: NumPy error {err_np:.1e}"
    assert err_np < 1e-12
    if kernels.HAS_TRITON:
        out = primer.attention(q, k, v)
        err = (out.double() - want).abs().max().item()
        err_torch = (attention_reference(q[None, None], k[None, None], v[None, None])[0, 0].double()
                     - want).abs().max().item()
        line += f", attention_kernel error {err:.1e} (PyTorch in float32: {err_torch:.1e})"
        assert err <= 2 * err_torch + 1e-6
    print(line)

# %% [markdown]
# **Takeaway.** FlashAttention-2's forward is the NumPy loop of the online softmax with its
# outer loop turned into the grid, its slices into masked pointer loads, and its products into
# `tl.dot`. The kernel of notebook 05 is this one with more cases: batches and heads, causal masks
# and windows, GQA, packed sequences, and bf16.
#
# ## 6. Reading notebook 05's kernel: what it adds
#
# | In `kernels/flash_fwd.py` | What it is |
# | --- | --- |
# | `tile_ids(num_tiles)`, `pid % num_tiles` | one grid axis numbers (query block, batch x head) pairs |
# | `q_ptr += off_b * stride_qb + ...` | pointers moved to one (batch, head): from there on, this kernel |
# | `.to(tl.int64)` on offsets | offsets past $2^{31}$ elements would overflow int32 |
# | `HEAD_DIM`, `mask_d` | `head_dim` padded to a power of two >= 16, the extra columns masked |
# | `kt = tl.load(... offs_d[:, None] ...)` | $K_j^\top$ loaded through the strides, no `tl.trans` |
# | `for stretch in tl.static_range(3)` | a loop unrolled at compile time: masked, unmasked, masked blocks |
# | `m_safe` | the guard of notebook 03, for rows whose first blocks are all masked |
# | `tl.dot(p.to(v.dtype), v, acc)` | the accumulating dot, `p` rounded to bf16/fp16 for the tensor cores |
# | `lse`, `LN2_C` | the log-sum-exp stored for the backward; a constexpr global |
# | `num_warps`, `num_stages` | launch options: warps (32 threads each) per program; loads in flight |

# %% [markdown]
# ## Exercises
#
# Write each function in the cell below its spec, then run the cell. `check` runs it on awkward
# cases (length 1, primes, ragged last blocks, transposed inputs) against a float64 reference and
# prints `pass`, or the first wrong element and what it should be; it never stops the notebook.
# Stuck? `show_solution("04.tile_offsets")` prints one answer (the answers live in
# `exercises/solutions/nb04.py`, out of sight).
#
# Exercises 2 to 4 are `@triton.jit` kernels that the check launches with the signature the spec
# gives, in the interpreter here (on a GPU, compiled). Each cell holds a stub that raises
# `NotImplementedError` and, below it, the kernel's skeleton in comments: uncomment it (it then
# replaces the stub) and fill it in. Without Triton these checks report `skip`.
#
# **1. The offsets of a tile** (no Triton needed). Write `tile_offsets(pid_m, pid_n, BLOCK_M,
# BLOCK_N, n_rows, n_cols, stride_m, stride_n)` returning `(offsets, mask)`, two `[BLOCK_M, BLOCK_N]`
# tensors: the element offsets that tile `(pid_m, pid_n)` of an `n_rows x n_cols` matrix with
# strides `(stride_m, stride_n)` loads, and the mask that is True for the elements inside the
# matrix. Use `torch.arange` and broadcasting, as a kernel uses `tl.arange`. The check compares the
# offsets where the mask is True, on transposed and sliced layouts and ragged edge tiles.

# %%
from exercises import check, show_solution  # noqa: E402,F401  (show_solution: when you are stuck)


def tile_offsets(pid_m, pid_n, BLOCK_M, BLOCK_N, n_rows, n_cols, stride_m, stride_n):
    raise NotImplementedError  # your code here


check("04.tile_offsets", tile_offsets)

# %% [markdown]
# **2. A masked kernel.** Write `scale_add_kernel(x_ptr, y_ptr, out_ptr, n, scale, BLOCK:
# tl.constexpr)`, computing `out = x * scale + y` for float32 vectors of length `n`. The check
# launches it on `triton.cdiv(n, BLOCK)` programs, `BLOCK` 16 or 32, for `n` = 1, 15, 16, 37 and
# 100. Each `out` is the start of a longer buffer whose tail holds NaN, so a store past the end is
# caught (a load past the end cannot be seen here; on a GPU it can read another tensor's memory).

# %%
def scale_add_kernel(*args, **kwargs):
    raise NotImplementedError  # replace this stub: uncomment the skeleton below and complete it


# @triton.jit
# def scale_add_kernel(x_ptr, y_ptr, out_ptr, n, scale, BLOCK: tl.constexpr):
#     ...  # your code here


check("04.scale_add_kernel", scale_add_kernel)

# %% [markdown]
# **3. The log-sum-exp of each row.** Write `row_lse_kernel(x_ptr, lse_ptr, stride_xm, stride_xn,
# n_cols, BLOCK_N: tl.constexpr)`, one program per row, storing
# $\mathrm{lse}_i = \log \sum_j e^{x_{ij}}$ at `lse_ptr + row`: the number notebook 05's kernel
# keeps per row for the backward. `BLOCK_N` is a power of two >= `n_cols` (16 or 32); `x` is
# sometimes transposed; its first row is near -50 and its second near +100, where $e^{x}$
# overflows float32.

# %%
def row_lse_kernel(*args, **kwargs):
    raise NotImplementedError  # replace this stub: uncomment the skeleton below and complete it


# @triton.jit
# def row_lse_kernel(x_ptr, lse_ptr, stride_xm, stride_xn, n_cols, BLOCK_N: tl.constexpr):
#     row = tl.program_id(0)
#     ...  # your code here


check("04.row_lse_kernel", row_lse_kernel)

# %% [markdown]
# **4. FlashAttention's forward from a skeleton, causal or not, with its log-sum-exp.** The
# skeleton below is the kernel of section 5 with a flag `CAUSAL: tl.constexpr`, one more output,
# `lse` (natural log, one value per query row), and holes where the loop body and the epilogue
# were. Write the loop body (load $K_j$ and $V_j$, the scores in base-2 units, the mask, the update
# of `m_i`, `l_i`, `acc`) and the epilogue (`out` and `lse`). With `CAUSAL`, query $i$ sees key $j$
# only when $j \le i + N_k - N_q$ (bottom-right, as in notebook 01's exercise 1): with more queries
# than keys the first rows see no key at all, so the update needs the `m_safe` guard of notebook 03
# and those rows must end with `out` = 0 and `lse` = $-\infty$, not NaN. The check launches it on
# `cdiv(seqlen_q, 16)` programs with `BLOCK_M = BLOCK_N = 16`, `HEAD_DIM = d`, `qk_scale`
# $= \log_2 e / \sqrt d$, against float64 attention, for (`seqlen_q`, `seqlen_k`) = (1, 1), (5, 37),
# (33, 16), (20, 50), each with `CAUSAL` False and True, on transposed and sliced inputs.

# %%
def attention_lse_kernel(*args, **kwargs):
    raise NotImplementedError  # replace this stub: uncomment the skeleton below and complete it


# @triton.jit
# def attention_lse_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr,  # pointers
#                          stride_qm, stride_qd, stride_kn, stride_kd,  # strides
#                          stride_vn, stride_vd, stride_om, stride_od,
#                          seqlen_q, seqlen_k, qk_scale,  # sizes; softmax_scale * log2(e)
#                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
#                          CAUSAL: tl.constexpr):  # bottom-right causal mask
#     offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
#     offs_d = tl.arange(0, HEAD_DIM)
#     mask_m = offs_m < seqlen_q
#     q = tl.load(q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
#                 mask=mask_m[:, None], other=0.0)
#     m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
#     l_i = tl.zeros([BLOCK_M], tl.float32)
#     acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
#     for start_n in range(0, seqlen_k, BLOCK_N):
#         offs_n = start_n + tl.arange(0, BLOCK_N)
#         mask_n = offs_n < seqlen_k
#         ...  # your code here: K_j and V_j, the scores s, the mask (the padded keys; with CAUSAL
#         ...  # also the keys after each row's diagonal), m_new, m_safe, p, alpha, l_i, acc, m_i
#     out = ...  # your code here: acc / l_i, and 0 for a row with l_i = 0
#     lse = ...  # your code here: natural log, -inf for a row with l_i = 0 (ln 2 = 0.6931471805599453)
#     tl.store(o_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, out,
#              mask=mask_m[:, None])
#     tl.store(lse_ptr + offs_m, lse, mask=mask_m)


check("04.attention_lse_kernel", attention_lse_kernel)

# %% [markdown]
# ## References
#
# * Tillet, Kung, Cox, "Triton: an intermediate language and compiler for tiled neural network
#   computations", MAPL 2019: blocks of pointers and masks as the unit a GPU program is written in.
# * The Triton tutorials, https://triton-lang.org/main/getting-started/tutorials/: "Vector
#   Addition" (the grid, masks), "Fused Softmax" (one program per row, `other=-inf`) and "Fused
#   Attention" (FlashAttention-2's forward and backward in Triton).
# * Rush, "Triton-Puzzles", https://github.com/srush/Triton-Puzzles: Triton learnt by puzzles,
#   each a spec, a stub and a check in the interpreter, the model for this notebook's exercises.
# * Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023,
#   arXiv:2307.08691: the loop order of section 5 (query blocks outside, one per program).
# * Milakov, Gimelshein, "Online normalizer calculation for softmax", 2018, arXiv:1805.02867: the
#   running max and sum of the loop.

# %% [markdown]
# ## What comes next
#
# [05 · The FlashAttention forward pass](05_flash_attention_forward.ipynb) reads this repository's
# forward kernel, `_attn_fwd` in `kernels/flash_fwd.py`, line by line: the kernel of section 5 with
# batches and heads, causal masks and windows, the three-stretch loop, and bf16 on the tensor cores.
