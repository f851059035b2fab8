"""Train the mini Transformer: ``python -m minitransformer.train`` (``--help`` lists the knobs).

What the reader will learn here: the whole training loop of a language model on one page. AdamW
with a linear warmup and a cosine decay, gradient clipping, bf16 autocast on a GPU, a validation
loss every ``--eval-interval`` steps, and a checkpoint written atomically at the same time.

A run is reproducible and resumable: the model is initialised from ``--seed``, batch ``s`` depends
only on ``(seed, s)`` (see ``data.get_batch``), and nothing else is random. So after a kill,
``--resume`` reloads the last checkpoint (weights, optimizer state, step, loss history) and the
run ends exactly where an uninterrupted one would have.

The backends compute the same function, so which one trains does not change the model. With
``--backend auto`` the model trains through FlashAttention: on a GPU the Triton kernel, on a CPU
its plain-PyTorch twin (the kernel would run there in Triton's interpreter, about 100 times
slower; see ``devices.py``). The end of the run re-evaluates a validation batch with ``flash`` next
to ``reference``, and generates the sample with ``flash`` and the KV cache.

``--attention linear`` trains causal linear attention instead of softmax attention (see
``model.py``: elu1 feature map, a fixed decay ``--decay``); the end-of-run check then compares the
chunked Triton kernel with the parallel form, and the sample is generated from a fixed-size
recurrent state instead of a KV cache. ``--packed`` needs softmax attention.

Data parallel: ``torchrun --nproc_per_node=N -m minitransformer.train ...`` trains on N processes
(GPUs, or CPU processes through gloo), each on N-th of every batch, with the gradients averaged
(see ``distributed.py``). The numbers are those of one process on the whole batch; rank 0 alone
writes the files and prints.

Outputs in ``--out``: ``ckpt.pt``, ``losses.csv``, ``losses.png`` (written by ``checkpoint.py``);
the sample is printed. An ``--out`` that already holds a checkpoint is refused unless ``--resume``
continues that run or ``--overwrite`` replaces it. A loss that stops being finite (a learning rate
too high) ends the run with an error before its model is written: the last checkpoint stays the
last good one.

The pieces around the loop live beside it: ``checkpoint.py`` (the files of a run),
``devices.py`` (device, backend, autocast), ``data.py`` (corpus and batches), ``sample.py``
(generation), ``distributed.py`` (data parallel).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from kernels import MAX_HEAD_DIM, MIN_HEAD_DIM

from . import distributed
from .checkpoint import (
    check_same_run,
    last_checkpoint,
    load_checkpoint,
    plot_losses,
    save_checkpoint,
    write_csv,
)
from .data import (
    DEFAULT_MAX_CHARS,
    Vocab,
    document_starts,
    eval_batches,
    get_batch,
    read_corpus,
    split,
    unigram_entropy,
)
from .devices import autocast_for, flash_implementation, flash_runs_on, pick_backend, pick_device
from .model import ATTENTIONS, BACKENDS, GPT, Config, check_decay, check_packing
from .sample import check_prompt, generate_text


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minitransformer.train",
                                description="Train the mini Transformer (defaults in brackets).")
    arg = p.add_argument
    arg("--data", default=None, help="UTF-8 text file to train on [Python's standard library]")
    arg("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="cap on the default corpus [%(default)s]")
    arg("--out", default="runs/minitransformer", help="directory for checkpoint, CSV and plot [%(default)s]")
    arg("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    arg("--overwrite", action="store_true",
        help="start over in an --out that holds a run: its checkpoint, CSV and plot are deleted first")
    arg("--seed", type=int, default=0, help="seeds the initialisation and the batch order [%(default)s]")
    arg("--steps", type=int, default=1000, help="optimizer steps [%(default)s]")
    arg("--batch-size", type=int, default=16, help="sequences per step [%(default)s]")
    arg("--block-size", type=int, default=128, help="sequence length, in characters [%(default)s]")
    arg("--n-layer", type=int, default=2, help="Transformer blocks [%(default)s]")
    arg("--n-embd", type=int, default=128,
        help=f"width = head dim of the single head, {MIN_HEAD_DIM}..{MAX_HEAD_DIM} [%(default)s]")
    arg("--lr", type=float, default=3e-3, help="peak learning rate [%(default)s]")
    arg("--min-lr", type=float, default=None, help="final learning rate of the cosine decay [lr / 10]")
    arg("--warmup", type=int, default=100, help="steps of linear warmup [%(default)s]")
    arg("--weight-decay", type=float, default=0.1, help="AdamW weight decay of the matrices [%(default)s]")
    arg("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this, 0: off [%(default)s]")
    arg("--backend", default="auto", help=f"attention for training: auto, {', '.join(BACKENDS)} "
                                          "[auto: flash (on a CPU its PyTorch twin); for linear "
                                          "attention on a CPU: reference]")
    arg("--attention", default="softmax", choices=ATTENTIONS,
        help="softmax, or linear: elu1 linear attention with a decay, generating from a recurrent "
             "state instead of a KV cache [%(default)s]")
    arg("--decay", type=float, default=Config.decay,
        help="linear attention: the state's decay per token, in (0, 1] [%(default)s]")
    arg("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto: cuda if available]")
    arg("--packed", action="store_true",
        help="attention stays within each document (one file of the default corpus, or a paragraph "
             "of --data), through kernels.flash_attention_varlen on the packed rows")
    arg("--eval-interval", type=int, default=250, help="validate and checkpoint every N steps [%(default)s]")
    arg("--eval-batches", type=int, default=16, help="validation batches per evaluation [%(default)s]")
    arg("--sample-chars", type=int, default=300, help="characters to generate at the end, 0: none "
                                                      "[%(default)s]")
    arg("--prompt", default=None, help="start of the generated sample [a newline]")
    return p.parse_args(argv)


def check_args(args):
    positive = ("steps", "batch_size", "block_size", "n_layer", "eval_interval", "eval_batches", "max_chars")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("warmup", "sample_chars"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite replaces it: pick one")
    check_decay(args.decay, cli=True)
    if args.packed:
        check_packing(args.attention, cli=True)
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    # inf passes the comparisons (and nan fails them only by luck): a non-finite value makes NaN weights
    if not (math.isfinite(args.lr) and args.lr > 0 and 0 <= args.min_lr <= args.lr):
        raise ValueError(f"need a finite --lr > 0 and 0 <= --min-lr <= --lr, got {args.lr} and {args.min_lr}")
    for name in ("weight_decay", "grad_clip"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")


def check_out(out: Path, args):
    """Fail now, not at the first checkpoint: on an --out that holds another run, that cannot be
    created, or where no file can be written. Every rank runs it, so all of them decide alike."""
    path = out / "ckpt.pt"
    if path.exists() and not (args.resume or args.overwrite):
        raise ValueError(f"{path} already holds a run: add --resume to continue it, or --overwrite to "
                         f"replace it with a new one (or pick another --out)")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out}: cannot create this directory ({e.strerror})") from None
    try:  # a real write: os.access says yes to root even where writes fail (read-only mounts)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write files there ({e.strerror})") from None


def lr_at(step: int, args) -> float:
    """Linear warmup to ``lr`` over ``warmup`` steps, then a cosine decay to ``min_lr`` at ``steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)  # 0 -> 1
    return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - args.min_lr)


