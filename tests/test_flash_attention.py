"""FlashAttention forward and backward against a float64 reference.

Every case draws fresh random inputs and checks the output, the log-sum-exp and all three
gradients. The kernel's error must stay within twice what plain PyTorch makes in the same dtype
(plus a rounding floor); see ``conftest.assert_close``.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    DEVICE,
    DTYPES,
    ON_GPU,
    assert_attention_results,
    assert_close,
    dtype_id,
    make_qkv,
    needs_triton,
    rel_err,
)

from kernels import attention_reference, flash_attention, flash_attention_varlen, flash_decode

MASKS = {  # name: (causal, window_size)
    "full": (False, (-1, -1)),
    "causal": (True, (-1, -1)),
    "window": (False, (9, 4)),
    "causal-window": (True, (21, 0)),
}
# (seqlen_q, seqlen_k): 1, shorter than a block, primes, not multiples of the block, q != k both
# ways, and lengths that differ by less than one block.
LENGTHS = [(1, 1), (17, 17), (113, 113), (1, 37), (17, 113), (113, 17), (40, 33), (33, 40)]
if ON_GPU:
    LENGTHS += [(1023, 1023), (257, 1500), (2048, 2048)]


def run_case(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype, causal, window,
             softmax_scale=None, input_scale=1.0, kernel=flash_attention):
    """Forward + backward of ``kernel``, of the float64 reference and of the reference in
    ``dtype``, with one random upstream gradient; asserts on out, lse, dq, dk, dv."""
    q, k, v = make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype,
                       scale=input_scale)
    kwargs = dict(causal=causal, window_size=window, softmax_scale=softmax_scale, return_lse=True)
    results = {}
    for name, fn, cast in (("kernel", kernel, None),
                           ("ref64", attention_reference, torch.float64),
                           ("lowp", attention_reference, None)):
        qi, ki, vi = (x.detach().to(cast or dtype).requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, **kwargs)
        if name == "kernel":
            do = torch.randn_like(out, dtype=torch.float32)
        out.backward(do.to(out.dtype))
        results[name] = dict(out=out, lse=lse, dq=qi.grad, dk=ki.grad, dv=vi.grad)
    assert_attention_results(results["kernel"], results["ref64"], results["lowp"], dtype)
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("seqlens", LENGTHS, ids=lambda s: f"q{s[0]}-k{s[1]}")
def test_lengths_and_masks(seqlens, mask, dtype):
    causal, window = MASKS[mask]
    run_case(2, 4, 2, *seqlens, 40, dtype, causal, window)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("heads", [(2, 2), (4, 2), (4, 1)], ids=lambda h: f"hq{h[0]}-hkv{h[1]}")
@pytest.mark.parametrize("head_dim", [8, 16, 40, 64, 80, 100, 128, 256])
def test_head_dims_and_gqa(head_dim, heads, dtype):
    run_case(1, *heads, 50, 70, head_dim, dtype, causal=True, window=(-1, -1))


LSE_LOSSES = {"both": lambda out, lse: (out.sum(-1) * lse.cos()).sum(),
              "lse-only": lambda out, lse: lse.sin().sum()}  # out gets no gradient at all


@pytest.mark.parametrize("loss_fn", list(LSE_LOSSES))
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_gradient_through_lse(causal, loss_fn):
    """lse is differentiable (ring attention and split-KV merges backpropagate through it)."""
    q, k, v = make_qkv(1, 2, 1, 37, 45, 32, torch.float32)
    grads = []
    for fn, dt in ((flash_attention, torch.float32), (attention_reference, torch.float64)):
        qi, ki, vi = (x.detach().to(dt).requires_grad_() for x in (q, k, v))
        out, lse = fn(qi, ki, vi, causal=causal, return_lse=True)
        loss = LSE_LOSSES[loss_fn](out, lse)
        loss.backward()
        grads.append((qi.grad, ki.grad, vi.grad))
    for name, g, ref in zip(("dq", "dk", "dv"), *grads):
        if ref is None:  # lse does not depend on v: autograd leaves no gradient, ours must be 0
            assert name == "dv" and loss_fn == "lse-only" and not g.any()
            continue
        assert_close(name, g, ref, ref.float(), torch.float32)


# The orders the backward's kernels can run in (flash_bwd.attention_backward): OWN_DELTA (the
# dQ kernel computes delta, with dlse, and writes it for dK/dV: no preprocess kernel), STREAMS
# (dQ on a second CUDA stream beside dK/dV; on the CPU the kernels run in order) and both (dQ
# computes its own delta, beside the preprocess and dK/dV), and OWN_DELTA with the dK/dV kernel
# launched while the dQ kernel runs (PDL=2: each query head waits on its dQ programs' counters;
# Hopper only, so on the CPU it runs as OWN_DELTA does). Under OWN_DELTA the dQ
# kernel also writes each row's exponent offset for dK/dV (LSE2); LSE2=False leaves dK/dV to
# compute it from lse.
BWD_ORDERS = {"own_delta": ({}, dict(OWN_DELTA=True)), "streams": (dict(STREAMS=True), {}),
              "own_delta-no-lse2": (dict(LSE2=False), dict(OWN_DELTA=True)),
              "streams-own_delta": (dict(STREAMS=True), dict(OWN_DELTA=True)),
              "pdl-heads": (dict(PDL=2), dict(OWN_DELTA=True))}


@needs_triton
@pytest.mark.parametrize("loss_fn", list(LSE_LOSSES))
@pytest.mark.parametrize("mask", ["full", "causal", "window"])
@pytest.mark.parametrize("order", list(BWD_ORDERS))
def test_backward_orders(order, mask, loss_fn):
    """Each order against float64, GQA and odd lengths, with a gradient through lse (the dlse
    term the dQ kernel subtracts itself under OWN_DELTA) and through out."""
    from kernels.band import Band
    from kernels.flash_attn import FlashAttentionFunction
    from kernels.flash_bwd import bwd_config

    causal, window = MASKS[mask]
    top, dq_flags = BWD_ORDERS[order]
    cfg = dict(bwd_config(32, torch.float32, causal), **top)
    cfg["dq"] = dict(cfg["dq"], **dq_flags)
    q, k, v = make_qkv(2, 4, 2, 37, 45, 32, torch.float32)
    grads = []
    for dt in (torch.float32, torch.float64):
        qi, ki, vi = (x.detach().to(dt).requires_grad_() for x in (q, k, v))
        if dt == torch.float32:
            band = Band.from_window(window, causal)
            out, lse = FlashAttentionFunction.apply(qi, ki, vi, band, 32 ** -0.5, None, None, cfg)
        else:
            out, lse = attention_reference(qi, ki, vi, causal=causal, window_size=window,
                                           return_lse=True)
        LSE_LOSSES[loss_fn](out, lse).backward()
        grads.append((qi.grad, ki.grad, vi.grad))
    for name, g, ref in zip(("dq", "dk", "dv"), *grads):
        if ref is None:  # lse does not depend on v
            assert name == "dv" and loss_fn == "lse-only" and not g.any()
            continue
        assert_close(name, g, ref, ref.float(), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_large_logits_are_stable(dtype):
    """Logits of magnitude ~1e4 (a large softmax_scale): the running max keeps exp() finite and
    the output and lse correct. Gradients must be finite and close; not to the usual bound, since
    the backward recomputes P from an fp32 lse whose rounding at |lse| ~ 1e4 is ~1e-3 (absolute)
    in the exponent, while autograd of the reference reuses the forward's P."""
    q, k, v = make_qkv(1, 1, 1, 45, 45, 32, dtype)
    logits = (q.float() @ k.float().transpose(-1, -2)).abs().max().item()
    scale = 1e4 / logits
    kwargs = dict(causal=True, softmax_scale=scale, return_lse=True)
    out, lse = flash_attention(q, k, v, **kwargs)
    out.sum().backward()
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref, ref_lse = attention_reference(qd, kd, vd, **kwargs)
    ref.sum().backward()
    low, low_lse = attention_reference(q.detach(), k.detach(), v.detach(), **kwargs)
    assert ref_lse.abs().max() > 5e3  # the test really reaches large logits
    assert_close("out", out, ref, low, dtype)
    assert_close("lse", lse, ref_lse, low_lse, torch.float32)
    for name, g, r in (("dq", q.grad, qd.grad), ("dk", k.grad, kd.grad), ("dv", v.grad, vd.grad)):
        assert torch.isfinite(g).all(), name
        assert rel_err(g, r) < 0.1, f"{name}: {rel_err(g, r):.3e}"


