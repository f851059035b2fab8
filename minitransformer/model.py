"""A character-level Transformer language model whose attention is the project's FlashAttention.

What the reader will learn here: where attention sits in a language model, and why the kernel's
bottom-right causal alignment is exactly what generation with a key/value cache needs. Everything
else is the usual decoder-only recipe (as in nanoGPT's ``model.py``), kept small on purpose:

* a token embedding, tied to the output head (one matrix fewer, as in GPT-2 and nanoGPT);
* rotary position encoding: a query and a key are rotated by angles proportional to their
  positions, so their dot product depends only on the *distance* between them. That lets the cache
  roll past the training length: old keys keep their rotation and stay valid, and a sliding window
  of ``block_size`` keys keeps every distance within those seen in training;
* ``n_layer`` pre-LayerNorm blocks, each a **single-head** causal self-attention and an MLP, both
  added to the residual stream.

Attention runs on one of three backends with identical semantics, picked by ``Config.backend``:
``flash`` (our FlashAttention: the Triton kernel on CUDA tensors, its plain-PyTorch twin
``kernels.flash_attention_torch`` on any other device, where the kernel would only run in Triton's
interpreter, about 100 times slower), ``reference`` (the materialised N x N matrix) or ``sdpa``
(PyTorch's ``scaled_dot_product_attention``).

``Config.attention = "linear"`` swaps softmax attention for causal linear attention
(``kernels/linear_attn.py``): ``o_t = sum_s g^(t-s) phi(q_t).phi(k_s) v_s / sum_s g^(t-s) phi(q_t).phi(k_s)``
with ``phi(x) = elu(x) + 1``. Generation then carries one fixed-size state per layer instead of a
KV cache: O(1) per token, however long the text. The choices, and why:

* the ``elu1`` feature map *with* its normaliser: each output stays a weighted average of values,
  as with softmax, so the block needs nothing else to stay well scaled (the un-normalised RetNet
  form needs an extra normalisation of its output);
* a fixed decay ``g = Config.decay`` (0.95: a token's weight halves every ~14 characters): a
  single head without decay averages over the whole past with weights that depend only on
  content, which blurs; the decay is an explicit recency bias. Fixed rather than learned because
  the Triton kernel treats it as a constant (RetNet fixes its decays too). Measured on the
  default corpus (2 layers of width 64, context 128, 600 steps, CPU), validation loss: softmax
  1.92; linear with g = 1: 2.34, 0.98: 2.26, 0.95: 2.16, 0.9: 2.06, 0.8: 1.93, 0.7: 1.87. On a
  short budget the stronger recency bias wins (it is the locality softmax has to learn); the
  default keeps a memory of about a line of code, and ``--decay`` sets it;
* no rotary encoding: rotating q and k before ``phi`` makes the features depend on absolute
  positions, not distances. Measured (same runs, g = 0.9): rotary lowers the loss within the
  training context (1.98 instead of 2.06) but raises it beyond, at positions 512 to 1024
  (2.01 instead of 1.99), and generating past any length is the point of a recurrent state.
  Without it the decay and causality carry the order, the same at every position.

Backends for linear attention: ``flash`` runs the chunked Triton kernel; ``reference`` and
``sdpa`` run the plain-PyTorch parallel form (fast on a CPU at these sizes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn import functional as F
from tqdm import tqdm

from kernels import (
    MAX_HEAD_DIM,
    MIN_HEAD_DIM,
    attention_mask,
    attention_reference,
    attention_varlen_reference,
    flash_attention,
    flash_attention_torch,
    flash_attention_varlen,
    flash_attention_varlen_torch,
    flash_decode,
    flash_decode_torch,
    linear_attention,
    linear_attention_parallel,
    linear_attention_step,
)
from kernels.linear_attn import LINEAR_MAX_HEAD_DIM

BACKENDS = ("flash", "reference", "sdpa")
ATTENTIONS = ("softmax", "linear")


def check_decay(decay: float, cli: bool = False):
    """Linear attention's decay per token must be in (0, 1]; ``cli``: the message names the flag."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"{'--decay' if cli else 'decay'} must be in (0, 1] (1 = no decay), got {decay}")


