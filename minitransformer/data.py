"""Text in, batches of token ids out: the corpus, its character vocabulary, the split, the sampler.

What the reader will learn here: a character-level language model needs nothing but a text and the
set of its characters. The default text is already on every machine that runs this code: the
source of Python's own standard library, read from the running interpreter's installation, so
training needs no download. ``--data PATH`` trains on any UTF-8 text file instead.

Training batches are a pure function of ``(seed, step)``, so a resumed run draws exactly the batches
an uninterrupted one would have, with no random state to save.
"""

from __future__ import annotations

import math
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_MAX_CHARS = 2_000_000  # cap on the default corpus: plenty for a few minutes of training
VAL_FRACTION = 0.1  # the last 10% of the text is the validation split


@dataclass
class Vocab:
    chars: str  # every distinct character of the corpus, sorted by code point; token id = index

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """The token ids of ``text``, a ``(len(text),)`` int64 tensor."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per char
        known = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)  # sorted
        ids = np.searchsorted(known, codes)
        unknown = (ids == len(known)) | (known[np.minimum(ids, len(known) - 1)] != codes)
        if unknown.any():
            missing = "".join(sorted({chr(c) for c in codes[unknown]}))
            raise ValueError(f"characters not in the vocabulary: {missing!r}")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def _stdlib_files(max_chars: int) -> tuple[Path, list[str]]:
    """The sources of the standard library's top-level ``.py`` files, in name order, until
    ``max_chars`` characters are collected."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for path in sorted(root.glob("*.py")):
        try:
            src = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(src)
        total += len(src)
        if total >= max_chars:
            break
    return root, parts


def stdlib_corpus(max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, str]:
    """The top-level ``.py`` files of the standard library, in name order, up to ``max_chars``.

    Returns the text and a one-line description of it. The same Python installation always gives
    the same text; another Python version gives a slightly different one.
    """
    root, parts = _stdlib_files(max_chars)
    used = len(parts)
    text = "".join(parts)[:max_chars]
    if not text:
        raise ValueError(f"found no Python sources under {root} for the default corpus; pass --data")
    return text, f"the first {used} .py files of Python's standard library ({root})"


