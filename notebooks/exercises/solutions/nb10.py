"""Solutions to notebook 10's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import torch


def chunk_step(q, k, v, S, z):
    causal = torch.ones(len(q), len(q), dtype=torch.bool).tril()  # [C, C]: key j <= query i
    a = (q @ k.T).masked_fill(~causal, 0.0)  # [C, C]: phi(q_i) . phi(k_j) within the chunk
    num = q @ S + a @ v  # [C, d_v]: earlier chunks through the state, then this chunk's own keys
    den = q @ z + a.sum(dim=1)  # [C]: the same with v replaced by ones
    # update the state last: row i must not see the keys after it
    return num / den[:, None], S + k.T @ v, z + k.sum(dim=0)


def chunk_step_decay(q, k, v, H, g, scale):
    C = len(q)
    i = torch.arange(C, dtype=q.dtype)
    diff = i[:, None] - i[None, :]  # [C, C]: i - j
    d_intra = torch.where(diff >= 0, g ** diff.clamp(min=0), 0.0)  # g^(i-j) on and below the diagonal
    out = scale * ((g ** (i + 1))[:, None] * (q @ H) + ((q @ k.T) * d_intra) @ v)  # [C, d_v]
    k_decay = g ** (C - 1 - i)  # [C]: how much of k_j v_j^T is left at the chunk's end
    return out, g**C * H + (k * k_decay[:, None]).T @ v


def _chunk_noncausal(q, k, v, S, z):
    """Uses the whole C x C tile: row i sees the chunk's keys after it."""
    a = q @ k.T
    return (q @ S + a @ v) / (q @ z + a.sum(dim=1))[:, None], S + k.T @ v, z + k.sum(dim=0)


def _chunk_state_first(q, k, v, S, z):
    """Updates the state before computing the outputs: every row reads the whole chunk's keys."""
    S, z = S + k.T @ v, z + k.sum(dim=0)
    return (q @ S) / (q @ z)[:, None], S, z


def _chunk_strictly_causal(q, k, v, S, z):
    """Masks the diagonal too (j < i): a token does not see its own key."""
    a = (q @ k.T).tril(diagonal=-1)
    return (q @ S + a @ v) / (q @ z + a.sum(dim=1))[:, None], S + k.T @ v, z + k.sum(dim=0)


def _chunk_no_normaliser(q, k, v, S, z):
    """Forgets the normaliser: returns the numerator."""
    a = (q @ k.T).tril()
    return q @ S + a @ v, S + k.T @ v, z + k.sum(dim=0)


def _chunk_normaliser_without_z(q, k, v, S, z):
    """Divides by this chunk's weights only, forgetting z (the earlier chunks' keys)."""
    a = (q @ k.T).tril()
    return (q @ S + a @ v) / a.sum(dim=1)[:, None], S + k.T @ v, z + k.sum(dim=0)


def _decay_state_power_i(q, k, v, H, g, scale):
    """Weighs the carried state by g^i instead of g^(i+1): one decay step short for every row."""
    C = len(q)
    i = torch.arange(C, dtype=q.dtype)
    diff = i[:, None] - i[None, :]
    d_intra = torch.where(diff >= 0, g ** diff.clamp(min=0), 0.0)
    out = scale * ((g**i)[:, None] * (q @ H) + ((q @ k.T) * d_intra) @ v)
    return out, g**C * H + (k * (g ** (C - 1 - i))[:, None]).T @ v


def _decay_old_state_kept(q, k, v, H, g, scale):
    """Adds the chunk to the state without decaying the old state by g^C."""
    out, new = chunk_step_decay(q, k, v, H, g, scale)
    return out, new - g ** len(q) * H + H


def _decay_keys_one_too_many(q, k, v, H, g, scale):
    """Weighs k_j v_j^T by g^(C-j) instead of g^(C-1-j) in the new state."""
    out, _ = chunk_step_decay(q, k, v, H, g, scale)
    i = torch.arange(len(q), dtype=q.dtype)
    return out, g ** len(q) * H + (k * (g ** (len(q) - i))[:, None]).T @ v


def _decay_no_intra(q, k, v, H, g, scale):
    """Forgets the decay inside the chunk: the causal mask alone on the C x C tile."""
    C = len(q)
    i = torch.arange(C, dtype=q.dtype)
    out = scale * ((g ** (i + 1))[:, None] * (q @ H) + (q @ k.T).tril() @ v)
    return out, g**C * H + (k * (g ** (C - 1 - i))[:, None]).T @ v


MISTAKES = {"chunk_step": [_chunk_noncausal, _chunk_state_first, _chunk_strictly_causal, _chunk_no_normaliser,
                           _chunk_normaliser_without_z],
            "chunk_step_decay": [_decay_state_power_i, _decay_old_state_kept, _decay_keys_one_too_many,
                                 _decay_no_intra]}
