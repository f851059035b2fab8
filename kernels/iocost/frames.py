"""The two loop orders in motion: FlashAttention-1 and -2's forward pass, one step at a time.

What the reader will learn here: both orders compute the same (Q block, K/V block) pairs with the
same online softmax; they differ in what stays on chip, and so in what crosses HBM.

* FlashAttention-1 (Dao et al. 2022, Algorithm 1) holds ``K_j, V_j`` while every Q block streams
  past. Each step reads ``Q_i`` and the partial ``O_i, l_i, m_i`` from HBM and writes
  ``O_i, l_i, m_i`` back; HBM holds the running state between steps.
* FlashAttention-2's order (this project's kernels) holds ``Q_i`` and the accumulator while every
  ``K_j, V_j`` streams past. ``m, l, acc`` never leave the chip; ``O_i`` and ``lse_i`` are
  written once, at the end of the row.

:func:`loop_frames` runs both forward loops through the counting :class:`~.simulator.SRAM` and
records a :class:`Frame` after every step: the tiles on chip, the tiles read from and written to
HBM at that step, the running ``m, l, acc`` of every query row, and the traffic so far. A step is
one visited (Q block, K/V block) pair; step 0 is the start, before any pair (FlashAttention-1 has
zero-filled ``O, l, m`` in HBM by then). :func:`draw_frame` draws one step of both orders side by
side and :func:`draw_strip` a few steps as a static strip (matplotlib, imported only to draw).

The traffic of the last frames equals :func:`~.closed_forms.flash1_io`,
:func:`~.closed_forms.flash2_io` and the simulator's counts exactly, and each step's traffic is
the sum of the tiles it says it moved (``tests/test_iocost_frames.py``). Conventions (causal
masks aligned bottom-right, ragged blocks moving only the rows that exist): the package docstring.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .closed_forms import Traffic, flash1_io, flash2_io
from .simulator import SRAM

#: The two loop orders, as :class:`Frame.order` names them.
ORDERS = ("FA-1", "FA-2")
#: Tensors with ``d`` columns; the others (``l``, ``m``, ``lse``) hold one number per query row.
WIDE_TENSORS = frozenset({"Q", "K", "V", "O"})
#: Tensors whose blocks are K/V blocks (``block_n`` rows); all the others are split like Q.
KEY_TENSORS = frozenset({"K", "V"})

# A tile is (tensor name, block index along its rows): ("K", 2) is K_2, ("l", 0) is l_0.
Tile = tuple[str, int]


# ---------------------------------------------------------------------------------------------
# Frames: what each step holds, reads and writes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Frame:
    """One loop order after one step."""

    order: str                          # "FA-1" or "FA-2"
    step: int                           # 0: the start; t: after the t-th pair
    pair: tuple[int, int | None] | None  # (Q block i, K/V block j) computed; (i, None): a Q block
    #                                     that sees no key (causal, more queries than keys)
    on_chip: frozenset[Tile]            # d-wide tiles in SRAM during the step (charged to M)
    loaded: frozenset[Tile]             # tiles read from HBM at this step
    stored: frozenset[Tile]             # tiles written to HBM at this step
    moved: Traffic                      # elements this step moved, as the SRAM counted them
    traffic: Traffic                    # elements moved from the start to the end of this step
    m: np.ndarray                       # (N,) running max of each query row's scores
    l: np.ndarray                       # (N,) running sum of exp(score - m)
    acc: np.ndarray                     # (N, d) unnormalised output: sum_j exp(s_j - m) v_j

    @property
    def out(self) -> np.ndarray:
        """``acc / l``: each row's output over the keys it has seen so far (0 before any)."""
        out = np.zeros_like(self.acc)
        np.divide(self.acc, self.l[:, None], out=out, where=self.l[:, None] > 0)
        return out


