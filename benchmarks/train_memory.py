"""Training the mini Transformer at long context: tokens/s and peak memory per attention backend.

What the reader will learn here: what FlashAttention changes for a whole model, not just a kernel.
For each sequence length and backend (``flash``, ``reference``, ``sdpa``) this times one training
step (forward + backward, bf16 autocast) of ``minitransformer.GPT`` and records the peak of
``torch.cuda.max_memory_allocated``. Every step holds the same number of tokens
(``--tokens-per-step`` = batch x N, the batch shrinks as N grows), so tokens/s compares like with
like, and what flash and sdpa store stays flat. The reference also keeps ``(N, N)`` score and
probability matrices per sequence and layer: batch x N^2 = tokens x N, growing with N until it
runs out of memory (a row "OOM").

    python -m benchmarks.train_memory --out benchmarks/results/h100   # needs CUDA; ~1 min on an H100

Writes ``train_memory.csv`` (one row per backend and length, with the device, versions and date)
and ``train_memory.png``. The functions also run on a CPU with tiny sizes, which the tests use.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import statistics
import time
from pathlib import Path

import torch

from benchmarks.results_csv import write_csv
from minitransformer.model import BACKENDS, GPT, Config

STYLES = {"flash": "o-", "reference": "s-", "sdpa": "^--"}  # flash and sdpa overlap in memory
FIELDS = ["backend", "seqlen", "batch", "tokens_per_s", "ms_per_step", "peak_mem_mib", "status",
          "n_layer", "n_embd", "device", "torch", "triton", "date"]
VOCAB = 128  # random token ids: the speed and memory of a step do not depend on the text


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: GPT, x, y, device: torch.device, warmup: int, iters: int) -> tuple[float, float | None]:
    """Median seconds of one forward + backward step, and the peak memory of a step in MiB (GPU)."""
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            _, loss = model(x, y)
        loss.backward()

    for _ in range(warmup):  # compiles the Triton kernels, fills the allocator's cache
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return statistics.median(times), peak


def bench_one(backend: str, seqlen: int, *, device, tokens_per_step: int, n_layer: int, n_embd: int,
              warmup: int, iters: int) -> dict:
    """One row: tokens/s and peak memory of a training step, or status "OOM" if it does not fit."""
    device = torch.device(device)
    batch = max(1, tokens_per_step // seqlen)
    row = {"backend": backend, "seqlen": seqlen, "batch": batch, "n_layer": n_layer, "n_embd": n_embd,
           "tokens_per_s": "", "ms_per_step": "", "peak_mem_mib": "", "status": "ok"}
    torch.manual_seed(0)
    config = Config(vocab_size=VOCAB, block_size=seqlen, n_layer=n_layer, n_embd=n_embd, backend=backend)
    try:
        x = torch.randint(0, VOCAB, (batch, seqlen), device=device)  # (B, T)
        y = torch.randint(0, VOCAB, (batch, seqlen), device=device)  # (B, T)
        t, peak = measure(GPT(config).to(device), x, y, device, warmup, iters)
        row.update(tokens_per_s=round(batch * seqlen / t), ms_per_step=round(1e3 * t, 3))
        if peak is not None:
            row["peak_mem_mib"] = round(peak, 1)
    except torch.cuda.OutOfMemoryError:  # the class torch.OutOfMemoryError names since 2.5
        row["status"] = "OOM"
    x = y = None  # free this configuration's memory before the next one
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def environment(device: torch.device) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "triton": triton_version,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def plot(path: Path, rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in dict.fromkeys(r["backend"] for r in rows):
        ok = [r for r in rows if r["backend"] == backend and r["status"] == "ok"]
        oom = [r for r in rows if r["backend"] == backend and r["status"] == "OOM"]
        style = STYLES.get(backend, "o-")
        lengths = [r["seqlen"] for r in ok]
        (line,) = ax_speed.plot(lengths, [r["tokens_per_s"] for r in ok], style, label=backend)
        if ok and ok[0]["peak_mem_mib"] != "":
            mem = [r["peak_mem_mib"] for r in ok]
            ax_mem.plot(lengths, mem, style, color=line.get_color(), label=backend)
        for r in oom:  # mark where the backend ran out of memory
            ax_mem.axvline(r["seqlen"], color=line.get_color(), ls=":", lw=1)
            ax_mem.annotate(f"{backend}: OOM", (r["seqlen"], 0.95), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=8, color=line.get_color())
    env = rows[0]
    for ax in (ax_speed, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (tokens)")
        if ax.get_legend_handles_labels()[0]:  # no memory curves on a CPU
            ax.legend()
    ax_speed.set(yscale="log", ylabel="training tokens / s", title="forward + backward throughput")
    ax_mem.set(yscale="log", ylabel="peak memory allocated (MiB)", title="peak memory of one step")
    precision = "fp32" if env["device"] == "cpu" else "bf16 autocast"
    fig.suptitle(f"mini Transformer ({env['n_layer']} layers, width {env['n_embd']}, one head, {precision}), "
                 f"{env['batch'] * env['seqlen']} tokens per step, on {env['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(seqlens, backends, *, device, tokens_per_step, n_layer, n_embd, warmup, iters, time_budget_s=None,
        log=print) -> list[dict]:
    """All rows; once ``time_budget_s`` is spent, the remaining ones are rows with status "skipped"."""
    device = torch.device(device)
    env = environment(device)
    rows, start = [], time.perf_counter()
    for seqlen in seqlens:
        for backend in backends:
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                row = {"backend": backend, "seqlen": seqlen, "batch": max(1, tokens_per_step // seqlen),
                       "n_layer": n_layer, "n_embd": n_embd, "tokens_per_s": "", "ms_per_step": "",
                       "peak_mem_mib": "", "status": "skipped"}
            else:
                row = bench_one(backend, seqlen, device=device, tokens_per_step=tokens_per_step,
                                n_layer=n_layer, n_embd=n_embd, warmup=warmup, iters=iters)
            row.update(env)
            rows.append(row)
            log(f"{backend:>9} N={seqlen:>6} B={row['batch']:>3}: {row['status']:>7}  "
                f"{row['tokens_per_s'] or '-':>10} tok/s  {row['peak_mem_mib'] or '-':>9} MiB")
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="directory for train_memory.csv and train_memory.png")
    p.add_argument("--seqlens", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--tokens-per-step", type=int, default=65536,
                   help="batch = tokens_per_step // seqlen (at least 1)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128, help="also the head dim of the single head")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--iters", type=int, default=5, help="timed steps; the median is reported")
    p.add_argument("--time-budget", type=float, default=200.0, help="seconds; later rows are skipped")
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs CUDA (pass --device cpu with tiny sizes to try it)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run(args.seqlens, args.backends, device=args.device, tokens_per_step=args.tokens_per_step,
               n_layer=args.n_layer, n_embd=args.n_embd, warmup=args.warmup, iters=args.iters,
               time_budget_s=args.time_budget)
    # the metadata line of every results CSV; the rows keep these columns too (older files have only them)
    write_csv(out / "train_memory.csv", {k: rows[0][k] for k in ("device", "date", "torch", "triton")}, rows,
              fields=FIELDS)
    plot(out / "train_memory.png", rows)
    print(f"wrote {out / 'train_memory.csv'} and {out / 'train_memory.png'}")


if __name__ == "__main__":
    main()