def test_backward_respects_causal():
    """Regression: a backward that ignores `causal` (seen in other Triton attention kernels)
    returns the non-causal gradients. Causal and full gradients must differ, each matching its
    own reference."""
    res_c = run_case(1, 2, 2, 64, 64, 32, torch.float32, causal=True, window=(-1, -1))
    res_f = run_case(1, 2, 2, 64, 64, 32, torch.float32, causal=False, window=(-1, -1))
    assert (res_c["kernel"]["dk"] - res_f["kernel"]["dk"]).abs().max() > 1e-2
    # the last key is seen only by the last query under the causal mask
    dk_last = res_c["kernel"]["dk"][..., -1, :]
    assert torch.allclose(dk_last, res_c["ref64"]["dk"][..., -1, :].float(), atol=1e-5)


def test_noncausal_gradients_many_blocks():
    """Regression: wrong non-causal gradients when keys span several blocks (the dK/dV loop must
    visit every query block, not only those below the diagonal)."""
    run_case(2, 2, 2, 97, 131, 64, torch.float32, causal=False, window=(-1, -1))


@pytest.mark.parametrize("seqlens", [(5, 5), (3, 7), (7, 3)], ids=lambda s: f"q{s[0]}-k{s[1]}")
def test_shorter_than_one_block(seqlens):
    """Regression: sequences shorter than one block (all loads masked, one partial tile)."""
    run_case(1, 1, 1, *seqlens, 24, torch.float32, causal=True, window=(-1, -1))