@dataclass(frozen=True, eq=False)
class LoopFrames:
    """Both loop orders' frames for one input, and the sizes they ran with."""

    N: int            # query rows
    N_k: int          # key rows
    d: int            # head dimension
    block_m: int      # rows of a Q block (FA-1's B_r)
    block_n: int      # rows of a K/V block (FA-1's B_c)
    causal: bool
    fa1: tuple[Frame, ...]
    fa2: tuple[Frame, ...]

    @property
    def steps(self) -> int:
        """Frames of the longer order (both have the same number unless some Q block sees no key)."""
        return max(len(self.fa1), len(self.fa2))

    def of(self, order: str) -> tuple[Frame, ...]:
        if order not in ORDERS:
            raise ValueError(f"order: expected one of {ORDERS}, got {order!r}")
        return self.fa1 if order == "FA-1" else self.fa2

    def at(self, order: str, step: int) -> Frame:
        """The frame of ``order`` at ``step``; an order that has finished stays at its last frame."""
        frames = self.of(order)
        if not 0 <= step < self.steps:
            raise ValueError(f"step: expected 0 <= step < {self.steps}, got {step}")
        return frames[min(step, len(frames) - 1)]

    def rows(self, tile: Tile) -> slice:
        """The rows of its tensor that ``tile`` covers (a ragged last block is shorter)."""
        tensor, block = tile
        n, b = (self.N_k, self.block_n) if tensor in KEY_TENSORS else (self.N, self.block_m)
        return slice(block * b, min((block + 1) * b, n))

    def elements(self, tile: Tile) -> int:
        """Elements in ``tile``: rows x d for Q, K, V, O; rows for the statistics."""
        r = self.rows(tile)
        return (r.stop - r.start) * (self.d if tile[0] in WIDE_TENSORS else 1)

    def closed_form(self, order: str) -> Traffic:
        """The closed form the last frame of ``order`` must reach."""
        kw = dict(N_k=self.N_k, causal=self.causal)
        if order == "FA-1":
            return flash1_io(self.N, self.d, block_r=self.block_m, block_c=self.block_n, **kw)
        self.of(order)
        return flash2_io(self.N, self.d, block_m=self.block_m, block_n=self.block_n, **kw)


class _Recorder:
    """Moves tiles through the SRAM and remembers which tiles crossed HBM during the step."""

    def __init__(self, sram: SRAM, blocks: dict[str, list[slice]]):
        self.sram, self.blocks = sram, blocks
        self.loaded: set[Tile] = set()
        self.stored: set[Tile] = set()
        self.before = Traffic()

    def load(self, tile: str, tensor: str, block: int) -> np.ndarray:
        self.loaded.add((tensor, block))
        return self.sram.load(tile, tensor, self.blocks[tensor][block])

    def load_stat(self, tensor: str, block: int) -> np.ndarray:
        self.loaded.add((tensor, block))
        return self.sram.load_stat(tensor, self.blocks[tensor][block])

    def store(self, tensor: str, block: int, value: np.ndarray) -> None:
        self.stored.add((tensor, block))
        self.sram.store(tensor, self.blocks[tensor][block], value)

    def store_all(self, tensor: str, value: np.ndarray) -> None:
        """One store of the whole tensor (FA-1's zero-fill), claimed block by block."""
        self.stored.update((tensor, b) for b in range(len(self.blocks[tensor])))
        self.sram.store(tensor, slice(0, len(value)), value)

    def frame(self, order, step, pair, on_chip, m, l, acc) -> Frame:
        now = self.sram.traffic()
        moved = Traffic(Counter(now.reads) - Counter(self.before.reads),
                        Counter(now.writes) - Counter(self.before.writes))
        frame = Frame(order, step, pair, frozenset(on_chip), frozenset(self.loaded),
                      frozenset(self.stored), moved, now, m.copy(), l.copy(), acc.copy())
        self.loaded, self.stored, self.before = set(), set(), now
        return frame


def _blocks(n: int, b: int) -> list[slice]:
    return [slice(s, min(s + b, n)) for s in range(0, n, b)]


def _exp_sub(a, b):
    """``exp(a - b)`` with ``exp(-inf - (-inf)) = 0``: a row that has seen no key stays empty."""
    with np.errstate(invalid="ignore"):
        e = np.exp(a - b)
    return np.where(np.isneginf(a), 0.0, e)