def check_packing(attention: str, cli: bool = False):
    """Packed documents need softmax attention; ``cli``: the message names the flags."""
    if attention == "linear":
        needs = "--packed needs --attention softmax" if cli else "packed documents need softmax attention"
        raise ValueError(f"{needs}: linear attention would have to reset its state at every document start")


@dataclass
class Config:
    vocab_size: int = 96  # number of distinct characters; train.py sets it from the data
    block_size: int = 128  # context length: trained on, and the attention window when generating
    n_layer: int = 2  # number of Transformer blocks
    n_embd: int = 128  # width of the residual stream, and of the single attention head
    mlp_ratio: int = 4  # the MLP's hidden width is mlp_ratio * n_embd
    rope_base: float = 10000.0  # rotary frequencies are rope_base ** (-2i / n_embd)
    backend: str = "flash"  # attention: "flash" (our Triton kernel), "reference" or "sdpa"
    attention: str = "softmax"  # "softmax", or "linear": elu1 linear attention with a recurrent state
    decay: float = 0.95  # linear attention only: the state is multiplied by this at every token

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}: choose one of {', '.join(ATTENTIONS)}")
        check_decay(self.decay)
        if self.attention == "linear" and self.backend == "flash" and self.n_embd > LINEAR_MAX_HEAD_DIM:
            raise ValueError(f"n_embd must be <= {LINEAR_MAX_HEAD_DIM} for linear attention on the flash "
                             f"backend (it is the head dim of the single head), got {self.n_embd}")
        if not MIN_HEAD_DIM <= self.n_embd <= MAX_HEAD_DIM or self.n_embd % 2:
            raise ValueError(
                f"n_embd must be even and in [{MIN_HEAD_DIM}, {MAX_HEAD_DIM}] (it is the head dim "
                f"of the single head), got {self.n_embd}"
            )
        for name in ("vocab_size", "block_size", "n_layer", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def flash_for(x: torch.Tensor, kernel, twin):
    """The ``flash`` backend's implementation for ``x``'s device: the Triton ``kernel`` on CUDA
    tensors, the plain-PyTorch ``twin`` elsewhere (the same algorithm and semantics; without
    Triton, ``kernels`` gives the twin under both names)."""
    return kernel if x.is_cuda else twin


def packed_attention(q, k, v, backend: str, packing):
    """Causal attention within each document of rows that pack several documents.

    q, k, v: ``(B, 1, T, D)``; ``packing = (cu_seqlens, max_seqlen)`` over the flattened ``B * T``
    tokens (see ``data.packing_for``): token t attends to the tokens before it in its own document.
    """
    B, _, T, D = q.shape
    cu_seqlens, max_seqlen = packing
    qp, kp, vp = (t.reshape(B * T, 1, D) for t in (q, k, v))  # (B*T, 1, D): tokens, one head
    if backend == "flash":
        varlen = flash_for(q, flash_attention_varlen, flash_attention_varlen_torch)
        out = varlen(qp, kp, vp, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True)
    elif backend == "reference":
        out = attention_varlen_reference(qp, kp, vp, cu_seqlens, cu_seqlens, causal=True)
    else:  # sdpa takes a boolean mask: same document and not in the future
        lengths = cu_seqlens[1:] - cu_seqlens[:-1]  # (n_docs,)
        doc = torch.repeat_interleave(torch.arange(len(lengths), device=q.device), lengths).view(B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T)
        mask = (doc[:, :, None] == doc[:, None, :]) & causal  # (B, T, T)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1))  # (B, 1, T, D)
    return out.reshape(B, 1, T, D)


def attention(q, k, v, backend: str, window: int):
    """Causal single-head attention in which each query sees itself and the ``window - 1`` keys before it.

    q: ``(B, 1, Tq, D)``; k, v: ``(B, 1, Tk, D)`` with ``Tq <= Tk``: the queries are the *last* Tq
    positions of the keys (bottom-right alignment), so a single new query against a longer cache
    sees the whole cache. The window binds only when there are more than ``window`` keys, which
    never happens in training (``Tq == Tk <= window``) nor with the cache (it keeps ``window - 1``).
    """
    Tq, Tk = q.size(2), k.size(2)
    window_size = (window - 1, 0) if Tk > window else (-1, -1)  # (left, right) around the diagonal
    if backend == "flash" and Tq == 1 and Tk <= window:  # a generation step: split-KV decoding
        cache_seqlens = torch.full((q.size(0),), Tk, dtype=torch.int32, device=q.device)  # (B,)
        return flash_for(q, flash_decode, flash_decode_torch)(q, k, v, cache_seqlens, check_lengths=False)
    if backend == "flash":
        return flash_for(q, flash_attention, flash_attention_torch)(q, k, v, causal=True,
                                                                    window_size=window_size)
    if backend == "reference":
        return attention_reference(q, k, v, causal=True, window_size=window_size)
    # sdpa's is_causal is aligned top-left, which differs from ours when Tq != Tk: pass our mask
    # then. Its fast kernels only run without a mask: in training, where Tq == Tk.
    if Tq == Tk <= window:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = attention_mask(Tq, Tk, causal=True, window_size=window_size, device=q.device)  # (Tq, Tk)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def linear_attn(q, k, v, backend: str, decay: float, return_state: bool = False):
    """Causal linear attention over the whole of ``q, k, v`` ``(B, 1, T, D)`` (no window: the state
    summarises every earlier token); with ``return_state`` also the state after the last one."""
    fn = linear_attention if backend == "flash" else linear_attention_parallel  # chunked / N x N
    return fn(q, k, v, decay=decay, feature_map="elu1", return_state=return_state)


def rotary_angles(pos: torch.Tensor, dim: int, base: float):
    """cos and sin of the rotation angles ``pos * base ** (-2i / dim)``, each ``(T, dim / 2)``."""
    inv_freq = base ** (-torch.arange(0, dim, 2, device=pos.device, dtype=torch.float32) / dim)  # (D/2,)
    angles = pos.float()[:, None] * inv_freq[None, :]  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate the feature pairs ``(x[i], x[i + D/2])`` of ``x`` ``(B, 1, T, D)`` by the given angles."""
    x1, x2 = x.float().chunk(2, dim=-1)  # 2 x (B, 1, T, D/2)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, 1, T, D)
    return out.to(x.dtype)


@dataclass
class KVCache:
    """The rotated keys and the values of the last ``block_size - 1`` tokens seen, per layer."""

    k: list = field(default_factory=list)  # per layer: (B, 1, T_cache, D)
    v: list = field(default_factory=list)  # per layer: (B, 1, T_cache, D)
    pos: int = 0  # absolute position of the next token (it keeps counting past block_size)

    def extend(self, layer: int, k, v, keep: int):
        """Prepend the cached keys and values to this step's; remember the last ``keep`` of them."""
        if layer < len(self.k):
            k = torch.cat([self.k[layer], k], dim=2)  # (B, 1, T_cache + T, D)
            v = torch.cat([self.v[layer], v], dim=2)  # (B, 1, T_cache + T, D)
        else:  # the first call: nothing cached yet
            self.k.append(None)
            self.v.append(None)
        start = max(0, k.size(2) - keep)
        self.k[layer], self.v[layer] = k[:, :, start:], v[:, :, start:]  # (B, 1, <= keep, D)
        return k, v


@dataclass
class RecurrentState:
    """Linear attention's whole memory of the past, per layer: one ``(B, 1, D, D + 1)`` fp32
    matrix (``sum_s g^(t-s) phi(k_s) [v_s, 1]^T``; the last column feeds the normaliser), the same
    size after ten tokens or ten million. It takes the place of the :class:`KVCache`."""

    states: list = field(default_factory=list)  # per layer: (B, 1, D, D + 1)
    pos: int = 0  # absolute position of the next token


class SelfAttention(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.backend = config.backend
        self.window = config.block_size
        self.linear = config.attention == "linear"
        self.decay = config.decay

    def forward(self, x, cos, sin, cache: KVCache | RecurrentState | None = None, layer: int = 0,
                packing=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q, k, v = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)  # 3 x (B, 1, T, C): one head
        if self.linear:
            return self.c_proj(self._linear(q, k, v, cache, layer).squeeze(1))  # (B, T, C)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:  # the next token sees itself and the window - 1 keys before it
            k, v = cache.extend(layer, k, v, keep=self.window - 1)  # 2 x (B, 1, T_cache + T, C)
        if packing is not None:  # several documents per row: attention stays within each
            y = packed_attention(q, k, v, self.backend, packing)  # (B, 1, T, C)
        else:
            y = attention(q, k, v, self.backend, self.window)  # (B, 1, T, C)
        y = y.squeeze(1)  # (B, T, C)
        return self.c_proj(y)

    def _linear(self, q, k, v, state: RecurrentState | None, layer: int):
        """Linear attention, ``(B, 1, T, C)``. With a ``state``: a prompt is processed in parallel
        and leaves its final state behind; later tokens are steps of the recurrence against it."""
        if state is None:
            return linear_attn(q, k, v, self.backend, self.decay)
        if layer == len(state.states):  # the first call: nothing seen yet
            y, s = linear_attn(q, k, v, self.backend, self.decay, return_state=True)
            state.states.append(s)
            return y
        ys = []
        for t in range(q.size(2)):  # O(D^2) per token, whatever came before
            qt, kt, vt = q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]  # 3 x (B, 1, 1, C)
            y, state.states[layer] = linear_attention_step(qt, kt, vt, state.states[layer], decay=self.decay)
            ys.append(y)  # (B, 1, 1, C)
        return torch.cat(ys, dim=2)  # (B, 1, T, C)


class MLP(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None, layer=0, packing=None):
        x = x + self.attn(self.ln_1(x), cos, sin, cache, layer, packing)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: the same matrix reads and writes tokens
        self.apply(self._init_weights)
        # GPT-2's scaling: each block adds two projections to the residual stream, so shrink them
        # by sqrt(2 * n_layer) to keep its variance independent of depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> KVCache | RecurrentState:
        """What generation carries from one token to the next: keys and values for softmax
        attention, the recurrent state for linear attention."""
        return RecurrentState() if self.config.attention == "linear" else KVCache()

    def forward(self, idx, targets=None, cache: KVCache | RecurrentState | None = None, packing=None):
        """idx ``(B, T)`` token ids -> logits ``(B, T, vocab_size)`` and the mean cross-entropy.

        With a ``cache``, ``idx`` holds the tokens that follow those already in it: only they are
        computed, and the cache is extended. Without one, a sequence longer than ``block_size``
        gives the same logits as generation, since both use a sliding window of ``block_size``.
        ``packing = (cu_seqlens, max_seqlen)`` marks documents packed into the rows: attention then
        stays within each (``kernels.flash_attention_varlen``; softmax attention only).
        """
        B, T = idx.size()
        if packing is not None:
            check_packing(self.config.attention)
        start = cache.pos if cache is not None else 0
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        cos, sin = rotary_angles(pos, self.config.n_embd, self.config.rope_base)  # 2 x (T, C/2)
        x = self.wte(idx)  # (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, layer, packing)
        if cache is not None:
            cache.pos += T
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            flat = logits.float().reshape(B * T, -1)  # (B*T, V)
            loss = F.cross_entropy(flat, targets.reshape(B * T))  # targets (B*T,)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
                 use_cache: bool = True, generator: torch.Generator | None = None, progress: bool = False):
        """Append ``max_new_tokens`` sampled tokens to ``idx`` ``(B, T)``; returns ``(B, T + new)``.

        With ``use_cache`` each step runs the model on the one new token only, against the cached
        keys and values of the tokens before it: a ``(B, 1, 1, D)`` query and ``(B, 1, T_cache + 1, D)``
        keys, which the kernel's bottom-right causal alignment lets see every cached key. With
        linear attention the cache is the recurrent state instead (:class:`RecurrentState`).
        ``use_cache=False`` recomputes the whole sequence each step (the slow way, for checking).
        ``temperature=0`` picks the most likely token. ``progress`` shows a bar over the new tokens on
        stderr when generating takes more than two seconds (thousands of tokens take minutes on a CPU).
        """
        cache = self.new_cache() if use_cache else None
        new = idx  # the tokens the model has not seen yet
        # delay: a short sample prints nothing; mininterval: redrawing at most twice a second is free
        for _ in tqdm(range(max_new_tokens), desc="sampling", unit="token", disable=not progress, delay=2,
                      mininterval=0.5, leave=False):
            logits, _ = self(new if use_cache else idx, cache=cache)
            logits = logits[:, -1, :].float()  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits, dim=-1)  # (B, V)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(idx.device)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)  # (B, T + 1)
            new = nxt
        return idx
