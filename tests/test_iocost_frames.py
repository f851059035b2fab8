"""The stepped frames of notebook 06 (kernels/iocost/frames.py): the last step of each loop order
lands on the closed form and on the simulator exactly, each step moves what it says it moves, and
the two orders hold and stream the tiles their names promise. CPU only, a few seconds.
"""

import math
from collections import Counter

import numpy as np
import pytest

from kernels import iocost

# (N, N_k): length 1, primes, non-multiples of every block below, and N != N_k both ways
# (45 queries, 20 keys: the first 25 queries see no key when causal).
SIZES = [(1, 1), (7, 7), (16, 16), (37, 37), (20, 45), (45, 20), (1, 13)]
SIZE_IDS = [f"N{n}-Nk{nk}" for n, nk in SIZES]
BLOCKS = [(4, 8), (8, 4), (5, 3)]
D = 4


def random_qkv(N, N_k, d=D, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N_k, d)), rng.standard_normal((N_k, d))


def naive_attention(Q, K, V, causal):
    """Float64 oracle; rows that see no key give 0."""
    s = Q @ K.T / math.sqrt(Q.shape[1])  # (N, N_k)
    if causal:
        N, N_k = s.shape
        s = np.where(np.arange(N_k)[None, :] <= np.arange(N)[:, None] + (N_k - N), s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(m), m, 0.0))
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0) @ V


@pytest.fixture(scope="module", params=[(s, b, c) for s in SIZES for b in BLOCKS for c in (False, True)],
                ids=[f"{i}-b{b[0]}x{b[1]}-{'causal' if c else 'full'}" for i in SIZE_IDS for b in BLOCKS
                     for c in (False, True)])
def case(request):
    (N, N_k), (bm, bn), causal = request.param
    Q, K, V = random_qkv(N, N_k)
    return Q, K, V, iocost.loop_frames(Q, K, V, block_m=bm, block_n=bn, causal=causal)


def test_last_step_equals_closed_form_and_simulator(case):
    Q, K, V, frames = case
    N, N_k, bm, bn, causal = frames.N, frames.N_k, frames.block_m, frames.block_n, frames.causal
    M = 2 * (bm + bn) * D
    fa1 = iocost.flash1_io(N, D, N_k=N_k, block_r=bm, block_c=bn, causal=causal)
    fa2 = iocost.flash2_io(N, D, N_k=N_k, block_m=bm, block_n=bn, causal=causal)
    sim1 = iocost.simulate_flash1(Q, K, V, M, block_r=bm, block_c=bn, causal=causal)
    sim2 = iocost.simulate_flash2(Q, K, V, M, block_m=bm, block_n=bn, causal=causal)
    print(f"FA-1 {frames.fa1[-1].traffic.total:,} elements (closed form {fa1.total:,}), "
          f"FA-2 {frames.fa2[-1].traffic.total:,} (closed form {fa2.total:,})")
    assert frames.fa1[-1].traffic == fa1 == sim1.forward == frames.closed_form("FA-1")
    assert frames.fa2[-1].traffic == fa2 == sim2.forward == frames.closed_form("FA-2")
    want = naive_attention(Q, K, V, causal)
    for last, sim in ((frames.fa1[-1], sim1), (frames.fa2[-1], sim2)):
        assert np.allclose(last.out, want, rtol=1e-10, atol=1e-12), last.order
        assert np.array_equal(last.out, sim.out), last.order  # the same arithmetic, in the same order


def test_each_step_moves_what_it_claims(case):
    """The SRAM's counts per step are exactly the tiles the frame names (rows x d, or rows for
    a statistic), and the running totals add up step by step."""
    _, _, _, frames = case
    for order in iocost.frames.ORDERS:
        before = iocost.Traffic()
        for frame in frames.of(order):
            claimed_reads = Counter()
            for tile in frame.loaded:
                claimed_reads[tile[0]] += frames.elements(tile)
            claimed_writes = Counter()
            for tile in frame.stored:
                claimed_writes[tile[0]] += frames.elements(tile)
            assert frame.moved == iocost.Traffic(claimed_reads, claimed_writes), (order, frame.step)
            assert frame.traffic == before + frame.moved, (order, frame.step)
            wide = {t for t in frame.loaded if t[0] in iocost.frames.WIDE_TENSORS}
            assert wide <= frame.on_chip, (order, frame.step)  # what is read lands on chip
            before = frame.traffic


