"""The pieces every attention kernel of the package shares: tiles, sequences, the mask band.

What the reader will learn here: how a program finds its work before any arithmetic starts. A
launch grid of one axis enumerates (tile, batch * head) pairs (:func:`tile_ids`); a program finds
where its sequence starts and how long it is, in a dense batch, a packed one or a KV cache
(:func:`sequence`); and it skips the key blocks outside the mask band, applying the mask only to
the blocks that cut it (:func:`key_range`, :func:`full_range`, :func:`band_mask`).

Host side, two small frozen values describe a call: the mask band (``band.py``, shared with the
plain-PyTorch twin, which needs no Triton) and :class:`Layout`, how the kernels find a sequence's
rows. The public entry points make them once
and pass them down to the launchers of ``flash_fwd.py`` and ``flash_bwd.py``.

Semantics (identical to :func:`kernels.reference.attention_reference`): masks are aligned to the
bottom-right corner: query ``i`` sits at key position ``i + seqlen_k - seqlen_q`` and sees key
``j`` when ``i + off - left <= j <= i + off + right``; ``causal=True`` is ``right = 0``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._checks import INTERPRET

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the cheaper instruction
LN2 = 0.6931471805599453  # log(x) = log2(x) * ln(2)
# The same two numbers as compile-time constants, the only kind of global a @triton.jit reads.
LOG2E_C: tl.constexpr = tl.constexpr(LOG2E)
LN2_C: tl.constexpr = tl.constexpr(LN2)
# Triton compiles a variant per "divisible by 16 / equal to 1" pattern of each integer argument.
# Sequence lengths and window bounds vary from call to call and gain nothing from it: keep one
# compiled kernel for all of them. head_dim is left specialised: knowing it is a multiple of 16
# lets the compiler turn the `offs_d < head_dim` masks into 16-byte vector loads (measured on an
# H100: 2-3x slower kernels without it).
SIZES = ["heads_q", "heads_kv", "group", "seqlen_q", "seqlen_k", "window_left", "window_right",
         "num_tiles", "ready_count"]


def jit_kernel(fn):
    """``triton.jit`` for a kernel, its integer :data:`SIZES` arguments not specialised."""
    names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
    return triton.jit(do_not_specialize=[n for n in SIZES if n in names])(fn)


# --------------------------------------------------------------------------------------------
# Device side: where a sequence starts and how long it is; which blocks meet the band
# --------------------------------------------------------------------------------------------
@triton.jit
def tile_ids(num_tiles):
    """(tile, batch * head) of this program. Grid axis 0 enumerates both, tiles fastest: the
    launch order of a 2D grid (tiles, batch * heads), so the programs running together share a
    head's K and V in L2, without CUDA's limit of 65535 on a grid's second axis (a batch of
    4096 sequences with 16 heads is already past it)."""
    pid = tl.program_id(0)
    return pid % num_tiles, pid // num_tiles


def grid(num_tiles: int, batch_heads: int, *more: int) -> tuple[int, ...]:
    """The launch grid that :func:`tile_ids` decodes."""
    return (num_tiles * batch_heads, *more)


@triton.jit
def sequence(cu_seqlens_ptr, seqused_ptr, off_b, seqlen, VARLEN: tl.constexpr,
             SEQUSED: tl.constexpr):
    """(first row, length) of sequence ``off_b``. Dense batches start at row 0 and have the
    length passed in; packed ones read ``cu_seqlens``, and ``seqlen`` is then the packed
    tensor's number of rows: offsets are clamped into it, so wrong ``cu_seqlens`` (passed with
    ``check_seqlens=False``) can give wrong rows but never reach outside the tensor. A KV cache
    reads ``seqused`` (its valid length, ``cache_seqlens`` in :func:`kernels.flash_decode`),
    clamped the same way. The start is int64: it is multiplied by a row stride of
    ``heads * head_dim``, and a packed batch of over 2**31 / 2048 = 1M tokens (16 heads of 128)
    would overflow int32 and read the wrong rows."""
    start = 0
    if VARLEN:
        start = tl.minimum(tl.maximum(tl.load(cu_seqlens_ptr + off_b), 0), seqlen)
        end = tl.minimum(tl.maximum(tl.load(cu_seqlens_ptr + off_b + 1), start), seqlen)
        seqlen = end - start
        start = start.to(tl.int64)
    if SEQUSED:  # clamped: an out-of-range length must never read outside the cache
        seqlen = tl.minimum(tl.maximum(tl.load(seqused_ptr + off_b), 0), seqlen)
    return start, seqlen


@triton.jit
def key_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
              BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr):
    """Keys ``[lo, hi)`` that query positions ``[row_lo, row_hi)`` can see; ``lo`` is rounded
    down to a block so that every load stays block-aligned."""
    lo = 0
    hi = seqlen_k
    if IS_LOCAL:
        off = seqlen_k - seqlen_q
        lo = tl.maximum(row_lo + off - window_left, 0)
        lo = (lo // BLOCK_N) * BLOCK_N
        hi = tl.minimum(row_hi + off + window_right, seqlen_k)
    return lo, hi


@triton.jit
def full_range(row_lo, row_hi, seqlen_q, seqlen_k, window_left, window_right,
               BLOCK_N: tl.constexpr, IS_LOCAL: tl.constexpr):
    """Keys ``[lo, hi)``, block-aligned, that *every* query of ``[row_lo, row_hi)`` sees, all of
    them real keys: blocks there need no mask at all. Only the blocks at the edges of the band
    (the diagonal, for causal) and a ragged last block pay for ``tl.where``."""
    lo = 0
    hi = (seqlen_k // BLOCK_N) * BLOCK_N
    if IS_LOCAL:
        off = seqlen_k - seqlen_q
        first = row_hi - 1 + off - window_left  # the last row's first key
        lo = tl.cdiv(tl.maximum(first, 0), BLOCK_N) * BLOCK_N
        last = row_lo + off + window_right + 1  # one past the first row's last key
        hi = tl.minimum(hi, (tl.maximum(last, 0) // BLOCK_N) * BLOCK_N)
    return lo, hi


@triton.jit
def split3(lo, hi, full_lo, full_hi):
    """Cut ``[lo, hi)`` into masked ``[lo, a)``, unmasked ``[a, b)`` and masked ``[b, hi)``."""
    a = tl.minimum(tl.maximum(full_lo, lo), hi)
    b = tl.maximum(tl.minimum(full_hi, hi), a)
    return a, b


@triton.jit
def stretch_range(stretch: tl.constexpr, lo, mid_lo, mid_hi, hi):
    """Blocks ``[start, end)`` of stretch 0, 1 or 2 of a loop cut by :func:`split3`: the masked
    edge ``[lo, mid_lo)``, the unmasked interior ``[mid_lo, mid_hi)``, the masked edge
    ``[mid_hi, hi)``. Loops run ``for stretch in tl.static_range(3)``: ``stretch`` is a
    compile-time constant, so each stretch compiles its own loop, the interior without a mask."""
    if stretch == 0:
        return lo, mid_lo
    elif stretch == 1:
        return mid_lo, mid_hi
    else:
        return mid_hi, hi


@triton.jit
def band_mask(rows, cols, seqlen_q, seqlen_k, window_left, window_right):
    """True where query ``rows`` sees key ``cols`` (bottom-right aligned); pass them broadcastable,
    ``rows[:, None], cols[None, :]`` for a [BLOCK_M, BLOCK_N] mask or the transpose."""
    diag = rows + (seqlen_k - seqlen_q)
    return (cols >= diag - window_left) & (cols <= diag + window_right)


# --------------------------------------------------------------------------------------------
# Host side: launch configurations, the band, the layout
# --------------------------------------------------------------------------------------------
def padded_head_dim(head_dim: int) -> int:
    """``HEAD_DIM``: head_dim padded to a power of two, at least 16 (tl.dot needs K >= 16)."""
    return max(16, triton.next_power_of_2(head_dim))


def launch_config(block_m: int, block_n: int, warps: int, stages: int) -> dict:
    """A launch configuration: ``dict(BLOCK_M=, BLOCK_N=, num_warps=, num_stages=)``."""
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)


@functools.cache
def is_hopper() -> bool:
    """Compute capability 9.x (H100, H200): the generation the launch tables were measured on."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def dot_flags(dtype: torch.dtype) -> dict:
    """``UPCAST`` and ``PRECISION``, the meta-parameters of every ``tl.dot`` for ``dtype``."""
    return dict(UPCAST=INTERPRET and dtype == torch.bfloat16,
                PRECISION="ieee" if dtype == torch.float32 else "tf32")


