"""Causal linear attention: the chunked Triton kernel, the recurrence and the parallel form agree.

Every case draws fresh random inputs and checks the output and the three gradients of the kernel
against the parallel form in float64, within twice what the parallel form makes in the same dtype
(plus a rounding floor; see ``conftest.assert_close``). The recurrence is checked against the
parallel form in float64, where both are exact up to rounding.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import DEVICE, DTYPES, ON_GPU, assert_close, dtype_id, needs_triton, rel_err

from kernels import (
    linear_attention,
    linear_attention_parallel,
    linear_attention_recurrent,
    linear_attention_step,
)

ROOT = Path(__file__).resolve().parents[1]
# (seqlen, chunk_size): one token, shorter than a chunk, primes, lengths that are not multiples of
# the chunk, an exact multiple, and several chunks of each size.
LENGTHS = [(1, 16), (17, 16), (61, 16), (64, 32), (113, 32), (150, 64)]
if ON_GPU:
    LENGTHS += [(1023, 64), (2048, 32), (3001, 128)]
FEATURE_MAPS = {"elu1": "elu1", "plain": None}
DECAYS = ["none", "heads"]


def make_inputs(batch, heads, seqlen, head_dim, dtype, decay):
    q, k, v = (torch.randn(batch, heads, seqlen, head_dim, device=DEVICE).to(dtype).requires_grad_()
               for _ in range(3))
    g = None if decay == "none" else torch.empty(heads, device=DEVICE).uniform_(0.3, 1.0)
    return q, k, v, g


def run_case(batch, heads, seqlen, head_dim, dtype, decay, feature_map, chunk_size, scale=None):
    """Forward + backward of the kernel, of the parallel form in float64 and in ``dtype``, with one
    random upstream gradient; asserts on out, dq, dk, dv. Returns the results."""
    q, k, v, g = make_inputs(batch, heads, seqlen, head_dim, dtype, decay)
    kwargs = dict(decay=g, feature_map=feature_map, scale=scale)
    results = {}
    for name, fn, cast in (("kernel", linear_attention, None),
                           ("ref64", linear_attention_parallel, torch.float64),
                           ("lowp", linear_attention_parallel, None)):
        qi, ki, vi = (x.detach().to(cast or dtype).requires_grad_() for x in (q, k, v))
        extra = dict(chunk_size=chunk_size) if name == "kernel" else {}
        out = fn(qi, ki, vi, **kwargs, **extra)
        if name == "kernel":
            do = torch.randn_like(out, dtype=torch.float32)
        out.backward(do.to(out.dtype))
        results[name] = dict(out=out, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    kern, ref64, lowp = results["kernel"], results["ref64"], results["lowp"]
    assert kern["out"].dtype == dtype and kern["out"].shape == q.shape
    for key in ("out", "dq", "dk", "dv"):
        assert_close(key, kern[key], ref64[key], lowp[key], dtype)
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("feature_map", list(FEATURE_MAPS))
@pytest.mark.parametrize("decay", DECAYS)
@pytest.mark.parametrize("seqlen,chunk_size", LENGTHS, ids=lambda x: str(x))
def test_chunked_matches_parallel(seqlen, chunk_size, decay, feature_map, dtype):
    run_case(2, 3, seqlen, 32, dtype, decay, FEATURE_MAPS[feature_map], chunk_size)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("feature_map", list(FEATURE_MAPS))
@pytest.mark.parametrize("head_dim", [8, 16, 40, 64, 100, 128])
def test_head_dims(head_dim, feature_map, dtype):
    """Padded head dims (masked loads), and with elu1 the ones column that makes v one wider."""
    run_case(1, 2, 45, head_dim, dtype, "heads", FEATURE_MAPS[feature_map], 32)


@pytest.mark.parametrize("feature_map", list(FEATURE_MAPS))
@pytest.mark.parametrize("decay", DECAYS)
def test_recurrent_equals_parallel(decay, feature_map):
    """The loop over tokens and the masked matrix are the same function (float64, with grads)."""
    q, k, v, g = make_inputs(2, 3, 37, 24, torch.float64, decay)
    outs, grads = [], []
    for fn in (linear_attention_recurrent, linear_attention_parallel):
        qi, ki, vi = (x.detach().requires_grad_() for x in (q, k, v))
        out, state = fn(qi, ki, vi, decay=g, feature_map=FEATURE_MAPS[feature_map], return_state=True)
        (out * torch.linspace(-1, 1, out.shape[-1], device=DEVICE, dtype=out.dtype)).sum().backward()
        outs.append((out, state))
        grads.append((qi.grad, ki.grad, vi.grad))
    for a, b in zip((*outs[0], *grads[0]), (*outs[1], *grads[1])):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("feature_map", list(FEATURE_MAPS))
def test_prefill_then_steps_equals_whole_sequence(feature_map):
    """Generation: the state after a prefill (``return_state``, any of the three forms), then one
    ``linear_attention_step`` per token, gives the outputs of one pass over the whole sequence."""
    fm = FEATURE_MAPS[feature_map]
    q, k, v, g = make_inputs(2, 3, 40, 16, torch.float32, "heads")
    q, k, v = (x.detach() for x in (q, k, v))
    whole = linear_attention_parallel(q.double(), k.double(), v.double(), decay=g, feature_map=fm)
    prefill = 29
    states = []
    for fn in (linear_attention, linear_attention_parallel, linear_attention_recurrent):
        out, state = fn(q[:, :, :prefill], k[:, :, :prefill], v[:, :, :prefill], decay=g,
                        feature_map=fm, return_state=True)
        assert state.dtype == torch.float32 and state.shape == (2, 3, 16, 16 + (fm is not None))
        steps = [out]
        for t in range(prefill, q.shape[2]):
            o, state = linear_attention_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1], state,
                                             decay=g, feature_map=fm)
            steps.append(o)
        assert_close("out", torch.cat(steps, dim=2), whole,
                     linear_attention_parallel(q, k, v, decay=g, feature_map=fm), torch.float32)
        states.append(state)
    for s in states[1:]:
        torch.testing.assert_close(s, states[0], rtol=1e-4, atol=1e-4)


def test_first_step_without_state():
    """``state=None`` is the empty past: the first step equals the first row of the parallel form."""
    q, k, v, g = make_inputs(1, 2, 1, 16, torch.float32, "heads")
    o, state = linear_attention_step(q, k, v, None, decay=g)
    torch.testing.assert_close(o, linear_attention_parallel(q, k, v, decay=g))
    assert state.shape == (1, 2, 16, 17)


@pytest.mark.parametrize("decay", [1.0, "ones"])
def test_decay_one_is_no_decay(decay):
    q, k, v, _ = make_inputs(1, 2, 70, 16, torch.float32, "none")
    g = torch.ones(2, device=DEVICE) if decay == "ones" else decay
    for fm in FEATURE_MAPS.values():
        a = linear_attention(q, k, v, decay=g, feature_map=fm, chunk_size=32)
        b = linear_attention(q, k, v, decay=None, feature_map=fm, chunk_size=32)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_strong_decay_long_sequence():
    """Regression guard for the decay arithmetic: with g = 0.01 the factors g^(i-j), g^C
    underflow to 0 and g^-(...) would overflow; the kernel must stay finite and exact."""
    q, k, v, _ = make_inputs(1, 2, 200, 32, torch.float32, "none")
    g = torch.tensor([0.01, 0.999], device=DEVICE)
    out = linear_attention(q, k, v, decay=g, feature_map=None, chunk_size=64)
    out.sum().backward()
    ref = linear_attention_parallel(q.detach().double(), k.detach().double(), v.detach().double(),
                                    decay=g, feature_map=None)
    assert all(torch.isfinite(x).all() for x in (out, q.grad, k.grad, v.grad))
    assert_close("out", out, ref, linear_attention_parallel(q, k, v, decay=g, feature_map=None),
                 torch.float32)


def test_fp16_state_beyond_fp16_range():
    """Regression: without decay, the elu1 state's last column sums phi(k) over every earlier
    token and passes fp16's maximum (65504) long before the outputs do; rounding it to fp16 for
    the tensor-core product gave inf/nan (relative error 0.4 here). fp16 inputs now multiply by
    the state in fp32, and the numerator and denominator leave the kernel in fp32."""
    q, k, v = (torch.randn(1, 2, 700, 16, device=DEVICE) for _ in range(3))
    k = k.abs() * 100  # phi(k) ~ 100: the key sum reaches ~7e4 within 700 tokens
    qh, kh, vh = (x.half().requires_grad_() for x in (q, k, v))
    out = linear_attention(qh, kh, vh, chunk_size=64)
    out.sum().backward()
    qd, kd, vd = (x.half().double().requires_grad_() for x in (q, k, v))
    ref = linear_attention_parallel(qd, kd, vd)
    ref.sum().backward()
    for name, x, r, tol in (("out", out, ref, 5e-3), ("dq", qh.grad, qd.grad, 5e-2),
                            ("dk", kh.grad, kd.grad, 5e-3), ("dv", vh.grad, vd.grad, 5e-3)):
        print(f"{name}: {rel_err(x, r):.2e}")
        assert torch.isfinite(x).all() and rel_err(x, r) < tol, name


def test_explicit_scale():
    """``scale`` multiplies q . k (it matters without the normaliser, and cancels with it)."""
    run_case(1, 2, 50, 16, torch.float32, "heads", None, 16, scale=0.3)
    q, k, v, _ = make_inputs(1, 2, 50, 16, torch.float32, "none")
    a, b = (linear_attention(q, k, v, feature_map="elu1", scale=s) for s in (0.3, 1.0))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_non_contiguous_inputs():
    """Inputs in (batch, seqlen, heads, head_dim) memory order, viewed as (b, h, n, d)."""
    q, k, v = (torch.randn(2, 39, 3, 24, device=DEVICE).transpose(1, 2).requires_grad_() for _ in range(3))
    out = linear_attention(q, k, v, decay=0.9, chunk_size=16)
    out.sum().backward()
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = linear_attention_parallel(qd, kd, vd, decay=0.9)
    ref.sum().backward()
    low = linear_attention_parallel(q.detach(), k.detach(), v.detach(), decay=0.9)
    assert_close("out", out, ref, low, torch.float32)
    assert_close("dq", q.grad, qd.grad, qd.grad.float(), torch.float32)


def test_parallel_form_learns_the_decay():
    """The references differentiate a decay tensor (the chunked kernel refuses one that needs a
    gradient): the gradient of the parallel form equals the recurrence's."""
    q, k, v, _ = make_inputs(1, 2, 20, 8, torch.float64, "none")
    grads = []
    for fn in (linear_attention_parallel, linear_attention_recurrent):
        g = torch.tensor([0.7, 0.95], dtype=torch.float64, device=DEVICE, requires_grad=True)
        fn(q, k, v, decay=g, feature_map=None).square().sum().backward()
        grads.append(g.grad)
    assert grads[0].abs().min() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_empty_sequence():
    q, k, v, _ = make_inputs(1, 2, 0, 16, torch.float32, "none")
    for fn in (linear_attention, linear_attention_parallel, linear_attention_recurrent):
        out, state = fn(q, k, v, return_state=True)
        assert out.shape == q.shape and torch.equal(state, torch.zeros(1, 2, 16, 17, device=DEVICE))


