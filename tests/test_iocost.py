"""The IO-cost model: simulator == closed form exactly, simulator == naive attention, and the
asymptotics and roofline regimes that the notebook's argument rests on. CPU only, a few seconds.
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

try:
    from kernels import iocost
except ImportError:  # iocost is plain NumPy: test it even where the Triton kernels cannot import
    package = ROOT / "kernels" / "iocost"
    spec = importlib.util.spec_from_file_location("kernels_iocost", package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    iocost = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = iocost
    spec.loader.exec_module(iocost)

# (N, N_k): length 1, primes, non-multiples of every block below, and N != N_k both ways.
SIZES = [(1, 1), (7, 7), (16, 16), (37, 37), (64, 64), (20, 45), (45, 20), (1, 13)]
SIZE_IDS = [f"N{n}-Nk{nk}" for n, nk in SIZES]


def naive_attention(Q, K, V, dO, causal):
    """Float64 oracle through autograd: returns out and (dQ, dK, dV)."""
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (Q, K, V))
    N, N_k = q.shape[0], k.shape[0]
    s = q @ k.T / math.sqrt(q.shape[1])  # (N, N_k)
    if causal:  # bottom-right aligned, as kernels.reference.attention_mask
        visible = torch.arange(N_k)[None, :] <= torch.arange(N)[:, None] + (N_k - N)
        s = s.masked_fill(~visible, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # rows that see no key: output 0
    out = p @ v
    out.backward(torch.tensor(dO))
    return out.detach().numpy(), tuple(x.grad.numpy() for x in (q, k, v))


def random_qkv(N, N_k, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, d)), rng.standard_normal((N_k, d)), rng.standard_normal((N_k, d)), \
        rng.standard_normal((N, d))


def check_numerics(sim, Q, K, V, dO, causal):
    out_ref, grads_ref = naive_attention(Q, K, V, dO, causal)
    errors = [np.abs(sim.out - out_ref).max()] + [np.abs(a - b).max() for a, b in zip(sim.grads, grads_ref)]
    print("max abs error out, dQ, dK, dV:", errors)
    assert np.allclose(sim.out, out_ref, rtol=1e-10, atol=1e-12)
    for name, got, want in zip(("dQ", "dK", "dV"), sim.grads, grads_ref):
        assert np.allclose(got, want, rtol=1e-10, atol=1e-12), name


# ---------------------------------------------------------------------------------------------
# Simulator == closed form (exactly) and == naive attention
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d", [8, 16])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_standard_simulator(size, d, causal):
    N, N_k = size
    Q, K, V, dO = random_qkv(N, N_k, d)
    block_r, block_c = 5, 3  # divides none of the sizes but 1
    sim = iocost.simulate_standard(Q, K, V, M=2 * N_k + 8 * d * 5, block_r=block_r,
                                   block_c=block_c, causal=causal, dO=dO)
    kw = dict(N_k=N_k, block_r=block_r, block_c=block_c, causal=causal)
    assert sim.forward == iocost.standard_attention_io(N, d, **kw)
    assert sim.backward == iocost.standard_attention_io(N, d, backward=True, **kw)
    check_numerics(sim, Q, K, V, dO, causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("d, M", [(8, 256), (16, 1000), (16, 4096)], ids=["d8-M256", "d16-M1000", "d16-M4096"])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_flash1_simulator(size, d, M, causal):
    """Blocks from M by the paper's rule: (8, 8) / (15, 15) / (16, 64) forward, half backward."""
    N, N_k = size
    Q, K, V, dO = random_qkv(N, N_k, d)
    sim = iocost.simulate_flash1(Q, K, V, M, causal=causal, dO=dO)
    assert sim.forward == iocost.flash1_io(N, d, M, N_k=N_k, causal=causal)
    assert sim.backward == iocost.flash1_io(N, d, M, N_k=N_k, causal=causal, backward=True)
    check_numerics(sim, Q, K, V, dO, causal)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("block_m, block_n", [(8, 4), (4, 8), (16, 16)])
@pytest.mark.parametrize("d", [8, 16])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_flash2_simulator(size, d, block_m, block_n, causal):
    N, N_k = size
    Q, K, V, dO = random_qkv(N, N_k, d)
    M = 4 * block_n * d + 2 * block_m * d  # exactly what the dK/dV kernel holds, the largest
    sim = iocost.simulate_flash2(Q, K, V, M, block_m=block_m, block_n=block_n, causal=causal, dO=dO)
    kw = dict(block_m=block_m, block_n=block_n, causal=causal, N_k=N_k)
    assert sim.forward == iocost.flash2_io(N, d, **kw)
    assert sim.backward == iocost.flash2_io(N, d, backward=True, **kw)
    model = {**iocost.flash2_kernels_io(N, d, **kw), **iocost.flash2_kernels_io(N, d, backward=True, **kw)}
    assert {"_attn_fwd": sim.forward, **sim.per_kernel} == model
    check_numerics(sim, Q, K, V, dO, causal)