def make_optimizer(model: GPT, args) -> torch.optim.AdamW:
    # Decay the matrices (embedding, linear layers), not the LayerNorm gains and biases.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95))


def with_backend(model: GPT, backend: str) -> GPT:
    """The same weights, with attention through another backend."""
    other = GPT(dataclasses.replace(model.config, backend=backend)).to(next(model.parameters()).device)
    other.load_state_dict(model.state_dict())
    return other


@torch.no_grad()
def evaluate(model: GPT, run: Run, args, n_batches=None) -> float:
    """Mean loss over ``eval_batches`` batches of windows spread evenly over the validation text."""
    model.eval()
    losses = []
    batches = eval_batches(run.val_ids, n_batches or args.eval_batches, args.batch_size, args.block_size,
                           run.device, doc_starts=run.val_docs)
    for x, y, *packing in batches:
        with autocast_for(run.device):
            losses.append(model(x, y, packing=packing[0] if packing else None)[1].item())
    model.train()
    return sum(losses) / len(losses)


@dataclasses.dataclass(frozen=True)
class Run:
    """What ``setup`` checked and read: everything the training loop starts from besides ``args``."""

    device: torch.device  # where this process trains
    desc: str  # where the text comes from, for the log
    vocab: Vocab  # the characters of the text
    ids: torch.Tensor  # the whole text, encoded: (N,)
    train_ids: torch.Tensor  # its first 90% (data.split)
    val_ids: torch.Tensor  # the rest
    config: Config  # the model to train
    ckpt: dict | None  # the checkpoint to continue from (--resume), else None
    train_docs: torch.Tensor | None = None  # --packed: the document starts within train_ids
    val_docs: torch.Tensor | None = None  # --packed: the document starts within val_ids


