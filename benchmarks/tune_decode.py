"""Sweep split-KV decoding configurations (num_splits, BLOCK_N, warps, stages) on a GPU.

Prints the median time of each configuration and SDPA's in the same run, so that
``kernels.decode.decode_config`` / ``choose_num_splits`` can be set from measurements.
Usage (GPU only): ``python -m benchmarks.tune_decode``
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

import kernels.decode as decode
from benchmarks.results_csv import require_gpu
from kernels.band import Band


def main():
    require_gpu("tune_decode")
    from triton.testing import do_bench

    b, hq, hkv, d = 4, 32, 8, 128
    for length in (4096, 65536):
        q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(b, hkv, length, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        seqlens = torch.full((b,), length, dtype=torch.int32, device="cuda")
        sdpa = do_bench(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                        return_mode="median")
        gbytes = 2 * k.numel() * k.element_size() / 1e9
        print(f"L={length}: sdpa {sdpa * 1e3:.0f} us ({gbytes / sdpa:.2f} TB/s)")
        best = []
        for block_n, warps, stages, splits in itertools.product((64, 128), (4, 8), (2, 3, 4),
                                                                 (8, 16, 32, 64, 128)):
            cfg = dict(BLOCK_M=16, BLOCK_N=block_n, num_warps=warps, num_stages=stages)
            fn = lambda s=splits, cfg=cfg: decode.decode_forward(  # noqa: E731
                q, k, v, seqlens, Band(), d ** -0.5, num_splits=s, config=cfg)
            try:
                ms = do_bench(fn, return_mode="median")
            except Exception as e:  # out of shared memory, etc.
                print(f"  {cfg} splits={splits}: {type(e).__name__}")
                continue
            best.append((ms, block_n, warps, stages, splits))
        best.sort()
        for ms, block_n, warps, stages, splits in best[:8]:
            print(f"  BLOCK_N={block_n:>3} warps={warps} stages={stages} splits={splits:>3}: "
                  f"{ms * 1e3:6.0f} us ({gbytes / ms:.2f} TB/s, {sdpa / ms:.2f}x sdpa)")


if __name__ == "__main__":
    main()
