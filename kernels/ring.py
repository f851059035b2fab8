"""Ring attention: exact attention over a sequence split across processes (context parallelism).

What the reader will learn here: how to attend over a sequence too long for one device without
ever holding all of it. The sequence is cut into W contiguous blocks of ``n`` positions, one per
rank of a process group: rank ``r`` holds the queries, keys and values of positions
``[r n, (r + 1) n)``. Every query needs every key, so the keys and values travel around a ring.
At step ``s`` rank ``r`` holds the key/value block of rank ``(r - s) mod W``; it starts passing that
block on to rank ``r + 1`` (and receiving the next one from rank ``r - 1``), and meanwhile runs the
ordinary kernel, :func:`kernels.flash_attention`, of its own queries against the block it holds.
After W steps each query has met every key. The W partial results are merged on the way with the
log-sum-exp algebra of the online softmax inside the kernel and of split-KV decoding
(``kernels/decode.py``), here one level further up:

    lse = logaddexp(lse_a, lse_b),    out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b.

A rank holds at most two key/value blocks at a time (the one it computes with, the one arriving),
so its memory is O(n) rather than O(W n), and each transfer hides behind a block of compute.

Causal attention: a block from a later rank lies wholly in the future of this rank's queries and is
skipped; the rank's own block is the diagonal one (``causal=True``: with as many keys as queries the
kernel's bottom-right alignment is the usual one) and the blocks of earlier ranks are wholly
visible (``causal=False``). Rank ``r`` thus computes ``r + 1`` blocks and the last rank W of them:
contiguous blocks balance the work badly. Giving each rank two blocks, ``i`` and ``2W - 1 - i``
("zigzag"), evens it out; not done here.

Backward: the gradient of one block needs, besides the block, only the row statistics of the
*whole* softmax: ``lse`` and ``delta = rowsum(dO * O)`` of the merged output. Handed the merged
``out`` and ``lse``, the kernel's backward computes block ``j``'s share of ``dq``, ``dk_j`` and
``dv_j`` exactly. So the ring runs again: ``dq`` stays at home, and ``dk_j``, ``dv_j`` travel with
their block, each rank adding its share, until they arrive back at their owner.

Two versions, the simple one first:

* :func:`ring_attention_allgather` gathers all keys and values onto every rank (O(W n) memory per
  rank, the transfer not hidden) and makes one kernel call; autograd does the rest.
* :func:`ring_attention` is the ring described above, with its own backward.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._checks import HAS_TRITON, KERNEL_DTYPES, check_causal, check_kernel_qkv, check_scale
from .band import Band

if HAS_TRITON:
    from .flash_attn import flash_attention
    from .flash_bwd import attention_backward
else:  # the plain-PyTorch twin has the same forward and backward (same arguments)
    from .flash_torch import attention_backward_torch as attention_backward
    from .flash_torch import flash_attention_torch as flash_attention


def merge_partials(out_a, lse_a, out_b, lse_b):
    """Merge two partial attentions of the same queries over disjoint sets of keys.

    Args:
        out_a, out_b: ``(batch, heads, seqlen, head_dim)``, each normalised over its own keys.
        lse_a, lse_b: ``(batch, heads, seqlen)``: the log-sum-exp of each row's scaled scores over
            those keys; ``-inf`` for a row that saw none (it then weighs nothing).

    Returns:
        ``(out, lse)`` over the union of the keys, ``out`` in float32. A row that saw no key on
        either side stays ``out = 0``, ``lse = -inf``.
    """
    lse = torch.logaddexp(lse_a, lse_b)  # (B, H, N)
    safe = torch.where(lse == float("-inf"), 0.0, lse)  # exp(-inf - 0) = 0, never exp(-inf + inf)
    out = (torch.exp(lse_a - safe).unsqueeze(-1) * out_a
           + torch.exp(lse_b - safe).unsqueeze(-1) * out_b)  # (B, H, N, D)
    return out, lse


# --------------------------------------------------------------------------------------------
# Checks and communication
# --------------------------------------------------------------------------------------------
def _check_inputs(q, k, v, group, causal, name: str):
    """The local checks, then the process group, then that every rank holds blocks of one shape
    and dtype (they travel into each other's buffers). Returns ``(rank, world_size)``."""
    check_kernel_qkv(q, k, v)
    check_causal(causal)
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"{name}: q and k, v must hold the same positions of the sequence (one block "
                         f"each), got seqlen {q.shape[2]} for q and {k.shape[2]} for k, v")
    if not dist.is_available():
        raise RuntimeError(f"{name}: this build of PyTorch has no torch.distributed")
    if group is None and not dist.is_initialized():
        raise RuntimeError(f"{name}: no process group; call torch.distributed.init_process_group "
                           "first (torchrun sets up its environment), or pass group=")
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError(f"{name}: this process is not a member of the given group")
    # One small all-gather: every rank learns every rank's shapes, so all raise together (none hangs).
    mine = torch.tensor([*q.shape, *k.shape, KERNEL_DTYPES.index(q.dtype)], device=q.device)  # (9,)
    everyone = [torch.empty_like(mine) for _ in range(world_size)]
    dist.all_gather(everyone, mine, group=group)
    if any(not torch.equal(theirs, everyone[0]) for theirs in everyone):
        described = "; ".join(
            f"rank {i}: q {tuple(t[:4].tolist())}, k, v {tuple(t[4:8].tolist())}, {KERNEL_DTYPES[int(t[8])]}"
            for i, t in enumerate(everyone))
        raise ValueError(f"{name}: every rank must hold blocks of one shape and dtype, got {described}")
    return rank, world_size