def setup(args, ranks: distributed.Ranks) -> Run:
    """Everything that can fail because of the user's input, checked before any training."""
    check_args(args)
    if args.batch_size % ranks.world_size:
        raise ValueError(f"--batch-size {args.batch_size} must be a multiple of the number of processes "
                         f"({ranks.world_size}): each takes an equal share of every batch")
    device = distributed.device_for(pick_device(args.device), ranks)
    backend = pick_backend(args.backend, device, args.attention)
    text, desc = read_corpus(args.data, args.max_chars)
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    train_ids, val_ids = split(ids, args.block_size)
    train_docs = val_docs = None  # document starts of each split, when packing
    if args.packed:
        starts = document_starts(args.data, text, args.max_chars)
        train_docs = starts[starts < len(train_ids)]
        val_docs = starts[starts >= len(train_ids)] - len(train_ids)
    config = Config(vocab_size=vocab.size, block_size=args.block_size, n_layer=args.n_layer,
                    n_embd=args.n_embd, backend=backend, attention=args.attention, decay=args.decay)
    ckpt = None
    path = Path(args.out) / "ckpt.pt"
    if args.resume:
        ckpt = load_checkpoint(path)
        check_same_run(ckpt, args, path, defaults=vars(parse_args([])))
        if ckpt["vocab"] != vocab.chars:
            raise ValueError(f"checkpoint {path} was trained on a different text (its vocabulary differs)")
    if args.prompt is None:  # a newline if the text has one, else its first character
        args.prompt = "\n" if "\n" in vocab.chars else text[0]
    check_prompt(args.prompt, vocab)
    check_out(Path(args.out), args)  # last: it creates --out, which a typo in another flag should not
    return Run(device=device, desc=desc, vocab=vocab, ids=ids, train_ids=train_ids, val_ids=val_ids,
               config=config, ckpt=ckpt, train_docs=train_docs, val_docs=val_docs)