def _visible(q_rows: slice, k_rows: slice, N: int, N_k: int, causal: bool) -> np.ndarray:
    """Boolean ``[rows, cols]``: with ``causal``, query i sees key j iff ``j <= i + N_k - N``."""
    i = np.arange(q_rows.start, q_rows.stop)[:, None]
    j = np.arange(k_rows.start, k_rows.stop)[None, :]
    return (j <= i + (N_k - N)) | (not causal)


def _flash2_frames(hbm, M, block_m, block_n, causal, scale) -> list[Frame]:
    """FlashAttention-2's order: outer loop over Q blocks, inner over the K/V blocks they see."""
    N, d = hbm["Q"].shape
    N_k = hbm["K"].shape[0]
    rows, cols = _blocks(N, block_m), _blocks(N_k, block_n)
    hbm.update(O=np.full((N, d), np.nan), lse=np.full(N, np.nan))
    sram = SRAM(M, hbm)
    sram.alloc("Q_i", block_m, d), sram.alloc("K_j", block_n, d), sram.alloc("V_j", block_n, d)
    acc = sram.alloc("O_i", block_m, d)
    rec = _Recorder(sram, {"Q": rows, "O": rows, "lse": rows, "K": cols, "V": cols})
    m_all, l_all, acc_all = np.full(N, -np.inf), np.zeros(N), np.zeros((N, d))  # for the picture
    frames = [rec.frame("FA-2", 0, None, (), m_all, l_all, acc_all)]
    for i, r in enumerate(rows):                           # one program per Q block
        n_r = r.stop - r.start
        visited = [j for j, c in enumerate(cols) if _visible(r, c, N, N_k, causal).any()]
        q = rec.load("Q_i", "Q", i)                        # [BLOCK_M, d], once per row of pairs
        m_i, l_i = np.full(n_r, -np.inf), np.zeros(n_r)    # registers
        acc[...] = 0.0
        for j in visited or [None]:                        # None: this Q block sees no key
            if j is not None:
                k, v = rec.load("K_j", "K", j), rec.load("V_j", "V", j)
                s = np.where(_visible(r, cols[j], N, N_k, causal), scale * q @ k.T, -np.inf)
                m_new = np.maximum(m_i, s.max(axis=1))     # [BLOCK_M]
                p = _exp_sub(s, m_new[:, None])            # [BLOCK_M, BLOCK_N]
                alpha = _exp_sub(m_i, m_new)
                l_i = alpha * l_i + p.sum(axis=1)
                acc[:n_r] = alpha[:, None] * acc[:n_r] + p @ v
                m_i = m_new
            m_all[r], l_all[r], acc_all[r] = m_i, l_i, acc[:n_r]
            if j == (visited[-1] if visited else None):    # the row's last step: O_i, lse_i once
                empty = l_i == 0
                rec.store("O", i, np.divide(acc[:n_r], l_i[:, None], out=np.zeros((n_r, d)),
                                            where=~empty[:, None]))
                with np.errstate(divide="ignore"):
                    rec.store("lse", i, np.where(empty, -np.inf, m_i + np.log(l_i)))
            on_chip = {("Q", i), ("O", i)} | ({("K", j), ("V", j)} if j is not None else set())
            frames.append(rec.frame("FA-2", len(frames), (i, j), on_chip, m_all, l_all, acc_all))
    return frames


