"""Tests of data-parallel training and ring attention, on CPU processes that talk through gloo.

Starting a process that imports torch takes seconds, while the problems here take milliseconds:
so ring attention starts its three processes once for every case (two-rank cases run on a
subgroup of them), and the parametrised tests compare what came back. Training runs ``torchrun``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import assert_close, dtype_id, interrupt_training_at, rel_err

from kernels import attention_reference, flash_attention, ring_attention, ring_attention_allgather
from kernels._checks import interpreter_problem
from kernels.ring import merge_partials
from minitransformer import train
from minitransformer.checkpoint import load_checkpoint
from minitransformer.distributed import run_in_processes

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"ring": ring_attention, "allgather": ring_attention_allgather}
DTYPES = [torch.float32, torch.bfloat16]
# Per number of ranks: the block each rank holds. Three ranks get a block length that is not a
# multiple of anything, and two query heads sharing one key/value head (GQA).
SIZES = {2: dict(batch=1, heads_q=2, heads_kv=2, n_local=16, head_dim=16),
         3: dict(batch=1, heads_q=2, heads_kv=1, n_local=7, head_dim=16)}
PAIR = [1, 2]  # the two-rank cases run on these ranks of the three: group ranks 0, 1 != global ranks
# Flags of a tiny training run (as in test_minitransformer.py), through the reference attention.
TINY = ["--n-layer", "1", "--n-embd", "16", "--block-size", "32", "--batch-size", "4", "--warmup", "2",
        "--eval-batches", "1", "--sample-chars", "0", "--device", "cpu", "--backend", "reference",
        "--steps", "4", "--eval-interval", "2"]


# ----------------------------------------------------------------------------------------------
# Ring attention
# ----------------------------------------------------------------------------------------------
def ring_worker(inputs):
    """Every variant on this rank's block of every problem in ``inputs``: outputs and gradients,
    with the message of a call whose shapes disagree across ranks. Runs in a process started by
    :func:`~minitransformer.distributed.run_in_processes`."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    groups = {3: (None, rank), 2: (dist.new_group(PAIR), PAIR.index(rank) if rank in PAIR else None)}
    results = {}
    for (world, causal, dtype), full in inputs.items():
        group, index = groups[world]  # index: of this rank in the group, None if not a member
        if index is None:
            continue
        n = SIZES[world]["n_local"]
        mine = slice(index * n, (index + 1) * n)  # this rank's positions of the sequence
        for name, fn in VARIANTS.items():
            q, k, v = (t[:, :, mine].clone().requires_grad_() for t in full[:3])
            out = fn(q, k, v, group=group, causal=causal)
            out.backward(full[3][:, :, mine])
            results[world, name, causal, dtype] = [t.detach() for t in (out, q.grad, k.grad, v.grad)]
    q = torch.randn(1, 2, 8 + (rank == world_size - 1), 16)  # the last rank's block is longer
    try:
        ring_attention(q, q, q)
    except ValueError as e:
        results["mismatch"] = str(e)
    return results


@pytest.fixture(scope="module")
def ring_run():
    """Start the three ranks once; returns the inputs and what every rank computed. The ranks are
    CPU processes: their kernels run through Triton's interpreter, also on a machine with a GPU."""
    if problem := interpreter_problem():  # the GPU image: Triton 3.6 with numpy 2.5
        pytest.skip(problem)
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for world, s in SIZES.items():
        for causal in (False, True):
            for dtype in DTYPES:  # q, k, v and the gradient of out, over the whole sequence
                heads = (s["heads_q"], s["heads_kv"], s["heads_kv"], s["heads_q"])
                shapes = [(s["batch"], h, world * s["n_local"], s["head_dim"]) for h in heads]
                inputs[world, causal, dtype] = [torch.randn(shape, generator=g).to(dtype) for shape in shapes]
    return inputs, run_in_processes(ring_worker, [(inputs,)] * 3)


