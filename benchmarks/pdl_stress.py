"""The backward called many times in a row, each case in a process of its own with a time
limit: does the launch of the dK/dV kernel during the dQ kernel's last wave (``PDL``, step 10)
ever stop the GPU? (issue 20, NOTES.md step 14)

The dK/dV kernel's programs wait on the GPU for the dQ kernel (``PDL=2``: each spins on its
query head's counter, then ``gdc_wait`` at its end; ``PDL=1``: ``gdc_wait`` before its loop). A
wait that never ends is a hang: no error, no trace, the process stuck. ``bwd_spread.py`` found
one, at ``PDL=1``, a variant no launch table takes. This runs each case ``--calls`` times (with
the L2 cleared between calls, as ``triton.testing.do_bench`` does), syncing every 250 calls, in a
child process that is killed after ``--timeout`` seconds; a killed case is reported ``hung``
with the calls it had finished. The cases: the launch tables, through the public functions
(dense and ragged packed batches, bf16 and fp16, head dims 64 and 128, causal and not), and
``PDL=0`` beside them at the shape where ``PDL=1`` stopped (see ``CASES``).

Rows go to ``pdl_stress.csv`` (case, status, calls done, seconds). GPU only:
``python -m benchmarks.pdl_stress --out DIR [--calls 10000] [--timeout 60]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results_csv import run_meta, start_gpu_run, write_csv

EVERY = 250  # calls between syncs
# ragged lengths of one packed batch: short ones, one of a single token, a prime, none a
# multiple of the block (16 384 tokens in all: bench_attention's TOKENS)
RAGGED = [1000, 1, 517, 2048, 1023, 3001, 64, 4093, 129, 2500, 2008]
# (name, dtype, head dim, causal, N or "ragged", launch-table overrides: None is the public path)
CASES = [(f"table {dt} d{d} {'causal' if c else 'full'} {n}", dt, d, c, n, None)
         for dt in ("bf16", "fp16") for d in (64, 128) for c in (False, True) for n in (1024,)]
CASES += [("table bf16 d128 full 4096", "bf16", 128, False, 4096, None),
          ("table bf16 d128 full ragged", "bf16", 128, False, "ragged", None),
          ("table bf16 d128 causal ragged", "bf16", 128, True, "ragged", None),
          ("PDL=0 bf16 d128 full 1024", "bf16", 128, False, 1024, dict(PDL=0))]
# The run of 2026-12-04 (results/h200/pdl_stress.csv, at commit 9740f7f) also had four PDL=1
# cases: bf16 d128 at N = 1024, unmasked (hung before its first 250 calls), causal (6000 done),
# unmasked without descriptors (hung) and with one pipeline stage (hung after 250). PDL=1 was then
# withdrawn, and attention_backward refuses it.


def backward_of(case):
    """The case's backward as a function of no arguments, on fresh random inputs."""
    import torch

    import kernels
    from benchmarks.bwd_spread import DTYPES, MODEL_DIM, TOKENS
    from kernels.band import Band
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward

    _, dtype_name, d, causal, n, overrides = case
    dtype = DTYPES[dtype_name]
    h = MODEL_DIM // d
    torch.manual_seed(0)
    if n == "ragged":
        cu = torch.tensor([0, *torch.tensor(RAGGED).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        q, k, v = (torch.randn(TOKENS, h, d, device="cuda", dtype=dtype, requires_grad=True)
                   for _ in range(3))
        out = kernels.flash_attention_varlen(q, k, v, cu, cu, max(RAGGED), max(RAGGED), causal=causal)
        do = torch.randn_like(out)
        return lambda: out.backward(do, retain_graph=True)
    q, k, v, do = (torch.randn(TOKENS // n, h, n, d, device="cuda", dtype=dtype) for _ in range(4))
    if overrides is None:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
        out = kernels.flash_attention(q, k, v, causal=causal)
        return lambda: out.backward(do, retain_graph=True)
    band, scale = Band.from_window((-1, -1), causal), d ** -0.5
    out, lse = attention_forward(q, k, v, band, scale)
    cfg = dict(bwd_config(d, dtype, causal), **overrides)
    return lambda: attention_backward(do, q, k, v, out, lse, None, band, scale, config=cfg)


def child(index: int, calls: int) -> None:
    """Run one case ``calls`` times; print the calls done every ``EVERY`` (after a sync)."""
    import torch

    fn = backward_of(CASES[index])
    fn()
    torch.cuda.synchronize()
    print("ready", flush=True)
    cache = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")
    for i in range(1, calls + 1):
        cache.zero_()
        fn()
        if i % EVERY == 0:
            torch.cuda.synchronize()
            print(f"calls {i}", flush=True)


def run_case(index: int, calls: int, timeout: float) -> dict:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.pdl_stress", "--child", str(index), "--calls", str(calls)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        status = "done" if proc.returncode == 0 else f"error (exit {proc.returncode})"
        out, err = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        status = "hung"
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = ""
    done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("calls ")]
    if status.startswith("error"):
        print(err[-2000:], file=sys.stderr)
    return dict(case=CASES[index][0], status=status, ready=int("ready" in out.split()),
                calls_done=done[-1] if done else 0, calls=calls,
                seconds=f"{time.perf_counter() - start:.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for pdl_stress.csv")
    p.add_argument("--calls", type=int, default=10000, help="backward calls per case [10000]")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as hung [60]")
    p.add_argument("--cases", nargs="+", type=int, help="indices into CASES [all]")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.calls)
    if args.calls < EVERY:
        p.error(f"--calls must be at least {EVERY}")
    if args.cases is not None and not all(0 <= i < len(CASES) for i in args.cases):
        p.error(f"--cases: indices from 0 to {len(CASES) - 1}, got {args.cases}")
    start_gpu_run(p, args.out, "pdl_stress")
    meta, rows = run_meta(calls=args.calls, timeout_s=args.timeout), []
    for i in args.cases if args.cases is not None else range(len(CASES)):
        rows.append(run_case(i, args.calls, args.timeout))
        r = rows[-1]
        print(f"{r['case']:<32} {r['status']:<8} {r['calls_done']:>6} of {r['calls']} calls in "
              f"{r['seconds']} s", flush=True)
        write_csv(args.out / "pdl_stress.csv", meta, rows)


if __name__ == "__main__":
    main()
