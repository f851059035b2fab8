"""Causal linear attention with an optional per-head decay: recurrent, parallel and chunked (Triton).

What the reader will learn here: drop the softmax and attention becomes a running sum, so a
language model can generate with a state of fixed size instead of a growing KV cache, and train
in time linear in the sequence length. The price is expressiveness (no sharp, content-based
selection of a few keys), which the decay and the feature map partly buy back.

The recurrence, per head, with a scalar decay ``g`` in (0, 1] (``g = 1``: no decay; RetNet's
"retention", the simple-gated form of gated linear attention):

    S_t = g S_{t-1} + k_t v_t^T        the state: a (head_dim x head_dim) matrix, S_{-1} = 0
    o_t = scale * q_t^T S_t

Unrolled, ``o_t = scale * sum_{s <= t} g^(t-s) (q_t . k_s) v_s``: softmax attention with
``exp(q . k)`` replaced by ``q . k`` times a decay, and no row-wise normalisation. In matrix form

    O = ((scale Q K^T) * D) V,        D[t, s] = g^(t-s) for s <= t, 0 above the diagonal.

Three implementations of that one function, side by side in this file:

* :func:`linear_attention_recurrent`: the loop over ``t`` carrying ``S``. O(N d^2) work, but
  sequential: the generation form, where each new token costs O(d^2) whatever came before it
  (:func:`linear_attention_step` is one iteration; the state is the "compressed KV cache");
* :func:`linear_attention_parallel`: the masked N x N matrix form. O(N^2 d), fully parallel, the
  oracle of the tests; quadratic, like softmax attention;
* :func:`linear_attention`: chunked, in Triton. Cut the sequence into chunks of ``C`` tokens; within
  a chunk use the parallel form (a C x C tile on tensor cores), across chunks carry the state.
  For position ``t = cC + i`` (chunk ``c``, offset ``i``) and ``H_c`` the state after chunk c - 1:

      o_t     = scale * ( g^(i+1) q_t^T H_c  +  sum_{j <= i} g^(i-j) (q_t . k_{cC+j}) v_{cC+j} )
      H_{c+1} = g^C H_c  +  sum_{j < C} g^(C-1-j) k_{cC+j} v_{cC+j}^T

  O(N C d + N d^2) work: linear in N, with matrix products the GPU likes.

Feature map and normaliser, in plain PyTorch around the same core (``feature_map=``):

* ``"elu1"`` (Katharopoulos et al. 2020, "Transformers are RNNs"): ``phi(x) = elu(x) + 1 > 0``
  on q and k, and each output divided by its total weight, so that it is a weighted *average* of
  values as with softmax: ``o_t = sum_s D[t,s] phi(q_t).phi(k_s) v_s / sum_s D[t,s] phi(q_t).phi(k_s)``.
  The denominator needs no second kernel: append a column of ones to v and the core's last output
  column is exactly that sum. The state then has ``head_dim + 1`` columns: the last is
  ``z_t = sum_s g^(t-s) phi(k_s)``. ``scale`` cancels in the ratio. Numerator and denominator grow
  with N when there is no decay, so the kernel writes them in fp32 and the division is in fp32;
* ``None``: no feature map and no normaliser (RetNet's form, which pairs it with a decay and a
  normalisation of the output in the model).

Backward: linear attention, three times. With ``dO`` the gradient of the output,

    dQ = scale * ((dO V^T) * D)   K      causal:      state sum_s g^(t-s) v_s k_s^T carried forwards
    dK = scale * ((V dO^T) * D^T) Q      anti-causal: state sum_t g^(t-s) dO_t q_t^T carried backwards
    dV = scale * ((K Q^T) * D^T)  dO     anti-causal: state sum_t g^(t-s) q_t dO_t^T carried backwards

The first is the forward kernel on ``(dO, V, K)``. The other two are the forward kernel on
reversed sequences (``D^T`` read from the end is ``D``): the kernel has a ``REVERSE`` flag that
reads and writes row ``N - 1 - t`` instead of ``t``, so nothing is copied. One kernel, four
launches. (A fused dK/dV kernel would share the backward state and the loads of Q and dO: faster,
more code. The decay is a constant: it gets no gradient from the kernel.)

Grid: one program per (batch x head, block of value columns); the chunks of a sequence run in
order inside it, the state ``[head_dim, BLOCK_V]`` in fp32 registers. Splitting the value columns
bounds those registers and adds programs. This suits batch x heads >= the number of SMs; for one
long sequence of few heads, the faster layout (flash-linear-attention's ``chunk`` mode) first
writes every chunk's state to memory, then processes all chunks in parallel.

Precision: products accumulate in fp32 and the state stays fp32, also as an operand of the
product ``q . H`` (tf32 tensor cores): rounded to fp16 a sum over many tokens can pass 65504, and
rounded to bf16 it cost the backward's dq its accuracy on the GPU (see the kernel's comment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import (
    FLOAT_DTYPES,
    INTERPRET,
    KERNEL_DTYPES,
    MIN_HEAD_DIM,
    check_chunk_size,
    check_decay,
    check_feature_map,
    check_qkv,
    check_runs_here,
    check_scale_named,
)

try:
    import triton
    import triton.language as tl
except ImportError:  # macOS / Windows: the plain-PyTorch forms below still work
    triton = tl = None
else:
    from .tiles import grid, tile_ids  # the flash kernels' one-axis grid

FEATURE_MAPS = ("elu1", None)
LINEAR_MAX_HEAD_DIM = 128  # the kernel keeps a [head_dim, BLOCK_V] fp32 state in registers
DEFAULT_CHUNK = 64  # C: the C x C tile of the parallel form inside a chunk
NORMALISER_EPS = 1e-6  # added to the elu1 denominator (> 0 in exact arithmetic, tiny at worst)


def _jit(fn):
    """``triton.jit``, with one compiled kernel for every sequence length; without Triton the
    kernel is left a plain function that nothing calls."""
    if triton is None:
        return fn
    return triton.jit(do_not_specialize=["heads", "seqlen", "num_tiles"])(fn)


# --------------------------------------------------------------------------------------------
# The kernel: chunked causal linear attention, forwards or (REVERSE) backwards in time
# --------------------------------------------------------------------------------------------
@_jit
def _linear_attn_fwd(
    # pointers
    q_ptr, k_ptr, v_ptr, o_ptr,
    decay_ptr,  # (heads,) fp32, read only when HAS_DECAY
    # strides, one group per tensor, as (batch, head, row, dim)
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_on, stride_od,
    # sizes
    heads, seqlen, dim_k, dim_v,  # q, k are (.., dim_k); v, o are (.., dim_v)
    scale,  # multiplies q . k
    num_tiles,  # value blocks per (batch, head)
    # meta-parameters
    CHUNK: tl.constexpr,  # C: rows per chunk
    DIM_K: tl.constexpr,  # dim_k padded to a power of two >= 16
    BLOCK_V: tl.constexpr,  # value columns per program (a power of two >= 16)
    HAS_DECAY: tl.constexpr,  # g < 1 somewhere: apply the decay factors
    REVERSE: tl.constexpr,  # anti-causal: process row N - 1 - t as step t (the backward's dK, dV)
    UPCAST: tl.constexpr,  # convert loaded blocks to fp32 (the interpreter's bf16 dot is wrong)
    STATE_FP32: tl.constexpr,  # multiply q by the fp32 state as is (16-bit inputs: see below)
    PRECISION: tl.constexpr,  # "ieee" for fp32 inputs, "tf32" otherwise (ignored for 16-bit)
):
    pid_v, pid_bh = tile_ids(num_tiles)  # one grid axis: no 65535 limit on batch * heads
    off_b = (pid_bh // heads).to(tl.int64)
    off_h = (pid_bh % heads).to(tl.int64)
    q_ptr += off_b * stride_qb + off_h * stride_qh
    k_ptr += off_b * stride_kb + off_h * stride_kh
    v_ptr += off_b * stride_vb + off_h * stride_vh
    o_ptr += off_b * stride_ob + off_h * stride_oh

    offs_c = tl.arange(0, CHUNK)
    offs_k = tl.arange(0, DIM_K)
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_k = offs_k < dim_k
    mask_v = offs_v < dim_v

    # The decay factors are the same for every chunk: compute them once, in base 2.
    # [CHUNK, CHUNK]: D inside a chunk, g^(i-j) on and below the diagonal (0 above: see below)
    diff = (offs_c[:, None] - offs_c[None, :]).to(tl.float32)
    causal = diff >= 0
    if HAS_DECAY:
        log2_g = tl.math.log2(tl.load(decay_ptr + off_h).to(tl.float32))
        d_intra = tl.math.exp2(tl.maximum(diff, 0.0) * log2_g)
        # [CHUNK]: g^(i+1), how much of H_c row i sees; g^(C-1-j), how much of k_j v_j^T reaches H_{c+1}
        q_decay = tl.math.exp2((offs_c + 1).to(tl.float32) * log2_g)
        k_decay = tl.math.exp2((CHUNK - 1 - offs_c).to(tl.float32) * log2_g)
        chunk_decay = tl.math.exp2(CHUNK * log2_g)  # g^C: what is left of H_c after the chunk

    state = tl.zeros([DIM_K, BLOCK_V], dtype=tl.float32)  # H_c: fp32, never leaves the chip
    for start in range(0, seqlen, CHUNK):
        steps = start + offs_c  # positions in processing order
        mask_c = steps < seqlen
        rows = steps  # rows in memory
        if REVERSE:
            rows = seqlen - 1 - steps
        # [CHUNK, DIM_K], [DIM_K, CHUNK] (K^T, loaded transposed through the strides), [CHUNK, BLOCK_V]
        q = tl.load(q_ptr + rows[:, None] * stride_qn + offs_k[None, :] * stride_qd,
                    mask=mask_c[:, None] & mask_k[None, :], other=0.0)
        kt = tl.load(k_ptr + rows[None, :] * stride_kn + offs_k[:, None] * stride_kd,
                     mask=mask_c[None, :] & mask_k[:, None], other=0.0)
        v = tl.load(v_ptr + rows[:, None] * stride_vn + offs_v[None, :] * stride_vd,
                    mask=mask_c[:, None] & mask_v[None, :], other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        # [CHUNK, CHUNK]: the parallel form inside the chunk (padded rows have k = v = 0).
        # The causal mask selects (tl.where) rather than multiplies: 0 * nan is nan, and a
        # non-finite key at position j must not reach the rows before j.
        s = tl.dot(q, kt, input_precision=PRECISION)
        if HAS_DECAY:
            s = s * d_intra
        s = tl.where(causal, s, 0.0)
        # [CHUNK, BLOCK_V]: what the earlier chunks left in the state, then this chunk's own part
        # The state is a sum over every earlier token: it can outgrow fp16 (65504), and rounded
        # to bf16 it gave dq errors of 0.2-0.4 on an H100 (elu1 with a decay; the interpreter,
        # even rounding like the GPU, did not reproduce them). So 16-bit inputs meet it in fp32
        # (tf32 tensor cores: a 10-bit mantissa, at half bf16's rate, for one of three products).
        if STATE_FP32:
            o = tl.dot(q.to(tl.float32), state, input_precision="tf32")
        else:
            o = tl.dot(q, state.to(q.dtype), input_precision=PRECISION)
        if HAS_DECAY:
            o = o * q_decay[:, None]
        # A non-finite v[j, c] would reach every row of the chunk through the product (zero
        # weights times nan are nan). Rarely taken: multiply by the finite part, then mark rows
        # j.. of column c as the recurrence leaves them. Costs 0.84x speed on an H200; branch-free
        # forms were no faster and miscompiled by Triton 3.6 (benchmarks/NOTES.md).
        v_bad = (v * 0.0) != 0.0  # [CHUNK, BLOCK_V]: nan * 0 and inf * 0 are nan
        if tl.max(v_bad.to(tl.int32)) > 0:
            o = tl.dot(s.to(v.dtype), tl.where(v_bad, 0.0, v).to(v.dtype), o,
                       input_precision=PRECISION)
            o = tl.where(tl.cumsum(v_bad.to(tl.int32), 0) > 0, float("nan"), o)
        else:
            o = tl.dot(s.to(v.dtype), v, o, input_precision=PRECISION)
        tl.store(o_ptr + rows[:, None] * stride_on + offs_v[None, :] * stride_od,
                 (o * scale).to(o_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_v[None, :])
        # [DIM_K, BLOCK_V]: H_{c+1} = g^C H_c + sum_j g^(C-1-j) k_j v_j^T
        if HAS_DECAY:
            state = state * chunk_decay
            kt = (kt * k_decay[None, :]).to(v.dtype)
        state = tl.dot(kt, v, state, input_precision=PRECISION)


# --------------------------------------------------------------------------------------------
# Host side: config, launch, autograd
# --------------------------------------------------------------------------------------------
def padded_dim(dim: int) -> int:
    """A tile side as the kernel pads it: a power of two >= 16 (tl.dot's minimum). No Triton."""
    return max(16, 1 << (dim - 1).bit_length())


def kernel_config(dim_k: int, dim_v: int) -> dict:
    """Launch configuration: value columns per program, warps, pipeline stages (tunable)."""
    if INTERPRET:  # the interpreter's cost is per block op: one program per (batch, head)
        return dict(BLOCK_V=padded_dim(dim_v), num_warps=4, num_stages=1)
    d_k = padded_dim(dim_k)
    # Registers per program grow as the state [d_k, BLOCK_V] plus the [C, d_k] and [C, BLOCK_V] tiles.
    block_v = min(padded_dim(dim_v), 64 if d_k <= 128 else 32)
    return dict(BLOCK_V=block_v, num_warps=4 if d_k <= 64 else 8, num_stages=2)


def _chunked(q, k, v, decay, scale: float, chunk_size: int, reverse: bool = False, out_dtype=None):
    """``scale * ((Q K^T) * D) V`` by the chunked kernel (``D^T`` with ``reverse``): a
    ``(batch, heads, seqlen, dim_v)`` tensor in ``out_dtype`` (default q's dtype). Inputs are
    assumed validated."""
    batch, heads, seqlen, dim_k = q.shape
    dim_v = v.shape[-1]
    out = torch.empty(batch, heads, seqlen, dim_v, device=q.device, dtype=out_dtype or q.dtype)
    if out.numel() == 0:
        return out.zero_()
    cfg = kernel_config(dim_k, dim_v)
    tiles = triton.cdiv(dim_v, cfg["BLOCK_V"])
    _linear_attn_fwd[grid(tiles, batch * heads)](
        q, k, v, out, q if decay is None else decay,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, seqlen, dim_k, dim_v, scale, tiles,
        CHUNK=chunk_size, DIM_K=padded_dim(dim_k), BLOCK_V=cfg["BLOCK_V"], HAS_DECAY=decay is not None,
        REVERSE=reverse, UPCAST=INTERPRET and q.dtype == torch.bfloat16,
        STATE_FP32=q.dtype != torch.float32,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
    return out


class _ChunkedLinearAttention(torch.autograd.Function):
    """The core ``scale * ((Q K^T) * D) V``, differentiable in q, k and v (not in the decay).
    ``out_dtype``: fp32 where the output is a numerator and denominator that grow with the
    sequence (elu1 without decay), which a 16-bit output could overflow (fp16) or round."""

    @staticmethod
    def forward(ctx, q, k, v, decay, scale, chunk_size, out_dtype):
        ctx.save_for_backward(q, k, v, decay)
        ctx.scale, ctx.chunk_size = scale, chunk_size
        return _chunked(q, k, v, decay, scale, chunk_size, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx, do):
        q, k, v, decay = ctx.saved_tensors
        args = (decay, ctx.scale, ctx.chunk_size)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        do = do.to(q.dtype)
        dq = _chunked(do, v, k, *args) if need_q else None  # causal, state sum v k^T
        dk = _chunked(v, do, q, *args, reverse=True) if need_k else None  # state sum dO q^T, from the end
        dv = _chunked(k, q, do, *args, reverse=True) if need_v else None  # state sum q dO^T, from the end
        return dq, dk, dv, None, None, None, None


# --------------------------------------------------------------------------------------------
# What the three forms share: checks, the feature map and normaliser, the final state
# --------------------------------------------------------------------------------------------
def _check_inputs(q, k, v, decay, feature_map, scale, *, kernel: bool):
    """Validate; returns ``(decay as a (heads,) tensor or None, scale as a float)``."""
    limits = dict(dtypes=KERNEL_DTYPES, min_head_dim=MIN_HEAD_DIM, max_head_dim=LINEAR_MAX_HEAD_DIM) \
        if kernel else dict(dtypes=FLOAT_DTYPES)  # the plain-PyTorch forms take float64 and any size
    _, heads, heads_kv, seqlen, seqlen_k, head_dim = check_qkv(q, k, v, **limits)
    if heads_kv != heads:
        raise ValueError(f"k, v: linear attention here needs as many heads as q ({heads}), got {heads_kv}")
    if seqlen_k != seqlen:
        raise ValueError(f"k, v: causal self-attention needs seqlen {seqlen} (as q), got {seqlen_k}")
    check_feature_map(feature_map, FEATURE_MAPS)
    # the decay is used in fp32 (float64 in the float64 oracle)
    g = check_decay(decay, heads, q.device, dtype=_state_dtype(q.dtype))
    return g, check_scale_named(scale, head_dim, "scale")


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The state and the decay are fp32 for every input dtype, float64 in the float64 oracle."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _feature_map(q, k, v, feature_map):
    """``(phi(q), phi(k), v)``; with the normaliser, v gains a last column of ones."""
    if feature_map is None:
        return q, k, v
    ones = v.new_ones(*v.shape[:-1], 1)
    return F.elu(q) + 1, F.elu(k) + 1, torch.cat([v, ones], dim=-1)  # v: (B, H, N, D + 1)


def _normalise(out, feature_map, dtype):
    """Divide the numerator columns by the last (the denominator), in fp32 at least."""
    if feature_map is None:
        return out
    out = out.to(_state_dtype(dtype))
    return (out[..., :-1] / (out[..., -1:] + NORMALISER_EPS)).to(dtype)


def _decay_powers(decay, exponents, dtype):
    """``g^exponents`` per head: ``(heads, *exponents.shape)``, or None without a decay.
    Computed as ``exp(e * log g)``, in ``dtype`` (fp32 or float64)."""
    if decay is None:
        return None
    e = exponents.to(dtype)
    return torch.exp(e * torch.log(decay.to(dtype)).view(-1, *([1] * e.dim())))


def _final_state(k, v, decay):
    """The state after the last token, ``S_{N-1} = sum_s g^(N-1-s) k_s v_s^T``: one matmul,
    ``(batch, heads, dim_k, dim_v)`` in fp32 (float64 for float64 inputs); differentiable."""
    dtype = _state_dtype(k.dtype)
    k, v = k.to(dtype), v.to(dtype)
    seqlen = k.shape[2]
    w = _decay_powers(decay, torch.arange(seqlen - 1, -1, -1, device=k.device), dtype)  # (H, N)
    if w is not None:
        k = k * w[None, :, :, None]  # (B, H, N, Dk)
    return k.transpose(-2, -1) @ v  # (B, H, Dk, Dv)


# --------------------------------------------------------------------------------------------
# Public API: the recurrent form (and its step), the parallel form, the chunked kernel
# --------------------------------------------------------------------------------------------
def _step(q, k, v, state, decay, scale):
    """One step of the recurrence on feature-mapped inputs ``(B, H, 1, D*)``: ``(o, new state)``."""
    dtype = _state_dtype(q.dtype)
    kv = k.to(dtype).transpose(-2, -1) @ v.to(dtype)  # (B, H, Dk, 1) @ (B, H, 1, Dv): k_t v_t^T
    if state is None:
        state = kv
    else:
        state = (state if decay is None else decay.view(1, -1, 1, 1) * state) + kv
    o = (q.to(dtype) @ state) * scale  # (B, H, 1, Dv)
    return o, state


def linear_attention_step(q, k, v, state=None, *, decay=None, feature_map="elu1", scale=None):
    """One token of causal linear attention: the generation form, O(head_dim^2) per token.

    ``S_t = g S_{t-1} + phi(k_t) v_t^T`` and ``o_t = scale * phi(q_t)^T S_t`` (normalised with
    ``feature_map="elu1"``). The state replaces the whole KV cache: its size does not grow.

    Args:
        q, k, v: ``(batch, heads, 1, head_dim)``: the new token.
        state: ``(batch, heads, head_dim, head_dim + 1)`` with ``feature_map="elu1"`` (the last
            column sums the keys, for the normaliser), ``(batch, heads, head_dim, head_dim)``
            without; ``None`` before the first token. As returned by this function, or by the
            others with ``return_state=True``.
        decay, feature_map, scale: as in :func:`linear_attention`.

    Returns:
        ``(out, new_state)``: ``out`` ``(batch, heads, 1, head_dim)`` in q's dtype; ``new_state``
        in fp32 (float64 for float64 inputs).
    """
    g, scale = _check_inputs(q, k, v, decay, feature_map, scale, kernel=False)
    batch, heads, seqlen, head_dim = q.shape
    if seqlen != 1:
        raise ValueError(f"q, k, v: a step takes one token (seqlen 1), got seqlen {seqlen}")
    if state is not None:
        expected = (batch, heads, head_dim, head_dim + (feature_map is not None))
        if not isinstance(state, torch.Tensor):
            raise TypeError(f"state: expected a torch.Tensor or None, got {type(state).__name__}")
        if tuple(state.shape) != expected:
            raise ValueError(f"state: expected shape {expected} for feature_map={feature_map!r}, "
                             f"got {tuple(state.shape)}")
        if state.device != q.device:
            raise ValueError(f"state: expected it on {q.device} (as q), got {state.device}")
        state = state.to(_state_dtype(q.dtype))
    qf, kf, vf = _feature_map(q, k, v, feature_map)
    o, state = _step(qf, kf, vf, state, g, scale)
    return _normalise(o, feature_map, q.dtype), state


def linear_attention_recurrent(q, k, v, *, decay=None, feature_map="elu1", scale=None, return_state=False):
    """Causal linear attention as a loop over the tokens, carrying the state: the reference
    recurrence, and how generation runs. Plain PyTorch, any float dtype (float64 for an oracle).

    Arguments and result as in :func:`linear_attention`. Memory: the state, ``head_dim^2`` per
    head, whatever ``seqlen`` is; time: ``seqlen`` small sequential steps.
    """
    g, scale = _check_inputs(q, k, v, decay, feature_map, scale, kernel=False)
    qf, kf, vf = _feature_map(q, k, v, feature_map)
    state, outs = None, []
    for t in range(q.shape[2]):
        o, state = _step(qf[:, :, t:t + 1], kf[:, :, t:t + 1], vf[:, :, t:t + 1], state, g, scale)
        outs.append(o)  # (B, H, 1, Dv)
    if outs:
        out = torch.cat(outs, dim=2)  # (B, H, N, Dv)
    else:  # no tokens: empty output, zero state
        out = vf.new_zeros(vf.shape, dtype=_state_dtype(q.dtype))
        state = _final_state(kf, vf, g)
    out = _normalise(out, feature_map, q.dtype).to(q.dtype)
    return (out, state) if return_state else out


def decay_matrix(seqlen: int, decay=None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``D[t, s] = g^(t-s)`` for ``s <= t``, 0 above the diagonal: ``(seqlen, seqlen)`` without a
    decay (the causal mask as 0/1), ``(heads, seqlen, seqlen)`` with a ``(heads,)`` decay."""
    t = torch.arange(seqlen, device=device)
    dist = t[:, None] - t[None, :]  # (N, N): t - s
    causal = dist >= 0
    if decay is None:
        return causal.to(dtype)
    powers = _decay_powers(decay, dist.clamp(min=0), _state_dtype(dtype))  # (H, N, N)
    return torch.where(causal, powers, 0.0).to(dtype)


def linear_attention_parallel(q, k, v, *, decay=None, feature_map="elu1", scale=None, return_state=False):
    """Causal linear attention as one masked matrix product, ``((scale Q K^T) * D) V``: quadratic
    in ``seqlen`` like softmax attention, fully parallel, and the oracle of the tests. Plain
    PyTorch, any float dtype; differentiable (also in a ``decay`` tensor that requires grad).

    Arguments and result as in :func:`linear_attention`.
    """
    g, scale = _check_inputs(q, k, v, decay, feature_map, scale, kernel=False)
    qf, kf, vf = _feature_map(q, k, v, feature_map)
    # HBM traffic per (batch, head), in elements: read Q, K (2 N d), write A (N^2); read A, D (2 N^2),
    # write A * D (N^2); read it and V (N^2 + N d), write O (N d): 4 N d + 5 N^2. The chunked kernel
    # reads Q, K, V and writes O: 4 N d (plus 2 N d more per extra block of value columns).
    mask = decay_matrix(q.shape[2], g, device=q.device, dtype=q.dtype)  # (N, N) or (H, N, N)
    a = torch.matmul(qf, kf.transpose(-2, -1)) * scale  # (B, H, N, N)
    out = torch.matmul(a * mask, vf)  # (B, H, N, Dv)
    out = _normalise(out, feature_map, q.dtype)
    return (out, _final_state(kf, vf, g)) if return_state else out


def linear_attention(q, k, v, *, decay=None, feature_map="elu1", scale=None, chunk_size=None,
                     return_state=False):
    """Causal linear attention, chunked, in Triton: O(N) time and memory, differentiable in q, k, v.

    Args:
        q, k, v: ``(batch, heads, seqlen, head_dim)``, one dtype among float32, float16,
            bfloat16 (accumulation in fp32), ``head_dim`` from 8 to 128, any ``seqlen``.
        decay: ``None`` (no decay, ``g = 1``), a float, or a tensor ``(heads,)`` with values in
            (0, 1]: the state is multiplied by ``g`` at every token, so token ``s`` weighs
            ``g^(t-s)`` at position ``t``. A constant: the kernel gives it no gradient (use
            :func:`linear_attention_parallel` to learn it).
        feature_map: ``"elu1"``: ``phi(x) = elu(x) + 1`` on q and k, and the output normalised by
            its total weight (Katharopoulos et al.); ``None``: raw q, k and no normaliser (RetNet).
        scale: multiplies ``q . k``; defaults to ``1 / sqrt(head_dim)``. Cancels with ``"elu1"``.
        chunk_size: tokens per chunk, a power of two in [16, 128]; default 64.
        return_state: also return the state after the last token (computed in PyTorch as one
            matmul), to continue with :func:`linear_attention_step`.

    Returns:
        ``out`` ``(batch, heads, seqlen, head_dim)`` in the input dtype and, with
        ``return_state``, the state ``(batch, heads, head_dim, head_dim [+ 1 with elu1])`` in fp32.

    Without Triton (macOS, Windows) the same checks, then :func:`linear_attention_parallel` in
    fp32: the same function for finite inputs, in O(seqlen^2) memory (a NaN or inf reaches the
    earlier rows there, as the parallel form's zero weights times nan are nan).
    """
    g, scale = _check_inputs(q, k, v, decay, feature_map, scale, kernel=True)
    chunk_size = DEFAULT_CHUNK if chunk_size is None else check_chunk_size(chunk_size)
    if isinstance(decay, torch.Tensor) and decay.requires_grad:
        raise ValueError("decay: the chunked kernel gives the decay no gradient; pass decay.detach(), "
                         "or use linear_attention_parallel to learn it")
    if triton is None:  # macOS / Windows: the parallel form, in fp32 as the kernel accumulates
        out, *state = linear_attention_parallel(q.float(), k.float(), v.float(), decay=decay, scale=scale,
                                                feature_map=feature_map, return_state=True)
        return (out.to(q.dtype), *state) if return_state else out.to(q.dtype)
    check_runs_here(q)
    qf, kf, vf = _feature_map(q, k, v, feature_map)
    out_dtype = torch.float32 if feature_map is not None else q.dtype  # see _ChunkedLinearAttention
    out = _ChunkedLinearAttention.apply(qf, kf, vf, g, scale, chunk_size, out_dtype)
    out = _normalise(out, feature_map, q.dtype)
    return (out, _final_state(kf, vf, g)) if return_state else out


__all__ = [
    "decay_matrix",
    "kernel_config",
    "linear_attention",
    "linear_attention_parallel",
    "linear_attention_recurrent",
    "linear_attention_step",
]
