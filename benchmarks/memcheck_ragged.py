"""Every kernel on ragged shapes, small enough to run under ``compute-sanitizer``.

Edge blocks are where a tiled kernel reads or writes out of bounds: lengths of 1, primes, one
past a block size, queries longer or shorter than keys, empty sequences in a packed batch, caches
whose valid length ends mid-block, and offsets past the tensors passed unchecked
(``check_seqlens=False``), which the kernels must clamp. This script runs the forward and backward passes of
``flash_attention`` (causal or not, with and without a sliding window, MQA), ``flash_attention_varlen``,
``flash_decode`` and ``linear_attention`` on such shapes with the launch configurations of the GPU
it runs on, and checks each result against the float64 reference, so that a memory checker sees
every masked load and store of the real launches. Run it under the checker (GPU only)::

    compute-sanitizer --tool memcheck --error-exitcode 1 python3 -m benchmarks.memcheck_ragged

It exits non-zero on a wrong result; the checker exits non-zero on a bad access.
"""

from __future__ import annotations

import argparse
import sys

import torch

import kernels
from benchmarks.results_csv import require_gpu

TOL = 2e-2  # bf16 against float64


def check(name: str, outs, refs) -> bool:
    # ||ref|| floored at 1: some true gradients are exactly zero (one key: the softmax of one
    # score is constant; dq and dk vanish), and then the error is absolute.
    errs = [kernels.rel_err(a, b, floor=1.0) for a, b in zip(outs, refs)]
    ok = max(errs) < TOL
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max rel err {max(errs):.1e}", flush=True)
    return ok


def grads(fn, inputs, do):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(do.to(out.dtype))
    return [out, *(x.grad for x in leaves)]


def check_against(name: str, kernel, reference, inputs, do) -> bool:
    """Output and gradients of ``kernel`` on ``inputs`` against ``reference`` in float64."""
    return check(name, grads(kernel, inputs, do),
                 grads(reference, [x.double() for x in inputs], do.double()))


def dense_cases(dtype):
    ok = True
    shapes = [(1, 1), (17, 17), (97, 131), (131, 97), (129, 129), (1, 257), (200, 1)]
    for head_dim in (64, 128):
        for n_q, n_k in shapes:
            for causal, window in ((False, (-1, -1)), (True, (-1, -1)), (False, (31, 7))):
                torch.manual_seed(n_q * 1000 + n_k)
                q = torch.randn(2, 4, n_q, head_dim, device="cuda", dtype=dtype)
                k, v = (torch.randn(2, 2, n_k, head_dim, device="cuda", dtype=dtype) for _ in range(2))
                do = torch.randn_like(q)
                opts = dict(causal=causal, window_size=window)
                ok &= check_against(f"flash_attention d={head_dim} N_q={n_q} N_k={n_k} "
                                    f"causal={causal} window={window}",
                                    lambda a, b, c: kernels.flash_attention(a, b, c, **opts),
                                    lambda a, b, c: kernels.attention_reference(a, b, c, **opts),
                                    (q, k, v), do)
    return ok


def varlen_cases(dtype):
    ok = True
    batches = (([1, 0, 130, 17], [5, 3, 129, 64]), ([257, 1, 96], [257, 1, 96]))
    cases = [(lens_q, lens_k, causal, head_dim) for lens_q, lens_k in batches
             for causal in (False, True) for head_dim in (64, 128)]  # packed causal 128: own tile
    for lens_q, lens_k, causal, head_dim in cases:
        torch.manual_seed(sum(lens_q))
        cu_q = torch.tensor([0, *torch.tensor(lens_q).cumsum(0).tolist()], dtype=torch.int32,
                            device="cuda")
        cu_k = torch.tensor([0, *torch.tensor(lens_k).cumsum(0).tolist()], dtype=torch.int32,
                            device="cuda")
        q = torch.randn(sum(lens_q), 4, head_dim, device="cuda", dtype=dtype)
        k, v = (torch.randn(sum(lens_k), 2, head_dim, device="cuda", dtype=dtype) for _ in range(2))
        do = torch.randn_like(q)
        args = (cu_q, cu_k, max(lens_q), max(lens_k))
        ok &= check_against(
            f"flash_attention_varlen d={head_dim} lens_q={lens_q} lens_k={lens_k} causal={causal}",
            lambda a, b, c: kernels.flash_attention_varlen(a, b, c, *args, causal=causal),
            lambda a, b, c: kernels.attention_varlen_reference(a, b, c, *args, causal=causal),
            (q, k, v), do)
    return ok


