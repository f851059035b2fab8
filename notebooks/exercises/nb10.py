"""Checks for notebook 10 (linear attention): one chunk step of the chunked form, with the
normaliser (elu1, no decay) and with a decay (no feature map), carried over ragged chunks and
compared with the package's recurrence, ``kernels.linear_attention_recurrent``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import linear_attention_recurrent

from . import Mismatch, exercise, expect_close

# (head dim, chunk sizes): a chunk of one first, ragged sizes, an odd head dim. The package's
# recurrence takes q, k and v of one head dim, so d_v = d here.
CASES = [dict(d=4, chunks=[1, 5, 2]), dict(d=8, chunks=[7, 1, 3, 6]), dict(d=3, chunks=[4, 4, 4]),
         dict(d=16, chunks=[13, 2])]


def _qkv(case: dict, gen: torch.Generator):
    n = sum(case["chunks"])
    return tuple(torch.randn(1, 1, n, case["d"], generator=gen, dtype=torch.float64) for _ in range(3))


def _tuple(got, n: int, names: str, where: str):
    if not (isinstance(got, tuple) and len(got) == n):
        raise Mismatch(f"{where}: expected a tuple ({names})")
    return got


@exercise("10.chunk_step")
def _chunk_step(chunk_step) -> str:
    """chunk_step(q, k, v, S, z) -> (out, S, z): one chunk of elu1 linear attention, normalised."""
    gen = torch.Generator().manual_seed(10)
    for case in CASES:
        q, k, v = _qkv(case, gen)
        d = d_v = case["d"]
        phi_q, phi_k = F.elu(q[0, 0]) + 1, F.elu(k[0, 0]) + 1  # what the reader is given: (N, d)
        S, z = torch.zeros(d, d_v, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
        start = 0
        for c, size in enumerate(case["chunks"]):
            end = start + size
            where = f"d={d}, chunks {case['chunks']}: chunk {c} (tokens {start}..{end - 1})"
            want, state = linear_attention_recurrent(q[:, :, :end], k[:, :, :end], v[:, :, :end],
                                                     feature_map="elu1", return_state=True)
            got = chunk_step(phi_q[start:end].clone(), phi_k[start:end].clone(), v[0, 0, start:end].clone(),
                             S.clone(), z.clone())
            out, S, z = _tuple(got, 3, "out, S, z", where)
            # the recurrence adds 1e-6 to the denominator: far below rtol here
            expect_close(f"{where}: out", out, want[0, 0, start:end], rtol=1e-5, atol=1e-9)
            expect_close(f"{where}: new S", S, state[0, 0, :, :d_v], rtol=1e-9, atol=1e-12)
            expect_close(f"{where}: new z", z, state[0, 0, :, d_v], rtol=1e-9, atol=1e-12)
            start = end
    return f"{len(CASES)} sequences cut into ragged chunks (1 to 13 tokens), against the recurrence"


DECAYS = (1.0, 0.9, 0.5)


@exercise("10.chunk_step_decay")
def _chunk_step_decay(chunk_step_decay) -> str:
    """chunk_step_decay(q, k, v, H, g, scale) -> (out, H): one chunk of the kernel's core, with a decay."""
    gen = torch.Generator().manual_seed(11)
    for case in CASES:
        for g in DECAYS:
            q, k, v = _qkv(case, gen)
            d = d_v = case["d"]
            scale = 0.7  # not 1, and not the default 1 / sqrt(d): it must be applied once
            H = torch.zeros(d, d_v, dtype=torch.float64)
            start = 0
            for c, size in enumerate(case["chunks"]):
                end = start + size
                where = f"g={g}, d={d}, chunks {case['chunks']}: chunk {c} (tokens {start}..{end - 1})"
                # the decay as a float64 tensor: a Python float passes through float32 in the package
                want, state = linear_attention_recurrent(q[:, :, :end], k[:, :, :end], v[:, :, :end],
                                                         decay=torch.tensor([g], dtype=torch.float64),
                                                         feature_map=None, scale=scale, return_state=True)
                out, H = _tuple(chunk_step_decay(q[0, 0, start:end].clone(), k[0, 0, start:end].clone(),
                                                 v[0, 0, start:end].clone(), H.clone(), g, scale),
                                2, "out, H", where)
                expect_close(f"{where}: out", out, want[0, 0, start:end], rtol=1e-9, atol=1e-12)
                expect_close(f"{where}: new H", H, state[0, 0], rtol=1e-9, atol=1e-12)
                start = end
    return (f"{len(CASES)} sequences cut into ragged chunks, decays {', '.join(map(str, DECAYS))}, "
            "against the recurrence")