def _flash1_frames(hbm, M, block_m, block_n, causal, scale) -> list[Frame]:
    """FlashAttention-1's order (Algorithm 1): outer loop over K/V blocks, inner over Q blocks."""
    N, d = hbm["Q"].shape
    N_k = hbm["K"].shape[0]
    rows, cols = _blocks(N, block_m), _blocks(N_k, block_n)
    hbm.update(O=np.full((N, d), np.nan), l=np.full(N, np.nan), m=np.full(N, np.nan))
    sram = SRAM(M, hbm)
    sram.alloc("K_j", block_n, d), sram.alloc("V_j", block_n, d)
    sram.alloc("Q_i", block_m, d), sram.alloc("O_i", block_m, d)
    rec = _Recorder(sram, {"Q": rows, "O": rows, "l": rows, "m": rows, "K": cols, "V": cols})

    def frame(step, pair, on_chip):  # the running state lives in HBM: O (normalised), l, m
        return rec.frame("FA-1", step, pair, on_chip, hbm["m"], hbm["l"], hbm["O"] * hbm["l"][:, None])

    rec.store_all("O", np.zeros((N, d)))                   # Algorithm 1, line 2
    rec.store_all("l", np.zeros(N))
    rec.store_all("m", np.full(N, -np.inf))
    frames = [frame(0, None, ())]
    for j, c in enumerate(cols):                           # outer loop: K/V blocks
        # Bottom-right causal: the last query sees every key, so each K/V block has a visited pair.
        visited = [i for i, r in enumerate(rows) if _visible(r, c, N, N_k, causal).any()]
        for i in visited:                                  # inner loop: the Q blocks that see K_j
            r = rows[i]
            if i == visited[0]:                            # K_j, V_j: once per outer step
                k, v = rec.load("K_j", "K", j), rec.load("V_j", "V", j)
            q, o = rec.load("Q_i", "Q", i), rec.load("O_i", "O", i)
            l_i, m_i = rec.load_stat("l", i), rec.load_stat("m", i)
            s = np.where(_visible(r, c, N, N_k, causal), scale * q @ k.T, -np.inf)  # [B_r, B_c]
            m_tilde = s.max(axis=1)
            p_tilde = _exp_sub(s, m_tilde[:, None])
            m_new = np.maximum(m_i, m_tilde)
            alpha, beta = _exp_sub(m_i, m_new), _exp_sub(m_tilde, m_new)
            l_new = alpha * l_i + beta * p_tilde.sum(axis=1)
            num = (alpha * l_i)[:, None] * o + beta[:, None] * (p_tilde @ v)
            rec.store("O", i, np.divide(num, l_new[:, None], out=np.zeros_like(num),
                                        where=l_new[:, None] > 0))
            rec.store("l", i, l_new)
            rec.store("m", i, m_new)
            frames.append(frame(len(frames), (i, j), {("K", j), ("V", j), ("Q", i), ("O", i)}))
    return frames


def loop_frames(Q, K, V, *, block_m: int, block_n: int, causal: bool = False,
                M: int | None = None, scale: float | None = None) -> LoopFrames:
    """Run FlashAttention-1's and -2's forward loops step by step and keep every step's frame.

    Both orders use Q blocks of ``block_m`` rows and K/V blocks of ``block_n`` rows (FA-1's
    ``B_r`` and ``B_c``), so they visit the same pairs and step ``t`` of each has done the same
    arithmetic; what differs is the traffic.

    Args:
        Q: ``(N, d)`` array; K, V: ``(N_k, d)`` arrays (float64 is used inside).
        block_m, block_n: rows of a Q block and of a K/V block.
        causal: bottom-right causal mask; pairs no query of the Q block can see are skipped.
        M: SRAM size in elements (default: exactly the four tiles, ``2 (block_m + block_n) d``).
        scale: multiplies ``Q K^T`` (default ``1 / sqrt(d)``).

    Returns:
        :class:`LoopFrames` with ``fa1`` and ``fa2``, each a tuple of :class:`Frame`.
    """
    Q, K, V = (np.asarray(x, dtype=np.float64) for x in (Q, K, V))
    if Q.ndim != 2 or K.ndim != 2 or K.shape != V.shape or K.shape[1] != Q.shape[1] or not Q.size:
        raise ValueError(f"expected Q (N, d) and K, V (N_k, d), got {Q.shape}, {K.shape}, {V.shape}")
    for name, b in (("block_m", block_m), ("block_n", block_n)):
        if not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"{name}: expected a positive int, got {b!r}")
    (N, d), N_k = Q.shape, K.shape[0]
    M = 2 * (block_m + block_n) * d if M is None else M
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    run = dict(M=M, block_m=block_m, block_n=block_n, causal=causal, scale=scale)
    fa1 = _flash1_frames({"Q": Q, "K": K, "V": V}, **run)
    fa2 = _flash2_frames({"Q": Q, "K": K, "V": V}, **run)
    return LoopFrames(N, N_k, d, block_m, block_n, bool(causal), tuple(fa1), tuple(fa2))