def unchecked_offset_cases(dtype):
    """``check_seqlens=False`` / ``check_lengths=False`` with offsets and lengths past the
    tensors: the kernels clamp them, so the memory checker must see no access outside, and the
    batch is computed as the one of the clamped lengths (checked where that is a partition)."""
    ok = True
    total = 300
    # (cu_seqlens, max_seqlen, the lengths they clamp to, or None where sequences overlap)
    cases = (([0, 100, 5000], 4900, [100, 200]), ([-7, 100, total], 200, [100, 200]),
             ([0, 2**31 - 1, total], total, [total, 0]), ([0, 250, 40, 2**20], 2**20, None))
    for bad, max_seqlen, lengths in cases:
        for causal in (False, True):
            torch.manual_seed(max_seqlen)
            q, k, v = (torch.randn(total, 4, 128, device="cuda", dtype=dtype) for _ in range(3))
            do = torch.randn_like(q)
            cu_bad = torch.tensor(bad, dtype=torch.int32, device="cuda")
            name = f"flash_attention_varlen unchecked cu_seqlens={bad} causal={causal}"

            def kernel(a, b, c):
                return kernels.flash_attention_varlen(a, b, c, cu_bad, cu_bad, max_seqlen, max_seqlen,
                                                      causal=causal, check_seqlens=False)
            if lengths is None:  # overlapping sequences: no reference, only the memory checker's word
                grads(kernel, (q, k, v), do)
                torch.cuda.synchronize()
                print(f"ok   {name}: ran (overlapping sequences, no reference)", flush=True)
                continue
            cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                              device="cuda")
            ok &= check_against(name, kernel, lambda a, b, c: kernels.attention_varlen_reference(
                a, b, c, cu, cu, total, total, causal=causal), (q, k, v), do)
    q = torch.randn(3, 8, 1, 128, device="cuda", dtype=dtype)
    k, v = (torch.randn(3, 2, 500, 128, device="cuda", dtype=dtype) for _ in range(2))
    lengths = torch.tensor([-5, 700, 2**31 - 1], dtype=torch.int32, device="cuda")
    out = kernels.flash_decode(q, k, v, lengths, check_lengths=False)
    ref = kernels.flash_decode(q, k, v, lengths.clamp(0, 500))
    ok &= check("flash_decode unchecked cache_seqlens=[-5, 700, 2**31-1]", [out], [ref])
    return ok


def decode_cases(dtype):
    ok = True
    for max_len, lens in ((1, [1, 0, 1]), (300, [1, 299, 300, 0]), (8193, [8193, 4097, 17, 1])):
        for n_q in (1, 3):
            torch.manual_seed(max_len + n_q)
            b = len(lens)
            q = torch.randn(b, 8, n_q, 128, device="cuda", dtype=dtype)
            k, v = (torch.randn(b, 2, max_len, 128, device="cuda", dtype=dtype) for _ in range(2))
            seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
            out = kernels.flash_decode(q, k, v, seqlens, causal=True)
            for i, n in enumerate(lens):
                if n == 0:  # a sequence with no key gets zeros
                    empty_ok = bool((out[i] == 0).all())
                    print(f"{'ok  ' if empty_ok else 'FAIL'} flash_decode empty cache n_q={n_q}: zeros")
                    ok &= empty_ok
                    continue
                ref = kernels.attention_reference(q[i:i + 1].double(), k[i:i + 1, :, :n].double(),
                                                  v[i:i + 1, :, :n].double(), causal=True)
                ok &= check(f"flash_decode max_len={max_len} len={n} n_q={n_q}", [out[i:i + 1]], [ref])
    return ok


def linear_cases(dtype):
    ok = True
    for n in (1, 17, 97, 130):
        for feature_map, decay in ((None, 0.9), ("elu1", None)):
            torch.manual_seed(n)
            q, k, v = (torch.randn(2, 3, n, 64, device="cuda", dtype=dtype) for _ in range(3))
            do = torch.randn_like(q)
            opts = dict(decay=decay, feature_map=feature_map)
            ok &= check_against(f"linear_attention N={n} feature_map={feature_map}",
                                lambda a, b, c: kernels.linear_attention(a, b, c, **opts),
                                lambda a, b, c: kernels.linear_attention_parallel(a, b, c, **opts),
                                (q, k, v), do)
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    args = p.parse_args(argv)
    require_gpu("memcheck_ragged")
    ok = True
    for name in args.dtypes:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
        print(f"# {name}", flush=True)
        for cases in (dense_cases, varlen_cases, unchecked_offset_cases, decode_cases, linear_cases):
            ok &= cases(dtype)
    print("all results match the float64 references" if ok else "SOME RESULTS ARE WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