@dataclass(frozen=True)
class Layout:
    """How the kernels find a sequence's rows.

    Dense tensors are ``(batch, heads, seqlen, head_dim)``. Packed (variable-length) tensors are
    ``(total, heads, head_dim)`` with ``cu_seqlens`` of length ``batch + 1``; the kernels then see
    them with a batch stride of 0 and start each sequence at row ``cu_seqlens[b]``.
    """

    batch: int
    seqlen_q: int  # dense length, or max_seqlen_q when packed
    seqlen_k: int
    cu_seqlens_q: torch.Tensor | None = None
    cu_seqlens_k: torch.Tensor | None = None
    seqused_k: torch.Tensor | None = None  # valid keys per sequence (KV cache lengths)

    @classmethod
    def dense(cls, q: torch.Tensor, k: torch.Tensor) -> Layout:
        """The layout of ``(batch, heads, seqlen, head_dim)`` tensors."""
        return cls(q.shape[0], q.shape[2], k.shape[2])

    @property
    def packed(self) -> bool:
        return self.cu_seqlens_q is not None

    def lengths(self, q: torch.Tensor, k: torch.Tensor) -> tuple[int, int]:
        """(seqlen_q, seqlen_k) as the kernels take them: a dense batch's lengths; when packed,
        the number of rows of q and k, which bounds every sequence (``sequence`` clamps the
        offsets to it) and makes the "unbounded" bound of :meth:`kernels.band.Band.bounds` never bind."""
        return (q.shape[0], k.shape[0]) if self.packed else (self.seqlen_q, self.seqlen_k)

    def strides(self, t: torch.Tensor) -> tuple[int, int, int, int]:
        """(batch, head, row, dim) strides of q, k, v, o or a gradient."""
        if self.packed:
            return (0, t.stride(1), t.stride(0), t.stride(2))
        return tuple(t.stride())

    def lse_strides(self, lse: torch.Tensor) -> tuple[int, int]:
        """(batch, head) strides of lse / delta: (batch, heads, seqlen) or packed (heads, total)."""
        return (0, lse.stride(0)) if self.packed else (lse.stride(0), lse.stride(1))

    def pointers(self, placeholder: torch.Tensor):
        """cu_seqlens_q, cu_seqlens_k, seqused_k; unused ones get a placeholder tensor that the
        kernel never reads (a constexpr flag compiles its loads away)."""
        return tuple(placeholder if t is None else t
                     for t in (self.cu_seqlens_q, self.cu_seqlens_k, self.seqused_k))