@pytest.mark.parametrize("seqlens", [(30, 33), (33, 30), (63, 64), (64, 63)],
                         ids=lambda s: f"q{s[0]}-k{s[1]}")
def test_lengths_differ_by_less_than_a_block(seqlens):
    """Regression: seqlen_q and seqlen_k that differ by less than a block shift the causal
    diagonal inside a tile; the block skipping must still visit every partly visible block."""
    run_case(1, 2, 1, *seqlens, 32, torch.float32, causal=True, window=(-1, -1))


@needs_triton
def test_lse2_only_where_dq_writes_delta_first():
    """dK/dV loads the exponent offsets only where the dQ kernel writes them before dK/dV runs:
    with OWN_DELTA, not beside atomic dQ or on a second stream, and not when a config says
    LSE2=False (the launcher, bwd_explore and ptxas_report all ask loads_lse2)."""
    from kernels.flash_bwd import loads_lse2

    own = dict(dq=dict(OWN_DELTA=True))
    assert loads_lse2(own) and loads_lse2(dict(own, PDL=2))
    assert not loads_lse2(dict(dq={})) and not loads_lse2(dict(own, LSE2=False))
    assert not loads_lse2(dict(own, STREAMS=True)) and not loads_lse2(dict(own, ATOMIC_DQ=True))


@pytest.mark.parametrize("order", ["default", pytest.param("own_delta", marks=needs_triton),
                                   pytest.param("own_delta-no-lse2", marks=needs_triton)])