def test_ragged_blocks_move_no_padding():
    """A last block that runs past the end moves only the rows that exist: N = 37, blocks of 16
    read Q once (37 d elements, not 48 d) and K, V once per Q block (3 x 37 d)."""
    t = iocost.flash2_io(37, 8, block_m=16, block_n=16)
    assert t.reads == {"Q": 37 * 8, "K": 3 * 37 * 8, "V": 3 * 37 * 8}
    assert t.writes == {"O": 37 * 8, "lse": 37}


def test_causal_skips_the_blocks_above_the_diagonal():
    """N = N_k, equal blocks B dividing N: Q block i visits K/V blocks 0..i, so K and V are read
    sum_i (i + 1) B = N (T + 1) / 2 rows each, (T + 1) / (2T) of the non-causal count."""
    N, d, B = 1024, 64, 64
    T = N // B
    full = iocost.flash2_io(N, d, block_m=B, block_n=B)
    causal = iocost.flash2_io(N, d, block_m=B, block_n=B, causal=True)
    assert causal.reads["K"] == N * (T + 1) // 2 * d
    assert causal.reads["K"] / full.reads["K"] == pytest.approx((T + 1) / (2 * T))
    # The backward's dK/dV kernel skips the same pairs, seen from the K/V side.
    dkdv = iocost.flash2_kernels_io(N, d, block_m=B, block_n=B, causal=True, backward=True)["_attn_bwd_dkdv"]
    assert dkdv.reads["Q"] == N * (T + 1) // 2 * d
    # Bottom-right alignment: with more keys than queries, every query sees the first N_k - N keys.
    wide = iocost.flash2_io(16, d, block_m=16, block_n=16, causal=True, N_k=64)
    assert wide.reads["K"] == 64 * d


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def test_refuses_blocks_that_do_not_fit():
    d, bm, bn = 16, 32, 16
    Q, K, V, dO = random_qkv(40, 40, d)
    fits = 2 * bm * d + 2 * bn * d  # forward: Q_i, O_i, K_j, V_j
    iocost.simulate_flash2(Q, K, V, fits, block_m=bm, block_n=bn)
    with pytest.raises(ValueError, match="does not fit"):
        iocost.simulate_flash2(Q, K, V, fits - 1, block_m=bm, block_n=bn)
    with pytest.raises(ValueError, match="does not fit"):  # the backward holds more tiles
        iocost.simulate_flash2(Q, K, V, fits, block_m=bm, block_n=bn, dO=dO)
    with pytest.raises(ValueError, match="does not fit"):
        iocost.simulate_flash1(Q, K, V, 1024, block_r=16, block_c=32)  # 1536 > 1024
    with pytest.raises(ValueError, match="does not fit"):  # a row of S (40) exceeds M
        iocost.simulate_standard(Q, K, V, 39, block_r=1, block_c=1)
    with pytest.raises(ValueError, match="too small"):
        iocost.flash1_block_sizes(4 * d - 1, d)


def test_paper_block_rule():
    """B_c = M // 4d, B_r = min(B_c, d); the backward halves them; the tiles fill at most M."""
    assert iocost.flash1_block_sizes(4096, 16) == (16, 64)
    assert iocost.flash1_block_sizes(4096, 16, backward=True) == (16, 32)
    assert iocost.flash1_block_sizes(1000, 16) == (15, 15)
    for M, d in [(256, 8), (1000, 16), (2**16, 64), (100_000, 128)]:
        b_r, b_c = iocost.flash1_block_sizes(M, d)
        assert 2 * b_c * d + 2 * b_r * d <= M
        b_r, b_c = iocost.flash1_block_sizes(M, d, backward=True)
        assert 4 * b_c * d + 4 * b_r * d <= M


# ---------------------------------------------------------------------------------------------
# Closed forms: the textbook numbers and the asymptotics
# ---------------------------------------------------------------------------------------------


