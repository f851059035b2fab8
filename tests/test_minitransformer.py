"""Tests of the mini Transformer: cached generation, exactness of flash in training, resume, errors.

Sizes are tiny so that the flash backend, which runs in Triton's interpreter on a CPU, stays fast;
on a GPU (conftest.DEVICE) the same tests run the compiled kernels.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    DEVICE,
    cached_generation_error,
    interrupt_training_at,
    tiny_model,
    train_flash_and_reference,
)

import kernels
import minitransformer.model as model_module
from minitransformer import train
from minitransformer.checkpoint import load_checkpoint
from minitransformer.data import Vocab, get_batch, split
from minitransformer.model import Config, KVCache

ROOT = Path(__file__).resolve().parents[1]
# A small run on a small text: a few steps of a one-layer model (flags of minitransformer.train).
TINY = ["--n-layer", "1", "--n-embd", "16", "--block-size", "32", "--batch-size", "2", "--warmup", "2",
        "--eval-batches", "1", "--sample-chars", "0", "--device", DEVICE]


# ----------------------------------------------------------------------------------------------
# Generation with a KV cache
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["flash", "reference", "sdpa"])
def test_cached_generation_equals_uncached(backend):
    """Appending one token at a time against the cache gives the tokens (and logits) of recomputing
    the whole sequence, also past block_size, where the cache rolls and the window binds."""
    model = tiny_model(backend)
    cache = KVCache()
    err = cached_generation_error(model, cache, [0, *range(4, 14)])  # a prefill, then one at a time
    print(f"{backend}: max |cached - full| logit = {err:.2e}")
    assert err < 1e-5
    assert all(k.size(2) == model.config.block_size - 1 for k in cache.k)  # the cache stays bounded


def test_cached_step_is_one_query_against_the_cache(monkeypatch):
    """Guards the point of the cache: the prefill hands the kernel a causal (B, 1, T, D) block, and
    each step one (B, 1, 1, D) query against (B, 1, T_cache + 1, D) cached keys, which goes to the
    split-KV decoding kernel with every cached key valid."""
    model = tiny_model("flash", block_size=16, n_layer=1)
    calls = []
    # what the flash backend calls here: the Triton kernel on CUDA, the PyTorch twin on a CPU
    names = ("flash_attention", "flash_decode") if DEVICE == "cuda" else ("flash_attention_torch",
                                                                           "flash_decode_torch")
    real_attention, real_decode = (getattr(model_module, name) for name in names)

    def spy_attention(q, k, v, **kw):
        calls.append(("flash_attention", tuple(q.shape), tuple(k.shape), kw["causal"]))
        return real_attention(q, k, v, **kw)

    def spy_decode(q, k, v, cache_seqlens, **kw):
        calls.append(("flash_decode", tuple(q.shape), tuple(k.shape), cache_seqlens.tolist()))
        return real_decode(q, k, v, cache_seqlens, **kw)

    monkeypatch.setattr(model_module, names[0], spy_attention)
    monkeypatch.setattr(model_module, names[1], spy_decode)
    cache = KVCache()
    model(torch.zeros(1, 5, dtype=torch.long, device=DEVICE), cache=cache)
    model(torch.zeros(1, 1, dtype=torch.long, device=DEVICE), cache=cache)
    assert calls == [("flash_attention", (1, 1, 5, 16), (1, 1, 5, 16), True),
                     ("flash_decode", (1, 1, 1, 16), (1, 1, 6, 16), [6])]


# ----------------------------------------------------------------------------------------------
# Training: flash is exact, and a resumed run ends where an uninterrupted one does
# ----------------------------------------------------------------------------------------------
def test_flash_and_reference_train_the_same(text_file, tmp_path, capsys):
    """Same seed, same batches: the loss curves agree to float32 rounding."""
    train_flash_and_reference(text_file, tmp_path, TINY)
    out = capsys.readouterr().out
    assert "one validation batch through flash" in out and "unigram entropy" in out


def final_state(out_dir):
    ckpt = load_checkpoint(Path(out_dir) / "ckpt.pt")
    return ckpt["model"], ckpt["optimizer"]["state"], ckpt["history"], ckpt["step"]


def assert_same_state(a, b):
    (model_a, opt_a, hist_a, step_a), (model_b, opt_b, hist_b, step_b) = a, b
    assert step_a == step_b
    assert hist_a == hist_b
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(opt_a[i][s], opt_b[i][s]) for i in opt_a for s in opt_a[i])


def test_resume_after_interrupt_is_identical(text_file, tmp_path, monkeypatch):
    """Interrupt after step 5 (checkpoint at 4), resume: same weights, optimizer state and curve."""
    args = ["--data", str(text_file), "--backend", "reference", "--steps", "8", "--eval-interval", "2", *TINY]
    train.main(args + ["--out", str(tmp_path / "whole")])

    interrupt_training_at(monkeypatch, 5)
    with pytest.raises(SystemExit, match="interrupted at step 5; the last checkpoint is at step 4"):
        train.main(args + ["--out", str(tmp_path / "split")])
    monkeypatch.undo()
    assert final_state(tmp_path / "split")[3] == 4
    train.main(args + ["--out", str(tmp_path / "split"), "--resume"])
    assert_same_state(final_state(tmp_path / "split"), final_state(tmp_path / "whole"))


def test_resume_after_kill_is_identical(text_file, tmp_path):
    """A real SIGKILL mid-run, then --resume: the run ends where an uninterrupted one does."""
    args = ["--data", str(text_file), "--backend", "reference", "--steps", "60", "--eval-interval", "2", *TINY]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "minitransformer.train", *args, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "ckpt.pt").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.05)  # let it run on past the first checkpoint
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = final_state(out)[3]
    print(f"killed after the checkpoint of step {killed_at}")
    assert 0 < killed_at < 60

    train.main(args + ["--out", str(out), "--resume"])
    train.main(args + ["--out", str(tmp_path / "whole")])
    assert_same_state(final_state(out), final_state(tmp_path / "whole"))


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
def test_vocab_round_trip_and_unknown_characters():
    vocab = Vocab.from_text("hello, wörld\n")
    assert vocab.decode(vocab.encode("wörld, hello").tolist()) == "wörld, hello"
    with pytest.raises(ValueError, match="not in the vocabulary: 'qxz'"):
        vocab.encode("hello x, qz")


def test_batches_depend_only_on_seed_and_step():
    ids = torch.arange(1000)
    x1, y1 = get_batch(ids, 4, 16, seed=3, step=7)
    x2, y2 = get_batch(ids, 4, 16, seed=3, step=7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1 + 1, y1)
    assert not torch.equal(x1, get_batch(ids, 4, 16, seed=3, step=8)[0])


def test_split_is_deterministic_and_checks_length():
    train_ids, val_ids = split(torch.arange(1000), 32)
    assert torch.equal(torch.cat([train_ids, val_ids]), torch.arange(1000)) and len(val_ids) == 100
    with pytest.raises(ValueError, match="too short for --block-size 128"):
        split(torch.arange(1000), 128)


# ----------------------------------------------------------------------------------------------
# Bad input: one clear line, no traceback
# ----------------------------------------------------------------------------------------------
def test_unknown_backend_in_config():
    with pytest.raises(ValueError, match="unknown backend 'fast': choose one of flash, reference, sdpa"):
        Config(backend="fast")


def error_of(main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("case", ["missing", "empty", "short", "backend", "device", "no-ckpt", "other-config"])
def test_train_bad_input(case, text_file, tmp_path):
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("")
    short.write_text("def f():\n    return 1\n" * 10)  # 230 characters: val split of 23 < 33
    argv = {
        "missing": ["--data", str(tmp_path / "nope.txt")],
        "empty": ["--data", str(empty)],
        "short": ["--data", str(short)],
        "backend": ["--data", str(text_file), "--backend", "fast"],
        "device": ["--data", str(text_file), "--device", "cuda:7"],
        "no-ckpt": ["--data", str(text_file), "--resume"],
        "other-config": ["--data", str(text_file), "--resume", "--n-embd", "32"],
    }[case]
    expected = {"missing": "no such file", "empty": "the file is empty", "short": "too short for --block-size 32",
                "backend": "unknown backend", "device": "CUDA is not available", "no-ckpt": "no checkpoint at",
                "other-config": "from a different config: --n-embd was 16, now 32"}[case]
    if case == "other-config":
        train.main(["--data", str(text_file), "--backend", "reference", "--steps", "1", "--out", str(tmp_path), *TINY])
    if case == "device" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    message = error_of(train.main, [*TINY, "--steps", "1", "--out", str(tmp_path), *argv])
    assert expected in message, message


def test_sample_bad_input(text_file, tmp_path):
    from minitransformer import sample

    not_ckpt = tmp_path / "junk.pt"
    not_ckpt.write_text("not a checkpoint")
    assert "no checkpoint at" in error_of(sample.main, ["--ckpt", str(tmp_path / "none.pt")])
    assert "not a readable checkpoint" in error_of(sample.main, ["--ckpt", str(not_ckpt)])
    train.main(["--data", str(text_file), "--backend", "reference", "--steps", "1", "--out", str(tmp_path), *TINY])
    ckpt = str(tmp_path / "ckpt.pt")
    assert "unknown backend" in error_of(sample.main, ["--ckpt", ckpt, "--backend", "fast"])
    assert "not in the vocabulary" in error_of(sample.main, ["--ckpt", ckpt, "--prompt", "日本"])


def test_cli_error_is_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minitransformer.train", "--data", str(tmp_path / "nope.txt")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    if not kernels.HAS_TRITON and "Triton is not installed" in lines[0]:  # kernels' one notice
        lines.pop(0)
    assert lines == [f"error: --data {tmp_path / 'nope.txt'}: no such file"]
    assert "Traceback" not in result.stdout + result.stderr


def test_sample_cli_generates_from_checkpoint(text_file, tmp_path, capsys):
    from minitransformer import sample

    train.main(["--data", str(text_file), "--backend", "reference", "--steps", "2", "--out", str(tmp_path), *TINY])
    capsys.readouterr()
    sample.main(["--ckpt", str(tmp_path / "ckpt.pt"), "--prompt", "def ", "--chars", "20", "--device", DEVICE])
    out = capsys.readouterr().out
    assert out.startswith("def ") and "20 characters" in out


# ----------------------------------------------------------------------------------------------
# Packed documents (kernels.flash_attention_varlen)
# ----------------------------------------------------------------------------------------------
def test_packing_cuts_windows_at_document_starts():
    from minitransformer.data import packing_for

    cu_seqlens, max_seqlen = packing_for(torch.tensor([0, 10]), 8, torch.tensor([0, 3, 12, 30]))
    # window 0 = [0, 8) is cut at 3; window 1 = [10, 18) at 12 (offset 2 in the window, 10 flat)
    assert cu_seqlens.tolist() == [0, 3, 8, 10, 16] and max_seqlen == 6


@pytest.mark.parametrize("backend", ["flash", "reference", "sdpa"])
def test_packed_attention_stays_within_documents(backend):
    """Each document of a packed row gets exactly the attention it would get alone."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 1, 8, 16, device=DEVICE) for _ in range(3))
    cu_seqlens = torch.tensor([0, 3, 8, 10, 16], dtype=torch.int32, device=DEVICE)
    out = model_module.packed_attention(q, k, v, backend, (cu_seqlens, 6))  # (2, 1, 8, 16)
    flat = [t.reshape(16, 16) for t in (q, k, v, out)]  # (B*T, D)
    for lo, hi in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        qd, kd, vd = (t[lo:hi][None, None] for t in flat[:3])  # (1, 1, n, D)
        alone = model_module.attention_reference(qd, kd, vd, causal=True)[0, 0]
        torch.testing.assert_close(flat[3][lo:hi], alone, atol=1e-5, rtol=1e-5)


def test_packed_training_flash_equals_reference(text_file, tmp_path):
    """--packed trains through flash_attention_varlen; its losses equal the reference's."""
    losses = {}
    for backend in ("flash", "reference"):
        out = tmp_path / backend
        train.main(["--data", str(text_file), "--packed", "--backend", backend, "--steps", "3",
                    "--batch-size", "2", "--block-size", "32", "--n-layer", "1", "--n-embd", "16",
                    "--eval-interval", "3", "--eval-batches", "1", "--sample-chars", "5", "--out", str(out)])
        with open(out / "losses.csv") as f:
            losses[backend] = [float(line.split(",")[2]) for line in list(f)[1:]]
    print(losses)
    assert all(abs(a - b) < 1e-4 for a, b in zip(losses["flash"], losses["reference"]))