def test_rows_with_no_key_are_zero(order):
    """With more queries than keys under a causal mask, the first seqlen_q - seqlen_k rows see
    nothing: output 0, lse -inf, and zero (finite) gradients, as in FlashAttention; with the
    default backward (the interpreter's: three kernels; or the plain-PyTorch path) and in the
    Triton orders where the dQ kernel writes delta (under OWN_DELTA dK/dV reads the exponent
    offset the dQ kernel wrote, which must be +inf for those rows, not -inf)."""
    q, k, v = make_qkv(1, 1, 1, 20, 10, 16, torch.float32)
    if order == "default":
        out, lse = flash_attention(q, k, v, causal=True, softmax_scale=0.25, return_lse=True)
    else:
        from kernels.band import Band
        from kernels.flash_attn import FlashAttentionFunction
        from kernels.flash_bwd import bwd_config

        cfg = bwd_config(16, torch.float32, True)
        top, dq_flags = BWD_ORDERS[order]
        cfg = dict(cfg, **top, dq=dict(cfg["dq"], **dq_flags))
        out, lse = FlashAttentionFunction.apply(q, k, v, Band.from_window((-1, -1), True), 0.25,
                                                None, None, cfg)
    out.sum().backward()
    assert torch.equal(out[..., :10, :], torch.zeros_like(out[..., :10, :]))
    assert torch.isneginf(lse[..., :10]).all() and torch.isfinite(lse[..., 10:]).all()
    assert torch.equal(q.grad[..., :10, :], torch.zeros_like(q.grad[..., :10, :]))
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = attention_reference(qd, kd, vd, causal=True, softmax_scale=0.25)
    ref.sum().backward()
    for name, g, r in (("dq", q.grad, qd.grad), ("dk", k.grad, kd.grad), ("dv", v.grad, vd.grad)):
        assert torch.isfinite(g).all(), name
        assert_close(name, g, r, r.float(), torch.float32)


def test_causal_alignment_differs_from_sdpa():
    """Bottom-right alignment: with 10 queries and 20 keys the first query sees keys 0..10.
    SDPA's is_causal is top-left (it sees key 0 only); with equal lengths both agree."""
    q, k, v = make_qkv(1, 2, 2, 10, 20, 16, torch.float32, requires_grad=False)
    ours = flash_attention(q, k, v, causal=True)
    top_left = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    bottom_right_mask = torch.ones(10, 20, dtype=torch.bool, device=q.device).tril(diagonal=10)
    bottom_right = F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right_mask)
    assert torch.allclose(ours, bottom_right, atol=1e-5)
    assert not torch.allclose(ours, top_left, atol=1e-2)
    q, k, v = make_qkv(1, 2, 2, 20, 20, 16, torch.float32, requires_grad=False)
    assert torch.allclose(flash_attention(q, k, v, causal=True),
                          F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5)


def test_non_contiguous_inputs():
    """Inputs in (batch, seqlen, heads, head_dim) memory order, viewed as (b, h, n, d)."""
    q, k, v = (torch.randn(2, n, 3, 24, device=DEVICE).transpose(1, 2) for n in (19, 29, 29))
    ref = attention_reference(q.double(), k.double(), v.double(), causal=True)
    out = flash_attention(q, k, v, causal=True)
    assert_close("out", out, ref, attention_reference(q, k, v, causal=True), torch.float32)


