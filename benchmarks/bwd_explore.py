"""Where the backward's time goes, against FlexAttention's and cuDNN's backward (issue 20, step 1).

For each shape (bf16, 16k tokens per batch, model width 2048, head dims 64 and 128, causal and
not) this times, in one run and on the same inputs:

* ``ours``: ``kernels.flash_bwd.attention_backward`` with its launch table;
* ``ours_flexcfg``: the same kernels with FlexAttention's Hopper blocks (dK/dV 64 x 128 and dQ
  128 x 64, 8 warps, 3 stages: ``torch/_inductor/template_heuristics/triton.py``, "sm90");
* ``ours_streams``: the dK/dV and dQ kernels launched on two CUDA streams (``STREAMS`` in the
  config), so that they share the GPU the way FlexAttention's single launch (dK/dV programs and
  dQ programs in one grid) does;
* ``flex``, ``cudnn``: FlexAttention (compiled) and SDPA's cuDNN backend, backward only;

and, through ``torch.profiler``, each backward's time per kernel. Rows go to ``bwd_explore.csv``
(``--out``), the per-kernel breakdown to ``bwd_kernels.csv``.

Usage (GPU only): ``python -m benchmarks.bwd_explore --out DIR [--seqlens 1024 4096 16384]``;
``--sweep`` times the dK/dV configurations instead, ``--tma`` the tensor-descriptor loads
against the launch table (no FlexAttention), ``--warp-spec`` Triton's warp specialisation,
``--step8``, ``--step9``, ``--step10`` and ``--step12`` the variants of those steps of NOTES.md
(step 9: the orders of the kernels, dQ computing delta itself or running on a second stream;
step 10: dK/dV launched while dQ's last programs run; step 12: the exponent's offset loaded,
not computed, and the dK/dV blocks that favours); ``--varlen`` the packed backward against the
dense one (with ``--step12`` or ``--step13`` those steps' entries: step 13, descriptors made in
the kernel per sequence); ``--plot-only`` redraws the plots from the CSVs in ``--out`` (no GPU
needed).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_attention import flex_provider, flops
from benchmarks.results_csv import read_csv, run_meta, shape_bars, start_gpu_run, write_csv

TOKENS, MODEL_DIM = 16384, 2048


def flex_cfg() -> dict:
    cfg = dict(BLOCK_M=64, BLOCK_N=128, num_warps=8, num_stages=3)
    return dict(cfg, dq=dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3))


def kernel_times(fn, reps: int = 20) -> dict[str, float]:
    """Mean CUDA time per call of each kernel ``fn`` launches, in ms."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    times = collections.defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.name[:60]] += e.device_time / 1e3 / reps
    return dict(times)


def compiled_stats(jit_fn) -> list[str]:
    """Registers, spills and shared memory of each compiled specialisation of ``jit_fn``."""
    lines = []
    for caches in getattr(jit_fn, "device_caches", {}).values():
        for compiled in caches[0].values():
            try:
                compiled._init_handles()
            except Exception:  # noqa: BLE001 -- out of shared memory: no stats, the sweep says why
                continue
            meta = compiled.metadata
            lines.append(f"{jit_fn.__name__}: warps {meta.num_warps} stages {meta.num_stages} "
                         f"regs {compiled.n_regs} spills {compiled.n_spills} shared {meta.shared}")
    return lines


def shapes(args):
    return [(d, causal, n) for d in args.head_dims for causal in (False, True) for n in args.seqlens]