def with_grads(fn, tensors, dtype):
    """``fn``'s output on copies of q, k, v in ``dtype``, and the gradients of ``<out, dout>``."""
    q, k, v, dout = (t.to(dtype).detach() for t in tensors)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = fn(q, k, v)
    out.backward(dout)
    return [out.detach(), q.grad, k.grad, v.grad]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("world_size", sorted(SIZES), ids=lambda w: f"{w}ranks")
def test_ring_attention_equals_attention_on_the_whole_sequence(ring_run, world_size, variant, causal, dtype):
    """The blocks of the output and of dq, dk, dv, put back together, are those of attention on
    the whole sequence: the same as one flash_attention call to rounding, and within the usual
    bound of the float64 reference."""
    inputs, ranks = ring_run
    tensors = inputs[world_size, causal, dtype]
    members = ranks if world_size == 3 else [ranks[r] for r in PAIR]
    ring = [torch.cat([r[world_size, variant, causal, dtype][i] for r in members], dim=2) for i in range(4)]
    one_call = with_grads(partial(flash_attention, causal=causal), tensors, dtype)
    ref64 = with_grads(partial(attention_reference, causal=causal), tensors, torch.float64)
    ref_lowp = with_grads(partial(attention_reference, causal=causal), tensors, dtype)
    for name, got, flash, r64, rlow in zip(("out", "dq", "dk", "dv"), ring, one_call, ref64, ref_lowp):
        err = rel_err(got, flash)
        print(f"{name:>4}: {variant} on {world_size} ranks vs one flash_attention call: {err:.2e}")
        assert err <= (1e-5 if dtype == torch.float32 else 1e-2), f"{name}: {err:.2e} from one call"
        assert_close(name, got, r64, rlow, dtype)


def test_ring_attention_rejects_blocks_that_differ_across_ranks(ring_run):
    """Every rank raises the same error (none is left waiting in the ring), naming the odd one."""
    messages = [r.get("mismatch") for r in ring_run[1]]
    print(messages[0])
    assert all(m is not None and m == messages[0] for m in messages), messages
    assert "every rank must hold blocks of one shape and dtype" in messages[0]
    assert "rank 1: q (1, 2, 8, 16)" in messages[0] and "rank 2: q (1, 2, 9, 16)" in messages[0]


def who_am_i(x):
    return dist.get_rank(), dist.get_world_size(), x


def rank_1_fails():
    if dist.get_rank() == 1:
        raise ValueError("rank 1 gives up")
    dist.barrier()  # rank 0 waits here for a rank that never comes


def test_run_in_processes_returns_in_rank_order_and_raises_when_a_rank_fails():
    """Each rank gets its own arguments and the results come back in rank order. A rank that
    raises ends the run with an error here, well before the timeout: the rank left waiting for it
    is stopped (or fails on the lost connection first, so the message may be either rank's)."""
    assert run_in_processes(who_am_i, [("a",), ("b",)]) == [(0, 2, "a"), (1, 2, "b")]
    t0 = time.perf_counter()
    with pytest.raises(torch.multiprocessing.ProcessRaisedException):
        run_in_processes(rank_1_fails, [(), ()], timeout_s=120)
    assert time.perf_counter() - t0 < 60
    assert not dist.is_initialized()  # the group lived in the children only


def test_ring_attention_without_a_process_group():
    assert not dist.is_initialized()
    q = torch.randn(1, 2, 8, 16)
    for fn in VARIANTS.values():
        with pytest.raises(RuntimeError, match="no process group; call torch.distributed.init_process_group"):
            fn(q, q, q)


def test_ring_attention_rejects_blocks_of_other_positions():
    q, kv = torch.randn(1, 2, 8, 16), torch.randn(1, 2, 9, 16)
    with pytest.raises(ValueError, match="must hold the same positions of the sequence"):
        ring_attention(q, kv, kv)