def test_empty_key_sequence():
    q, k, v = make_qkv(1, 1, 1, 4, 0, 16, torch.float32, requires_grad=False)
    out, lse = flash_attention(q, k, v, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()


def test_torch_compile_traces_the_op():
    """The kernel is a torch.library custom op: torch.compile traces a model that calls it
    without a graph break, forward and backward."""
    q, k, v = make_qkv(1, 2, 1, 24, 24, 16, torch.float32)

    def f(q, k, v):
        return flash_attention(q * 2.0, k, v, causal=True).square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(q, k, v)
    grads = torch.autograd.grad(loss, (q, k, v))
    loss_ref = f(q, k, v)
    grads_ref = torch.autograd.grad(loss_ref, (q, k, v))
    assert torch.allclose(loss, loss_ref)
    for g, r in zip(grads, grads_ref):
        assert torch.allclose(g, r, atol=1e-6)


# Block shapes other than the default: the tuned GPU tables use BLOCK_M != BLOCK_N (and dK/dV,
# dQ different from each other), which moves where the masked edge blocks and the unmasked
# interior meet. (fwd, dK/dV, dQ) as (BLOCK_M, BLOCK_N), then the dK/dV kernel's arrangement
# flags (flash_bwd._dkdv_blocks: KV_B, and ATOMIC_DQ, which computes dQ there with atomics and
# launches no dQ kernel); the interpreter runs them too.
BLOCK_SHAPES = {
    "tall": ((64, 16), (16, 64), (64, 16), {}),
    "wide": ((16, 64), (64, 16), (16, 64), {}),
    "tall-kv_b": ((64, 16), (16, 64), (64, 16), dict(KV_B=True)),
    "wide-atomic_dq": ((16, 64), (64, 16), None, dict(ATOMIC_DQ=True)),
    "tall-kv_b-atomic_dq": ((64, 16), (16, 64), None, dict(KV_B=True, ATOMIC_DQ=True)),
    "wide-head_loop": ((16, 64), (64, 16), (16, 64), dict(ONE_HEAD=False)),  # the sweeps' A/B
    # descriptors (TMA): q, dO in dK/dV, and k, v in the forward and in dQ
    "tall-tma": ((64, 16), (16, 64), (64, 16), dict(TMA=True)),
    "wide-kv_b-tma": ((16, 64), (64, 16), (16, 64), dict(KV_B=True, TMA=True)),
}
def configured(fwd: dict | None, bwd: dict | None):
    """flash_attention with the forward and backward launch configurations given (``None``: the
    launcher's), through FlashAttentionFunction, which takes inputs already checked (these are valid)."""
    from kernels.band import Band
    from kernels.flash_attn import FlashAttentionFunction

    def kernel(q, k, v, *, causal, window_size, softmax_scale, return_lse):
        scale = softmax_scale or q.shape[-1] ** -0.5
        return FlashAttentionFunction.apply(q, k, v, Band.from_window(window_size, causal), scale,
                                            None, fwd, bwd)
    return kernel


# Windows wider than a block, so that some blocks lie wholly inside the band.
WIDE_MASKS = {"full": (False, (-1, -1)), "causal": (True, (-1, -1)),
              "window": (False, (45, 37)), "causal-window": (True, (70, 0))}


@needs_triton
@pytest.mark.parametrize("mask", list(WIDE_MASKS))
@pytest.mark.parametrize("seqlens", [(97, 97), (45, 131), (131, 45)], ids=lambda s: f"q{s[0]}-k{s[1]}")
@pytest.mark.parametrize("blocks", list(BLOCK_SHAPES))
def test_block_shapes(blocks, seqlens, mask):

    *shapes, flags = BLOCK_SHAPES[blocks]
    fwd, dkdv, dq = (shape and dict(BLOCK_M=shape[0], BLOCK_N=shape[1], num_warps=4, num_stages=2)
                     for shape in shapes)
    fwd["TMA"] = flags.get("TMA", False)
    if dq is not None:
        dq["TMA"] = flags.get("TMA", False)
    causal, window = WIDE_MASKS[mask]
    run_case(1, 2, 1, *seqlens, 32, torch.float32, causal, window,
             kernel=configured(fwd, dict(dkdv, dq=dq, **flags)))


@needs_triton
@pytest.mark.parametrize("softmax_scale", [None, 20.0], ids=["default_scale", "scale20"])
@pytest.mark.parametrize("mask", list(WIDE_MASKS))
def test_fold_scale_forward(mask, softmax_scale):
    """FOLD_SCALE (an option of the forward that no table takes; benchmarks/NOTES.md, step 11):
    the row maxima scaled and the scale inside the exponent, against float64 on ragged lengths
    and every mask (edge and interior blocks both). At scale 20 the scaled scores reach ~600 in
    base 2: a maximum left unscaled would overflow exp2 instead of only shifting the softmax."""
    fwd = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4, num_stages=2, FOLD_SCALE=True)
    causal, window = WIDE_MASKS[mask]
    run_case(1, 2, 1, 97, 45, 32, torch.float32, causal, window, softmax_scale,
             kernel=configured(fwd, None))