# ---------------------------------------------------------------------------------------------
# Drawing (matplotlib is imported here only)
# ---------------------------------------------------------------------------------------------

COLORS = {
    "held": "#9ecae1",       # on chip, loaded at an earlier step
    "read": "#fd8d3c",       # read from HBM at this step
    "written": "#d62728",    # written to HBM at this step (outline)
    "done": "#c7e9c0",       # pair computed at an earlier step
    "current": "#31a354",    # pair computed at this step
    "skipped": "#e0e0e0",    # pair no query of the Q block can see (causal): never computed
}


def _legend_handles():
    from matplotlib.patches import Patch

    return [Patch(facecolor=COLORS["held"], edgecolor="gray", label="held on chip"),
            Patch(facecolor=COLORS["read"], edgecolor="gray", label="read from HBM at this step"),
            Patch(facecolor="white", edgecolor=COLORS["written"], lw=2.5,
                  label="written to HBM at this step"),
            Patch(facecolor=COLORS["done"], edgecolor="gray", label="pair computed earlier"),
            Patch(facecolor=COLORS["current"], edgecolor="gray", label="pair computed now"),
            Patch(facecolor=COLORS["skipped"], edgecolor="gray", hatch="//", label="pair skipped (causal)")]


def _tile_style(frame: Frame, tiles: list[Tile]) -> dict:
    """Fill and outline of one drawn tile, which may stand for several (l and m of FA-1)."""
    face = "white"
    if any(t in frame.loaded for t in tiles):
        face = COLORS["read"]
    elif any(t in frame.on_chip for t in tiles):
        face = COLORS["held"]
    written = any(t in frame.stored for t in tiles)
    return dict(facecolor=face, edgecolor=COLORS["written"] if written else "gray",
                lw=2.5 if written else 0.8, zorder=3 if written else 2)


def _describe(frames: LoopFrames, frame: Frame) -> str:
    if frame.pair is None:
        return "start: O, l, m zero-filled in HBM" if frame.order == "FA-1" else "start: nothing moved yet"
    i, j = frame.pair
    if j is None:
        return f"Q block {i} sees no key: O, lse written"
    return f"Q block {i} x K/V block {j}"