def main(argv=None):
    args = parse_args(argv)
    try:
        ranks = distributed.get_ranks()  # rank 0 of 1 unless started by torchrun
        run = setup(args, ranks)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    device, vocab, config = run.device, run.vocab, run.config
    distributed.start(device, ranks)
    log = print if ranks.is_main else (lambda *a, **kw: None)
    out = Path(args.out)  # created by setup
    if args.overwrite and ranks.is_main:  # now, or an interrupted new run would --resume the old one
        for name in ("ckpt.pt", "losses.csv", "losses.png"):
            (out / name).unlink(missing_ok=True)

    torch.manual_seed(args.seed)
    model = GPT(config).to(device)
    optimizer = make_optimizer(model, args)
    step, history = 0, []
    if run.ckpt is not None:
        model.load_state_dict(run.ckpt["model"])
        optimizer.load_state_dict(run.ckpt["optimizer"])
        step, history = run.ckpt["step"], run.ckpt["history"]
    train_model = distributed.wrap(model, device, ranks)  # averages the gradients over the ranks
    entropy = unigram_entropy(run.ids, vocab.size)

    log(f"data: {run.desc}: {len(run.ids):,} characters, {vocab.size} distinct, "
        f"{len(run.train_ids):,} train / {len(run.val_ids):,} val")
    log(f"model: {model.num_params():,} parameters (n_layer {config.n_layer}, n_embd {config.n_embd}, "
        f"one head, context {config.block_size}, {config.attention} attention); training backend: "
        f"{config.backend}" + (f" ({flash_implementation(device, config.attention)})"
                               if config.backend == "flash" else "") + f", on {device}")
    log(f"unigram entropy of the corpus: {entropy:.3f} nats/char (the best loss without context)")
    if ranks.world_size > 1:
        log(f"data parallel: {ranks.world_size} processes, {args.batch_size // ranks.world_size} "
            f"sequences each per step")
    if step == args.steps:
        log(f"{out / 'ckpt.pt'} is already at its last step ({step}): nothing to train, no file rewritten")
    elif step:
        log(f"resuming from {out / 'ckpt.pt'} at step {step}")
    if args.warmup > args.steps:
        log(f"warning: --warmup {args.warmup} is longer than --steps {args.steps}: the learning rate never "
            f"reaches --lr {args.lr} (it peaks at {lr_at(args.steps - 1, args):.3g})", file=sys.stderr)
    sys.stdout.flush()  # before the progress bar starts writing to stderr

    def checkpoint():
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "config": dataclasses.asdict(config), "vocab": vocab.chars, "step": step,
                 "history": history, "args": vars(args)}
        save_checkpoint(out / "ckpt.pt", state)
        write_csv(out / "losses.csv", history)

    tokens_per_step = args.batch_size * args.block_size
    bar = tqdm(total=args.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=not ranks.is_main or step == args.steps)
    tok_s, val_loss = None, None
    start_step = step  # equal to args.steps when resuming a finished run

    def diverged(what: str) -> SystemExit:  # every rank has the same losses and weights: all stop here
        bar.close()
        last = last_checkpoint(history)
        kept = f"the checkpoint of step {last} is left as it was" if last else "no checkpoint was written"
        return SystemExit(f"error: step {step}: {what}, the run stops here: learning rate too high? "
                          f"try a lower --lr ({kept})")

    try:
        while step < args.steps:
            t0 = time.perf_counter()
            lr = lr_at(step, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y, *packing = get_batch(run.train_ids, args.batch_size, args.block_size, seed=args.seed,
                                       step=step, device=device, doc_starts=run.train_docs,
                                       rank=ranks.rank, world_size=ranks.world_size)
            with autocast_for(device):
                _, loss = train_model(x, y, packing=packing[0] if packing else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            optimizer.step()
            step += 1
            row = {"step": step, "lr": lr, "train_loss": distributed.mean(loss, ranks), "val_loss": ""}
            if not math.isfinite(row["train_loss"]):
                raise diverged(f"training loss {row['train_loss']}")
            rate = tokens_per_step / (time.perf_counter() - t0)
            tok_s = rate if tok_s is None else 0.9 * tok_s + 0.1 * rate  # smoothed
            # Every rank evaluates (the same batches): rank 0 would take as long alone, the others
            # waiting for it at the next step, and this way all of them hold the same history.
            if step % args.eval_interval == 0 or step == args.steps:
                row["val_loss"] = val_loss = evaluate(model, run, args)
                if not math.isfinite(val_loss):
                    raise diverged(f"validation loss {val_loss}")
                # a finite loss does not prove finite weights (the row of a character it never saw)
                if not all(p.isfinite().all() for p in model.parameters()):
                    raise diverged("a weight is inf or nan")
            history.append(row)
            if row["val_loss"] != "" and ranks.is_main:
                checkpoint()
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val_loss:.3f}" if val_loss else "-",
                            tok_s=f"{tok_s:,.0f}")
    except KeyboardInterrupt:
        bar.close()
        last = last_checkpoint(history)
        if not last:  # nothing to resume from
            raise SystemExit(f"interrupted at step {step}, before the first checkpoint: rerun the same "
                             f"command to start again") from None
        raise SystemExit(f"interrupted at step {step}; the last checkpoint is at step {last}: "
                         f"rerun with --resume to continue") from None
    bar.close()
    distributed.stop()
    if not ranks.is_main:  # the rest (files, the check through the kernel, the sample) is rank 0's
        return history

    try:  # the last step saved the checkpoint: a Ctrl-C now loses only the plot, the check, the sample
        print(f"step {step}: validation loss {history[-1]['val_loss']:.3f} nats/char "
              f"(unigram entropy of the corpus: {entropy:.3f} nats/char)")
        if step > start_step:  # else the files are those of the finished run, already written
            write_csv(out / "losses.csv", history)
            title = f"mini Transformer ({config.backend} attention)"
            plot_losses(out / "losses.png", history, entropy, title)
            print(f"wrote {out / 'ckpt.pt'}, {out / 'losses.csv'}, {out / 'losses.png'}")
        else:
            print(f"nothing written: {out / 'ckpt.pt'} was already at its last step")

        # The kernel is exact: the trained model gives the same loss through it as through the reference.
        flash_model = model
        if flash_runs_on(device, config.attention):
            flash_model = model if config.backend == "flash" else with_backend(model, "flash")
            loss_flash = evaluate(flash_model, run, args, n_batches=1)
            loss_ref = evaluate(with_backend(model, "reference"), run, args, n_batches=1)
            print(f"one validation batch through flash ({flash_implementation(device, config.attention)}): "
                  f"loss {loss_flash:.5f} (reference: {loss_ref:.5f})")
        if args.sample_chars > 0:
            t0 = time.perf_counter()
            sample = generate_text(flash_model, vocab, args.prompt, args.sample_chars, device, seed=args.seed)
            memory = "a recurrent state" if config.attention == "linear" else "a KV cache"
            print(f"--- sample: {args.sample_chars} characters from the {flash_model.config.backend} "
                  f"attention with {memory} "
                  f"({time.perf_counter() - t0:.1f} s) ---")
            print(sample)
            print("---")
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted after the last step; the checkpoint of step {step} is saved in "
                         f"{out / 'ckpt.pt'}") from None
    return history


if __name__ == "__main__":
    main()
