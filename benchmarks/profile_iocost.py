"""Measure the memory traffic of the Triton kernels with Nsight Compute, beside the IO model.

What this shows: ``kernels.iocost.flash2_kernels_io`` predicts the bytes each kernel moves
between the SMs and global memory. At the level of one kernel that memory is really L2, and on an
H100 the path has three places with counters:

1. **the SMs' end** (the model's "HBM traffic"): ``l1tex__m_xbar2l1tex_read_bytes``, the bytes L2
   delivers into the SMs, and ``sm__sass_data_bytes_mem_global_op_st``, the bytes the store
   instructions write. ``l1tex__m_l1tex2xbar_write_bytes`` is the same writes in whole 32-byte
   sectors, which is more when a warp's stores scatter over many sectors.
2. **the L2 slices**: ``lts__t_sectors_srcunit_tex_op_{read,write}`` (32 bytes per sector). On
   Hopper an L2 Request Coalescer (``lrc__``) sits in front of them and merges identical reads
   that several SMs issue at once, so the slices can see fewer reads than the SMs receive.
3. **DRAM**: ``dram__bytes_{read,write}``, only what L2 misses or evicts. The model for it is
   ``kernels.iocost.flash2_dram_io``: K and V of a head stay in L2 while its Q blocks pass.

How it works: one ``ncu`` run profiles one driver process (this file with ``--driver``), which
compiles every configuration first (warm-up, outside the profiled range), then runs each
configuration once inside ``cudaProfilerStart/Stop`` (``--profile-from-start off``). ncu keeps
only the kernels whose names start with ``_attn_`` (PyTorch's own kernels are never counted) and
reports one CSV row per launch, in launch order; the driver's manifest says which configuration
and kernel each row is. Counters the local ncu does not know are left out with a warning.

Run on the GPU machine, from the repository root (about 2 minutes on an H100)::

    python -m benchmarks.profile_iocost --out benchmarks/results

Writes to ``--out``: ``iocost_ncu.csv`` (one row per kernel launch: configuration, counters,
model predictions, device, date, versions), ``iocost_ncu_raw.csv`` (ncu's own output) and
``iocost_ncu.png``. ``--quick`` profiles two sequence lengths only.
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.results_csv import run_meta, start_gpu_run, write_csv
from kernels import iocost

ROOT = Path(__file__).resolve().parents[1]

SECTOR_BYTES = 32  # L2 sectors are 32 bytes
KERNEL_REGEX = "regex:^_attn_"
# Counters per kernel launch: CSV column -> (ncu metric, factor to bytes or base units). A metric
# may name alternatives, "a|b": the first one this ncu knows is used.
METRICS = {
    # 1. the SMs' end of the crossbar
    "sm_read_bytes": ("l1tex__m_xbar2l1tex_read_bytes.sum", 1),
    "sm_write_bytes": ("sm__sass_data_bytes_mem_global_op_st.sum"
                       "|smsp__sass_data_bytes_mem_global_op_st.sum", 1),
    "sm_write_sector_bytes": ("l1tex__m_l1tex2xbar_write_bytes.sum", 1),
    # 2. the L2 slices, and the request coalescer in front of them
    "lts_read_bytes": ("lts__t_sectors_srcunit_tex_op_read.sum", SECTOR_BYTES),
    "lts_write_bytes": ("lts__t_sectors_srcunit_tex_op_write.sum", SECTOR_BYTES),
    "lrc_to_sm_read_bytes": ("lrc__xbar2gpc_sectors_op_read.sum", SECTOR_BYTES),  # sent on to the SMs
    "lrc_from_lts_read_bytes": ("lrc__lts2lrc_sectors_op_read.sum", SECTOR_BYTES),  # fetched from slices
    "l2_hit_rate_pct": ("lts__t_sector_hit_rate.pct", 1),
    # L1: a block that a program on the same SM loaded moments earlier never leaves the SM
    "l1_load_hit_rate_pct": ("l1tex__t_sector_pipe_lsu_mem_global_op_ld_hit_rate.pct"
                             "|l1tex__t_sector_hit_rate.pct", 1),
    "achieved_occupancy_pct": ("sm__warps_active.avg.pct_of_peak_sustained_active", 1),
    # 3. DRAM
    "dram_read_bytes": ("dram__bytes_read.sum", 1),
    "dram_write_bytes": ("dram__bytes_write.sum", 1),
    # the launch
    "duration_ns": ("gpu__time_duration.sum", 1),
    "grid_size": ("launch__grid_size", 1),
    "waves_per_sm": ("launch__waves_per_multiprocessor", 1),
}
UNIT_SCALE = {  # ncu's units (lower-cased) -> base units: bytes, nanoseconds, counts
    "byte": 1, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12,
    "nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9,
    "ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "ksector": 1e3, "msector": 1e6,
}  # any other unit (sector, %, block, none) is a plain count: scale 1
KERNEL_PREFIXES = iocost.FLASH2_KERNELS  # _attn_fwd, _attn_bwd_preprocess, _attn_bwd_dkdv, _attn_bwd_dq


# ---------------------------------------------------------------------------------------------
# Parsing ncu's CSV (unit-tested on CPU in tests/test_iocost.py)
# ---------------------------------------------------------------------------------------------


def _number(text: str, unit: str) -> float:
    """``"1,234.5"`` in ``unit`` -> float in base units; ``nan`` for ``n/a`` or an empty cell."""
    text = text.strip().replace(",", "")
    scale = UNIT_SCALE.get(unit.strip().lower(), 1)
    if text in ("", "n/a"):
        return math.nan
    try:
        return float(text) * scale
    except ValueError:
        return math.nan


def parse_ncu_csv(text: str) -> list[dict]:
    """Rows of ``ncu --csv --page raw`` output, one dict per profiled kernel launch.

    The output is a header row of column names (``"ID", "Process ID", ..., "Kernel Name", ...``
    then one column per metric), a row of units (empty for the descriptive columns), then one
    row per launch. Lines that are not CSV rows (``==PROF==`` messages, the program's own
    prints) are skipped, so this can read ncu's stdout directly. Metric columns (those with a
    unit, or whose name looks like ``a__b.sum``) become floats in base units; the others stay
    strings. Rows come back in launch order (by ``ID``).
    """
    lines = [line for line in text.splitlines() if line.startswith('"')]
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise ValueError("no ncu CSV header (a row starting with \"ID\") in the output")
    table = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, body = table[0], table[1:]
    units = [""] * len(header)
    if body and body[0] and body[0][0] == "":  # the units row has no ID
        units, body = body[0], body[1:]
    rows = []
    for values in body:
        if len(values) != len(header) or values[0] == "ID":
            continue
        row = {}
        for name, unit, value in zip(header, units, values):
            is_metric = bool(unit) or ("__" in name and "." in name) or name.startswith("launch__")
            row[name] = _number(value, unit) if is_metric else value
        rows.append(row)
    rows.sort(key=lambda r: int(r["ID"]))
    return rows


def kernel_kind(name: str) -> str | None:
    """Which of the project's kernels a name (``_attn_fwd``, or with a suffix) is; longest first."""
    for prefix in sorted(KERNEL_PREFIXES, key=len, reverse=True):
        if name.startswith(prefix):
            return prefix
    return None