def test_standard_attention_textbook_count():
    """Each operand read once: 4 N d + 4 N^2 forward (the count in kernels/reference.py)."""
    N, d = 1000, 64
    assert iocost.standard_attention_io(N, d).total == 4 * N * d + 4 * N * N
    back = iocost.standard_attention_io(N, d, backward=True)
    assert (back.elements_read, back.elements_written) == (5 * N * d + 5 * N * N, 3 * N * d + 2 * N * N)
    assert iocost.standard_attention_io(N, d, causal=True) == iocost.standard_attention_io(N, d)


def test_flash_traffic_falls_relative_to_standard_as_n_grows():
    d, M = 64, 2**16
    ratios1, ratios2 = [], []
    for N in (256, 1024, 4096, 16384):
        std = iocost.standard_attention_io(N, d).bytes()
        ratios1.append(iocost.flash1_io(N, d, M).bytes() / std)
        ratios2.append(iocost.flash2_io(N, d, block_m=128, block_n=64).bytes() / std)
    print("flash1 / standard:", ratios1, "\nflash2 / standard:", ratios2)
    assert all(a > b for a, b in zip(ratios1, ratios1[1:]))
    assert all(a > b for a, b in zip(ratios2, ratios2[1:]))
    assert ratios2[-1] < 0.3


def test_flash1_scales_as_n2_d2_over_m():
    """Theta(N^2 d^2 / M): x4 for 2N, x4 for 2d, x1/2 for 2M, once the N^2 term dominates."""
    def total(N, d, M):
        return iocost.flash1_io(N, d, M).total

    N, d, M = 8192, 64, 2**16
    assert total(2 * N, d, M) / total(N, d, M) == pytest.approx(4, rel=0.02)
    assert total(N, 2 * d, M) / total(N, d, M) == pytest.approx(4, rel=0.05)
    assert total(N, d, 2 * M) / total(N, d, M) == pytest.approx(0.5, rel=0.05)
    # The constant: forward ~ (3d + 4) T_c N with T_c = 4 d N / M, about 12 N^2 d^2 / M.
    for N_, d_, M_ in [(N, d, M), (2 * N, d, 4 * M), (N, 2 * d, 2 * M)]:
        assert total(N_, d_, M_) / (N_**2 * d_**2 / M_) == pytest.approx(12, rel=0.1)


def test_flash2_non_causal_closed_form():
    N, N_k, d, bm, bn = 5000, 3000, 128, 128, 64
    t_r = math.ceil(N / bm)
    t = iocost.flash2_io(N, d, block_m=bm, block_n=bn, N_k=N_k)
    assert t.elements_read == N * d + 2 * t_r * N_k * d
    assert t.elements_written == N * d + N


def test_bytes_charge_statistics_as_float32():
    N, d = 1024, 64
    t = iocost.flash2_io(N, d, block_m=128, block_n=64)
    assert t.bytes(dtype_bytes=2) == 2 * (t.total - N) + 4 * N  # lse: N float32 numbers
    assert t.bytes(dtype_bytes=4) == 4 * t.total
    assert (t * 3).bytes() == 3 * t.bytes()
    assert t + t == 2 * t


def test_flops():
    assert iocost.flops(1024, 64) == 4 * 1024**2 * 64
    assert iocost.flops(1024, 64, backward=True) == 2.5 * iocost.flops(1024, 64)
    assert iocost.flops(1024, 64, causal=True) == 0.5 * iocost.flops(1024, 64)


# ---------------------------------------------------------------------------------------------
# Roofline and L2
# ---------------------------------------------------------------------------------------------


def test_roofline_regimes():
    gpu = iocost.H100_MEASURED
    assert gpu.ridge == pytest.approx(755e12 / 3.0e12)
    at_ridge = gpu.roofline(gpu.ridge * 1e9, 1e9)
    assert at_ridge.compute_seconds == pytest.approx(at_ridge.memory_seconds)
    low = gpu.roofline(1e12, 1e11)  # 10 FLOP/byte
    assert low.bound == "memory" and low.seconds == pytest.approx(1e11 / 3.0e12)
    high = gpu.roofline(1e15, 1e9)
    assert high.bound == "compute" and high.seconds == pytest.approx(1e15 / 755e12)

    # Standard attention is memory-bound; FlashAttention, once L2 absorbs the K/V re-reads,
    # is compute-bound (N = 4096, d = 64, bf16, one head).
    N, d = 4096, 64
    f = iocost.flops(N, d)
    std = gpu.roofline(f, iocost.standard_attention_io(N, d).bytes())
    dram = iocost.flash2_dram_io(N, d, block_m=128, block_n=64)["_attn_fwd"]
    fa2 = gpu.roofline(f, dram.bytes())
    print(f"standard {std.seconds * 1e6:.1f} us ({std.bound}), flash2 {fa2.seconds * 1e6:.1f} us ({fa2.bound})")
    assert std.bound == "memory" and fa2.bound == "compute"


