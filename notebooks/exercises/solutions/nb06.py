"""Solutions to notebook 06's exercises, and the mistakes their checks must catch.

The first two are :func:`kernels.iocost.standard_attention_io` and
:func:`kernels.iocost.flash2_io` written out for one case each, so the arithmetic is on the page.
"""

from __future__ import annotations


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def standard_forward_io(N, N_k, d, block_r):
    t_r = _cdiv(N, block_r)  # row blocks of the two GEMMs; the last one may be ragged
    reads = (N * d                # Q: each row block once (S = Q K^T)
             + t_r * N_k * d      # K: streamed past every row block of Q
             + N * N_k            # S: read back by the softmax
             + N * N_k            # P: read by O = P V
             + t_r * N_k * d)     # V: streamed past every row block of O
    writes = N * N_k + N * N_k + N * d  # S, P, O
    return reads, writes


def fa2_forward_io(N, N_k, d, block_m, block_n, causal):
    keys = 0  # key rows loaded, summed over the Q blocks (one program each)
    for start in range(0, N, block_m):
        if not causal:
            keys += N_k
            continue
        last_query = min(start + block_m, N) - 1
        last_key = last_query + N_k - N  # bottom-right: the last key any query of the block sees
        if last_key >= 0:  # otherwise the block sees no key and its loop runs zero times
            n_blocks = last_key // block_n + 1  # K/V blocks 0 .. the one that holds last_key
            keys += min(n_blocks * block_n, N_k)  # a ragged last block moves only its rows
    reads = N * d + 2 * keys * d  # Q once; K and V for every K/V block each Q block visits
    writes = N * d + N            # O once, and one lse per row
    return reads, writes


def backward_over_forward(d, block_m, block_n, fwd_block_m):
    # N^2 coefficients: (programs per N) x (elements per row they stream).
    dkdv = (2 * d + 2) / block_n   # N / block_n programs, each streaming all N rows of Q, dO, lse, delta
    dq = 2 * d / block_m           # N / block_m programs, each streaming all N rows of K, V
    forward = 2 * d / fwd_block_m  # N / fwd_block_m programs, each streaming all N rows of K, V
    return (dkdv + dq) / forward


# ---------------------------------------------------------------------------------------------
# Mistakes
# ---------------------------------------------------------------------------------------------


def _std_no_output_write(N, N_k, d, block_r):
    """Forgets that O = P V is written to HBM."""
    reads, writes = standard_forward_io(N, N_k, d, block_r)
    return reads, writes - N * d


def _std_kv_once(N, N_k, d, block_r):
    """Counts K and V once, instead of once per row block of the GEMMs."""
    reads = N * d + 2 * N_k * d + 2 * N * N_k
    return reads, 2 * N * N_k + N * d


def _std_floor_blocks(N, N_k, d, block_r):
    """N // block_r row blocks: drops the ragged last block (and has none when block_r > N)."""
    t_r = N // block_r
    return N * d + 2 * t_r * N_k * d + 2 * N * N_k, 2 * N * N_k + N * d


def _std_s_p_once(N, N_k, d, block_r):
    """Counts S and P once each (written), forgetting that the next kernel reads them back."""
    t_r = _cdiv(N, block_r)
    return N * d + 2 * t_r * N_k * d, 2 * N * N_k + N * d


def _std_square(N, N_k, d, block_r):
    """Uses N for the keys too: right only when N == N_k."""
    return standard_forward_io(N, N, d, block_r)


def _fa2_kv_once(N, N_k, d, block_m, block_n, causal):
    """Counts K and V once, instead of once per Q block that visits them."""
    return N * d + 2 * N_k * d, N * d + N


def _fa2_no_output_write(N, N_k, d, block_m, block_n, causal):
    """Forgets the write of O (counts only lse)."""
    reads, _ = fa2_forward_io(N, N_k, d, block_m, block_n, causal)
    return reads, N


def _fa2_no_lse(N, N_k, d, block_m, block_n, causal):
    """Forgets the log-sum-exp the forward saves for the backward."""
    reads, _ = fa2_forward_io(N, N_k, d, block_m, block_n, causal)
    return reads, N * d


def _fa2_floor_blocks(N, N_k, d, block_m, block_n, causal):
    """N // block_m programs when not causal: drops the ragged last Q block's K/V reads."""
    if causal:
        return fa2_forward_io(N, N_k, d, block_m, block_n, causal)
    return N * d + 2 * (N // block_m) * N_k * d, N * d + N


def _fa2_top_left(N, N_k, d, block_m, block_n, causal):
    """Causal mask aligned top-left (query i sees keys j <= i): wrong when N != N_k."""
    keys = 0
    for start in range(0, N, block_m):
        last_key = min(start + block_m, N) - 1 if causal else N_k - 1  # forgets the offset N_k - N
        keys += min((last_key // block_n + 1) * block_n, N_k)
    return N * d + 2 * keys * d, N * d + N


def _fa2_padded_kv(N, N_k, d, block_m, block_n, causal):
    """Charges every K/V block its full block_n rows, though a ragged last block moves fewer."""
    keys = 0
    for start in range(0, N, block_m):
        last_key = (min(start + block_m, N) - 1 + N_k - N) if causal else N_k - 1
        if last_key >= 0:
            keys += (last_key // block_n + 1) * block_n
    return N * d + 2 * keys * d, N * d + N


def _fa2_exact_rows(N, N_k, d, block_m, block_n, causal):
    """Counts only the keys each query sees, row by row: the kernel loads whole K/V blocks."""
    if not causal:
        return fa2_forward_io(N, N_k, d, block_m, block_n, causal)
    keys_seen = sum(min(max(i + N_k - N + 1, 0), N_k) for i in range(N))
    return N * d + 2 * keys_seen * d, N * d + N


def _ratio_no_stats(d, block_m, block_n, fwd_block_m):
    """Forgets that the dK/dV kernel also streams lse and delta, one number per row."""
    return (2 * d / block_n + 2 * d / block_m) / (2 * d / fwd_block_m)


def _ratio_swapped_blocks(d, block_m, block_n, fwd_block_m):
    """Swaps the loops: divides the dK/dV kernel's stream by block_m and the dQ kernel's by block_n."""
    return ((2 * d + 2) / block_m + 2 * d / block_n) / (2 * d / fwd_block_m)


def _ratio_dq_only(d, block_m, block_n, fwd_block_m):
    """Counts only the dQ kernel, the one that loops like the forward."""
    return (2 * d / block_m) / (2 * d / fwd_block_m)


def _ratio_forward_blocks(d, block_m, block_n, fwd_block_m):
    """Uses the backward's block_m for the forward too, ignoring fwd_block_m."""
    return backward_over_forward(d, block_m, block_n, block_m)


def _ratio_no_do(d, block_m, block_n, fwd_block_m):
    """Forgets dO in the dK/dV kernel's stream (counts Q, lse, delta)."""
    return ((d + 2) / block_n + 2 * d / block_m) / (2 * d / fwd_block_m)


MISTAKES = {"standard_forward_io": [_std_no_output_write, _std_kv_once, _std_floor_blocks, _std_s_p_once,
                                    _std_square],
            "fa2_forward_io": [_fa2_kv_once, _fa2_no_output_write, _fa2_no_lse, _fa2_floor_blocks,
                               _fa2_top_left, _fa2_padded_kv, _fa2_exact_rows],
            "backward_over_forward": [_ratio_no_stats, _ratio_swapped_blocks, _ratio_dq_only,
                                      _ratio_forward_blocks, _ratio_no_do]}
