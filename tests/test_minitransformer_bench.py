"""The training-memory benchmark (benchmarks/train_memory.py) runs its logic at tiny sizes (on a CPU in CI;
on DEVICE, the GPU, where there is one)."""

import torch
from conftest import DEVICE

from benchmarks import train_memory
from benchmarks.results_csv import read_csv

TINY = ["--device", DEVICE, "--seqlens", "32", "64", "--tokens-per-step", "64", "--n-layer", "1", "--n-embd", "16",
        "--warmup", "1", "--iters", "2"]


def test_writes_csv_and_plot(tmp_path):
    train_memory.main(["--out", str(tmp_path), *TINY])
    meta, rows, _ = read_csv(tmp_path / "train_memory.csv")
    assert meta["device"] == rows[0]["device"] and meta["date"] == rows[0]["date"]
    assert [(r["backend"], r["seqlen"], r["batch"]) for r in rows] == [
        ("flash", "32", "2"), ("reference", "32", "2"), ("sdpa", "32", "2"),
        ("flash", "64", "1"), ("reference", "64", "1"), ("sdpa", "64", "1")]
    assert all(r["status"] == "ok" and float(r["tokens_per_s"]) > 0 for r in rows)
    assert rows[0]["device"] == (torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu") and rows[0]["torch"] == torch.__version__ and rows[0]["date"]
    assert (tmp_path / "train_memory.png").stat().st_size > 0


def test_out_of_memory_is_a_row(monkeypatch):
    """An OOM in one configuration is reported as such, and the next one still runs."""
    real_forward = train_memory.GPT.forward

    def forward(self, idx, targets=None, cache=None):
        if self.config.backend == "reference" and idx.size(1) == 64:
            raise torch.cuda.OutOfMemoryError("pretend the N x N matrices do not fit")
        return real_forward(self, idx, targets, cache)

    monkeypatch.setattr(train_memory.GPT, "forward", forward)
    rows = train_memory.run([64], ["reference", "sdpa"], device="cpu", tokens_per_step=64, n_layer=1, n_embd=16,
                            warmup=1, iters=1, log=lambda _: None)
    assert [r["status"] for r in rows] == ["OOM", "ok"]
    skipped = train_memory.run([64], ["sdpa"], device="cpu", tokens_per_step=64, n_layer=1, n_embd=16, warmup=1,
                               iters=1, time_budget_s=-1, log=lambda _: None)
    assert skipped[0]["status"] == "skipped"