def row_descriptors(tensors, block_rows: int, head_dim_pad: int, per_sequence: bool = False):
    """Host tensor descriptors (TMA) over dense ``(batch, heads, rows, cols)`` tensors, one block
    ``[1, 1, block_rows, head_dim_pad]``, or packed ``(total, heads, cols)`` ones, described as
    their ``(heads, total, cols)`` view, one block ``[1, block_rows, head_dim_pad]`` (rows and
    columns past the tensor's load as zeros; a packed sequence's rows past its end are the next
    sequence's: :func:`load_rows` says what to do). The unit dimensions lead in both, so the
    block reshapes to ``[block_rows, cols]`` where it lies in shared memory: with the unit one
    in the middle (``[block_rows, 1, cols]``, the packed tensor's own order) the reshape went
    through registers, and the packed head-dim-128 dK/dV loop ran out of them (ptxas serialised
    its matrix multiplies; benchmarks/NOTES.md, step 12). ``per_sequence`` (packed tensors):
    the tensors themselves, for the kernel to describe each sequence with
    :func:`sequence_descriptor`, and an allocator for those descriptors set in Triton if none is;
    ``(None, ...)`` unless every tensor qualifies (Triton with ``TensorDescriptor``, a unit last
    stride, the other strides and the base 16-byte aligned)."""
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor
    except ImportError:
        return (None,) * len(tensors)
    if not all(t.stride(-1) == 1 and t.data_ptr() % 16 == 0
               and all(s * t.element_size() % 16 == 0 for s in t.stride()[:-1]) for t in tensors):
        return (None,) * len(tensors)
    if per_sequence:
        _descriptor_allocator(tensors[0].device)
        return tuple(tensors)
    views = [t.transpose(0, 1) if t.dim() == 3 else t for t in tensors]
    return tuple(TensorDescriptor(t, list(t.shape), list(t.stride()),
                                  [1] * (t.dim() - 2) + [block_rows, head_dim_pad])
                 for t in views)