def test_fa2_holds_q_and_streams_kv(case):
    """FA-2: Q_i read once, at its row's first step; K_j, V_j read at every step; O_i and lse_i
    written once, at the row's last step; O never read; nothing moves at step 0."""
    _, _, _, frames = case
    start, *steps = frames.fa2
    assert start.traffic.total == 0 and start.pair is None
    rows = [f.pair[0] for f in steps]
    assert rows == sorted(rows) and set(rows) == set(range(-(-frames.N // frames.block_m)))
    for t, f in enumerate(steps):
        i, j = f.pair
        first = t == 0 or steps[t - 1].pair[0] != i
        last = t == len(steps) - 1 or steps[t + 1].pair[0] != i
        kv = {("K", j), ("V", j)} if j is not None else set()
        assert f.loaded == ({("Q", i)} if first else set()) | kv, f.pair
        assert f.stored == ({("O", i), ("lse", i)} if last else set()), f.pair
        assert f.on_chip == {("Q", i), ("O", i)} | kv
    assert "O" not in frames.fa2[-1].traffic.reads  # m, l, acc never leave the chip mid-row


def test_fa1_holds_kv_and_streams_q(case):
    """FA-1: step 0 zero-fills O, l, m; every step reads Q_i, O_i, l_i, m_i and writes O_i, l_i,
    m_i back; K_j, V_j read once, at their column's first step."""
    _, _, _, frames = case
    start, *steps = frames.fa1
    n_q = -(-frames.N // frames.block_m)
    assert start.stored == {(t, i) for t in ("O", "l", "m") for i in range(n_q)} and not start.loaded
    assert start.traffic.total == frames.N * (frames.d + 2)
    cols = [f.pair[1] for f in steps]
    assert cols == sorted(cols) and set(cols) == set(range(-(-frames.N_k // frames.block_n)))
    for t, f in enumerate(steps):
        i, j = f.pair
        first = t == 0 or steps[t - 1].pair[1] != j
        state = {("O", i), ("l", i), ("m", i)}
        assert f.loaded == {("Q", i)} | state | ({("K", j), ("V", j)} if first else set()), f.pair
        assert f.stored == state, f.pair
        assert f.on_chip == {("K", j), ("V", j), ("Q", i), ("O", i)}


def test_both_orders_visit_the_same_pairs(case):
    _, _, _, frames = case
    pairs1 = [f.pair for f in frames.fa1[1:]]
    pairs2 = [f.pair for f in frames.fa2[1:] if f.pair[1] is not None]
    assert len(set(pairs1)) == len(pairs1) and sorted(pairs1) == sorted(pairs2)


def test_running_statistics():
    """m never decreases; after the last step m is each row's max score and l its sum of
    exp(score - m), in both orders; FA-2's finished rows hold their final values at once."""
    N, N_k, d = 11, 13, 4  # more keys than queries: every row sees some
    Q, K, V = random_qkv(N, N_k, d, seed=3)
    frames = iocost.loop_frames(Q, K, V, block_m=4, block_n=3, causal=True)
    s = Q @ K.T / math.sqrt(d)
    visible = np.arange(N_k)[None, :] <= np.arange(N)[:, None] + (N_k - N)
    s = np.where(visible, s, -np.inf)
    m, l = s.max(axis=1), np.exp(s - s.max(axis=1, keepdims=True)).sum(axis=1)
    for order in iocost.frames.ORDERS:
        fs = frames.of(order)
        for a, b in zip(fs, fs[1:]):
            assert np.all(b.m >= a.m)
        assert np.allclose(fs[-1].m, m) and np.allclose(fs[-1].l, l)
    row0_done = next(f for f in frames.fa2 if ("O", 0) in f.stored)
    assert np.allclose(row0_done.m[:4], m[:4]) and np.allclose(row0_done.out[:4], frames.fa2[-1].out[:4])


def test_a_q_block_that_sees_no_key_takes_one_step():
    """Causal with 12 queries and 4 keys: the first 8 queries see nothing. FA-2 still loads
    Q_0, Q_1 and writes their O (zeros) and lse (-inf), as the kernel does; FA-1 never visits them."""
    Q, K, V = random_qkv(12, 4)
    frames = iocost.loop_frames(Q, K, V, block_m=4, block_n=4, causal=True)
    no_key = [f for f in frames.fa2 if f.pair is not None and f.pair[1] is None]
    assert [f.pair for f in no_key] == [(0, None), (1, None)]
    assert frames.steps == len(frames.fa2) == 4 and len(frames.fa1) == 2
    assert frames.at("FA-1", 3) is frames.fa1[-1]  # a finished order stays at its last frame
    assert np.all(frames.fa2[-1].out[:8] == 0)


def test_refuses_bad_input():
    Q, K, V = random_qkv(8, 8)
    with pytest.raises(ValueError, match="block_m"):
        iocost.loop_frames(Q, K, V, block_m=0, block_n=4)
    with pytest.raises(ValueError, match="expected Q"):
        iocost.loop_frames(Q, K[:, :2], V, block_m=4, block_n=4)
    with pytest.raises(ValueError, match="does not fit"):
        iocost.loop_frames(Q, K, V, block_m=4, block_n=4, M=2 * 8 * D - 1)
    frames = iocost.loop_frames(Q, K, V, block_m=4, block_n=4)
    with pytest.raises(ValueError, match="step"):
        frames.at("FA-2", frames.steps)
    with pytest.raises(ValueError, match="order"):
        frames.at("FA-3", 0)


def test_drawing():
    """The figures draw at every kind of step (start, middle, a finished order) and say how many
    bytes have moved; the widget and the notebook's strip call exactly these."""
    plt = pytest.importorskip("matplotlib.pyplot")
    Q, K, V = random_qkv(12, 4)
    frames = iocost.loop_frames(Q, K, V, block_m=4, block_n=4, causal=True)
    for step in range(frames.steps):
        fig = iocost.draw_frame(frames, step)
        titles = [ax.get_title() for ax in fig.axes]
        assert any(f"{frames.at('FA-2', step).traffic.bytes():,} bytes" in t for t in titles)
        plt.close(fig)
    fig = iocost.draw_strip(frames, [0, 1, 3])
    assert len(fig.axes) == 6
    plt.close(fig)