def test_l2_reuse_term():
    """K, V of a head fit in L2: read from DRAM once. They don't: every re-read reaches DRAM."""
    N, d, kw = 16384, 128, dict(block_m=128, block_n=64)
    sm_l2 = iocost.flash2_kernels_io(N, d, **kw)["_attn_fwd"]
    fits = iocost.flash2_dram_io(N, d, **kw)["_attn_fwd"]
    assert fits.reads == {"Q": N * d, "K": N * d, "V": N * d}
    assert fits.writes == sm_l2.writes
    too_small = iocost.flash2_dram_io(N, d, l2_bytes=2 * N * d * 2 - 1, **kw)["_attn_fwd"]
    assert too_small == sm_l2
    bwd = iocost.flash2_dram_io(N, d, backward=True, **kw)
    assert bwd["_attn_bwd_dkdv"].reads["Q"] == N * d and bwd["_attn_bwd_dq"].reads["K"] == N * d


# ---------------------------------------------------------------------------------------------
# benchmarks/profile_iocost.py: parsing Nsight Compute's CSV (runs on CPU)
# ---------------------------------------------------------------------------------------------

# The shape of `ncu --csv --page raw --print-units base` on stdout, cut to a few columns: ncu's
# messages and the program's prints interleaved, a header, a units row, one row per launch,
# thousands separators, and .avg/.min/.max columns beside each .sum.
NCU_SAMPLE = '''\
==PROF== Connected to process 465 (/usr/bin/python3.12)
[driver] compiled 2/2 configurations (3 s)
==PROF== Profiling "_attn_fwd" - 0: 0%....50%....100% - 1 pass
==PROF== Profiling "_attn_bwd_dq" - 1: 0%....50%....100% - 1 pass
==PROF== Disconnected from process 465
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.avg","dram__bytes_read.sum","gpu__time_duration.sum","launch__grid_size","lts__t_sector_hit_rate.pct","lts__t_sectors_srcunit_tex_op_read.sum","lts__t_sectors_srcunit_tex_op_write.sum"
"","","","","","","","","","","","byte","byte","ns","","%","sector","sector"
"1","465","python3.12","127.0.0.1","_attn_bwd_dq","1","7","(128, 1, 1)","(16, 4, 1)","0","9.0","54,387.20","2,175,488","48,256","64","82.29","196,087","n/a"
"0","465","python3.12","127.0.0.1","_attn_fwd","1","7","(128, 1, 1)","(8, 4, 1)","0","9.0","40,300.80","1,612,032","47,264","32","76.65","115,580","112,372"
'''


def load_profile_script():
    from benchmarks import profile_iocost

    return profile_iocost


def test_parse_ncu_csv():
    profile = load_profile_script()
    rows = profile.parse_ncu_csv(NCU_SAMPLE)
    assert [r["ID"] for r in rows] == ["0", "1"]  # launch order, whatever the print order
    fwd, dq = rows
    assert fwd["Kernel Name"] == "_attn_fwd" and fwd["Grid Size"] == "(8, 4, 1)"
    assert fwd["dram__bytes_read.sum"] == 1_612_032
    assert fwd["lts__t_sectors_srcunit_tex_op_read.sum"] == 115_580
    assert fwd["gpu__time_duration.sum"] == 47_264 and fwd["launch__grid_size"] == 32
    assert fwd["lts__t_sector_hit_rate.pct"] == pytest.approx(76.65)
    assert math.isnan(dq["lts__t_sectors_srcunit_tex_op_write.sum"])
    assert [profile.kernel_kind(r["Kernel Name"]) for r in rows] == ["_attn_fwd", "_attn_bwd_dq"]
    # Scaled units are converted to base units.
    scaled = NCU_SAMPLE.replace('"byte","byte","ns"', '"Kbyte","Mbyte","usecond"')
    fwd = profile.parse_ncu_csv(scaled)[0]
    assert fwd["dram__bytes_read.sum"] == pytest.approx(1_612_032e6)
    assert fwd["gpu__time_duration.sum"] == pytest.approx(47_264e3)
    with pytest.raises(ValueError, match="no ncu CSV header"):
        profile.parse_ncu_csv("==ERROR== the application returned an error\n")
