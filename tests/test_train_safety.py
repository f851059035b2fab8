"""Data safety of ``minitransformer.train`` and ``minitransformer.sample``: a run never overwrites
another one unasked, a diverging run never writes its NaN model over the last good checkpoint, and
every mistake in the flags is one ``error:`` line before the first step, not a traceback after it.

The runs are a few steps of a one-layer model through the reference backend: seconds in all.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from conftest import DEVICE

import minitransformer.model as model_module
from minitransformer import distributed, sample, train
from minitransformer.checkpoint import load_checkpoint

# a few steps of a one-layer model (flags of minitransformer.train); the tests add --data and --out
TINY = ["--n-layer", "1", "--n-embd", "16", "--block-size", "16", "--batch-size", "2", "--warmup", "2",
        "--steps", "2", "--eval-interval", "2", "--eval-batches", "1", "--sample-chars", "0",
        "--backend", "reference", "--device", DEVICE]


def run(text_file, out, *flags):
    return train.main(["--data", str(text_file), *TINY, "--out", str(out), *flags])


def error_of(main, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    message = str(e.value.code)
    print(message)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def no_training(monkeypatch):
    """Make the first training step fail the test: the error must come before it."""
    def get_batch(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(train, "get_batch", get_batch)


def snapshot(out: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def finished_run(text_file, tmp_path_factory) -> Path:
    """The --out of a tiny run that went to its last step (step 2)."""
    out = tmp_path_factory.mktemp("finished")
    run(text_file, out)
    return out


# ----------------------------------------------------------------------------------------------
# 1. An --out that holds a run
# ----------------------------------------------------------------------------------------------
def test_out_with_a_checkpoint_is_refused_without_resume_or_overwrite(text_file, tmp_path, monkeypatch):
    """Bug: training into an --out that holds ckpt.pt, without --resume, silently overwrote it at
    the first evaluation. Now every rank refuses in setup, naming the checkpoint and the ways on;
    --overwrite replaces the old run."""
    run(text_file, tmp_path)
    before = snapshot(tmp_path)
    with monkeypatch.context() as m:
        no_training(m)
        message = error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(tmp_path), "--seed", "1"])
        for ranks in (distributed.Ranks(), distributed.Ranks(rank=1, local_rank=1, world_size=2)):
            # on the CPU: rank 1 of 2 on CUDA needs a second GPU, which a one-GPU machine has not
            args = train.parse_args(["--data", str(text_file), *TINY, "--out", str(tmp_path),
                                     "--device", "cpu"])
            with pytest.raises(ValueError, match="already holds a run"):
                train.setup(args, ranks)
    assert str(tmp_path / "ckpt.pt") in message and "--resume" in message and "--overwrite" in message
    assert snapshot(tmp_path) == before

    run(text_file, tmp_path, "--seed", "1", "--overwrite")
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["args"]["seed"] == 1 and [r["step"] for r in ckpt["history"]] == [1, 2]


def test_overwrite_deletes_the_old_run_before_training(text_file, tmp_path, monkeypatch):
    """Bug guarded: an --overwrite run interrupted before its first checkpoint left the old
    checkpoint in place, and the --resume its message suggests would continue the old run."""
    run(text_file, tmp_path)
    real_get_batch = train.get_batch

    def get_batch(*args, step, **kwargs):
        if step == 0:
            assert not (tmp_path / "ckpt.pt").exists(), "the old checkpoint is still there"
            raise KeyboardInterrupt
        return real_get_batch(*args, step=step, **kwargs)

    monkeypatch.setattr(train, "get_batch", get_batch)
    with pytest.raises(SystemExit, match="interrupted at step 0"):
        run(text_file, tmp_path, "--overwrite")
    assert "no checkpoint at" in error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(tmp_path),
                                                        "--resume"])


# ----------------------------------------------------------------------------------------------
# 2. Non-finite numbers
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["validation", "training", "weights"])
def test_diverging_run_stops_and_keeps_the_last_good_checkpoint(case, text_file, tmp_path, monkeypatch):
    """Bug: with --lr 1e6 the loss turned NaN, training went on, a NaN checkpoint replaced the last
    good one and the run ended in a traceback from torch.multinomial. Now the first non-finite
    loss (or weight) stops the run with one line, and the checkpoint on disk stays finite."""
    eval_interval = {"validation": "1", "training": "4", "weights": "1"}[case]
    if case == "weights":  # the second evaluation reports a finite loss for a model with a NaN weight
        real_evaluate, calls = train.evaluate, []

        def evaluate(model, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    model.wte.weight[-1, 0] = float("nan")
                return 1.0
            return real_evaluate(model, *args, **kwargs)

        monkeypatch.setattr(train, "evaluate", evaluate)
    message = error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(tmp_path), "--lr", "1e6",
                                    "--steps", "4", "--eval-interval", eval_interval, "--sample-chars", "5"])
    assert "try a lower --lr" in message
    if case == "training":
        assert "training loss nan" in message and "no checkpoint was written" in message
        assert not (tmp_path / "ckpt.pt").exists()
        return
    ckpt = load_checkpoint(tmp_path / "ckpt.pt")
    assert f"the checkpoint of step {ckpt['step']} is left as it was" in message
    assert all(torch.isfinite(w).all() for w in ckpt["model"].values())
    assert all(math.isfinite(r["val_loss"]) for r in ckpt["history"] if r["val_loss"] != "")
    assert ("a weight is inf or nan" if case == "weights" else "validation loss nan") in message


# ----------------------------------------------------------------------------------------------
# 1-4, 7. Flags that cannot work: one line, before the first step
# ----------------------------------------------------------------------------------------------
BAD_FLAGS = {  # id: (flags, the message says)
    "lr-inf": (["--lr", "inf"], "need a finite --lr > 0"),
    "lr-nan": (["--lr", "nan"], "need a finite --lr > 0"),
    "min-lr-inf": (["--min-lr", "inf"], "0 <= --min-lr <= --lr"),
    "weight-decay-nan": (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0, got nan"),
    "weight-decay-negative": (["--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    "grad-clip-inf": (["--grad-clip", "inf"], "--grad-clip must be a finite number >= 0, got inf"),
    "warmup-negative": (["--warmup", "-10"], "--warmup must be >= 0, got -10"),
    "sample-chars-negative": (["--sample-chars", "-5"], "--sample-chars must be >= 0, got -5"),
    "empty-prompt": (["--prompt", "", "--sample-chars", "5"], "--prompt: needs at least one character"),
    "resume-and-overwrite": (["--resume", "--overwrite"], "pick one"),
}


@pytest.mark.parametrize("case", BAD_FLAGS)
def test_train_refuses_bad_flags_before_training(case, text_file, tmp_path, monkeypatch):
    """Bug: these were accepted; a non-finite --lr or --grad-clip, a negative --warmup or
    --sample-chars trained on silently, --weight-decay -1 failed in AdamW with a traceback, and
    --prompt "" trained the whole run before an IndexError at the final sample."""
    flags, expected = BAD_FLAGS[case]
    no_training(monkeypatch)
    message = error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(tmp_path / "out"), *flags])
    assert expected in message
    assert not (tmp_path / "out").exists()  # a rejected run leaves nothing behind


# ----------------------------------------------------------------------------------------------
# 3. An --out that cannot be created, or written
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["file", "under-file", "sys"])
def test_out_that_cannot_be_created(case, text_file, tmp_path, monkeypatch):
    """Bug: --out equal to a file, under a file or on /sys gave a raw traceback from mkdir."""
    if case == "sys" and not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys here")
    (tmp_path / "file").write_text("not a directory")
    out = {"file": tmp_path / "file", "under-file": tmp_path / "file" / "run", "sys": Path("/sys/minitransformer")}
    expected = {"file": "is a file, not a directory", "under-file": "cannot create this directory",
                "sys": "cannot create this directory"}[case]
    no_training(monkeypatch)
    message = error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(out[case])])
    assert f"--out {out[case]}: {expected}" in message


@pytest.mark.parametrize("case", ["read-only-mode", "proc"])
def test_out_that_cannot_be_written(case, text_file, tmp_path, monkeypatch):
    """Bug: an --out that exists but takes no files trained until the first checkpoint and then
    raised PermissionError. A read-only mode does not stop root, /proc stops everyone."""
    if case == "read-only-mode" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    if case == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    out = tmp_path / "read-only" if case == "read-only-mode" else Path("/proc")
    if case == "read-only-mode":
        out.mkdir(mode=0o555)
    no_training(monkeypatch)
    message = error_of(train.main, ["--data", str(text_file), *TINY, "--out", str(out)])
    assert f"--out {out}: cannot write files there" in message


# ----------------------------------------------------------------------------------------------
# 5. Sampling temperature; Ctrl-C after the last step
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", ["nan", "inf"])
def test_sample_refuses_non_finite_temperature(temperature, finished_run):
    """Bug: --temperature nan or inf passed the >= 0 check and crashed inside torch.multinomial."""
    message = error_of(sample.main, ["--ckpt", str(finished_run / "ckpt.pt"), "--temperature", temperature,
                                     "--backend", "reference", "--device", DEVICE, "--chars", "5"])
    assert f"--temperature must be a finite number >= 0, got {temperature}" in message


@pytest.mark.parametrize("where", ["plot_losses", "generate_text"])
def test_ctrl_c_after_the_last_step_is_one_line(where, text_file, tmp_path, monkeypatch):
    """Bug: a Ctrl-C while the plot or the sample was made, after the last step, printed a raw
    KeyboardInterrupt traceback. Now one line, which says that the checkpoint is saved."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, where, interrupt)
    # an escaping KeyboardInterrupt would end the whole pytest session: catch it to fail instead
    with pytest.raises((SystemExit, KeyboardInterrupt)) as e:
        run(text_file, tmp_path, "--sample-chars", "5")
    assert e.type is SystemExit, "the KeyboardInterrupt escaped train.main"
    assert str(e.value) == (f"interrupted after the last step; the checkpoint of step 2 is saved in "
                            f"{tmp_path / 'ckpt.pt'}")
    assert load_checkpoint(tmp_path / "ckpt.pt")["step"] == 2


