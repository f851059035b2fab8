"""Solutions to notebook 09's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_grad_norm_(grads, max_norm):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))  # one norm over every tensor
    if total > max_norm:  # below it, nothing changes
        for g in grads:
            g.mul_(max_norm / total)  # the same factor for all: the direction is kept
    return total


def next_token_loss(logits, tokens):
    vocab = logits.shape[-1]
    # the prediction made at position t is scored against the token at t + 1; the last has none
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1))


def rotate(x, pos, base):
    half = x.shape[-1] // 2
    angle = pos * base ** (-2 * torch.arange(half, dtype=x.dtype) / x.shape[-1])  # (D/2,)
    x1, x2 = x[:half], x[half:]  # pairs (x[i], x[i + D/2]), as apply_rotary
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()])


def _clip_per_tensor(grads, max_norm):
    """Clips each tensor to max_norm on its own: the global norm can stay above max_norm."""
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    for g in grads:
        n = g.norm()
        if n > max_norm:
            g.mul_(max_norm / n)
    return total


def _clip_always(grads, max_norm):
    """Rescales to max_norm even when the norm is below it (and divides 0 by 0 on zero gradients)."""
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    for g in grads:
        g.mul_(max_norm / total)
    return total


def _clip_no_sqrt(grads, max_norm):
    """Takes the sum of squares for the norm: forgets the square root."""
    total = sum((g.double() ** 2).sum() for g in grads)
    if total > max_norm:
        for g in grads:
            g.mul_(max_norm / total)
    return total


def _clip_returns_new_norm(grads, max_norm):
    """Clips correctly but returns the norm after clipping, not before."""
    clip_grad_norm_(grads, max_norm)
    return torch.sqrt(sum((g.double() ** 2).sum() for g in grads))


def _loss_no_shift(logits, tokens):
    """Scores the prediction at t against the token at t itself: no shift."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, vocab), tokens.reshape(-1))


def _loss_shift_backwards(logits, tokens):
    """Shifts the wrong way: the prediction at t + 1 against the token at t."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, 1:].reshape(-1, vocab), tokens[:, :-1].reshape(-1))


def _loss_naive_logsumexp(logits, tokens):
    """log(sum(exp(logits))) without subtracting the max: inf for large logits."""
    logits, targets = logits[:, :-1], tokens[:, 1:]
    picked = logits.gather(-1, targets[..., None]).squeeze(-1)
    return (torch.log(torch.exp(logits).sum(-1)) - picked).mean()


def _loss_sum(logits, tokens):
    """Sums the per-position losses instead of averaging them."""
    vocab = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab), tokens[:, 1:].reshape(-1), reduction="sum")


def _rotate_adjacent_pairs(x, pos, base):
    """Rotates adjacent pairs (x[2i], x[2i+1]) (GPT-J's layout), not the model's (x[i], x[i + D/2])."""
    half = x.shape[-1] // 2
    angle = pos * base ** (-2 * torch.arange(half, dtype=x.dtype) / x.shape[-1])
    x1, x2 = x[0::2], x[1::2]
    out = torch.empty_like(x)
    out[0::2], out[1::2] = x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()
    return out


def _rotate_backwards(x, pos, base):
    """Rotates by -angle: the sign of sin flipped."""
    return rotate(x, -pos, base)


def _rotate_frequency_i_over_d(x, pos, base):
    """Frequencies base ** (-i / D) instead of base ** (-2i / D)."""
    half = x.shape[-1] // 2
    angle = pos * base ** (-torch.arange(half, dtype=x.dtype) / x.shape[-1])
    x1, x2 = x[:half], x[half:]
    return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x1 * angle.sin() + x2 * angle.cos()])


MISTAKES = {"clip_grad_norm_": [_clip_per_tensor, _clip_always, _clip_no_sqrt, _clip_returns_new_norm],
            "next_token_loss": [_loss_no_shift, _loss_shift_backwards, _loss_naive_logsumexp, _loss_sum],
            "rotate": [_rotate_adjacent_pairs, _rotate_backwards, _rotate_frequency_i_over_d]}
