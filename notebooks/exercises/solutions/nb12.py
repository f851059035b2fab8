"""Solutions to notebook 12's exercises, and the mistakes their checks must catch."""

from __future__ import annotations

import math


def attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    fwd = 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim  # two GEMMs: Q K^T and P V
    total = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}[mode] * fwd  # the backward: five GEMMs
    return total / 2 if causal else total  # the papers' convention: causal does half


def forward_intensity(seqlen, head_dim, block_m, dtype_bytes):
    n, d = seqlen, head_dim
    q_blocks = math.ceil(n / block_m)  # one program per Q block; the last one may be ragged
    elements = n * d + 2 * q_blocks * n * d + n * d  # Q once, K and V once per Q block, O once
    nbytes = elements * dtype_bytes + 4 * n  # plus one float32 lse per row
    return 4.0 * n * n * d / nbytes


def fits_in_smem(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    tiles = block_m * head_dim + 2 * num_stages * block_n * head_dim  # Q once; K and V per stage
    return tiles * dtype_bytes <= smem_bytes


def _flops_no_causal_half(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    """Forgets that a causal mask halves the work."""
    return attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, False, mode)


def _flops_backward_twice(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    """Counts the backward as 2x the forward (four GEMMs), not 2.5x (five, with S recomputed)."""
    fwd = 4.0 * batch * heads * seqlen_q * seqlen_k * head_dim
    total = {"fwd": 1.0, "bwd": 2.0, "fwd_bwd": 3.0}[mode] * fwd
    return total / 2 if causal else total


def _flops_one_gemm(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    """Counts 2 N^2 d for the forward: one of its two matrix products."""
    return attention_flops(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode) / 2


def _flops_square(batch, heads, seqlen_q, seqlen_k, head_dim, causal, mode):
    """Uses seqlen_q squared: wrong whenever there are not as many keys as queries."""
    return attention_flops(batch, heads, seqlen_q, seqlen_q, head_dim, causal, mode)


def _intensity_floor(seqlen, head_dim, block_m, dtype_bytes):
    """Counts seqlen // block_m Q blocks: misses the ragged last one."""
    n, d = seqlen, head_dim
    nbytes = (2 * n * d + 2 * (n // block_m) * n * d) * dtype_bytes + 4 * n
    return 4.0 * n * n * d / nbytes


def _intensity_kv_once(seqlen, head_dim, block_m, dtype_bytes):
    """Reads K and V once in all, as if one program held every query."""
    n, d = seqlen, head_dim
    return 4.0 * n * n * d / (4 * n * d * dtype_bytes + 4 * n)


def _intensity_lse_in_dtype(seqlen, head_dim, block_m, dtype_bytes):
    """Stores lse in the input dtype instead of float32."""
    n, d = seqlen, head_dim
    elements = 2 * n * d + 2 * math.ceil(n / block_m) * n * d + n
    return 4.0 * n * n * d / (elements * dtype_bytes)


def _fits_one_buffer_less(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    """Counts num_stages - 1 K/V buffers (the loads in flight), not num_stages."""
    return fits_in_smem(block_m, block_n, head_dim, num_stages - 1, dtype_bytes, smem_bytes)


def _fits_no_q(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    """Forgets the Q tile, which stays in shared memory for the whole loop."""
    return 2 * num_stages * block_n * head_dim * dtype_bytes <= smem_bytes


def _fits_k_only(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    """Counts the K tiles of each stage but not the V tiles."""
    return (block_m + num_stages * block_n) * head_dim * dtype_bytes <= smem_bytes


def _fits_bf16_always(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    """Ignores dtype_bytes: two bytes per element, also for fp32 inputs."""
    return fits_in_smem(block_m, block_n, head_dim, num_stages, 2, smem_bytes)


def _fits_strictly_less(block_m, block_n, head_dim, num_stages, dtype_bytes=2, smem_bytes=227 * 2**10):
    """Uses < instead of <=: a budget met to the byte does fit."""
    return (block_m + 2 * num_stages * block_n) * head_dim * dtype_bytes < smem_bytes


MISTAKES = {"attention_flops": [_flops_no_causal_half, _flops_backward_twice, _flops_one_gemm, _flops_square],
            "forward_intensity": [_intensity_floor, _intensity_kv_once, _intensity_lse_in_dtype],
            "fits_in_smem": [_fits_one_buffer_less, _fits_no_q, _fits_k_only, _fits_bf16_always,
                             _fits_strictly_less]}