def _global_rank(group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def _pass_on(send: torch.Tensor, group, rank: int, world_size: int):
    """Start sending ``send`` to the next rank of the ring and receiving the previous rank's tensor
    of the same shape. Returns the receive buffer and the requests to wait on before using it."""
    recv = torch.empty_like(send)
    ops = [dist.P2POp(dist.isend, send, _global_rank(group, (rank + 1) % world_size), group),
           dist.P2POp(dist.irecv, recv, _global_rank(group, (rank - 1) % world_size), group)]
    return recv, dist.batch_isend_irecv(ops)


def _wait(requests):
    for request in requests:
        request.wait()


def _block_is_needed(causal: bool, src: int, rank: int) -> bool:
    return not causal or src <= rank  # with causal, a later rank's block is wholly in the future


# --------------------------------------------------------------------------------------------
# The ring, forward and backward
# --------------------------------------------------------------------------------------------
def _ring_forward(q, k, v, causal: bool, scale: float, group, rank: int, world_size: int):
    """Returns ``out`` (dtype of q) and ``lse`` (float32) of this rank's queries over all keys."""
    kv = torch.stack([k, v])  # (2, B, H_kv, n, D): one message per step
    out = torch.zeros(q.shape, device=q.device, dtype=torch.float32)  # (B, H, n, D)
    lse = torch.full(q.shape[:3], float("-inf"), device=q.device, dtype=torch.float32)  # (B, H, n)
    for step in range(world_size):
        src = (rank - step) % world_size  # the rank whose block we hold at this step
        if step + 1 < world_size:
            next_kv, requests = _pass_on(kv, group, rank, world_size)  # overlaps the kernel below
        if _block_is_needed(causal, src, rank):
            out_j, lse_j = flash_attention(q, kv[0], kv[1], causal=causal and src == rank,
                                           softmax_scale=scale, return_lse=True)
            out, lse = merge_partials(out, lse, out_j, lse_j)
        if step + 1 < world_size:
            _wait(requests)
            kv = next_kv
    return out.to(q.dtype), lse


def _ring_backward(dout, q, k, v, out, lse, causal: bool, scale: float, group, rank: int,
                   world_size: int):
    """Returns ``(dq, dk, dv)`` of this rank's blocks; runs the ring once more."""
    kv = torch.stack([k, v])  # (2, B, H_kv, n, D)
    dkv = torch.zeros(kv.shape, device=kv.device, dtype=torch.float32)  # travels with its block
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32)  # (B, H, n, D), stays here
    for step in range(world_size):
        src = (rank - step) % world_size
        if step + 1 < world_size:
            next_kv, requests = _pass_on(kv, group, rank, world_size)
        if _block_is_needed(causal, src, rank):
            # the merged out and lse: P and delta of the whole softmax, restricted to block src
            band = Band(-1, 0) if causal and src == rank else Band()  # causal on the diagonal
            dq_j, dk_j, dv_j = attention_backward(dout, q, kv[0], kv[1], out, lse, None, band, scale)
            dq += dq_j
            dkv[0] += dk_j
            dkv[1] += dv_j
        if step + 1 < world_size:
            _wait(requests)
            kv = next_kv
        # This rank's share is in; the block's gradient moves on with the block (waited for at
        # once: the next step adds to what arrives). After the W-th move it is back at the rank
        # that owns the block, with every rank's share added.
        dkv, requests = _pass_on(dkv, group, rank, world_size)
        _wait(requests)
    return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype)


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, group, rank, world_size):
        out, lse = _ring_forward(q, k, v, causal, scale, group, rank, world_size)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (causal, scale, group, rank, world_size)
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _ring_backward(dout.contiguous(), q, k, v, out, lse, *ctx.args)
        return dq, dk, dv, None, None, None, None, None