@needs_triton
@pytest.mark.parametrize("kv_b", [False, True], ids=["kt_q", "kv_b"])
def test_atomic_dq_masks_padded_keys(kv_b):
    """Every score of a row far below zero (lse about -1e3): a padded key's score is 0, so
    without its mask ``exp2(0 - lse)`` overflows, and the atomic dQ gets ``inf * 0 = NaN`` from
    the zero row of k (the separate dQ kernel masks padded keys; ATOMIC_DQ must too)."""
    from kernels.band import Band
    from kernels.flash_attn import FlashAttentionFunction

    q, k, v = make_qkv(1, 2, 1, 40, 45, 32, torch.float32)
    q, k = q.abs() + 1, -(k.abs() + 1)  # every q . k < -32
    scale = 10.0
    cfg = dict(BLOCK_M=16, BLOCK_N=64, num_warps=4, num_stages=2, dq=None, KV_B=kv_b,
               ATOMIC_DQ=True)  # 45 keys in one 64-key block: 19 padded
    qi, ki, vi = (x.detach().requires_grad_() for x in (q, k, v))
    out, lse = FlashAttentionFunction.apply(qi, ki, vi, Band.from_window((-1, -1), False), scale,
                                            None, None, cfg)
    assert lse.max() < -200  # exp(200) overflows fp32: the test reaches the overflow
    do = torch.randn_like(out)
    out.backward(do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    attention_reference(qd, kd, vd, softmax_scale=scale).backward(do.double())
    for name, g, r in (("dq", qi.grad, qd.grad), ("dk", ki.grad, kd.grad), ("dv", vi.grad, vd.grad)):
        assert torch.isfinite(g).all(), name
        assert rel_err(g, r) < 1e-2, f"{name}: {rel_err(g, r):.3e}"  # 1.0e-3 on the H200


@pytest.mark.skipif(not (ON_GPU and torch.cuda.get_device_capability()[0] >= 9),
                    reason="programmatic dependent launch: compute capability 9.0 and up")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_pdl_backward_is_the_table_bit_for_bit(packed, head_dim, causal):
    """With ``PDL`` the dK/dV kernel starts while the dQ kernel's last programs run; it must
    give the launch table's bits (the same kernels, the same sums), with enough heads that dK/dV
    programs do start during dQ's tail, odd lengths, GQA, and NaN where delta will lie: each call
    first frees a block of lse's size full of NaN, which the empty delta then likely takes, so a
    dK/dV program reading delta before the dQ program that writes it shows as NaN. Packed: eight
    sequences of unequal lengths, so that some dQ and dK/dV programs have no rows."""
    from kernels.band import Band
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward
    from kernels.tiles import Layout

    lengths = [1000, 1, 517, 64, 999, 130, 1000, 77] if packed else [1000] * 8
    q, k, v = make_qkv(8, 16, 8, 1000, 1000, head_dim, torch.bfloat16, requires_grad=False)
    layout = None
    if packed:  # (total, heads, head_dim), the first `length` rows of each sequence
        q, k, v = (torch.cat([x[i, :, :n].transpose(0, 1) for i, n in enumerate(lengths)])
                   for x in (q, k, v))
        cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=DEVICE)
        layout = Layout(len(lengths), max(lengths), max(lengths), cu, cu)
    do = torch.randn_like(q)
    band, scale = Band.from_window((-1, -1), causal), head_dim ** -0.5
    out, lse = attention_forward(q, k, v, band, scale, layout)
    cfg = bwd_config(head_dim, q.dtype, causal, packed)
    assert cfg["dq"].get("OWN_DELTA"), "PDL needs the OWN_DELTA order of the Hopper table"

    def backward(**flags):
        nan = torch.full_like(lse, float("nan"))
        del nan
        return attention_backward(do, q, k, v, out, lse, None, band, scale, layout,
                                  config=dict(cfg, **flags))

    want = backward(PDL=0)
    assert all(torch.isfinite(g).all() for g in want)
    for _ in range(3):
        for name, g, w in zip(("dq", "dk", "dv"), backward(PDL=2), want):
            assert torch.equal(g, w), f"{name}: PDL=2 differs from PDL=0"