# ---------------------------------------------------------------------------------------------
# The model's predictions for one launch
# ---------------------------------------------------------------------------------------------


def predict(cfg: dict, kernel: str) -> dict:
    """What the IO model predicts for one kernel launch of configuration ``cfg`` (bytes, FLOPs)."""
    bh = cfg["batch"] * cfg["heads"]
    N, d, causal = cfg["seqlen"], cfg["head_dim"], cfg["causal"]
    backward = kernel != "_attn_fwd"
    kw = dict(block_m=cfg["block_m"], block_n=cfg["block_n"], causal=causal, backward=backward,
              bwd_block_m=cfg["bwd_block_m"], bwd_block_n=cfg["bwd_block_n"])
    sm = iocost.flash2_kernels_io(N, d, **kw)[kernel] * bh
    # One head's Q blocks run together (the grid's first axis), so one head's K, V must fit in L2.
    dram = iocost.flash2_dram_io(N, d, heads_in_flight=1, l2_bytes=cfg["l2_bytes"], **kw)[kernel] * bh
    outer = {"_attn_fwd": cfg["block_m"], "_attn_bwd_preprocess": cfg["bwd_block_m"],
             "_attn_bwd_dkdv": cfg["bwd_block_n"], "_attn_bwd_dq": cfg["bwd_block_m"]}[kernel]
    # Matmul FLOPs each kernel executes, in units of one N x N x d GEMM (2 N^2 d, halved when
    # causal): forward S and PV; dK/dV recomputes S, then dV, dP, dK; dQ recomputes S, then
    # dP, dQ. (7 GEMMs in the backward, where the papers' 2.5x counts 5.)
    gemms = {"_attn_fwd": 2, "_attn_bwd_preprocess": 0, "_attn_bwd_dkdv": 4, "_attn_bwd_dq": 3}[kernel]
    return {
        "model_read_bytes": sm.bytes_read(2),
        "model_write_bytes": sm.bytes_written(2),
        "model_dram_read_bytes": dram.bytes_read(2),
        "model_dram_write_bytes": dram.bytes_written(2),
        "model_grid_size": math.ceil(N / outer) * bh,
        "model_flops": gemms / 2 * iocost.flops(N, d, causal=causal) * bh,
    }