class _AllGatherSeq(torch.autograd.Function):
    """Concatenate every rank's block along seqlen, differentiably. The gradient of a gather is a
    reduce-scatter: each block receives the sum of what every rank's gradient says about it. Here
    an all-reduce (which every backend has, gloo included) followed by keeping our own slice."""

    @staticmethod
    def forward(ctx, x, group, rank, world_size):
        ctx.args = (group, rank, world_size)
        blocks = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(blocks, x.contiguous(), group=group)
        return torch.cat(blocks, dim=2)  # (B, H, W n, D)

    @staticmethod
    def backward(ctx, grad):
        group, rank, world_size = ctx.args
        grad = grad.contiguous().clone()  # all_reduce works in place
        dist.all_reduce(grad, group=group)
        n = grad.shape[2] // world_size
        return grad[:, :, rank * n:(rank + 1) * n], None, None, None


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def ring_attention_allgather(q, k, v, *, group=None, causal=False, softmax_scale=None):
    """Exact attention over a sequence split across ranks: gather all keys and values, then one
    :func:`~kernels.flash_attention` call. Simple, differentiable, O(W n) memory per rank.

    With ``causal``, rank ``r`` keeps the first ``(r + 1) n`` gathered keys; its queries sit at
    positions ``r n .. r n + n - 1`` of them, which is exactly the kernel's bottom-right alignment
    (query ``i`` sees key ``j`` when ``j <= i + (r + 1) n - n``).

    Args and Returns: as :func:`ring_attention`.
    """
    rank, world_size = _check_inputs(q, k, v, group, causal, "ring_attention_allgather")
    k_all = _AllGatherSeq.apply(k, group, rank, world_size)  # (B, H_kv, W n, D)
    v_all = _AllGatherSeq.apply(v, group, rank, world_size)
    if causal:  # the blocks of later ranks are wholly in the future
        k_all, v_all = k_all[:, :, :(rank + 1) * k.shape[2]], v_all[:, :, :(rank + 1) * v.shape[2]]
    return flash_attention(q, k_all, v_all, causal=causal, softmax_scale=softmax_scale)


def ring_attention(q, k, v, *, group=None, causal=False, softmax_scale=None):
    """Exact attention over a sequence split across the ranks of ``group``, the key/value blocks
    passed around a ring (see the module docstring). Differentiable in q, k and v.

    Every rank of the group must call it, with blocks of the same shape and dtype.

    Args:
        q: ``(batch, heads_q, n_local, head_dim)``: this rank's queries, positions
            ``[rank * n_local, (rank + 1) * n_local)`` of the whole sequence.
        k, v: ``(batch, heads_kv, n_local, head_dim)``: the keys and values of the same positions;
            ``heads_q`` a multiple of ``heads_kv`` (MQA/GQA).
        group: the ``torch.distributed`` process group over which the sequence is split, in rank
            order; ``None``: the default group.
        causal: each query sees the keys at its position and before, over the whole sequence.
        softmax_scale: multiplies ``q @ k^T``; defaults to ``1 / sqrt(head_dim)``.

    Returns:
        ``out`` ``(batch, heads_q, n_local, head_dim)`` in the dtype of q: this rank's block of
        the attention output over the whole sequence.
    """
    rank, world_size = _check_inputs(q, k, v, group, causal, "ring_attention")
    scale = check_scale(softmax_scale, q.shape[-1])
    return _RingAttention.apply(q, k, v, causal, scale, group, rank, world_size)


__all__ = ["merge_partials", "ring_attention", "ring_attention_allgather"]