@needs_triton
@pytest.mark.parametrize("pdl", [1, 3, True])
def test_withdrawn_pdl_is_refused(pdl):
    """``PDL=1`` (one ``gdc_wait`` for the whole dQ kernel) stopped the GPU after a few hundred
    calls (results/h200/pdl_stress.csv) and was withdrawn: it, and any value but 0 and 2, is a
    ValueError naming the option, before a kernel is launched, on every device."""
    from kernels.band import Band
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward

    q, k, v = make_qkv(1, 2, 2, 17, 17, 64, torch.float32 if DEVICE == "cpu" else torch.bfloat16,
                       requires_grad=False)
    band = Band.from_window((-1, -1), False)
    out, lse = attention_forward(q, k, v, band, 0.125)
    cfg = dict(bwd_config(64, q.dtype, False), PDL=pdl)
    with pytest.raises(ValueError, match="PDL must be 0 or 2"):
        attention_backward(torch.randn_like(q), q, k, v, out, lse, None, band, 0.125, config=cfg)


@pytest.mark.skipif(not ON_GPU, reason="CUDA's grid limit; the interpreter has none, and would "
                    "take minutes over 65,600 programs")
def test_batch_times_heads_past_grid_limit():
    """batch * heads = 65,600 > 65,535, CUDA's limit on a grid's second axis: the kernels put
    (block, batch * head) on the first axis (2**31 - 1), forward and all backward kernels."""
    run_case(4100, 16, 8, 5, 7, 16, torch.bfloat16, causal=True, window=(-1, -1))


@pytest.mark.parametrize("window", [(-1, 3), (4, 2), (0, 5), (2, -1)], ids=lambda w: f"w{w[0]}_{w[1]}")
def test_causal_with_a_window_is_right_zero(window):
    """FlashAttention's rule: ``causal=True`` with ``window_size=(left, right)`` is the window
    ``(left, 0)``; FlashAttention's own tests pass causal with random windows. It used to raise
    ValueError ("causal=True already means right = 0") for every ``right > 0``. The same rule in
    the dense, packed and decoding entry points, against the float64 reference."""
    left = window[0]
    q, k, v = make_qkv(2, 4, 2, 19, 37, 32, torch.float32)
    ref, ref_lse = attention_reference(q.double(), k.double(), v.double(), window_size=(left, 0),
                                       return_lse=True)
    out, lse = flash_attention(q, k, v, causal=True, window_size=window, return_lse=True)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), ref_lse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(attention_reference(q, k, v, causal=True, window_size=window),
                               ref.float(), atol=1e-5, rtol=1e-5)

    cu_q = torch.tensor([0, 19], dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0, 37], dtype=torch.int32, device=DEVICE)
    pack = lambda t: t[0].transpose(0, 1)  # (1, H, N, D) -> (N, H, D)  # noqa: E731
    packed = flash_attention_varlen(pack(q[:1]), pack(k[:1]), pack(v[:1]), cu_q, cu_k, 19, 37,
                                    causal=True, window_size=window)
    torch.testing.assert_close(packed.double(), pack(ref[:1]), atol=1e-5, rtol=1e-5)

    lengths = torch.tensor([37, 20], dtype=torch.int32, device=DEVICE)  # the second cache: 20 valid
    decoded = flash_decode(q[:, :, -3:], k, v, lengths, causal=True, window_size=window, num_splits=2)
    for b, n in enumerate(lengths.tolist()):
        want = attention_reference(q[b:b + 1, :, -3:].double(), k[b:b + 1, :, :n].double(),
                                   v[b:b + 1, :, :n].double(), window_size=(left, 0))
        torch.testing.assert_close(decoded[b:b + 1].double(), want, atol=1e-5, rtol=1e-5)