# ---------------------------------------------------------------------------------------------
# The sweep and the driver that runs under ncu
# ---------------------------------------------------------------------------------------------


def build_sweep(args) -> list[dict]:
    """Configurations in run order, each with the kernels it launches, in launch order."""
    import torch

    from kernels.flash_bwd import bwd_config
    from kernels.flash_fwd import fwd_config

    fwd_cfg = {d: fwd_config(d, torch.bfloat16) for d in args.head_dims}
    bwd_cfg = {d: bwd_config(d, torch.bfloat16) for d in args.head_dims}
    l2_bytes = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", iocost.H100_SXM.l2_bytes)
    seqlens = [1024, 4096] if args.quick else args.seqlens
    sweep = []
    for d in args.head_dims:
        f, b = fwd_cfg[d], bwd_cfg[d]
        # (forward blocks, backward blocks or None for forward only): the defaults, then a smaller
        # and a larger forward BLOCK_M (the K/V traffic is proportional to 1 / BLOCK_M), a
        # different forward BLOCK_N (which should change nothing), and smaller backward blocks.
        # The backward-blocks variant runs the default forward again: a repeatability check.
        variants = [
            ("default", (f["BLOCK_M"], f["BLOCK_N"]), (b["BLOCK_M"], b["BLOCK_N"])),
            ("fwd BLOCK_M/2", (f["BLOCK_M"] // 2, f["BLOCK_N"]), None),
            ("fwd BLOCK_N/2", (f["BLOCK_M"], f["BLOCK_N"] // 2), None),
            ("bwd blocks/2", (f["BLOCK_M"], f["BLOCK_N"]), (b["BLOCK_M"] // 2, b["BLOCK_N"] // 2)),
        ]
        for N in seqlens:
            for causal in (False, True):
                for variant, (bm, bn), bwd in variants:
                    sweep.append(dict(
                        id=len(sweep), variant=variant, batch=args.batch, heads=args.heads,
                        seqlen=N, head_dim=d,
                        causal=causal, block_m=bm, block_n=bn,
                        bwd_block_m=bwd[0] if bwd else None, bwd_block_n=bwd[1] if bwd else None,
                        kernels=list(KERNEL_PREFIXES if bwd else KERNEL_PREFIXES[:1]),
                        fwd_num_warps=f["num_warps"], fwd_num_stages=f["num_stages"],
                        l2_bytes=l2_bytes))
    return sweep


def run_driver(manifest: Path) -> None:
    """Inside ncu: compile every configuration, then run each once in the profiled range."""
    import torch

    from kernels.band import Band
    from kernels.flash_bwd import attention_backward, bwd_config
    from kernels.flash_fwd import attention_forward, fwd_config

    sweep = json.loads(manifest.read_text())
    inputs = {}

    def run(cfg):
        key = (cfg["batch"], cfg["heads"], cfg["seqlen"], cfg["head_dim"])
        if key not in inputs:
            gen = torch.Generator(device="cuda").manual_seed(0)
            inputs[key] = [torch.randn(key, device="cuda", dtype=torch.bfloat16, generator=gen)
                           for _ in range(4)]  # q, k, v, dO
        q, k, v, do = inputs[key]
        scale = cfg["head_dim"] ** -0.5
        band = Band.from_window(causal=cfg["causal"])
        # the default configurations with the blocks of this variant (warps and stages kept)
        fwd = dict(fwd_config(cfg["head_dim"], q.dtype, band.causal),
                   BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"])
        out, lse = attention_forward(q, k, v, band, scale, config=fwd)
        if cfg["bwd_block_m"] is not None:
            bwd = bwd_config(cfg["head_dim"], q.dtype, band.causal)
            blocks = dict(BLOCK_M=cfg["bwd_block_m"], BLOCK_N=cfg["bwd_block_n"])
            attention_backward(do, q, k, v, out, lse, None, band, scale,
                               config=dict(bwd, **blocks, dq=dict(bwd["dq"], **blocks)))

    t0 = time.time()
    for i, cfg in enumerate(sweep):  # warm-up: compiles, outside the profiled range
        run(cfg)
        if i % 10 == 9 or i == len(sweep) - 1:
            print(f"[driver] compiled {i + 1}/{len(sweep)} configurations ({time.time() - t0:.0f} s)",
                  flush=True)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for cfg in sweep:
        run(cfg)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"[driver] profiled range done ({time.time() - t0:.0f} s)", flush=True)


def find_ncu(explicit: str | None) -> str:
    candidates = [explicit] if explicit else []
    candidates += [shutil.which("ncu")] + sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"), reverse=True)
    candidates += ["/usr/local/cuda/bin/ncu"]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    sys.exit("profile_iocost: ncu not found on PATH or under /opt/nvidia/nsight-compute/*/ (use --ncu)")


def available_metrics(ncu: str) -> dict:
    """``METRICS`` less those this ncu and GPU do not know (``ncu --query-metrics``)."""
    listing = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True).stdout
    known = {line.split()[0] for line in listing.splitlines() if line.strip()}
    kept = {}
    for col, (names, factor) in METRICS.items():
        names = names.split("|")
        if not any("__" in name for name in known):  # the query failed: try the first of each
            kept[col] = (names[0], factor)
            continue
        # launch__ attributes are not hardware counters and are not listed, but always exist
        found = [n for n in names if n.split(".")[0] in known or n.startswith("launch__")]
        if found:
            kept[col] = (found[0], factor)
        else:
            print(f"  warning: this ncu has no {' or '.join(names)}; column {col} will be empty")
    return kept


def run_ncu(ncu: str, metrics: dict, manifest: Path) -> str:
    """Profile the driver under ncu; echo its messages, return its whole stdout."""
    cmd = [
        ncu, "--csv", "--page", "raw", "--print-units", "base",
        "--metrics", ",".join(m for m, _ in metrics.values()),
        "--kernel-name", KERNEL_REGEX,
        "--profile-from-start", "off",  # only the range between cudaProfilerStart and Stop
        "--clock-control", "none",      # leave the clocks as the GPU sets them
        "--cache-control", "all",       # flush caches before each kernel: DRAM counts start cold
        "--target-processes", "all",
        sys.executable, "-m", "benchmarks.profile_iocost", "--driver", str(manifest),  # cwd=ROOT
    ]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    out = []
    for line in proc.stdout:
        out.append(line)
        if not line.startswith('"'):  # ncu's messages and the driver's progress; not the CSV
            print("  " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        sys.exit(f"profile_iocost: ncu exited with {proc.returncode}; its output is above")
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Joining measurements with the model, and the figure
# ---------------------------------------------------------------------------------------------


def join(rows: list[dict], sweep: list[dict], metrics: dict, meta: dict) -> list[dict]:
    """Pair the i-th profiled launch with the i-th (configuration, kernel) the driver launched."""
    expected = [(cfg, k) for cfg in sweep for k in cfg["kernels"]]
    if len(rows) != len(expected):
        names = [r.get("Kernel Name") for r in rows][:12]
        sys.exit(f"profile_iocost: ncu reported {len(rows)} launches, the driver made "
                 f"{len(expected)}; first names: {names}")
    table = []
    for row, (cfg, kernel) in zip(rows, expected):
        name = row.get("Kernel Name", "")
        if kernel_kind(name) != kernel:
            sys.exit(f"profile_iocost: launch {row['ID']} is {name!r}, expected {kernel}")
        rec = {**meta, "config": cfg["id"], "variant": cfg["variant"], "kernel": kernel}
        rec.update({k: cfg[k] for k in ("batch", "heads", "seqlen", "head_dim", "causal",
                                        "block_m", "block_n", "bwd_block_m", "bwd_block_n")})
        for col in METRICS:
            metric, factor = metrics.get(col, (None, 1))
            rec[col] = row.get(metric, math.nan) * factor if metric else math.nan
        rec.update(predict(cfg, kernel))
        for col, model in (("sm_read", "model_read"), ("sm_write", "model_write"),
                           ("lts_read", "model_read"), ("dram_read", "model_dram_read")):
            rec[f"{col}_ratio"] = rec[f"{col}_bytes"] / rec[f"{model}_bytes"]
        if not math.isnan(rec["grid_size"]) and rec["grid_size"] != rec["model_grid_size"]:
            print(f"  warning: launch {row['ID']} ({kernel}) grid {rec['grid_size']:.0f}, "
                  f"model assumed {rec['model_grid_size']}: block sizes differ from the manifest")
        table.append(rec)
    return table


def sm_ratio(rec: dict) -> float:
    """Bytes at the SMs (read + written) measured / predicted: the model's headline check."""
    measured = rec["sm_read_bytes"] + rec["sm_write_bytes"]
    return measured / (rec["model_read_bytes"] + rec["model_write_bytes"])


def plot(table: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    default = [r for r in table if r["variant"] == "default"]
    seqlens = sorted({r["seqlen"] for r in table})
    colors = dict(zip(sorted({r["head_dim"] for r in table}), ("tab:blue", "tab:orange", "tab:green")))
    # Top: bytes read vs N, default configuration, not causal: model, SMs, L2 slices, DRAM.
    for ax, kernels, label in ((axes[0, 0], KERNEL_PREFIXES[:1], "forward (_attn_fwd)"),
                               (axes[0, 1], KERNEL_PREFIXES[1:], "backward (3 kernels summed)")):
        for d, color in colors.items():
            sel = [r for r in default if r["head_dim"] == d and not r["causal"] and r["kernel"] in kernels]
            total = {n: {} for n in seqlens}
            for r in sel:
                for col in ("model_read_bytes", "sm_read_bytes", "lts_read_bytes", "dram_read_bytes",
                            "model_dram_read_bytes"):
                    total[r["seqlen"]][col] = total[r["seqlen"]].get(col, 0.0) + r[col]
            ns = [n for n in seqlens if total[n]]

            def series(col, total=total, ns=ns):
                return [total[n][col] for n in ns]

            ax.plot(ns, series("model_read_bytes"), "-", color=color, label=f"model, d={d}")
            ax.plot(ns, series("sm_read_bytes"), "o", color=color, label=f"delivered to SMs, d={d}")
            ax.plot(ns, series("lts_read_bytes"), "s", mfc="none", color=color,
                    label=f"at L2 slices (after coalescing), d={d}")
            ax.plot(ns, series("model_dram_read_bytes"), "--", color=color, alpha=0.6,
                    label=f"model with L2 reuse, d={d}")
            ax.plot(ns, series("dram_read_bytes"), "x", color=color, label=f"DRAM, d={d}")
        ax.set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="bytes read",
               title=f"{label}, not causal, default blocks")
        ax.set_xticks(seqlens, [str(n) for n in seqlens], minor=False)
        ax.minorticks_off()
        ax.legend(fontsize=7)
    # Bottom: measured / model for every launch.
    markers = dict(zip(KERNEL_PREFIXES, "os^D"))
    panels = ((axes[1, 0], sm_ratio, "at the SMs: (read + written) / flash2_kernels_io"),
              (axes[1, 1], lambda r: r["dram_read_ratio"], "DRAM reads / flash2_dram_io (L2 reuse)"))
    for ax, ratio, ylabel in panels:
        for kernel in KERNEL_PREFIXES:
            sel = [r for r in table if r["kernel"] == kernel]
            ax.scatter([r["seqlen"] * (1.05 if r["causal"] else 0.95) for r in sel], [ratio(r) for r in sel],
                       marker=markers[kernel], label=kernel.removeprefix("_attn_"), alpha=0.6)
        ax.axhspan(0.85, 1.15, color="green", alpha=0.1, label="within 15%")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", xlabel="sequence length N (causal drawn right of each N)",
               ylabel="measured / predicted", title=ylabel)
        ax.set_xticks(seqlens, [str(n) for n in seqlens], minor=False)
        ax.minorticks_off()
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summarise(table: list[dict]) -> None:
    print(f"{'kernel':<22}{'N':>6}{'d':>5}{'causal':>7}{'blocks':>9}   measured / model:"
          f"{'SM rd':>7}{'SM wr':>7}{'wr sect':>8}{'L2 rd':>7}{'DRAM rd':>8}   {'DRAM wr MB':>10}{'us':>8}")
    for r in table:
        blocks = f"{r['block_m']}x{r['block_n']}" if r["kernel"] == "_attn_fwd" else \
            f"{r['bwd_block_m']}x{r['bwd_block_n']}"
        print(f"{r['kernel']:<22}{r['seqlen']:>6}{r['head_dim']:>5}{str(r['causal']):>7}{blocks:>9}"
              f"{'':>20}{r['sm_read_ratio']:>7.3f}{r['sm_write_ratio']:>7.3f}"
              f"{r['sm_write_sector_bytes'] / r['model_write_bytes']:>8.2f}{r['lts_read_ratio']:>7.3f}"
              f"{r['dram_read_ratio']:>8.3f}   {r['dram_write_bytes'] / 1e6:>10.2f}"
              f"{r['duration_ns'] / 1e3:>8.1f}")
    for label, values in (("bytes at the SMs (read + written)", [sm_ratio(r) for r in table]),
                          ("reads at the L2 slices", [r["lts_read_ratio"] for r in table]),
                          ("DRAM reads (model with L2 reuse)", [r["dram_read_ratio"] for r in table])):
        values = [v for v in values if not math.isnan(v)]
        if values:
            within = sum(abs(v - 1) <= 0.15 for v in values)
            print(f"{label}: within 15% of the model in {within}/{len(values)} launches "
                  f"(measured / model {min(values):.3f} .. {max(values):.3f})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="output directory")
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="sequence lengths 1024 and 4096 only")
    p.add_argument("--ncu", help="path to ncu (default: PATH, then /opt/nvidia/nsight-compute/*/ncu)")
    p.add_argument("--driver", type=Path, help=argparse.SUPPRESS)  # internal: run under ncu
    args = p.parse_args(argv)
    if args.driver:
        run_driver(args.driver)
        return

    start_gpu_run(p, args.out, "profile_iocost")  # and Nsight Compute, found next
    t0 = time.time()
    ncu = find_ncu(args.ncu)
    version = subprocess.run([ncu, "--version"], capture_output=True, text=True).stdout.strip()
    ncu_version = version.splitlines()[-1] if version else "unknown"
    metrics = available_metrics(ncu)
    sweep = build_sweep(args)
    n_launches = sum(len(c["kernels"]) for c in sweep)
    print(f"{len(sweep)} configurations, {n_launches} kernel launches to profile with ncu {ncu_version}")
    manifest = args.out / "iocost_ncu_manifest.json"
    manifest.write_text(json.dumps(sweep, indent=1))
    try:
        output = run_ncu(ncu, metrics, manifest)
    finally:
        manifest.unlink(missing_ok=True)
    raw = [line for line in output.splitlines() if line.startswith('"')]
    (args.out / "iocost_ncu_raw.csv").write_text("\n".join(raw) + "\n")
    meta = run_meta(ncu=ncu_version, dtype="bfloat16")
    table = join(parse_ncu_csv(output), sweep, metrics, meta)  # each row carries meta's columns too
    write_csv(args.out / "iocost_ncu.csv", meta, table)
    summarise(table)
    plot(table, args.out / "iocost_ncu.png",
         f"Attention kernels' memory traffic: IO model vs Nsight Compute ({meta['device']}, bf16, "
         f"batch {args.batch} x {args.heads} heads)")
    print(f"wrote {args.out}/iocost_ncu.csv, iocost_ncu_raw.csv, iocost_ncu.png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
