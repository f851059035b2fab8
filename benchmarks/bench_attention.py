"""The project's FlashAttention kernel against PyTorch's attention backends, in one run.

Measures TFLOP/s of forward, backward and forward+backward for:

* ``triton``: this repository's kernel (``kernels.flash_attention``);
* ``sdpa-flash``, ``sdpa-cudnn``, ``sdpa-efficient``, ``sdpa-math``: PyTorch's
  ``scaled_dot_product_attention`` with each backend forced;
* ``triton-varlen``: the same kernel through ``kernels.flash_attention_varlen``, the batch packed
  as equal-length sequences (its inputs are packed leaves, so no copy or reshape is timed), with
  ``check_seqlens=False``: the kernel, without the host sync that checking the offsets costs;
* ``triton-bshd``: the dense kernel on the varlen provider's storage, ``(batch, seqlen, heads,
  head_dim)`` seen as ``(batch, heads, seqlen, head_dim)``: the layout a model's QKV projection
  produces, and the one packed sequences have; it separates the cost of the layout from that of
  the varlen logic;
* ``flex``: PyTorch's FlexAttention compiled by ``torch.compile`` (Triton-generated), one
  compilation per shape (dynamo's recompile limit raised so that it never falls back to eager);
  compiling costs tens of seconds per shape: leave it out with ``--providers`` for a quick run.

FLOPs are counted as the FlashAttention papers do: ``4 B H N^2 d`` forward, 2.5 times that
backward, half of each when causal. Times are ``triton.testing.do_bench`` medians after warm-up,
on fresh random inputs, and every provider's output is checked against SDPA's before it is timed.
Each shape's providers are timed ``--rounds`` times in turn (each round starting one provider
later) and the median round is kept, its ``spread`` ((max - min) / median) beside it: a provider
timed once, first or last, takes whatever the clock was doing then.
Speed is reported as TFLOP/s and as a ratio to SDPA's flash backend measured in the same run.

``--memory`` adds peak memory of forward+backward vs sequence length (1k..64k, one head).

The CSV is rewritten after every shape, so a run that is stopped keeps what it measured.
``--append`` keeps the rows of an earlier run for the shapes this run does not measure (a shape's
rows are replaced as a whole, so every ratio still compares providers timed in one process):
a sweep can be spread over several sessions, e.g. one dtype each. ``--summary-only CSV``
redraws the plots and prints the summary of a CSV written earlier (no GPU needed).

Usage (GPU only): ``python -m benchmarks.bench_attention --out benchmarks/results/<device>``
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import kernels
from benchmarks.results_csv import read_csv, run_meta, start_gpu_run, write_csv

TOKENS = 16384  # batch = TOKENS // seqlen, as in the FlashAttention papers
MODEL_DIM = 2048  # heads = MODEL_DIM // head_dim
MODES = ("fwd", "bwd", "fwd_bwd")
SDPA_BACKENDS = {
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}
TRITON_PROVIDERS = ("triton", "triton-bshd", "triton-varlen")
MATH_MAX_SEQLEN = 4096  # the math path materialises (B, H, N, N): slow and large beyond this


def flops(batch, heads, seqlen, head_dim, causal, mode):
    f = 4 * batch * heads * seqlen * seqlen * head_dim
    f = {"fwd": f, "bwd": 2.5 * f, "fwd_bwd": 3.5 * f}[mode]
    return f / 2 if causal else f


def sdpa_provider(backend_name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, backend_name)

    def fn(q, k, v, causal):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return fn


def flex_provider():
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # One compiled graph per shape (and per grad mode): raise dynamo's limits so that it never
    # gives up and runs FlexAttention eagerly (slow, and silently so).
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit",
                 "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    compiled = torch.compile(flex_attention, dynamic=False)
    masks = {}

    def causal_mod(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def fn(q, k, v, causal):
        block_mask = None
        if causal:
            key = (q.shape[2], k.shape[2])
            if key not in masks:
                masks[key] = create_block_mask(causal_mod, None, None, *key, device=q.device)
            block_mask = masks[key]
        return compiled(q, k, v, block_mask=block_mask)
    return fn


def triton_provider(q, k, v, causal):
    return kernels.flash_attention(q, k, v, causal=causal)


_OFFSETS = {}


def varlen_provider(q, k, v, causal, seqlen):
    """The varlen kernel on the same batch packed as equal-length sequences: q, k, v are
    ``(batch * seqlen, heads, head_dim)`` leaves (see ``packed_like``), so, as in a model that
    packs its batches, neither a copy nor a reshape is timed, and the offsets are built once."""
    key = (q.shape[0], seqlen, q.device)
    if key not in _OFFSETS:
        _OFFSETS[key] = torch.arange(0, q.shape[0] + 1, seqlen, device=q.device, dtype=torch.int32)
    cu = _OFFSETS[key]
    return kernels.flash_attention_varlen(q, k, v, cu, cu, seqlen, seqlen, causal=causal,
                                          check_seqlens=False)


def packed_like(t, varlen=False):
    """A leaf tensor with t's values stored as (batch, seqlen, heads, head_dim), seen as
    (batch, heads, seqlen, head_dim), or with ``varlen`` as (batch * seqlen, heads, head_dim)."""
    b, h, n, d = t.shape
    x = t.detach().transpose(1, 2).contiguous()
    x = x.view(b * n, h, d) if varlen else x.transpose(1, 2)
    return x.requires_grad_(t.requires_grad)


def time_mode(fn, q, k, v, causal, mode):
    from triton.testing import do_bench

    do = torch.randn_like(q)
    if mode == "fwd":
        return do_bench(lambda: fn(q, k, v, causal), warmup=25, rep=100, return_mode="median")
    if mode == "bwd":
        out = fn(q, k, v, causal)
        return do_bench(lambda: out.backward(do, retain_graph=True), warmup=25, rep=100,
                        grad_to_none=[q, k, v], return_mode="median")
    return do_bench(lambda: fn(q, k, v, causal).backward(do), warmup=25, rep=100,
                    grad_to_none=[q, k, v], return_mode="median")


def time_rounds(ready: dict, causal: bool, modes, rounds: int) -> dict:
    """``{(provider, mode): [ms per round]}``: every provider and mode timed once per round, the
    providers in turn (each round starts one provider later), so that a drift of the GPU's clock
    or temperature during a shape falls on all of them alike instead of on whichever came first.
    A provider that fails (out of memory) is dropped with a message."""
    times, names = {}, list(ready)
    for r in range(rounds if names else 0):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if name not in ready:
                continue
            fn, q, k, v, _ = ready[name]
            try:
                for mode in modes:
                    times.setdefault((name, mode), []).append(time_mode(fn, q, k, v, causal, mode))
            except (RuntimeError, torch.OutOfMemoryError) as e:
                print(f"{name} dropped while timing: {str(e)[:120]}")
                del ready[name]
                times = {key: t for key, t in times.items() if key[0] != name}
    return times


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="directory for CSV and PNG files (unless --summary-only)")
    p.add_argument("--seqlens", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    p.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    p.add_argument("--causal", nargs="+", default=["0", "1"], choices=["0", "1"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--providers", nargs="+", default=[*TRITON_PROVIDERS, *SDPA_BACKENDS, "flex"],
                   choices=[*TRITON_PROVIDERS, *SDPA_BACKENDS, "flex"])
    p.add_argument("--flex-seqlens", type=int, nargs="+",
                   help="time FlexAttention only at these N (it compiles per shape) [all of --seqlens]")
    p.add_argument("--rounds", type=int, default=3,
                   help="time every provider this many times per shape, in turn; report the median [3]")
    p.add_argument("--append", action="store_true",
                   help="keep an earlier CSV's rows for shapes not measured in this run")
    p.add_argument("--summary-only", type=Path, metavar="CSV",
                   help="plot and summarise a CSV written earlier, and exit")
    p.add_argument("--memory", action="store_true",
                   help="also measure peak memory of forward+backward vs N (one head, batch 1)")
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory sweep")
    args = p.parse_args(argv)
    if args.summary_only:
        meta, rows = read_rows(args.summary_only)
        plot(rows, meta, args.summary_only.parent)
        summary(rows)
        return
    start_gpu_run(p, args.out, "bench_attention", "--summary-only")
    meta = run_meta()
    if args.memory or args.memory_only:
        memory_sweep(args.out, meta)
        if args.memory_only:
            return
    providers = {"triton": triton_provider, "triton-bshd": triton_provider,
                 "triton-varlen": varlen_provider}
    for name in args.providers:
        if name in SDPA_BACKENDS:
            providers[name] = sdpa_provider(SDPA_BACKENDS[name])
        elif name == "flex":
            providers[name] = flex_provider()
    providers = {n: providers[n] for n in args.providers}

    path = args.out / "attention_tflops.csv"
    measured = {(d, hd, int(c == "1"), n) for d in args.dtypes for hd in args.head_dims
                for c in args.causal for n in args.seqlens}
    old_rows = []
    if args.append and path.exists():
        old_meta, old_rows = read_rows(path)
        if old_meta.get("device") != meta["device"]:
            sys.exit(f"bench_attention: --append to a CSV of another device ({old_meta.get('device')})")
        # say so when kept rows come from another date or other versions
        if any(shape_key(r) not in measured for r in old_rows):
            meta = {k: v if old_meta.get(k, v) == v else f"{old_meta[k]}/{v}" for k, v in meta.items()}
    rows = []
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    for dtype_name in args.dtypes:
        for head_dim in args.head_dims:
            for causal in (c == "1" for c in args.causal):
                for seqlen in args.seqlens:
                    batch, heads = max(1, TOKENS // seqlen), MODEL_DIM // head_dim
                    torch.manual_seed(seqlen * head_dim)
                    q, k, v = (torch.randn(batch, heads, seqlen, head_dim, device="cuda",
                                           dtype=dtypes[dtype_name], requires_grad=True)
                               for _ in range(3))
                    dense = (q, k, v)
                    with torch.no_grad():
                        ref = providers.get("sdpa-flash", sdpa_provider("FLASH_ATTENTION"))(
                            q, k, v, causal)
                    # the inputs of each provider: the same values, stored as it takes them
                    inputs = {"triton-bshd": [packed_like(t) for t in (q, k, v)],
                              "triton-varlen": [packed_like(t, varlen=True) for t in (q, k, v)]}
                    ready, out = {}, None  # provider -> (fn, q, k, v, rel err): checked, to be timed
                    for name, fn in providers.items():
                        if name == "sdpa-math" and seqlen > MATH_MAX_SEQLEN:
                            continue
                        if name == "flex" and args.flex_seqlens and seqlen not in args.flex_seqlens:
                            continue
                        q, k, v = inputs.get(name, dense)
                        if name == "triton-varlen":
                            fn = functools.partial(varlen_provider, seqlen=seqlen)
                        try:
                            with torch.no_grad():
                                out = fn(q, k, v, causal)
                            if name == "triton-varlen":  # (B * N, H, d) -> (B, H, N, d)
                                out = out.view(batch, seqlen, heads, head_dim).transpose(1, 2)
                            err = kernels.rel_err(out, ref)
                            if not err < 2e-2:
                                raise RuntimeError(f"output differs from SDPA: rel err {err:.2e}")
                            ready[name] = (fn, q, k, v, err)
                        except (RuntimeError, torch.OutOfMemoryError) as e:
                            print(f"{name} skipped at N={seqlen} d={head_dim}: {str(e)[:120]}")
                    times = time_rounds(ready, causal, args.modes, args.rounds)
                    for (name, mode), ms_all in times.items():
                        ms = statistics.median(ms_all)
                        tflops = flops(batch, heads, seqlen, head_dim, causal, mode) / ms * 1e-9
                        rows.append(dict(provider=name, dtype=dtype_name, head_dim=head_dim,
                                         causal=int(causal), seqlen=seqlen, batch=batch,
                                         heads=heads, mode=mode, ms=f"{ms:.4f}",
                                         tflops=f"{tflops:.1f}", rel_err=f"{ready[name][4]:.1e}",
                                         spread=f"{(max(ms_all) - min(ms_all)) / ms:.3f}"))
                        print(f"{dtype_name} d={head_dim} causal={int(causal)} N={seqlen:>5} "
                              f"{mode:>7} {name:>14}: {tflops:6.1f} TFLOP/s "
                              f"(spread {rows[-1]['spread']} over {len(ms_all)})", flush=True)
                    del ready, dense, inputs, q, k, v, out
                    torch.cuda.empty_cache()
                    # after every shape: a stopped run keeps its rows
                    write_csv(path, meta, merged(old_rows, rows), fields=FIELDS)

    print(f"wrote {path}")
    plot(merged(old_rows, rows), meta, args.out)
    summary(merged(old_rows, rows))


FIELDS = ("provider", "dtype", "head_dim", "causal", "seqlen", "batch", "heads", "mode", "ms", "tflops",
          "rel_err", "spread")


def shape_key(row):
    return row["dtype"], int(row["head_dim"]), int(row["causal"]), int(row["seqlen"])


def merged(old_rows, rows):
    """``rows`` and the earlier run's rows of the shapes that ``rows`` has not measured (yet:
    a run stopped halfway keeps the old rows of the shapes it did not reach)."""
    done = {shape_key(r) for r in rows}
    return [r for r in old_rows if shape_key(r) not in done] + rows


def read_rows(path: Path) -> tuple[dict, list[dict]]:
    """Metadata and rows of an attention_tflops.csv, with the shape columns as ints (as the rows
    of a run are), so that kept and new rows compare and sort alike."""
    meta, rows, _ = read_csv(path)
    for r in rows:
        r["head_dim"], r["causal"], r["seqlen"] = int(r["head_dim"]), int(r["causal"]), int(r["seqlen"])
    return meta, rows


def plot_per_provider(ax, rows, providers, x: str, y: str, *, xlabel: str, ylabel: str) -> None:
    """One line of ``y`` against ``x`` per provider, on log axes (x in powers of 2)."""
    for name in providers:
        pts = [(r[x], float(r[y])) for r in rows if r["provider"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend()


def plot(rows, meta, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["dtype"], r["head_dim"], r["causal"]) for r in rows})
    modes = sorted({r["mode"] for r in rows}, key=MODES.index)
    for dtype_name, head_dim, causal in keys:
        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            for name in dict.fromkeys(r["provider"] for r in rows):
                pts = [(r["seqlen"], float(r["tflops"])) for r in rows
                       if (r["dtype"], r["head_dim"], r["causal"], r["mode"], r["provider"])
                       == (dtype_name, head_dim, causal, mode, name)]
                if pts:  # sorted: --append puts re-measured shapes after the kept ones
                    ax.plot(*zip(*sorted(pts)), marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sequence length N (batch = 16k / N)")
            ax.set_ylabel("TFLOP/s")
            ax.set_title(f"{mode}")
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9)
        fig.suptitle(f"{dtype_name}, head_dim {head_dim}, {'causal' if causal else 'non-causal'} "
                     f"- {meta['device']}, {meta['date']}")
        fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the panels
        fig.savefig(out / f"tflops_{dtype_name}_d{head_dim}_{'causal' if causal else 'full'}.png",
                    dpi=90)
        plt.close(fig)


def summary(rows):
    """Ratios of the project's kernel to SDPA-flash, cuDNN and FlexAttention, and of the varlen
    kernel to the dense one, printed last so that a log's tail shows them; then the issue's bars
    (forward >= 1.0x and backward >= 0.85x SDPA-flash for N >= 1024; varlen within 10% of dense)."""
    index = {(r["provider"], r["dtype"], int(r["head_dim"]), int(r["causal"]), int(r["seqlen"]),
              r["mode"]): float(r["tflops"]) for r in rows}
    print(f"\n{'dtype':>5} {'d':>4} {'causal':>6} {'N':>6} {'mode':>7} {'triton':>7} "
          f"{'/flash':>7} {'/cudnn':>7} {'/flex':>7} {'bshd/':>7} {'varlen/':>7}")
    misses, checked = [], 0
    for (prov, *key), tf in sorted(index.items(), key=lambda kv: (*kv[0][1:5], MODES.index(kv[0][5]))):
        if prov != "triton":
            continue
        ratio = {}
        for other in ("sdpa-flash", "sdpa-cudnn", "flex", *TRITON_PROVIDERS[1:]):
            ref = index.get((other, *key))  # our variants as variant / dense, the others dense / them
            ratio[other] = (ref / tf if other in TRITON_PROVIDERS else tf / ref) if ref else float("nan")
        dtype_name, head_dim, causal, seqlen, mode = key
        print(f"{dtype_name:>5} {head_dim:>4} {causal:>6} {seqlen:>6} {mode:>7} {tf:7.1f} "
              f"{ratio['sdpa-flash']:7.2f} {ratio['sdpa-cudnn']:7.2f} {ratio['flex']:7.2f} "
              f"{ratio['triton-bshd']:7.2f} {ratio['triton-varlen']:7.2f}")
        bars = {"fwd": ("sdpa-flash", 1.0), "bwd": ("sdpa-flash", 0.85)}
        if seqlen >= 1024 and mode in bars and ratio[bars[mode][0]] == ratio[bars[mode][0]]:
            checked += 1
            if ratio["sdpa-flash"] < bars[mode][1]:
                misses.append(f"{dtype_name} d={head_dim} causal={causal} N={seqlen} {mode}: "
                              f"{ratio['sdpa-flash']:.2f}x SDPA-flash (bar {bars[mode][1]}x)")
        if mode == "fwd" and ratio["triton-varlen"] == ratio["triton-varlen"]:
            checked += 1
            if abs(ratio["triton-varlen"] - 1) > 0.10:
                misses.append(f"{dtype_name} d={head_dim} causal={causal} N={seqlen} varlen fwd: "
                              f"{ratio['triton-varlen']:.2f}x dense (bar: within 10%)")
    print(f"\nbars: {checked - len(misses)} of {checked} met" + "".join(f"\n  missed: {m}" for m in misses))


def naive_attention(q, k, v, causal):
    """Standard attention in the input precision: S and P are materialised (N x N each)."""
    s = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if causal:
        n = q.shape[-2]
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return torch.softmax(s.float(), dim=-1).to(q.dtype) @ v


def memory_sweep(out: Path, meta: dict, head_dim: int = 128):
    """Peak memory of one forward+backward, one head, batch 1, bf16, causal, N = 1k..64k, for the
    project's kernel, SDPA's flash backend and naive attention (until it runs out of memory)."""
    providers = {"triton": triton_provider, "sdpa-flash": sdpa_provider("FLASH_ATTENTION"),
                 "naive": naive_attention}
    rows = []
    for seqlen in [1024 * 2 ** i for i in range(7)]:
        for name, fn in providers.items():
            torch.cuda.empty_cache()
            q, k, v = (torch.randn(1, 1, seqlen, head_dim, device="cuda", dtype=torch.bfloat16,
                                   requires_grad=True) for _ in range(3))
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            try:
                fn(q, k, v, True).backward(torch.randn_like(q))
                torch.cuda.synchronize()
                peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
            except torch.OutOfMemoryError:
                peak = float("nan")
            rows.append(dict(provider=name, seqlen=seqlen, head_dim=head_dim,
                             peak_mib=f"{peak:.1f}"))
            print(f"memory N={seqlen:>6} {name:>10}: {peak:9.1f} MiB", flush=True)
            del q, k, v
    path = out / "attention_memory.csv"
    write_csv(path, meta, rows, comments=[f"peak extra memory of forward+backward, bf16, causal, batch 1, "
                                          f"one head, head_dim {head_dim}"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_per_provider(ax, rows, providers, "seqlen", "peak_mib",
                      xlabel="sequence length N (batch 1, one head)", ylabel="peak memory of fwd+bwd (MiB)")
    ax.set_title(f"{meta['device']}, {meta['date']}: bf16, d={head_dim}, causal", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "attention_memory.png", dpi=90)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