def problem(head_dim: int, causal: bool, n: int):
    """One shape's inputs (bf16, TOKENS tokens, MODEL_DIM wide), its forward and our backward:
    ``(batch, heads, q, k, v, do, band, scale, out, lse, (dq, dk, dv))``."""
    from kernels.band import Band
    from kernels.flash_bwd import attention_backward
    from kernels.flash_fwd import attention_forward

    torch.manual_seed(0)
    b, h = max(1, TOKENS // n), MODEL_DIM // head_dim
    q, k, v, do = (torch.randn(b, h, n, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    band, scale = Band.from_window((-1, -1), causal), head_dim ** -0.5
    out, lse = attention_forward(q, k, v, band, scale)
    ref = attention_backward(do, q, k, v, out, lse, None, band, scale)
    return b, h, q, k, v, do, band, scale, out, lse, ref


# dK/dV launch configurations tried by --sweep (dQ stays at its default), per head dim:
# BLOCK_M (streamed queries), BLOCK_N (resident keys), warps, stages, and flags: KV_B (k and v
# as the second operand), ATOMIC_DQ (dQ added up in the same kernel with atomics, no dQ kernel),
# ONE_HEAD=False (the run-time loop over a GQA group kept for one head, as before step 6), TMA
# (q and dO through tensor descriptors; not yet run on a GPU: bwd_sweep_3.csv predates it).
# None: the launch table.
SWEEP = {
    128: [None, ("table", dict(ONE_HEAD=False)),
          (32, 128, 8, 3, {}), (32, 128, 8, 2, {}), (64, 128, 8, 3, {}), (32, 64, 4, 3, {}),
          (64, 64, 4, 2, dict(KV_B=True)), (64, 64, 4, 2, {}), (64, 128, 8, 2, dict(ATOMIC_DQ=True)),
          ("table", dict(TMA=True)), (64, 128, 8, 3, dict(TMA=True))],
    64: [None, ("table", dict(ONE_HEAD=False)), (64, 64, 4, 2, dict(ATOMIC_DQ=True)),
         (32, 128, 8, 3, {}), (64, 128, 8, 3, {}), (64, 64, 4, 2, {}),
         ("table", dict(dq=dict(BLOCK_M=128, BLOCK_N=64, num_warps=8, num_stages=3))),
         ("table", dict(TMA=True))],
}


# --step8: the dQ kernel's tensor-descriptor loads and longest-first order (the default since
# step 8; LONGEST_FIRST=False is the order before), its blocks, and the dK/dV experiments that
# NOTES.md step 7 lists for the causal head-dim-128 backward, against the table and FlexAttention.
def _dq(bm, bn, w, s, **flags):
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, **flags)


STEP8 = {
    128: [None, ("table", dict(dq=dict(LONGEST_FIRST=False))), ("table", dict(dq=dict(TMA=True))),
          ("table", dict(dq=_dq(128, 64, 8, 4, TMA=True))), ("table", dict(dq=_dq(128, 128, 8, 2, TMA=True))),
          ("table", dict(dq=_dq(64, 64, 4, 3, TMA=True))),
          (64, 64, 4, 2, dict(KV_B=True, TMA=True, dq=dict(TMA=True))),
          (64, 128, 8, 3, dict(TMA=True, dq=dict(TMA=True))),
          (32, 64, 4, 3, dict(TMA=True, dq=dict(TMA=True)))],
    64: [None, ("table", dict(dq=dict(LONGEST_FIRST=False))), ("table", dict(dq=dict(TMA=True))),
         ("table", dict(TMA=True, dq=dict(TMA=True)))],
}

# --step8 --round 2: around the table step 8's first round chose (both kernels through
# descriptors, the causal head-dim-128 dK/dV at 64 x 64 KV_B): other dK/dV blocks with KV_B and
# descriptors (FlexAttention's 64 x 128 among them), and the dQ kernel's warps and blocks.
STEP8_2 = {
    128: [None, ("table", dict(dq=dict(LONGEST_FIRST=False))),
          (64, 64, 4, 3, dict(KV_B=True, TMA=True)), (64, 64, 8, 2, dict(KV_B=True, TMA=True)),
          (64, 128, 8, 3, dict(KV_B=True, TMA=True)), (64, 128, 8, 2, dict(KV_B=True, TMA=True)),
          (32, 128, 8, 3, dict(KV_B=True, TMA=True)),
          ("table", dict(dq=_dq(128, 64, 4, 3, TMA=True))), ("table", dict(dq=_dq(64, 128, 4, 3, TMA=True)))],
}


# --step9: the orders of the same kernels (flash_bwd.attention_backward): the dQ kernel computing
# delta itself and running first, no preprocess launch (OWN_DELTA); dQ on a second stream beside
# dK/dV (STREAMS), so that one kernel's programs fill the other's last wave; and both.
STEP9 = {d: [None, ("table", dict(dq=dict(OWN_DELTA=True))), ("table", dict(STREAMS=True)),
             ("table", dict(STREAMS=True, dq=dict(OWN_DELTA=True)))] for d in (128, 64)}


# --step10: the dK/dV kernel launched while the dQ kernel's last programs run (Hopper's
# programmatic dependent launch, flash_bwd._attn_bwd_dkdv): PDL=2 waits per query head, on
# counters the dQ programs increment. Step 10's run (bwd_step10.csv) also timed PDL=1, one wait
# for the whole dQ kernel after loading k and v; it was withdrawn in step 14 (it hangs in
# repeated calls, pdl_stress.csv) and attention_backward now refuses it.
STEP10 = {d: [None, ("table", dict(PDL=0))] for d in (128, 64)}  # the table: PDL=2


# --step12: the exponent's offset per query row (lse * log2(e), +inf for a row without keys)
# written by the dQ kernel beside delta and loaded by dK/dV as it is (LSE2, the default), against
# the step-11 table (LSE2=False: dK/dV computes it per block, 48 of 406 instructions of its loop
# at 64 x 128, 8 warps, head dim 128); and the dK/dV blocks that arrangement's loop favours
# (key rows across the tile, so one offset per column), FlexAttention's 64 x 128 among them.
_PDL = dict(PDL=2)
STEP12 = {
    128: [None, ("table", dict(LSE2=False)), (64, 128, 8, 3, dict(TMA=True, **_PDL)),
          (64, 128, 8, 2, dict(TMA=True, **_PDL)), (64, 128, 8, 3, dict(_PDL)),
          (64, 64, 4, 2, dict(TMA=True, **_PDL))],
    64: [None, ("table", dict(LSE2=False)), (64, 128, 8, 3, dict(TMA=True, **_PDL)),
         (64, 128, 8, 3, dict(_PDL)), (32, 128, 4, 3, dict(TMA=True, **_PDL))],
}


# --varlen: the backward of a packed batch (equal lengths, token-major as a QKV projection
# writes it) against the dense table's on the same values, dK/dV entries of the causal and full
# head-dim-128 tables and the step-7 pointer entry; dQ through descriptors or not.
VARLEN_AB = [None, (32, 64, 4, 3, dict(TMA=True)), (32, 64, 4, 3, dict(dq=dict(TMA=False))),
             (64, 64, 4, 2, dict(KV_B=True, TMA=False, dq=dict(TMA=False)))]


# --varlen --step12: the packed head-dim-128 entries again once the exponent offsets are loaded
# (LSE2): the packed table first, then the dense table's entries and descriptors in either kernel.
VARLEN_12 = [None, (64, 64, 4, 2, dict(KV_B=True, TMA=True, PDL=2, dq=dict(TMA=True))),
             (64, 64, 4, 2, dict(KV_B=True, PDL=2, dq=dict(TMA=True))),
             (32, 64, 4, 3, dict(TMA=True, PDL=2)), (32, 64, 4, 3, dict(PDL=2, dq=dict(TMA=True))),
             (64, 64, 4, 2, dict(KV_B=True, PDL=2))]


# --varlen --step13: descriptors made in the kernel for each sequence (SEQ_DESC; the packed
# table, None) against the step-12 packed entries: the causal head-dim-128 pointer entry, the
# host's descriptors over the (heads, total, d) view, and at head dim 64 dK/dV's q and dO through
# per-sequence descriptors too.
_SEQ = dict(TMA=True, SEQ_DESC=True)
VARLEN_13 = [None, (32, 64, 4, 3, dict(PDL=2, dq=dict(TMA=False))),
             ("table", dict(SEQ_DESC=False, dq=dict(SEQ_DESC=False))), ("table", _SEQ),
             (32, 64, 4, 3, dict(PDL=2, **_SEQ, dq=_SEQ))]


def varlen_ab(args, do_bench, entries=VARLEN_AB, packed_table=False, name="varlen_bwd.csv"):
    """Each of ``entries`` on the packed batch, timed against the dense table's backward in the
    same run (``vs_dense``), with the largest difference from the dense gradients; ``None`` is
    the dense launch table's entry, or with ``packed_table`` the packed one's."""
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.varlen import _layout

    rows = []
    for head_dim, causal, n in shapes(args):
        b, h, q, k, v, do, band, scale, out, lse, ref = problem(head_dim, causal, n)
        pack = [x.transpose(1, 2).reshape(b * n, h, head_dim).contiguous() for x in (q, k, v, do, out)]
        seqs = torch.arange(0, b * n + 1, n, device="cuda", dtype=torch.int32)
        layout = _layout(seqs, seqs, n, n)
        lse_packed = lse.transpose(0, 1).reshape(h, b * n).contiguous()  # (heads, total)
        t_dense = do_bench(lambda: attention_backward(do, q, k, v, out, lse, None, band, scale),  # noqa: B023
                           warmup=25, rep=100, return_mode="median")
        table = bwd_config(head_dim, torch.bfloat16, causal, packed=packed_table)
        for entry in entries:
            cfg = entry_config(entry, table)
            dq_cfg = cfg["dq"]
            def run(cfg=cfg):  # noqa: E306
                return attention_backward(pack[3], *pack[:3], pack[4], lse_packed, None, band, scale,
                                          layout, dict(cfg))
            try:
                got = run()
                diff = max((g.view(b, n, -1, head_dim).transpose(1, 2).float() - r.float()).abs().max().item()
                           for g, r in zip(got, ref))
                t = do_bench(run, warmup=25, rep=100, return_mode="median")
            except Exception as err:  # noqa: BLE001 -- a compile failure is a result here
                print(f"  {cfg}: {type(err).__name__}: {str(err)[:120]}", flush=True)
                continue
            blocks = ("{BLOCK_M}x{BLOCK_N} w{num_warps} s{num_stages}".format(**cfg)
                      + "".join(f" {k}={int(v)}" for k, v in cfg.items() if k in ("KV_B", "TMA", "SEQ_DESC")))
            label = blocks if entry is not None else "packed table " + blocks if packed_table else "table"
            label += f" | dq TMA={int(dq_cfg.get('TMA', False))}"
            label += " SEQ_DESC=1" if dq_cfg.get("SEQ_DESC") and dq_cfg.get("TMA") else ""
            rows.append(dict(head_dim=head_dim, causal=int(causal), seqlen=n, config=label,
                             ms=f"{t:.4f}", vs_dense=f"{t_dense / t:.3f}", max_abs_diff=f"{diff:.1e}"))
            print(rows[-1], flush=True)
        write_csv(args.out / name, run_meta(), rows)


# --tma: the tensor-descriptor loads against the launch table alone (no FlexAttention, whose
# compilation per shape would take most of a GPU call): ratios to the table, same run.
TMA_AB = {d: [None, ("table", dict(TMA=True)), (64, 128, 8, 3, dict(TMA=True)), (64, 128, 8, 3, {})]
          for d in (64, 128)}


def entry_config(entry, table: dict) -> dict:
    """The backward config of one entry of a sweep list: ``None`` (the launch table ``table``),
    ``("table", flags)`` or ``(BLOCK_M, BLOCK_N, warps, stages, flags)``; ``flags`` are the dK/dV
    kernel's, and their ``dq=`` changes the table's dQ config."""
    flags = dict(entry[-1]) if entry else {}
    dq_cfg = dict(table["dq"], **flags.pop("dq", {}))
    if entry is None or entry[0] == "table":
        return dict(table, **flags, dq=dq_cfg)
    bm, bn, w, s = entry[:4]
    return dict(BLOCK_M=bm, BLOCK_N=bn, num_warps=w, num_stages=s, dq=dq_cfg, **flags)


def sweep(args, flex, do_bench, entries=None, name="bwd_sweep.csv"):
    """Each dK/dV configuration of ``entries`` (default SWEEP; the launch table first) at each
    shape: the backward's time against the table's and, unless ``flex`` is None, against flex's in
    the same run, and the dK/dV kernel's registers and spills; rows to ``name`` in ``--out``."""
    from kernels import flash_bwd
    from kernels.flash_bwd import attention_backward, bwd_config

    rows = []
    for head_dim, causal, n in shapes(args):
        b, h, q, k, v, do, band, scale, out, lse, ref = problem(head_dim, causal, n)
        t_flex = float("nan")
        if flex is not None:
            leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
            out_flex = flex(*leaves, causal)
            t_flex = do_bench(lambda: torch.autograd.grad(out_flex, leaves, do, retain_graph=True),
                              warmup=25, rep=100, return_mode="median")
        table = bwd_config(head_dim, torch.bfloat16, causal)
        t_table = None
        for entry in (entries or SWEEP)[head_dim]:
            cfg = entry_config(entry, table)
            bm, bn, w, s = (cfg[x] for x in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"))
            kv_b, atomic_dq = cfg.get("KV_B", False), cfg.get("ATOMIC_DQ", False)
            one_head, tma = cfg.get("ONE_HEAD", True), cfg.get("TMA", False)
            seen = set(compiled_stats(flash_bwd._attn_bwd_dkdv))
            seen_dq = set(compiled_stats(flash_bwd._attn_bwd_dq))
            try:
                # the last block freed is lse's size, full of NaN: the next delta (torch.empty)
                # likely lands on it, so a dK/dV program reading delta before it is written
                # shows in max_rel_diff rather than reading an earlier call's equal values
                del_nan = torch.full_like(lse, float("nan"))
                del del_nan
                got = attention_backward(do, q, k, v, out, lse, None, band, scale, config=dict(cfg))
                errs = [((g.float() - r.float()).norm() / r.float().norm()).item()
                        for g, r in zip(got, ref)]
                t = do_bench(lambda: attention_backward(do, q, k, v, out, lse, None, band, scale,
                                                        config=dict(cfg)),  # noqa: B023
                             warmup=25, rep=100, return_mode="median")
            except Exception as err:  # out of shared memory, say
                print(f"  {cfg}: {type(err).__name__}: {str(err)[:80]}")
                continue
            t_table = t if t_table is None else t_table  # the first entry is the table
            stats = [x for x in compiled_stats(flash_bwd._attn_bwd_dkdv) if x not in seen]
            stats_dq = [x for x in compiled_stats(flash_bwd._attn_bwd_dq) if x not in seen_dq]
            dq = "" if atomic_dq else " ".join(
                ["{BLOCK_M}x{BLOCK_N} w{num_warps} s{num_stages}".format(**cfg["dq"])]
                + [f"{k}={int(v)}" for k, v in cfg["dq"].items()
                   if k.isupper() and not k.startswith("BLOCK")])
            rows.append(dict(head_dim=head_dim, causal=int(causal), seqlen=n,
                             table=int(entry is None), block_m=bm, block_n=bn, warps=w, stages=s,
                             dq=dq,
                             kv_b=int(kv_b), atomic_dq=int(atomic_dq), one_head=int(one_head),
                             tma=int(tma), streams=int(cfg.get("STREAMS", False)),
                             pdl=int(cfg.get("PDL", 0)),
                             lse2=int(flash_bwd.loads_lse2(cfg)),
                             ms=f"{t:.4f}",
                             vs_flex=f"{t_flex / t:.3f}", vs_table=f"{t_table / t:.3f}",
                             max_rel_diff=f"{max(errs):.1e}",
                             dkdv_stats=(stats[0].split(": ", 1)[1] if stats else ""),
                             dq_stats=(stats_dq[0].split(": ", 1)[1] if stats_dq else "")))
            print(f"d={head_dim} causal={int(causal)} N={n} {bm}x{bn} w{w} s{s} kv_b={int(kv_b)} "
                  f"atomic_dq={int(atomic_dq)} one_head={int(one_head)} streams={rows[-1]['streams']}: "
                  f"dq {dq}: {t_flex / t:.2f}x flex {t_table / t:.2f}x table  {rows[-1]['dkdv_stats']}"
                  f" | {rows[-1]['dq_stats']}",
                  flush=True)
        write_csv(args.out / name, run_meta(), rows)


def warp_spec(args, do_bench):
    """Triton's ``tl.range(..., warp_specialize=True)`` on the unmasked loop of the forward and
    of the dK/dV kernel (``WARP_SPEC``), against the launch table: does it compile on this GPU,
    does the compiled kernel hold warp-specialised partitions, and is it faster (same run)."""
    from kernels import flash_bwd, flash_fwd
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward, fwd_config

    def partitions(jit_fn, before):
        """Whether the specialisations compiled since ``before`` hold ttg.warp_specialize."""
        found = []
        for caches in getattr(jit_fn, "device_caches", {}).values():
            for key, compiled in caches[0].items():
                if key not in before:
                    found.append("ttg.warp_specialize" in compiled.asm.get("ttgir", ""))
        return any(found)

    def keys(jit_fn):
        return {key for caches in getattr(jit_fn, "device_caches", {}).values() for key in caches[0]}

    rows = []
    for head_dim, causal, n in shapes(args):
        b, h, q, k, v, do, band, scale, out, lse, ref = problem(head_dim, causal, n)
        for kind in ("fwd", "bwd"):
            if kind == "fwd":
                table = fwd_config(head_dim, torch.bfloat16, causal)
                jit_fn = flash_fwd._attn_fwd
                def run(cfg):  # noqa: E306
                    return attention_forward(q, k, v, band, scale, config=cfg)
                want = (out, lse)
            else:
                table = bwd_config(head_dim, torch.bfloat16, causal)
                jit_fn = flash_bwd._attn_bwd_dkdv
                def run(cfg):  # noqa: E306
                    return attention_backward(do, q, k, v, out, lse, None, band, scale,
                                              config=dict(cfg))
                want = ref
            t_table = do_bench(lambda: run(table), warmup=25, rep=100, return_mode="median")  # noqa: B023
            ws = dict(table, WARP_SPEC=True)
            before = keys(jit_fn)
            row = dict(head_dim=head_dim, causal=int(causal), seqlen=n, kernel=kind)
            try:
                got = run(ws)
                torch.cuda.synchronize()
            except Exception as err:  # noqa: BLE001 -- the point is to record what fails
                row.update(compiles=0, partitions="", speedup="", max_rel_diff="",
                           error=f"{type(err).__name__}: {str(err).splitlines()[0][:120]}")
            else:
                errs = [((g.float() - r.float()).norm() / r.float().norm()).item()
                        for g, r in zip(got, want) if r is not None]
                t_ws = do_bench(lambda: run(ws), warmup=25, rep=100, return_mode="median")  # noqa: B023
                row.update(compiles=1, partitions=int(partitions(jit_fn, before)),
                           speedup=f"{t_table / t_ws:.3f}", max_rel_diff=f"{max(errs):.1e}", error="")
            rows.append(row)
            print(row, flush=True)
            write_csv(args.out / "warp_spec.csv", run_meta(), rows)


def plot(out: Path) -> Path:
    """The backward's speed relative to FlexAttention's, per shape, for each variant of
    ``bwd_explore.csv`` and the kept ``KV_B`` configuration of ``bwd_sweep_2.csv`` (both in
    ``out``), and cuDNN's: ``bwd_explore.png`` beside them (``--plot-only DIR`` redraws it)."""
    meta, rows, _ = read_csv(out / "bwd_explore.csv")
    kept = {(r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_flex"])
            for r in read_csv(out / "bwd_sweep_2.csv")[1]
            if (r["block_m"], r["block_n"], r["warps"], r["stages"], r["kv_b"])
            == ("64", "64", "4", "2", "1")}
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    variants = ["ours", "ours_flexcfg", "ours_streams", "cudnn"]
    labels = {"ours": "ours before step 5", "ours_flexcfg": "ours, FlexAttention's blocks",
              "ours_streams": "ours, dK/dV and dQ on two streams", "cudnn": "cuDNN"}
    ratio = {(r["variant"], r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_flex"]) for r in rows}
    series = {("ours, KV_B 64x64 (kept for d=128 without a mask; other run)" if name == "kept"
               else labels[name]): [kept.get(s, float("nan")) if name == "kept" else ratio[(name, *s)]
                                    for s in shapes]
              for name in variants + ["kept"]}
    return ratio_bars(out / "bwd_explore.png", shapes, series, meta, ylim=1.8, ncol=3, step=5)


def ratio_bars(path: Path, shapes, series: dict, meta: dict, ylim: float, ncol: int, step: int) -> Path:
    """:func:`results_csv.shape_bars` of ratios to FlexAttention's backward, for ``step`` of
    NOTES.md."""
    return shape_bars(path, shapes, series, meta, ylabel="speed / FlexAttention's backward (same run)",
                      title=f"Backward on the H200, bf16, 16k tokens per batch: step {step} of "
                            "benchmarks/NOTES.md", ylim=ylim, ncol=ncol)


def fastest_bars(out: Path, name: str, picks: dict, png: str, step: int) -> Path:
    """:func:`ratio_bars` of the CSV ``name`` in ``out``: per shape and label of ``picks`` (label
    -> which rows), the fastest of the rows it picks."""
    meta, rows, _ = read_csv(out / name)
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    series = {label: [max((float(r["vs_flex"]) for r in rows
                           if (r["head_dim"], r["causal"], r["seqlen"]) == s and pick(r)),
                          default=float("nan")) for s in shapes]
              for label, pick in picks.items()}
    return ratio_bars(out / png, shapes, series, meta, ylim=1.4, ncol=2, step=step)


def plot_step6(out: Path) -> Path:
    """Step 6 of NOTES.md from ``bwd_sweep_3.csv`` in ``out``: per shape, the backward's speed
    relative to FlexAttention's with the launch table (the GQA loop compiled away for one head),
    the same with the run-time loop kept (``ONE_HEAD=False``), the fastest ``ATOMIC_DQ`` variant
    and the fastest other dK/dV configuration of the sweep: ``bwd_step6.png``."""
    picks = {  # label: which rows of a shape, the fastest of them is drawn
        "launch table (GQA loop compiled away, step 6)": lambda r: r["table"] == "1",
        "launch table, run-time GQA loop kept (before)": lambda r: r["one_head"] == "0",
        "fastest ATOMIC_DQ (one kernel, atomics)": lambda r: r["atomic_dq"] == "1",
        "fastest other dK/dV configuration": lambda r: (r["table"], r["one_head"], r["atomic_dq"])
        == ("0", "1", "0"),
    }
    return fastest_bars(out, "bwd_sweep_3.csv", picks, "bwd_step6.png", step=6)


def plot_step8(out: Path) -> list[Path]:
    """Step 8 of NOTES.md from ``bwd_step8.csv`` and ``varlen_bwd.csv`` in ``out``: per shape,
    the backward against FlexAttention's with the step-7 table, with the dQ kernel's
    descriptors added, and with the causal dK/dV entry step 8 chose (``bwd_step8.png``, one run);
    and the packed backward against the dense one for each entry timed (``varlen_bwd.png``)."""
    meta, rows, _ = read_csv(out / "bwd_step8.csv")
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    dkdv = ("block_m", "block_n", "warps", "stages", "kv_b", "tma")
    table = {(r["head_dim"], r["causal"], r["seqlen"]): r for r in rows if r["table"] == "1"}
    picks = {  # label: which row of a shape (the first that matches)
        "step-7 table": lambda r, t: r is t,
        "+ dQ's k, v through descriptors": lambda r, t: (
            [r[x] for x in dkdv] == [t[x] for x in dkdv] and r["dq"] == t["dq"] + " TMA=1"),
        "+ dK/dV 64x64 KV_B with descriptors (the step-8 causal d=128 entry)": lambda r, t: (
            [r[x] for x in dkdv] == ["64", "64", "4", "2", "1", "1"] and r["dq"] == t["dq"] + " TMA=1"),
    }
    series = {label: [next((float(r["vs_flex"]) for r in rows
                            if (r["head_dim"], r["causal"], r["seqlen"]) == s and pick(r, table[s])),
                           float("nan")) for s in shapes]
              for label, pick in picks.items()}
    paths = [ratio_bars(out / "bwd_step8.png", shapes, series, meta, ylim=1.4, ncol=3, step=8)]
    paths.append(varlen_bars(out, "varlen_bwd.csv", step=8))
    return paths


def varlen_bars(out: Path, name: str, step: int, table: str = "", ylim: float = 1.4) -> Path:
    """The packed backward against the dense one for each entry of ``--varlen``'s CSV ``name``
    in ``out``, per shape: the PNG of the same name beside it; ``table`` says what the packed
    table was in that run."""
    meta, rows, _ = read_csv(out / name)
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    ratio = {(r["config"], r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_dense"]) for r in rows}
    label = {c: "dense table (descriptors)" if c.startswith("table") else
             f"packed table of the run{table}" if c.startswith("packed table")
             else c for c in configs}
    series = collections.defaultdict(lambda: [float("nan")] * len(shapes))
    for (c, *shape), x in ratio.items():
        series[label[c]][shapes.index(tuple(shape))] = x
    return shape_bars(out / name.replace(".csv", ".png"), shapes, series, meta,
                      ylabel="packed backward speed / dense (same run)",
                      title=f"Packed (varlen) backward on the H200, bf16, equal lengths: step {step} "
                            "of benchmarks/NOTES.md", ylim=ylim, ncol=2)


def step9_order(row: dict) -> str:
    """Which of STEP9's orders a row of ``bwd_step9.csv`` timed."""
    own, streams = "OWN_DELTA=1" in row["dq"], row["streams"] == "1"
    return {(False, False): "step-8 table: preprocess, dK/dV, dQ",
            (True, False): "OWN_DELTA: dQ computes delta, then dK/dV (kept)",
            (False, True): "STREAMS: dQ on a second stream beside dK/dV",
            (True, True): "both"}[own, streams]


def plot_step9(out: Path) -> Path:
    """Step 9 of NOTES.md from ``bwd_step9.csv`` in ``out``: per shape, the backward against
    FlexAttention's in each order of the kernels (one run): ``bwd_step9.png``."""
    meta, rows, _ = read_csv(out / "bwd_step9.csv")
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    ratio = {(step9_order(r), r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_flex"]) for r in rows}
    orders = list(dict.fromkeys(step9_order(r) for r in rows))
    series = {o: [ratio[(o, *s)] for s in shapes] for o in orders}
    return ratio_bars(out / "bwd_step9.png", shapes, series, meta, ylim=1.4, ncol=2, step=9)


STEP10_NAMES = {0: "step-9 table: dQ (OWN_DELTA), then dK/dV", 1: "PDL=1: dK/dV waits for all of dQ",
                2: "PDL=2: dK/dV waits per query head"}


def plot_step10(out: Path) -> Path:
    """Step 10 of NOTES.md from ``bwd_step10.csv`` in ``out``: per shape, the backward against
    FlexAttention's with each ``PDL`` (one run): ``bwd_step10.png``."""
    meta, rows, _ = read_csv(out / "bwd_step10.csv")
    shapes = sorted({(r["head_dim"], r["causal"], r["seqlen"]) for r in rows},
                    key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    ratio = {(int(r["pdl"]), r["head_dim"], r["causal"], r["seqlen"]): float(r["vs_flex"]) for r in rows}
    present = {pdl for pdl, *_ in ratio}  # a run after step 14 has no PDL=1 rows
    series = {name: [ratio[(pdl, *s)] for s in shapes] for pdl, name in STEP10_NAMES.items()
              if pdl in present}
    return ratio_bars(out / "bwd_step10.png", shapes, series, meta, ylim=1.4, ncol=3, step=10)


def sweep_vs_flex(path: Path) -> dict:
    """{(dtype, head_dim, causal, seqlen): our backward's speed / FlexAttention's} of an
    ``attention_tflops*.csv`` sweep (CSV strings in the key)."""
    _, rows, _ = read_csv(path)
    ms = {(r["provider"], r["dtype"], r["head_dim"], r["causal"], r["seqlen"]): float(r["ms"])
          for r in rows if r["mode"] == "bwd"}
    return {k[1:]: ms[("flex", *k[1:])] / t for k, t in ms.items() if k[0] == "triton"}


def plot_sweeps(out: Path, runs: dict, name: str) -> Path:
    """The backward against FlexAttention's in each same-run sweep of ``runs`` (step -> an
    ``attention_tflops*.csv`` in ``out``; the last one's shapes and metadata), bf16 and fp16:
    the PNG ``name``."""
    ratios = {step: sweep_vs_flex(out / csv) for step, csv in runs.items()}
    last = list(runs)[-1]
    shapes = sorted({k[1:] for k in ratios[last]}, key=lambda s: (-int(s[0]), int(s[1]), int(s[2])))
    series = {f"{dtype}, {step}'s sweep": [ratio[(dtype, *s)] for s in shapes]
              for dtype in ("bf16", "fp16") for step, ratio in ratios.items()}
    meta, _, _ = read_csv(out / runs[last])
    steps = " and ".join(step.split()[-1] for step in runs)
    return shape_bars(out / name, shapes, series, meta,
                      ylabel="speed / FlexAttention's backward (same run)",
                      title=f"Backward on the H200, 16k tokens per batch: the sweeps of steps {steps} "
                            "of benchmarks/NOTES.md", ylim=1.4, ncol=4)


def plot_step12(out: Path) -> Path:
    """Step 12 of NOTES.md from ``bwd_step12.csv`` in ``out``: per shape, the backward against
    FlexAttention's with the table (dK/dV loads the exponent offset the dQ kernel stores,
    ``LSE2``), with ``LSE2=False`` (dK/dV computes it from lse, as before) and with the fastest
    other dK/dV entry of the run: ``bwd_step12.png``."""
    picks = {  # label: which rows of a shape, the fastest of them is drawn
        "table: dK/dV loads the offset dQ stored (LSE2, kept)": lambda r: r["table"] == "1",
        "LSE2=False: dK/dV computes it from lse (step 11)": lambda r: r["lse2"] == "0",
        "fastest other dK/dV entry (FlexAttention's blocks among them)": lambda r: (r["table"], r["lse2"])
        == ("0", "1"),
    }
    return fastest_bars(out, "bwd_step12.csv", picks, "bwd_step12.png", step=12)


# --plot-only: (the CSV a plot needs, what draws it from --out), beside bwd_explore.png
PLOTS = [
    ("bwd_sweep_3.csv", plot_step6),
    ("bwd_step8.csv", plot_step8),
    ("bwd_step9.csv", plot_step9),
    ("bwd_step10.csv", plot_step10),
    ("attention_tflops_step10_bwd.csv", lambda out: plot_sweeps(
        out, {"step 9": "attention_tflops_step9.csv", "step 10": "attention_tflops_step10_bwd.csv"},
        "bwd_step10_sweep.png")),
    ("bwd_step12.csv", plot_step12),
    ("varlen_step12.csv", lambda out: varlen_bars(out, "varlen_step12.csv", step=12,
                                                   table=" (step 8's pointer entries at d=128)")),
    ("varlen_step13.csv", lambda out: varlen_bars(out, "varlen_step13.csv", step=13,
                                                   table=" (SEQ_DESC wherever the dense table has TMA)",
                                                   ylim=1.9)),
    ("attention_tflops_step12_bwd.csv", lambda out: plot_sweeps(
        out, {"step 10": "attention_tflops_step10_bwd.csv", "step 12": "attention_tflops_step12_bwd.csv"},
        "bwd_step12_sweep.png")),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="directory for the CSVs and the PNG")
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    p.add_argument("--sweep", action="store_true", help="time the dK/dV configurations of SWEEP")
    p.add_argument("--plot-only", action="store_true",
                   help="redraw bwd_explore.png (and bwd_step6.png, bwd_step8.png, varlen_bwd.png, "
                        "bwd_step9.png, bwd_step10.png, bwd_step10_sweep.png, bwd_step12.png, "
                        "varlen_step12.png, bwd_step12_sweep.png) from the CSVs in --out")
    p.add_argument("--tma", action="store_true",
                   help="time TMA_AB's tensor-descriptor loads against the table (tma_ab.csv)")
    p.add_argument("--step8", action="store_true",
                   help="time STEP8's dQ and dK/dV variants against the table and flex (step8.csv)")
    p.add_argument("--step9", action="store_true",
                   help="time STEP9's kernel orders against the table and flex (step9.csv)")
    p.add_argument("--step10", action="store_true",
                   help="time STEP10's programmatic dependent launch against the table and flex (step10.csv)")
    p.add_argument("--step12", action="store_true",
                   help="time STEP12's exponent offsets and dK/dV blocks against the table and flex "
                        "(step12.csv)")
    p.add_argument("--step13", action="store_true",
                   help="with --varlen: VARLEN_13's per-sequence descriptors (varlen_step13.csv)")
    p.add_argument("--round", type=int, default=1, choices=[1, 2],
                   help="with --step8: STEP8 (1) or STEP8_2 (2, head dim 128; step8_2.csv)")
    p.add_argument("--varlen", action="store_true",
                   help="time VARLEN_AB's packed backward against the dense one (varlen_bwd.csv)")
    p.add_argument("--warp-spec", action="store_true",
                   help="try WARP_SPEC on the forward and dK/dV loops (warp_spec.csv)")
    args = p.parse_args(argv)
    if args.plot_only:
        print(f"wrote {plot(args.out)}")
        for needs, draw in PLOTS:  # each plot whose CSV is there
            if (args.out / needs).exists():
                drawn = draw(args.out)
                print("wrote " + ", ".join(map(str, drawn if isinstance(drawn, list) else [drawn])))
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench

    from kernels.flash_bwd import attention_backward, bwd_config

    start_gpu_run(p, args.out, "benchmarks.bwd_explore")
    if args.warp_spec:
        return warp_spec(args, do_bench)
    if args.varlen:
        if args.step12:
            return varlen_ab(args, do_bench, VARLEN_12, packed_table=True, name="varlen_step12.csv")
        if args.step13:
            return varlen_ab(args, do_bench, VARLEN_13, packed_table=True, name="varlen_step13.csv")
        return varlen_ab(args, do_bench)
    if args.tma:
        return sweep(args, None, do_bench, entries=TMA_AB, name="tma_ab.csv")
    flex = flex_provider()
    if args.sweep:
        return sweep(args, flex, do_bench)
    if args.step9:
        return sweep(args, flex, do_bench, entries=STEP9, name="step9.csv")
    if args.step10:
        return sweep(args, flex, do_bench, entries=STEP10, name="step10.csv")
    if args.step12:
        return sweep(args, flex, do_bench, entries=STEP12, name="step12.csv")
    if args.step8:
        if args.round == 2:
            return sweep(args, flex, do_bench, entries=STEP8_2, name="step8_2.csv")
        return sweep(args, flex, do_bench, entries=STEP8, name="step8.csv")
    rows, krows = [], []
    for head_dim, causal, n in shapes(args):
        b, h, q, k, v, do, band, scale, out, lse, ref = problem(head_dim, causal, n)
        table = bwd_config(head_dim, torch.bfloat16, causal)
        variants = {
            "ours": lambda: attention_backward(do, q, k, v, out, lse, None, band, scale),
            "ours_flexcfg": lambda: attention_backward(do, q, k, v, out, lse, None, band, scale,
                                                       config=flex_cfg()),
            "ours_streams": lambda: attention_backward(do, q, k, v, out, lse, None, band, scale,
                                                       config=dict(table, STREAMS=True)),
        }
        for name in ("ours_flexcfg", "ours_streams"):  # same answer, or the timing is moot
            got = variants[name]()
            for g, r in zip(got, ref):
                err = ((g.float() - r.float()).norm() / r.float().norm()).item()
                assert err < 1e-2, f"{name}: relative difference {err:.2e} from ours"
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out_flex = flex(*leaves, causal)
        variants["flex"] = lambda: torch.autograd.grad(out_flex, leaves, do, retain_graph=True)
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            out_cudnn = F.scaled_dot_product_attention(*leaves, is_causal=causal)
        variants["cudnn"] = lambda: torch.autograd.grad(out_cudnn, leaves, do, retain_graph=True)
        ms = {name: do_bench(fn, warmup=25, rep=100, return_mode="median")
              for name, fn in variants.items()}
        tf = flops(b, h, n, head_dim, causal, "bwd")
        for name, t in ms.items():
            rows.append(dict(head_dim=head_dim, causal=int(causal), seqlen=n, variant=name,
                             ms=f"{t:.4f}", tflops=f"{tf / t / 1e9:.1f}",
                             vs_flex=f"{ms['flex'] / t:.3f}", vs_cudnn=f"{ms['cudnn'] / t:.3f}"))
        print(f"d={head_dim} causal={int(causal)} N={n}: " + "  ".join(
            f"{name} {ms['flex'] / t:.2f}x" for name, t in ms.items()) + "  (vs flex)", flush=True)
        for name in ("ours", "flex", "cudnn"):
            for kern, t in kernel_times(variants[name]).items():
                krows.append(dict(head_dim=head_dim, causal=int(causal), seqlen=n, variant=name,
                                  kernel=kern, ms=f"{t:.4f}"))
        write_csv(args.out / "bwd_explore.csv", run_meta(), rows)
        write_csv(args.out / "bwd_kernels.csv", run_meta(), krows)
    from kernels import flash_bwd

    for fn in (flash_bwd._attn_bwd_dkdv, flash_bwd._attn_bwd_dq):
        print("\n".join(compiled_stats(fn)))


if __name__ == "__main__":
    main()