# ----------------------------------------------------------------------------------------------
# 6. Resuming a finished run; a progress bar while sampling
# ----------------------------------------------------------------------------------------------
def test_resume_of_a_finished_run_writes_nothing(text_file, tmp_path, capsys):
    """Bug: --resume on a checkpoint already at --steps printed "wrote .../ckpt.pt" although nothing
    was trained (and rewrote the CSV and the plot). Now it says so, leaves the files, and samples."""
    run(text_file, tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    history = run(text_file, tmp_path, "--resume", "--sample-chars", "5")
    out = capsys.readouterr().out
    print(out)
    assert "wrote" not in out and "is already at its last step (2)" in out
    assert f"nothing written: {tmp_path / 'ckpt.pt'} was already at its last step" in out
    assert "--- sample: 5 characters" in out
    assert snapshot(tmp_path) == before and history[-1]["step"] == 2


def test_sampling_shows_a_progress_bar(text_file, finished_run, tmp_path, monkeypatch, capsys):
    """Bug: sampling 3,000 characters took two minutes on a CPU with no output. Now a bar on stderr
    appears once generation takes a while (here at once), in sample.py and at the end of train."""
    real_tqdm = model_module.tqdm
    monkeypatch.setattr(model_module, "tqdm", lambda *a, **kw: real_tqdm(*a, **{**kw, "delay": 0}))
    sample.main(["--ckpt", str(finished_run / "ckpt.pt"), "--backend", "reference", "--device", DEVICE,
                 "--chars", "5"])
    assert "sampling" in capsys.readouterr().err
    run(text_file, tmp_path, "--sample-chars", "5")
    assert "sampling" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 7. Warmup longer than the run
# ----------------------------------------------------------------------------------------------
def test_warmup_longer_than_the_run_warns(text_file, tmp_path, capsys):
    """Bug: with --warmup > --steps the learning rate never reached --lr, silently."""
    run(text_file, tmp_path, "--warmup", "10")
    err = capsys.readouterr().err
    assert "warning: --warmup 10 is longer than --steps 2: the learning rate never reaches --lr 0.003" in err