def test_merge_partials_equals_attention_over_the_union():
    """Two halves of the keys, merged, give attention over all of them; a side that saw no key
    (lse -inf) weighs nothing, and a row that saw none on either side stays 0 with lse -inf."""
    q, k, v = (torch.randn(1, 2, 8, 16, dtype=torch.float64) for _ in range(3))
    whole, lse_whole = attention_reference(q, k, v, return_lse=True)
    out_a, lse_a = attention_reference(q, k[:, :, :3], v[:, :, :3], return_lse=True)
    out_b, lse_b = attention_reference(q, k[:, :, 3:], v[:, :, 3:], return_lse=True)
    out, lse = merge_partials(out_a, lse_a, out_b, lse_b)
    print(f"merged vs whole: {(out - whole).abs().max().item():.2e}")
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(lse, lse_whole)

    none = torch.full_like(lse_a, float("-inf"))
    out, lse = merge_partials(torch.zeros_like(out_a), none, out_a, lse_a)
    torch.testing.assert_close(out, out_a)
    torch.testing.assert_close(lse, lse_a)
    out, lse = merge_partials(torch.zeros_like(out_a), none, torch.zeros_like(out_a), none)
    assert torch.equal(out, torch.zeros_like(out_a)) and torch.equal(lse, none)


# ----------------------------------------------------------------------------------------------
# Data-parallel training
# ----------------------------------------------------------------------------------------------
def torchrun(args, nproc=2):
    """``torchrun --nproc_per_node nproc -m minitransformer.train args``; returns its stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "minitransformer.train", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def final_state(out_dir):
    ckpt = load_checkpoint(Path(out_dir) / "ckpt.pt")
    return ckpt["model"], ckpt["history"], ckpt["step"]


def assert_same_run(ddp, one):
    (model_d, hist_d, step_d), (model_1, hist_1, step_1) = ddp, one
    assert step_d == step_1
    for row_d, row_1 in zip(hist_d, hist_1, strict=True):
        print(f"step {row_1['step']}: loss {row_d['train_loss']:.7f} (2 processes) "
              f"{row_1['train_loss']:.7f} (1 process)")
        for key in ("train_loss", "val_loss"):
            assert (row_d[key] == row_1[key] == "") or abs(row_d[key] - row_1[key]) < 1e-5
    err = max((model_d[name] - model_1[name]).abs().max().item() for name in model_1)
    print(f"weights: max difference {err:.1e}")
    assert err < 1e-6


@pytest.fixture(scope="module")
def one_process_run(text_file, tmp_path_factory):
    """The final state of the tiny run in this (single) process: what DDP must reproduce."""
    out = tmp_path_factory.mktemp("one")
    train.main(["--data", str(text_file), *TINY, "--out", str(out)])
    return final_state(out)


def test_ddp_trains_like_one_process_on_the_whole_batch(text_file, tmp_path, one_process_run):
    """Two gloo processes, each on half of every batch: the losses and the final weights of one
    process on the whole batch, to rounding. Only rank 0 prints and writes."""
    stdout = torchrun(["--data", str(text_file), *TINY, "--out", str(tmp_path)])
    assert stdout.count("data parallel: 2 processes, 2 sequences each per step") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "losses.csv", "losses.png"]
    assert_same_run(final_state(tmp_path), one_process_run)


def test_ddp_resumes_a_run(text_file, tmp_path, monkeypatch, one_process_run):
    """A one-process run interrupted after its checkpoint at step 2, resumed by two processes:
    it ends where the uninterrupted one-process run does (the global batch does not depend on
    the number of processes, so neither does the run)."""
    args = ["--data", str(text_file), *TINY, "--out", str(tmp_path)]
    interrupt_training_at(monkeypatch, 3)
    with pytest.raises(SystemExit, match="the last checkpoint is at step 2"):
        train.main(args)
    stdout = torchrun(args + ["--resume"])
    assert stdout.count("at step 2") == 1
    assert_same_run(final_state(tmp_path), one_process_run)


def test_ddp_batch_must_split_evenly(text_file, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(SystemExit, match="--batch-size 4 must be a multiple of the number of processes \\(3\\)"):
        train.main(["--data", str(text_file), *TINY, "--out", str(tmp_path)])
