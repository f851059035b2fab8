"""Generate text from a checkpoint: ``python -m minitransformer.sample --ckpt runs/minitransformer/ckpt.pt``.

Each new character costs one step of the model on one token: its query attends to the cached keys
and values of everything before it (``GPT.generate``), through the flash kernel by default. A model
trained with ``--attention linear`` carries a fixed-size recurrent state instead (the checkpoint's
config says which). A generation that takes more than two seconds shows a progress bar on stderr.

:func:`generate_text` is the same generation for ``train.py``, which ends each run with a sample.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .data import Vocab
from .devices import pick_device
from .model import BACKENDS, GPT


def check_prompt(prompt: str, vocab: Vocab):
    """``ValueError`` now, not after training, on a prompt the model cannot read."""
    if not prompt:
        raise ValueError("--prompt: needs at least one character")
    try:
        vocab.encode(prompt)
    except ValueError as e:
        raise ValueError(f"--prompt {prompt!r}: {e}") from None


def generate_text(model: GPT, vocab: Vocab, prompt: str, n_chars: int, device, *, seed=0, temperature=0.8,
                  top_k=None, use_cache=True) -> str:
    """``prompt`` followed by ``n_chars`` sampled characters (the prompt's must be in the vocabulary),
    with a progress bar on stderr if that takes more than a moment."""
    idx = vocab.encode(prompt)[None, :].to(device)  # (1, T)
    g = torch.Generator().manual_seed(seed)
    model.eval()
    out = model.generate(idx, n_chars, temperature=temperature, top_k=top_k, use_cache=use_cache, generator=g,
                         progress=True)
    return vocab.decode(out[0].tolist())


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m minitransformer.sample",
                                description="Generate text from a checkpoint (defaults in brackets).")
    arg = p.add_argument
    arg("--ckpt", default="runs/minitransformer/ckpt.pt", help="a checkpoint of train.py [%(default)s]")
    arg("--prompt", default="\n", help="text to continue [a newline]")
    arg("--chars", type=int, default=500, help="characters to generate [%(default)s]")
    arg("--temperature", type=float, default=0.8, help="0 picks the most likely character [%(default)s]")
    arg("--top-k", type=int, default=None, help="sample among the k most likely characters only [all]")
    arg("--seed", type=int, default=0, help="seeds the sampling [%(default)s]")
    arg("--backend", default="flash", help=f"attention: {', '.join(BACKENDS)} [%(default)s]")
    arg("--device", default="auto", help="auto, cpu, cuda, cuda:N [auto: cuda if available]")
    arg("--no-cache", action="store_true", help="recompute the whole sequence at every step (slow)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.backend not in BACKENDS:
            raise ValueError(f"--backend {args.backend}: unknown backend; choose {', '.join(BACKENDS)}")
        if args.chars < 0 or (args.top_k is not None and args.top_k < 1):
            raise ValueError("need --chars >= 0 and --top-k >= 1")
        if not (math.isfinite(args.temperature) and args.temperature >= 0):  # nan would fail in multinomial
            raise ValueError(f"--temperature must be a finite number >= 0, got {args.temperature}")
        device = pick_device(args.device)
        ckpt = load_checkpoint(args.ckpt)
        model = model_from_checkpoint(ckpt, args.ckpt, backend=args.backend).to(device)
        vocab = Vocab(ckpt["vocab"])
        check_prompt(args.prompt, vocab)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    t0 = time.perf_counter()
    text = generate_text(model, vocab, args.prompt, args.chars, device, seed=args.seed,
                         temperature=args.temperature, top_k=args.top_k, use_cache=not args.no_cache)
    print(text)
    memory = "recurrent state" if model.config.attention == "linear" else "KV cache"
    print(f"--- {args.chars} characters in {time.perf_counter() - t0:.1f} s "
          f"({args.backend} {model.config.attention} attention, {'no cache' if args.no_cache else memory}, "
          f"{device}) ---")


if __name__ == "__main__":
    main()