def test_without_triton_the_same_names_run_in_pytorch():
    """``import kernels`` without Triton (macOS, Windows; hidden here by ``sys.modules``): one line
    on stderr names the implementation, ``flash_attention`` is the PyTorch twin and equals the
    reference, ``linear_attention`` (checked as the kernel checks) equals the recurrence, and no
    module of Triton is imported."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, kernels\n"
        "assert kernels.IMPLEMENTATION == 'torch' and not kernels.INTERPRET\n"
        "assert kernels.flash_attention is kernels.flash_attention_torch\n"
        "q = torch.randn(1, 2, 9, 16, dtype=torch.float16)\n"
        "rec = kernels.linear_attention_recurrent(q.double(), q.double(), q.double(), decay=0.9)\n"
        "out = kernels.linear_attention(q, q, q, decay=0.9)\n"
        "assert out.dtype == torch.float16 and kernels.rel_err(out, rec) < 2e-3, kernels.rel_err(out, rec)\n"
        "ref = kernels.attention_reference(q.double(), q.double(), q.double(), causal=True)\n"
        "assert kernels.rel_err(kernels.flash_attention(q, q, q, causal=True), ref) < 2e-3\n"
        "try:\n"
        "    kernels.linear_attention(q, q, q, chunk_size=48)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
        "assert not any(name.startswith('triton') for name, m in sys.modules.items() if m is not None)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    env.pop("KERNELS_TWIN_NOTICE_SHOWN", None)  # set where this process printed the line itself
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stderr.count("\n") == 1 and "Triton is not installed" in result.stderr, result.stderr
    assert "chunk_size" in result.stdout  # the kernel's own checks still run


# ----------------------------------------------------------------------------------------------
# Bad input: ValueError / TypeError naming the argument, before any kernel launches
# ----------------------------------------------------------------------------------------------
def t(*shape, dtype=torch.float32, device=DEVICE):
    return torch.randn(*shape, device=device).to(dtype)


GOOD = lambda: (t(2, 3, 8, 16), t(2, 3, 8, 16), t(2, 3, 8, 16))  # noqa: E731
CASES = {  # id: (inputs, kwargs, exception, message pattern)
    "rank": (lambda: (t(3, 8, 16), t(2, 3, 8, 16), t(2, 3, 8, 16)), {}, ValueError, r"q: expected 4 dimensions"),
    "heads": (lambda: (t(2, 4, 8, 16), t(2, 2, 8, 16), t(2, 2, 8, 16)), {}, ValueError, r"as many heads as q \(4\), got 2"),
    "seqlen": (lambda: (t(2, 3, 8, 16), t(2, 3, 9, 16), t(2, 3, 9, 16)), {}, ValueError, r"needs seqlen 8 \(as q\), got 9"),
    "integer": (lambda: tuple(x.long() for x in GOOD()), {}, TypeError, r"q: expected a floating dtype"),
    "mixed_dtypes": (lambda: (t(2, 3, 8, 16), t(2, 3, 8, 16, dtype=torch.bfloat16), t(2, 3, 8, 16)), {}, TypeError, r"one dtype"),
    "feature_map": (GOOD, {"feature_map": "relu"}, ValueError, r"feature_map: expected one of 'elu1', None, got 'relu'"),
    "decay_zero": (GOOD, {"decay": 0.0}, ValueError, r"decay: expected values in \(0, 1\]"),
    "decay_above_one": (GOOD, {"decay": torch.tensor([0.5, 1.5, 0.9], device=DEVICE)}, ValueError, r"decay: expected values in \(0, 1\]"),
    "decay_nan": (GOOD, {"decay": torch.tensor([0.5, float("nan"), 0.9], device=DEVICE)}, ValueError, r"decay: expected values in \(0, 1\]"),
    "decay_shape": (GOOD, {"decay": torch.tensor([0.5, 0.9], device=DEVICE)}, ValueError, r"decay: expected shape \(3,\), one value per head, got \(2,\)"),
    "decay_int": (GOOD, {"decay": torch.ones(3, dtype=torch.long, device=DEVICE)}, TypeError, r"decay: expected a floating tensor"),
    "decay_type": (GOOD, {"decay": "0.9"}, TypeError, r"decay: expected None, a float or a tensor"),
    "scale": (GOOD, {"scale": -1.0}, ValueError, r"scale: expected a finite positive number"),
    "scale_type": (GOOD, {"scale": "0.1"}, TypeError, r"scale: expected a float"),
    # the kernel's own rules
    "float64_kernel": (lambda: tuple(x.double() for x in GOOD()), {}, TypeError, r"q: expected a floating dtype \(float32, float16, bfloat16\)"),
    "head_dim_large": (lambda: (t(1, 1, 8, 136),) * 3, {}, ValueError, r"head_dim must be in \[8, 128\]"),
    "head_dim_small": (lambda: (t(1, 1, 8, 4),) * 3, {}, ValueError, r"head_dim must be in \[8, 128\]"),
    "chunk_not_pow2": (GOOD, {"chunk_size": 24}, ValueError, r"chunk_size: expected a power of two in \[16, 128\], got 24"),
    "chunk_small": (GOOD, {"chunk_size": 8}, ValueError, r"chunk_size: expected a power of two in \[16, 128\], got 8"),
    "chunk_large": (GOOD, {"chunk_size": 256}, ValueError, r"chunk_size: expected a power of two"),
    "chunk_type": (GOOD, {"chunk_size": 32.0}, TypeError, r"chunk_size: expected an int"),
    "decay_grad": (GOOD, {"decay": torch.full((3,), 0.9, device=DEVICE, requires_grad=True)}, ValueError, r"decay: the chunked kernel gives the decay no gradient"),
}
if DEVICE == "cuda":
    CASES["devices"] = (lambda: (t(2, 3, 8, 16), t(2, 3, 8, 16, device="cpu"), t(2, 3, 8, 16)), {}, ValueError, r"one device")
    CASES["decay_device"] = (GOOD, {"decay": torch.full((3,), 0.9)}, ValueError, r"decay: expected it on cuda")
KERNEL_ONLY = {"float64_kernel", "head_dim_large", "head_dim_small", "chunk_not_pow2", "chunk_small",
               "chunk_large", "chunk_type", "decay_grad"}
FUNCTIONS = {"chunked": linear_attention, "parallel": linear_attention_parallel,
             "recurrent": linear_attention_recurrent}
PAIRS = [(case, fn) for case in CASES for fn in FUNCTIONS if fn == "chunked" or case not in KERNEL_ONLY]


@pytest.mark.parametrize("case,fn", PAIRS, ids=[f"{c}-{f}" for c, f in PAIRS])
def test_bad_input(case, fn):
    make, kwargs, exc, pattern = CASES[case]
    with pytest.raises(exc, match=pattern):
        FUNCTIONS[fn](*make(), **kwargs)


STEP_CASES = {  # id: (q, k, v, state, exception, message pattern)
    "two_tokens": (lambda: (t(1, 2, 2, 16),) * 3 + (None,), ValueError, r"a step takes one token \(seqlen 1\), got seqlen 2"),
    "state_shape": (lambda: (t(1, 2, 1, 16),) * 3 + (t(1, 2, 16, 16),), ValueError,
                    r"state: expected shape \(1, 2, 16, 17\) for feature_map='elu1', got \(1, 2, 16, 16\)"),
    "state_type": (lambda: (t(1, 2, 1, 16),) * 3 + ([[0.0]],), TypeError, r"state: expected a torch.Tensor or None"),
}


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_step_bad_input(case):
    make, exc, pattern = STEP_CASES[case]
    with pytest.raises(exc, match=pattern):
        linear_attention_step(*make())


def test_message_is_one_clear_line():
    with pytest.raises(ValueError) as info:
        linear_attention(*GOOD(), decay=torch.tensor([0.5, 2.0, 0.9], device=DEVICE))
    message = str(info.value)
    assert "\n" not in message and re.search(r"decay: .*\(0, 1\].*\[0\.5, 2\.0\]", message)


# ----------------------------------------------------------------------------------------------
# benchmarks/bench_linear.py: what runs without a GPU
# ----------------------------------------------------------------------------------------------
def load_bench():
    from benchmarks import bench_linear

    return bench_linear


def test_bench_crossover_and_plot_from_csv(tmp_path, capsys):
    """The crossover is interpolated on the log-log plot; --plot-only redraws from a CSV."""
    bench = load_bench()
    rows = [dict(provider=p, dtype="bf16", head_dim=64, seqlen=n, batch=8192 // n, heads=1, mode="fwd",
                 ms=f"{t:.4f}", us_per_token="0", linear_programs=8192 // n, rel_err_vs_sdpa="")
            for n in (512, 2048, 8192) for p, t in (("flash", n / 1000), ("linear", 4.096))]
    assert abs(bench.crossover(rows, 64, "fwd") - 4096) < 1e-6  # flash = N/1000 ms meets 4.096 ms at 4096
    assert bench.crossover(rows, 64, "fwd", fast="flash", slow="linear") == 512  # faster from the start
    path = tmp_path / bench.CSV_NAME
    with open(path, "w") as f:
        f.write("# device=Test GPU, date=2026-01-01, torch=x, triton=y\nprovider,dtype,head_dim,seqlen,batch,"
                "heads,mode,ms,us_per_token,linear_programs,rel_err_vs_sdpa\n")
        f.writelines(",".join(str(v) for v in r.values()) + "\n" for r in rows)
    bench.main(["--plot-only", str(path)])
    assert (tmp_path / "linear_vs_softmax_d64.png").stat().st_size > 0
    assert "~4,096" in capsys.readouterr().out


@pytest.mark.skipif(ON_GPU, reason="the benchmark runs here")
def test_bench_needs_a_gpu(tmp_path):
    with pytest.raises(SystemExit, match="needs a CUDA GPU"):
        load_bench().main(["--out", str(tmp_path)])


@pytest.mark.skipif(not ON_GPU, reason="CUDA's grid limit; the interpreter has none, and would "
                    "take minutes over 65,600 programs")
def test_batch_times_heads_past_grid_limit():
    """batch * heads = 65,600 > 65,535, CUDA's limit on a grid's second axis: forward and the
    backward's reverse pass."""
    run_case(4100, 16, 17, 16, torch.float32, "heads", "elu1", 16)


