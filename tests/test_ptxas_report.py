"""benchmarks/ptxas_report.py compiles the backward kernels for sm_90 without a GPU and reads
ptxas's register report; the claim of step 6 in benchmarks/NOTES.md is checked with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_triton

ROOT = Path(__file__).resolve().parents[1]


def run_report(*args: str) -> str:
    """The script in a fresh process: it must compile, not interpret (this suite interprets)."""
    done = subprocess.run([sys.executable, "-m", "benchmarks.ptxas_report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def spills(line: str) -> int:
    return int(line.split("spill stores")[1].split("B")[0])


@needs_triton
def test_gqa_loop_costs_spills():
    """The dK/dV kernel at head dim 128 (the launch table's configuration without a mask): with
    the run-time loop over a GQA group kept for one head it spills more than without; loading q
    and dO through tensor descriptors (TMA) compiles for sm_90 and spills no more."""
    lines = [run_report("--kernel", "dkdv", "--head-dim", "128", "--config", "64,64,4,2",
                        "--flags", "KV_B=1", *flags).splitlines()[-1]
             for flags in (["ONE_HEAD=0"], ["ONE_HEAD=1"], ["TMA=1"])]
    assert all("registers" in line for line in lines), lines
    assert spills(lines[0]) > 2 * spills(lines[1]) + 100, lines
    assert spills(lines[2]) <= spills(lines[1]), lines


@needs_triton
def test_packed_descriptors_keep_wgmma_async():
    """Steps 8 and 12 of NOTES.md: the causal head-dim-128 dK/dV loop through descriptors spills
    more on a packed batch (the sequence's start and lengths live too) than on a dense one, but
    since step 12 (descriptors over the (heads, total, d) view) ptxas no longer serializes its
    wgmma and it takes the dense one's shared memory: the unmasked packed backward takes the
    dense entry (flash_bwd._HOPPER_BWD_PACKED). Step 13: with descriptors made in the kernel for
    each sequence (SEQ_DESC) the edge stretches need no pointer loads, and the loop spills less
    than with the host's (still more than the dense loop)."""
    dense, packed, per_sequence = (
        run_report("--kernel", "dkdv", "--head-dim", "128", "--causal", "--config", "64,64,4,2",
                   "--flags", "KV_B=1", "TMA=1", *varlen).splitlines()[-1]
        for varlen in ([], ["VARLEN=1"], ["VARLEN=1", "SEQ_DESC=1"]))
    assert spills(packed) > 2 * spills(dense), (dense, packed)
    assert spills(dense) < spills(per_sequence) < spills(packed) * 0.6, (dense, per_sequence, packed)
    for line in (packed, per_sequence):
        assert "SERIALIZED" not in line and line.split("shared")[1] == dense.split("shared")[1], line
    assert "SERIALIZED" not in dense, dense
    # The dQ kernel's packed descriptors compile too: the interpreter runs Python, so only a
    # compile finds what it cannot (a return inside a constexpr if built both branches' loads)
    dq = run_report("--kernel", "dq", "--head-dim", "64", "--causal", "--config", "64,64,4,3",
                    "--flags", "TMA=1", "VARLEN=1").splitlines()[-1]
    assert "registers" in dq, dq


@needs_triton
def test_bad_flag_is_refused():
    done = subprocess.run([sys.executable, "-m", "benchmarks.ptxas_report", "--kernel", "dq",
                           "--config", "64,64,4,3", "--flags", "KV_B=yes"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "expected NAME=0 or NAME=1" in done.stderr, done.stderr


@pytest.mark.parametrize("argv", [["--kernel", "dq"]])
def test_kernel_needs_config(argv):
    pytest.importorskip("triton")
    done = subprocess.run([sys.executable, "-m", "benchmarks.ptxas_report", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--kernel needs --config" in done.stderr


# Compiles one kernel for sm_90 in a fresh process (this suite interprets) and counts, in its
# PTX, the instructions PDL=2 adds: argv is (kernel, BLOCK_M, BLOCK_N, warps, stages, flags...)
PTX_COUNTS = """
import sys
from benchmarks import ptxas_report as pr
kernel, bm, bn, w, s, *flags = sys.argv[1:]
config = dict(BLOCK_M=int(bm), BLOCK_N=int(bn), num_warps=int(w), num_stages=int(s))
ptx = pr.compile_config(kernel, 128, False, config, {k: int(v) for k, v in (f.split("=") for f in flags)}).asm["ptx"]
for op in ("griddepcontrol.launch_dependents", "griddepcontrol.wait", "atom.global.gpu.release",
           "ld.global.gpu.acquire"):
    print(op, ptx.count(op))
"""


def ptx_counts(*argv: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", PTX_COUNTS, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return {op: int(n) for op, n in (line.split() for line in done.stdout.splitlines())}


@needs_triton
@pytest.mark.parametrize("varlen", [0, 1], ids=["dense", "packed"])
def test_programmatic_launch_compiles(varlen):
    """``PDL=2`` (step 10 of NOTES.md) compiles for sm_90 into what the launcher relies on, and
    ``PDL=0`` into none of it: the dQ kernel lets the dK/dV grid launch and counts each program
    with a release atomic (twice in the code: after storing delta, and on the early return past
    a packed sequence's end); the dK/dV kernel spins on an acquire load and waits on the dQ
    kernel (``griddepcontrol.wait``) before it ends, on its early return too."""
    dq = {pdl: ptx_counts("dq", "128", "64", "8", "3", "OWN_DELTA=1", "STORE_DELTA=1", f"PDL={pdl}",
                          f"VARLEN={varlen}") for pdl in (0, 2)}
    dkdv = {pdl: ptx_counts("dkdv", "64", "64", "4", "2", "KV_B=1", "TMA=1", f"PDL={pdl}",
                            f"VARLEN={varlen}") for pdl in (0, 2)}
    assert not any(dq[0].values()) and not any(dkdv[0].values()), (dq[0], dkdv[0])
    assert dq[2]["griddepcontrol.launch_dependents"] == 1 and dq[2]["atom.global.gpu.release"] == 2, dq[2]
    assert dq[2]["griddepcontrol.wait"] == dq[2]["ld.global.gpu.acquire"] == 0, dq[2]
    assert dkdv[2]["ld.global.gpu.acquire"] >= 1 and dkdv[2]["griddepcontrol.wait"] == 2, dkdv[2]
    assert dkdv[2]["griddepcontrol.launch_dependents"] == dkdv[2]["atom.global.gpu.release"] == 0, dkdv[2]
