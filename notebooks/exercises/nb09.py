"""Checks for notebook 09 (training the mini Transformer): global-norm gradient clipping, the
next-token loss on shifted targets, the rotary embedding of one position."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import Mismatch, exercise, expect_close


def _grads(norms: list[float], shapes: list[tuple], gen: torch.Generator) -> list[torch.Tensor]:
    """Tensors of the given shapes, each scaled to the given L2 norm (0: all zeros)."""
    out = []
    for norm, shape in zip(norms, shapes):
        g = torch.randn(shape, generator=gen, dtype=torch.float64)
        zero = torch.zeros(shape, dtype=torch.float64)
        out.append(g * (norm / g.norm()) if norm > 0 and g.numel() else zero)
    return out


# (what, the norm of each tensor, max_norm): the global norm is sqrt(sum of squares)
CLIP_CASES = [
    ("one tensor, norm 5, max_norm 1", [5.0], 1.0),
    ("three tensors of norm 0.8 each (global 1.39), max_norm 1", [0.8, 0.8, 0.8], 1.0),
    ("global norm 0.5, below max_norm 1: nothing changes", [0.3, 0.4], 1.0),
    ("global norm 3, max_norm 2.5, one tensor all zeros", [1.0, 0.0, 2.0, 2.0], 2.5),
    ("every gradient zero", [0.0, 0.0], 1.0),
    ("one large, one tiny tensor, max_norm 0.1", [40.0, 1e-3], 0.1),
]
CLIP_SHAPES = [(3, 5), (7,), (), (2, 3, 4)]  # a matrix, a vector, a scalar, a 3-d tensor


@exercise("09.clip_grad_norm_")
def _clip_grad_norm_(clip_grad_norm_) -> str:
    """clip_grad_norm_(grads, max_norm) -> total norm: scale the list in place to a global norm
    of at most max_norm, as torch.nn.utils.clip_grad_norm_ does."""
    gen = torch.Generator().manual_seed(9)
    for what, norms, max_norm in CLIP_CASES:
        shapes = [CLIP_SHAPES[i % len(CLIP_SHAPES)] for i in range(len(norms))]
        grads = _grads(norms, shapes, gen)
        before = [g.clone() for g in grads]
        total = math.sqrt(sum(float((g * g).sum()) for g in before))
        coef = min(1.0, max_norm / total) if total > 0 else 1.0  # torch adds 1e-6 to the norm: within rtol
        got = clip_grad_norm_(grads, max_norm)
        if got is None:
            raise Mismatch(f"{what}: returned None; return the total norm before clipping, as torch does")
        expect_close(f"{what}: the returned total norm (before clipping)", got, total, rtol=1e-9)
        if total > max_norm and all(torch.equal(g, b) for g, b in zip(grads, before)):
            raise Mismatch(f"{what}: the tensors in grads are unchanged, but their global norm "
                           f"{total:.3g} is above max_norm: scale every one in place (g.mul_(...)) by "
                           "one common factor")
        for i, (g, b) in enumerate(zip(grads, before)):
            expect_close(f"{what}: grads[{i}] after clipping", g, b * coef, rtol=1e-5, atol=1e-12)
    return (f"{len(CLIP_CASES)} cases: global norm above and below max_norm, tensors each below it but "
            "not together, zeros, a scalar tensor")


def _next_token_reference(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1))


# (batch, seqlen, vocab, logit scale): two positions, a prime length, one batch row, huge logits
LOSS_CASES = [dict(B=1, T=2, V=3, scale=1.0), dict(B=3, T=7, V=11, scale=2.0),
              dict(B=2, T=13, V=5, scale=1.0),
              dict(B=2, T=5, V=7, scale=1000.0)]


@exercise("09.next_token_loss")
def _next_token_loss(next_token_loss) -> str:
    """next_token_loss(logits, tokens) -> the mean cross-entropy of logits[:, t] against tokens[:, t + 1]."""
    gen = torch.Generator().manual_seed(90)
    for case in LOSS_CASES:
        B, T, V = case["B"], case["T"], case["V"]
        logits = case["scale"] * torch.randn(B, T, V, generator=gen, dtype=torch.float64)
        tokens = torch.randint(0, V, (B, T), generator=gen)
        large = f", logits as large as {case['scale']:.0f}" if case["scale"] > 10 else ""
        what = f"B={B}, T={T}, V={V}{large}"
        got = next_token_loss(logits.clone(), tokens.clone())
        expect_close(f"{what}: loss", got, _next_token_reference(logits, tokens), rtol=1e-9)
    return (f"{len(LOSS_CASES)} cases: T = 2 (one prediction per row), prime lengths, logits of "
            "size 1000 (exp overflows without the max subtracted)")


def _rotary_reference(x: torch.Tensor, pos: int, base: float) -> torch.Tensor:
    """The model's convention (minitransformer.model.apply_rotary), in float64."""
    half = x.shape[-1] // 2
    angle = pos * base ** (-torch.arange(half, dtype=torch.float64) * 2 / x.shape[-1])  # (D/2,)
    x1, x2 = x[:half], x[half:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()])


# (head dim, position, base): the identity at 0, one pair, small and larger positions, another base
ROTARY_CASES = [dict(D=8, pos=0, base=10000.0), dict(D=2, pos=1, base=10000.0),
                dict(D=8, pos=3, base=10000.0), dict(D=32, pos=17, base=10000.0),
                dict(D=64, pos=100, base=10000.0), dict(D=6, pos=5, base=7.0)]


@exercise("09.rotate")
def _rotate(rotate) -> str:
    """rotate(x, pos, base) -> x rotated as the model's rotary embedding rotates position pos."""
    gen = torch.Generator().manual_seed(91)
    for case in ROTARY_CASES:
        x = torch.randn(case["D"], generator=gen, dtype=torch.float64)
        got = rotate(x.clone(), case["pos"], case["base"])
        want = _rotary_reference(x, case["pos"], case["base"])
        # atol: a reader may compute the angles in float32, as the model does
        what = f"D={case['D']}, pos={case['pos']}, base={case['base']:g}"
        expect_close(what, got, want, rtol=1e-5, atol=2e-5)
    return f"{len(ROTARY_CASES)} cases: position 0, a single pair (D = 2), positions up to 100, another base"