def _descriptor_allocator(device: torch.device) -> None:
    """Descriptors made in a kernel live in global memory that Triton asks an allocator for at
    launch (128 bytes each); unless the program has set one (``triton.set_allocator``), torch's
    caching allocator serves."""
    if device.type != "cuda":
        return  # the interpreter makes them on the host
    try:  # Triton 3.6-3.7 keep the allocator in a context variable, a null one until set
        from triton.runtime import _allocation
        unset = _allocation._allocator.get() is _allocation._NULL_ALLOCATOR
    except (ImportError, AttributeError):  # another version: set ours
        unset = True
    if unset:  # the workspace on the device the launch runs on (torch's current device)
        triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8,
                                                                          device="cuda"))


@triton.jit
def sequence_descriptor(base, seqlen, cols, stride_row, BLOCK: tl.constexpr, COLS: tl.constexpr):
    """A tensor descriptor, made in the kernel, over the ``seqlen`` rows of one sequence and head
    of a packed tensor (``base`` its first row, rows ``stride_row`` apart, ``cols`` contiguous
    values each), one block ``[BLOCK, COLS]``: rows past the sequence's end and columns past
    ``cols`` load as zeros, so its edge blocks need no mask (FlashAttention-3 describes each
    sequence of a varlen batch the same way)."""
    return tl.make_tensor_descriptor(base, shape=[seqlen, cols], strides=[stride_row, 1],
                                     block_shape=[BLOCK, COLS])


@triton.jit
def sequence_descriptors(desc_a, desc_b, base_a, base_b, seqlen, cols, stride_a, stride_b,
                         BLOCK: tl.constexpr, COLS: tl.constexpr, SEQ_DESC: tl.constexpr):
    """The two streamed tensors' descriptors: ``desc_a`` and ``desc_b`` as the host made them,
    or with ``SEQ_DESC`` (a packed batch) two :func:`sequence_descriptor` over this sequence's
    and head's rows at ``base_a`` and ``base_b``."""
    if SEQ_DESC:
        desc_a = sequence_descriptor(base_a, seqlen, cols, stride_a, BLOCK, COLS)
        desc_b = sequence_descriptor(base_b, seqlen, cols, stride_b, BLOCK, COLS)
    return desc_a, desc_b


@triton.jit
def load_rows(desc, off_b, off_h, start, row, BLOCK: tl.constexpr, VARLEN: tl.constexpr,
              SEQ_DESC: tl.constexpr = False):
    """Rows ``row .. row + BLOCK`` of head ``off_h`` of a sequence starting at ``start``, through
    a descriptor of :func:`row_descriptors`: ``[BLOCK, cols]``. Dense descriptors are 4-D and
    count rows within the sequence; packed ones are 3-D and count them from the packed tensor's
    first row, so the sequence's start is added. Rows past the tensor come back as zeros, but in
    a packed batch the rows past a sequence's end are the next sequence's: a block that may
    reach past the end is not for this function (the kernels load those through pointers,
    masked, so that the next sequence's values, a NaN among them, cannot leak across; zeroing
    them here in registers cost the packed head-dim-128 dK/dV kernel a quarter more shared
    memory, one program per SM instead of two: benchmarks/NOTES.md, step 12), unless
    ``SEQ_DESC``: then ``desc`` is a :func:`sequence_descriptor`, 2-D, rows counted within the
    sequence, and past its end zeros."""
    # One return: the compiler would also build the code after a return inside a constexpr if
    if SEQ_DESC:
        tile = desc.load([row, 0])
    elif VARLEN:
        tile = desc.load([off_h, (start + row).to(tl.int32), 0]).reshape(BLOCK, desc.block_shape[2])
    else:
        tile = desc.load([off_b, off_h, row, 0]).reshape(BLOCK, desc.block_shape[3])
    return tile