def read_corpus(path: str | None, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, str]:
    """The text of ``path`` (UTF-8), or the standard-library corpus when ``path`` is None."""
    if path is None:
        return stdlib_corpus(max_chars)
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--data {path}: no such file")
    if not p.is_file():
        raise ValueError(f"--data {path}: not a file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--data {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise ValueError(f"--data {path}: the file is empty")
    return text, str(p)


def document_starts(path: str | None, text: str, max_chars: int = DEFAULT_MAX_CHARS) -> torch.Tensor:
    """Offsets in ``text`` where a document begins, for training on packed documents.

    The default corpus: one file = one document. A ``--data`` file: paragraphs separated by a blank
    line (``"\n\n"``) are the documents.
    """
    if path is None:
        lengths = [len(src) for src in _stdlib_files(max_chars)[1]]
        starts = np.cumsum([0, *lengths[:-1]])
    else:
        starts = [0] + [m + 2 for m in _find_all(text, "\n\n")]
    starts = np.asarray(starts, dtype=np.int64)
    return torch.from_numpy(starts[starts < len(text)])


def _find_all(text: str, sep: str) -> list[int]:
    out, i = [], text.find(sep)
    while i >= 0:
        out.append(i)
        i = text.find(sep, i + len(sep))
    return out


def packing_for(starts: torch.Tensor, block_size: int, doc_starts: torch.Tensor):
    """``(cu_seqlens, max_seqlen)`` of a batch of windows ``[s, s + block_size)`` cut at every
    document start inside them, for :func:`kernels.flash_attention_varlen` on the flattened
    ``(B * T)`` tokens: attention then never crosses from one document into another."""
    docs = doc_starts.numpy()
    cuts = [0]
    for b, s in enumerate(starts.tolist()):
        inside = docs[(docs > s) & (docs < s + block_size)] - s  # document starts within the window
        cuts += (b * block_size + inside).tolist() + [(b + 1) * block_size]
    cu_seqlens = torch.tensor(cuts, dtype=torch.int32)  # (n_segments + 1,)
    return cu_seqlens, int((cu_seqlens[1:] - cu_seqlens[:-1]).max())


def split(ids: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation ids: the first 90% of the text and the last 10%, each >= one sequence."""
    n_val = int(len(ids) * VAL_FRACTION)
    train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
    need = block_size + 1  # one sequence of inputs plus the target after its last token
    if len(val) < need:
        raise ValueError(
            f"the text has {len(ids)} characters, too short for --block-size {block_size}: its "
            f"validation split (the last {VAL_FRACTION:.0%}) needs at least {need}, so the text "
            f"needs at least {math.ceil(need / VAL_FRACTION)}; use a longer file or a smaller --block-size"
        )
    return train, val


def unigram_entropy(ids: torch.Tensor, vocab_size: int) -> float:
    """Entropy of the character frequencies, in nats per character: the loss of a model that
    predicts every character from its frequency alone, ignoring context."""
    p = torch.bincount(ids, minlength=vocab_size).double() / len(ids)  # (V,)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def get_batch(ids: torch.Tensor, batch_size: int, block_size: int, *, seed: int, step: int,
              device="cpu", doc_starts: torch.Tensor | None = None, rank: int = 0, world_size: int = 1):
    """``batch_size`` random windows of ``ids``: inputs ``x`` and next-token targets ``y``, each ``(B, T)``.

    The window starts are drawn from a generator seeded by ``(seed, step)`` alone, so step ``s``
    gets the same batch whether or not the run was interrupted before it. With ``doc_starts``
    (packed documents) a third item is returned: ``(cu_seqlens, max_seqlen)`` of :func:`packing_for`.
    In data-parallel training, process ``rank`` of ``world_size`` gets rows ``rank::world_size``
    of that batch (``B = batch_size / world_size`` of them): the processes share one global batch,
    the same whatever their number.
    """
    rng = np.random.default_rng([seed, step])
    starts = torch.from_numpy(rng.integers(0, len(ids) - block_size, size=batch_size))  # (batch_size,)
    starts = starts[rank::world_size]  # (B,)
    offsets = torch.arange(block_size + 1)  # (T + 1,)
    windows = ids[starts[:, None] + offsets[None, :]]  # (B, T + 1)
    x, y = windows[:, :-1], windows[:, 1:]  # (B, T), (B, T)
    if doc_starts is None:
        return x.to(device), y.to(device)
    cu_seqlens, max_seqlen = packing_for(starts, block_size, doc_starts)
    return x.to(device), y.to(device), (cu_seqlens.to(device), max_seqlen)


def eval_batches(ids: torch.Tensor, n_batches: int, batch_size: int, block_size: int, device="cpu",
                 doc_starts: torch.Tensor | None = None):
    """``n_batches`` batches of windows spread evenly over ``ids``: the same ones every time, for
    every seed, so validation losses are comparable across steps and runs. With ``doc_starts``,
    each batch carries its packing as in :func:`get_batch`."""
    n = n_batches * batch_size
    starts = torch.linspace(0, len(ids) - block_size - 1, n).long()  # (n,)
    offsets = torch.arange(block_size + 1)  # (T + 1,)
    windows = ids[starts[:, None] + offsets[None, :]]  # (n, T + 1)
    for chunk, chunk_starts in zip(windows.split(batch_size), starts.split(batch_size)):  # (B, T + 1)
        if doc_starts is None:
            yield chunk[:, :-1].to(device), chunk[:, 1:].to(device)
        else:
            cu_seqlens, max_seqlen = packing_for(chunk_starts, block_size, doc_starts)
            yield chunk[:, :-1].to(device), chunk[:, 1:].to(device), (cu_seqlens.to(device), max_seqlen)
