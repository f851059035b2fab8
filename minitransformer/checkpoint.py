"""What a training run leaves in ``--out``: the checkpoint ``ckpt.pt``, and its loss curve in
``losses.csv`` and ``losses.png``. ``train.py`` writes them, ``sample.py`` reads the checkpoint.

A checkpoint is a plain dict that ``torch.load(..., weights_only=True)`` can read: ``model`` and
``optimizer`` (state dicts), ``config`` (the model's :class:`~minitransformer.model.Config` as a
dict), ``vocab`` (the characters), ``step``, ``history`` (one row per step: step, lr, train_loss,
val_loss, the last empty where the step was not evaluated) and ``args`` (the flags of the run).
It is written atomically, so a kill at any moment leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from .model import GPT, Config

# Flags that define a run: resuming with another value would not continue the same run. The
# backend is not one of them: they all compute the same function.
RUN_FLAGS = ("data", "max_chars", "seed", "steps", "batch_size", "block_size", "n_layer", "n_embd", "lr",
             "min_lr", "warmup", "weight_decay", "grad_clip", "eval_interval", "eval_batches", "packed",
             "attention", "decay")


def save_checkpoint(path: Path, ckpt: dict):
    """Write to a temporary file, then rename: a kill leaves the old checkpoint or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(ckpt, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """A checkpoint written by ``minitransformer.train``; ``ValueError`` if there is none or it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- whatever makes it unreadable, the user's fix is the same
        raise ValueError(f"{path} is not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "vocab", "step", "args"} <= ckpt.keys():
        raise ValueError(f"{path} is not a checkpoint of minitransformer.train")
    return ckpt


def model_from_checkpoint(ckpt: dict, path, backend: str | None = None) -> GPT:
    """The model a checkpoint holds; ``ValueError`` if its weights do not fit its config."""
    config = Config(**{**ckpt["config"], **({"backend": backend} if backend else {})})
    model = GPT(config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ValueError(f"checkpoint {path}: its weights do not match its config {ckpt['config']}") from None
    return model


def check_same_run(ckpt: dict, args, path, defaults: dict):
    """``ValueError`` unless ``args`` has the checkpoint's value of every flag in ``RUN_FLAGS``; a
    flag newer than the checkpoint had its value in ``defaults`` then."""
    for name in RUN_FLAGS:
        theirs, ours = ckpt["args"].get(name, defaults[name]), getattr(args, name)
        if theirs != ours:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"checkpoint {path} is from a different config: {flag} was {theirs}, now {ours} "
                             f"(resume with the same flags, or pick another --out)")


def last_checkpoint(history: list[dict]) -> int:
    """The step of the last checkpoint: every evaluated step wrote one."""
    return next((r["step"] for r in reversed(history) if r["val_loss"] != ""), 0)


def write_csv(path: Path, history: list[dict]):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "lr", "train_loss", "val_loss"])
        w.writeheader()
        w.writerows(history)


def plot_losses(path: Path, history: list[dict], entropy: float, title: str):
    # A bare Figure needs no pyplot backend, so training from a notebook leaves its inline
    # backend alone (matplotlib.use("Agg") would silently stop the notebook's figures).
    from matplotlib.figure import Figure

    val = [r for r in history if r["val_loss"] != ""]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot([r["step"] for r in history], [r["train_loss"] for r in history], lw=0.8, alpha=0.6,
            label="train (one batch)")
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
    ax.axhline(entropy, color="gray", ls="--", label=f"unigram entropy of the corpus ({entropy:.2f})")
    ax.set(xlabel="step", ylabel="loss (nats / character)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
