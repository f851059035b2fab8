"""Naive attention: the N x N matrix, materialised. The oracle every kernel is tested against.

What the reader will learn here: attention is three steps (scores, softmax, weighted sum), and the
middle one needs a whole row of scores at once. That is why this version writes the full
``(seqlen_q, seqlen_k)`` score and probability matrices to memory, and why FlashAttention exists.

The masks (causal, sliding window) are defined once, in :func:`attention_mask`, and the Triton
kernels implement exactly this predicate block by block.
"""

from __future__ import annotations

import torch

from ._checks import check_qkv, check_scale, check_window


def attention_mask(seqlen_q: int, seqlen_k: int, *, causal: bool = False, window_size=(-1, -1),
                   device=None) -> torch.Tensor:
    """Boolean ``(seqlen_q, seqlen_k)`` matrix: ``True`` where query i may attend to key j.

    Masks are aligned to the bottom-right corner (FlashAttention >= 2.1): with the offset
    ``off = seqlen_k - seqlen_q``, query i sits at key position ``i + off``, and it sees key j when
    ``i + off - left <= j <= i + off + right``. ``causal`` is ``right = 0``; -1 is unbounded.
    """
    left, right = check_window(window_size, causal)
    i = torch.arange(seqlen_q, device=device)[:, None]  # (Nq, 1)
    j = torch.arange(seqlen_k, device=device)[None, :]  # (1, Nk)
    diag = i + (seqlen_k - seqlen_q)  # the key each query is aligned with
    mask = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if left >= 0:
        mask &= j >= diag - left
    if right >= 0:
        mask &= j <= diag + right
    return mask


def attention_reference(q, k, v, *, causal=False, softmax_scale=None, window_size=(-1, -1),
                        return_lse=False):
    """Naive attention with the same signature and semantics as :func:`kernels.flash_attention`.

    Computes in the dtype of its inputs (pass float64 tensors for an oracle). Differentiable by
    autograd, with finite gradients even for query rows that see no key.

    Args:
        q: ``(batch, heads_q, seqlen_q, head_dim)``.
        k, v: ``(batch, heads_kv, seqlen_k, head_dim)``; ``heads_q`` a multiple of ``heads_kv``.
        causal: bottom-right aligned causal mask.
        softmax_scale: defaults to ``1 / sqrt(head_dim)``.
        window_size: ``(left, right)`` sliding window, -1 for unbounded.
        return_lse: also return the log-sum-exp of each row's scaled scores.

    Returns:
        ``out`` of shape ``(batch, heads_q, seqlen_q, head_dim)``, and with ``return_lse`` also
        ``lse`` ``(batch, heads_q, seqlen_q)`` in float32 (float64 for float64 inputs). A row that
        sees no key has output 0 and lse ``-inf``.
    """
    batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim = check_qkv(q, k, v)
    scale = check_scale(softmax_scale, head_dim)
    mask = attention_mask(seqlen_q, seqlen_k, causal=causal, window_size=window_size, device=q.device)
    group = heads_q // heads_kv
    if group > 1:  # GQA: each kv head serves `group` consecutive query heads
        k = k.repeat_interleave(group, dim=1)  # (B, Hq, Nk, D)
        v = v.repeat_interleave(group, dim=1)  # (B, Hq, Nk, D)

    # HBM traffic of this naive version, per (batch, head), in elements:
    #   scores:  read Q, K (2 N d), write S (N^2)
    #   softmax: read S, write P (2 N^2)
    #   output:  read P, V (N^2 + N d), write O (N d)
    # total 4 N d + 4 N^2 -- the N^2 terms are what FlashAttention removes.
    s = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, Hq, Nq, Nk)
    s = s.masked_fill(~mask, float("-inf"))
    # Safe softmax: subtract the row max (a constant per row, so it changes nothing but the
    # range of exp). Detached, since the result does not depend on it; 0 for rows with no key.
    if seqlen_k > 0:
        m = s.amax(dim=-1, keepdim=True).detach()  # (B, Hq, Nq, 1)
    else:  # no keys at all: every row is empty
        m = s.new_zeros(s.shape[:-1] + (1,))
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)  # masked entries: exp(-inf) = 0
    l = e.sum(dim=-1, keepdim=True)  # (B, Hq, Nq, 1)
    empty = l == 0  # rows that see no key
    p = e / torch.where(empty, torch.ones_like(l), l)
    out = torch.matmul(p, v)  # (B, Hq, Nq, D)
    if not return_lse:
        return out
    lse = torch.where(empty, torch.full_like(l, float("-inf")), m + torch.log(torch.where(empty, 1, l)))
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return out, lse.squeeze(-1).to(lse_dtype)


def attention_varlen_reference(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q=None,
                               max_seqlen_k=None, *, causal=False, softmax_scale=None,
                               window_size=(-1, -1), return_lse=False):
    """Packed attention the slow way: :func:`attention_reference` on each sequence in turn.

    Same signature and semantics as :func:`kernels.flash_attention_varlen` (the ``max_seqlen``
    arguments are accepted and unused). q ``(total_q, heads_q, d)``, k/v ``(total_k, heads_kv, d)``.
    """
    outs, lses = [], []
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        # (n, heads, d) -> (1, heads, n, d)
        qb, kb, vb = (t[lo:hi].transpose(0, 1).unsqueeze(0)
                      for t, lo, hi in ((q, cq[b], cq[b + 1]), (k, ck[b], ck[b + 1]),
                                        (v, ck[b], ck[b + 1])))
        out, lse = attention_reference(qb, kb, vb, causal=causal, softmax_scale=softmax_scale,
                                       window_size=window_size, return_lse=True)
        outs.append(out[0].transpose(0, 1))  # (n, heads, d)
        lses.append(lse[0])  # (heads, n)
    out = torch.cat(outs, dim=0)
    return (out, torch.cat(lses, dim=1)) if return_lse else out


def rel_err(x: torch.Tensor, ref: torch.Tensor, *, floor: float = 0.0) -> float:
    """``||x - ref|| / max(||ref||, floor)``, in float64: how far a result is from its reference.

    ``floor`` (default 0: the plain relative error) turns the error into an absolute one where
    the reference is (nearly) zero, e.g. a gradient that vanishes exactly (one visible key: the
    softmax of one score is constant, so dq and dk are 0), which would otherwise divide by zero.
    The tests floor at an RMS of 1e-2 per entry (``floor=1e-2 * sqrt(ref.numel())``).
    """
    x, ref = x.double(), ref.double()
    return ((x - ref).norm() / ref.norm().clamp_min(floor)).item()