@needs_triton
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_non_finite_values_do_not_flow_back_in_time(which, value):
    """A NaN in k at position 5 of a 20-token sequence made rows 0-19 NaN, where the recurrence
    gives rows 5-19: the intra-chunk causal mask multiplied by zero (0 * nan = nan) instead of
    selecting, and a non-finite v reached earlier rows through the product with zero weights.
    Causal means nothing flows from the future: the same entries are non-finite as in the
    recurrent reference, with the bad value inside a chunk and at both of its edges."""
    for position in (0, 5, 15, 16, 19):  # chunks of 16: first, inside, last of one, first of the next
        for feature_map, decay in (("elu1", None), (None, 0.9)):
            q, k, v = (torch.randn(1, 2, 20, 16, device=DEVICE) for _ in range(3))
            dict(q=q, k=k, v=v)[which][0, 1, position, 3] = value
            out = linear_attention(q, k, v, decay=decay, feature_map=feature_map, chunk_size=16)
            ref = linear_attention_recurrent(q.double(), k.double(), v.double(), decay=decay,
                                             feature_map=feature_map)
            bad_rows = (~torch.isfinite(out[0, 1])).any(-1).nonzero().flatten().tolist()
            want_rows = (~torch.isfinite(ref[0, 1])).any(-1).nonzero().flatten().tolist()
            assert bad_rows == want_rows, f"{feature_map=} {position=}: {bad_rows} vs {want_rows}"
            assert torch.equal(torch.isfinite(out), torch.isfinite(ref))
            assert want_rows and want_rows[0] == position  # the reference does see the value


def test_float_decay_keeps_its_precision():
    """Regression: a Python-float decay was made in float32 before the cast, so a float64
    oracle ran with 0.8999999762 instead of 0.9."""
    from kernels._checks import check_decay

    assert check_decay(0.9, 3, "cpu", torch.float64).tolist() == [0.9] * 3