def draw_tiles(ax, frames: LoopFrames, order: str, step: int, *, dtype_bytes: int = 2,
               title: bool = True) -> None:
    """One order's tiles at one step, on ``ax``: the Q blocks (left), the K/V blocks (top), O and
    the statistics (right), and the grid of (Q block, K/V block) pairs between them."""
    from matplotlib.patches import Rectangle

    frame = frames.at(order, step)
    N, N_k = frames.N, frames.N_k
    size = max(N, N_k)
    w, gap = 0.22 * size, 0.06 * size  # drawn width of a d-wide strip, and the space between
    rows = [frames.rows(("Q", i)) for i in range(-(-N // frames.block_m))]
    cols = [frames.rows(("K", j)) for j in range(-(-N_k // frames.block_n))]
    all_frames = frames.of(order)
    visited = {f.pair for f in all_frames if f.pair is not None and f.pair[1] is not None}
    done = {f.pair for f in all_frames[1: frame.step + 1] if f.pair is not None}

    for i, r in enumerate(rows):  # the grid of pairs: the S tiles computed on chip
        for j, c in enumerate(cols):
            if (i, j) not in visited:
                style = dict(facecolor=COLORS["skipped"], hatch="//", edgecolor="gray")
            elif (i, j) == frame.pair:
                style = dict(facecolor=COLORS["current"], edgecolor="black")
            else:
                style = dict(facecolor=COLORS["done"] if (i, j) in done else "white", edgecolor="gray")
            ax.add_patch(Rectangle((c.start, r.start), c.stop - c.start, r.stop - r.start, lw=0.8, **style))
    if frames.causal:  # the diagonal: query i sees keys j <= i + N_k - N, left of the line
        edge = np.clip(np.arange(N) + N_k - N + 1, 0, N_k)
        ax.plot(np.repeat(edge, 2), np.stack([np.arange(N), np.arange(1, N + 1)], axis=1).ravel(),
                color="black", lw=1, ls="--", zorder=4)

    stats = ["l", "m"] if order == "FA-1" else ["lse"]
    for i, r in enumerate(rows):
        h = r.stop - r.start
        ax.add_patch(Rectangle((-gap - w, r.start), w, h, **_tile_style(frame, [("Q", i)])))
        ax.add_patch(Rectangle((N_k + gap, r.start), w, h, **_tile_style(frame, [("O", i)])))
        ax.add_patch(Rectangle((N_k + 2 * gap + w, r.start), w / 3, h,
                               **_tile_style(frame, [(s, i) for s in stats])))
        mid = (r.start + r.stop) / 2
        ax.text(-gap - w / 2, mid, f"$Q_{{{i}}}$", ha="center", va="center", fontsize=8, zorder=5)
        ax.text(N_k + gap + w / 2, mid, f"$O_{{{i}}}$", ha="center", va="center", fontsize=8, zorder=5)
    for j, c in enumerate(cols):
        ax.add_patch(Rectangle((c.start, -gap - w), c.stop - c.start, w,
                               **_tile_style(frame, [("K", j), ("V", j)])))
        ax.text((c.start + c.stop) / 2, -gap - w / 2, f"$K_{{{j}}}V_{{{j}}}$", ha="center", va="center",
                fontsize=7, zorder=5)
    below = N + gap / 2  # the strips' names go under them
    ax.text(-gap - w / 2, below, "Q", ha="center", va="top", fontsize=9, weight="bold")
    ax.text(-gap, -gap - w / 2, "K, V ", ha="right", va="center", fontsize=9, weight="bold")
    ax.text(N_k + gap + w / 2, below, "O", ha="center", va="top", fontsize=9, weight="bold")
    ax.text(N_k + 2 * gap + w * 7 / 6, below, ",\n".join(stats), ha="center", va="top", fontsize=8,
            weight="bold")
    ax.text(N_k / 2, below, "pairs (S tiles, on chip only)", ha="center", va="top", fontsize=7)
    ax.set_xlim(-2 * gap - w, N_k + 3 * gap + w * 4 / 3)
    ax.set_ylim(N + 4 * gap, -2 * gap - w)  # rows downwards, like the matrices
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(f"{order}, step {frame.step}: {_describe(frames, frame)}\n"
                     f"HBM so far: {frame.traffic.bytes(dtype_bytes):,} bytes "
                     f"({frame.traffic.total:,} elements)", fontsize=9)


def draw_state(ax, frames: LoopFrames, order: str, step: int) -> None:
    """The running ``m``, ``l`` and ``acc`` of the Q block that ``order`` works on at ``step``."""
    frame = frames.at(order, step)
    ax.axis("off")
    if frame.pair is None:
        ax.text(0.5, 0.5, "no pair computed yet", ha="center", va="center", transform=ax.transAxes)
        return
    i, j = frame.pair
    r = frames.rows(("Q", i))
    limit = max(float(np.abs(f.acc).max()) for f in frames.fa1 + frames.fa2) or 1.0
    d = frames.d
    ax.imshow(frame.acc[r], cmap="coolwarm", vmin=-limit, vmax=limit, aspect="auto",
              extent=(0, d, r.stop, r.start))
    for row in range(r.start, r.stop):
        for x, value in ((d + 1.5, frame.m[row]), (d + 4.5, frame.l[row])):
            ax.text(x, row + 0.5, f"{value:.2f}", ha="center", va="center", fontsize=7)
    ax.text(d / 2, r.start - 0.2, "acc", ha="center", va="bottom", fontsize=8, weight="bold")
    ax.text(d + 1.5, r.start - 0.2, "m", ha="center", va="bottom", fontsize=8, weight="bold")
    ax.text(d + 4.5, r.start - 0.2, "l", ha="center", va="bottom", fontsize=8, weight="bold")
    ax.set_xlim(0, d + 6)
    ax.set_ylim(r.stop, r.start - 1.2)
    where = ("m, l and O = acc / l: read from HBM, updated, written back" if order == "FA-1"
             else "m, l in registers, acc in SRAM: nothing goes to HBM until the row ends")
    seen = "sees no key" if j is None else f"after K/V block {j}"
    ax.set_title(f"Q block {i} (rows {r.start}-{r.stop - 1}) {seen}\n{where}", fontsize=8)


def draw_traffic(ax, frames: LoopFrames, step: int, *, dtype_bytes: int = 2) -> None:
    """HBM bytes so far against the step, both orders, with the closed forms they end on."""
    for order, color in zip(ORDERS, ("tab:purple", "tab:green")):
        fs = frames.of(order)
        ax.plot(range(len(fs)), [f.traffic.bytes(dtype_bytes) for f in fs], "o-", ms=3, color=color,
                label=f"{order} (simulator)")
        ax.axhline(frames.closed_form(order).bytes(dtype_bytes), color=color, ls=":", lw=1,
                   label=f"{order} closed form ({'flash1_io' if order == 'FA-1' else 'flash2_io'})")
        now = frames.at(order, step)
        ax.plot([step], [now.traffic.bytes(dtype_bytes)], "o", ms=8, color=color)
    ax.axvline(step, color="gray", lw=1)
    ax.set(xlabel="step (one (Q block, K/V block) pair each)",
           ylabel="HBM bytes so far",
           title=f"Traffic so far ({dtype_bytes} bytes per element, 4 per statistic): "
                 "same pairs, same arithmetic, different bytes")
    ax.set_xlim(-0.5, frames.steps - 0.5)
    ax.legend(fontsize=7, loc="upper left")


def draw_frame(frames: LoopFrames, step: int, *, dtype_bytes: int = 2, figsize=(12, 9)):
    """Both loop orders at ``step``, side by side: tiles, running state, and traffic so far.

    Returns the matplotlib figure (made with pyplot: ``plt.show()`` displays it)."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize)
    grid = fig.add_gridspec(3, 2, height_ratios=(3.2, 1.2, 1.7), hspace=0.35)
    for col, order in enumerate(ORDERS):
        draw_tiles(fig.add_subplot(grid[0, col]), frames, order, step, dtype_bytes=dtype_bytes)
        draw_state(fig.add_subplot(grid[1, col]), frames, order, step)
    draw_traffic(fig.add_subplot(grid[2, :]), frames, step, dtype_bytes=dtype_bytes)
    fig.legend(handles=_legend_handles(), loc="upper center", ncol=6, fontsize=7, bbox_to_anchor=(0.5, 0.95))
    causal = ", causal" if frames.causal else ""
    fig.suptitle(f"FlashAttention-1 (K/V held, Q streams) and -2 (Q held, K/V stream): forward, "
                 f"N = {frames.N}, N_k = {frames.N_k}, d = {frames.d}, blocks {frames.block_m} x "
                 f"{frames.block_n}{causal}; step {step} of {frames.steps - 1}", fontsize=10)
    return fig


def draw_strip(frames: LoopFrames, steps, *, dtype_bytes: int = 2, figsize=None):
    """A static strip: the tiles of both orders (rows) at a few ``steps`` (columns)."""
    import matplotlib.pyplot as plt

    steps = list(steps)
    fig, axes = plt.subplots(2, len(steps), figsize=figsize or (2.8 * len(steps), 6.6), squeeze=False)
    for row, order in enumerate(ORDERS):
        for ax, step in zip(axes[row], steps):
            draw_tiles(ax, frames, order, step, dtype_bytes=dtype_bytes, title=False)
            frame = frames.at(order, step)
            ax.set_title(f"{order}, step {step}\n{_describe(frames, frame)}\n"
                         f"{frame.traffic.bytes(dtype_bytes):,} bytes so far", fontsize=8)
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=6, fontsize=7)
    fig.suptitle(f"The two loop orders, N = {frames.N}, d = {frames.d}, blocks {frames.block_m} x "
                 f"{frames.block_n}: FA-1 (top) holds K/V, FA-2 (bottom) holds Q", fontsize=10)
    fig.subplots_adjust(bottom=0.07, top=0.84, wspace=0.05, hspace=0.3)
    return fig
