"""Shared test helpers: the device to test on, the dtypes, and the three-way error check."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest
import torch

import kernels
from minitransformer import train
from minitransformer.model import GPT, Config

# The notebooks pytest executes (nbmake, whose kernels inherit this environment) run each exercise
# check on its solution where the stub stands, so a wrong solution fails the suite
# (notebooks/exercises/__init__.py). Not a conftest.py in notebooks/: a second module named
# conftest would shadow this one for the tests that import from it.
os.environ.setdefault("EXERCISES_SOLUTIONS", "1")
# No ipywidgets slider in those runs: nothing draws it, and an interact() under nbmake's headless
# kernel hung the cell in about one run of three (notebook 06, 2026-12-02).
os.environ.setdefault("NOTEBOOK_HEADLESS", "1")

ON_GPU = torch.cuda.is_available() and not kernels.INTERPRET
DEVICE = "cuda" if ON_GPU else "cpu"
#: for tests of the Triton kernels themselves (launch configurations, offset clamping, the
#: interpreter): without Triton, kernels' public names are the PyTorch twin, tested on its own
needs_triton = pytest.mark.skipif(not kernels.HAS_TRITON, reason="needs Triton (Linux wheels only): "
                                  "tests the Triton kernel itself, which the PyTorch twin stands in for")
# The interpreter is slow: the CPU suite runs fp32 and bf16; a GPU adds fp16.
DTYPES = [torch.float32, torch.bfloat16] + ([torch.float16] if ON_GPU else [])
# Rounding floor per dtype, added to "twice what plain PyTorch in that precision makes".
FLOOR = {torch.float32: 5e-5, torch.float16: 1e-3, torch.bfloat16: 5e-3}


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """:func:`kernels.rel_err` with the tests' floor: entries whose RMS is below 1e-2 count as
    absolute error, so a reference that is exactly zero (dq when each query sees one key) is not
    a 0/0."""
    return kernels.rel_err(x, ref, floor=max(1e-2 * ref.numel() ** 0.5, 1e-30))


def assert_close(name: str, out, ref64, ref_lowp, dtype, factor: float = 2.0):
    """The kernel's error against float64 must be at most ``factor`` times the error of the same
    reference computed in ``dtype``, plus a rounding floor. Both are printed first."""
    err = rel_err(out, ref64)
    err_lowp = rel_err(ref_lowp, ref64)
    bound = factor * err_lowp + FLOOR[dtype]
    print(f"{name:>4}: kernel {err:.2e}  torch-{dtype_id(dtype)} {err_lowp:.2e}  bound {bound:.2e}")
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err <= bound, f"{name}: relative error {err:.3e} > bound {bound:.3e}"



def assert_attention_results(got: dict, ref64: dict, lowp: dict, dtype) -> None:
    """``got``, ``ref64``, ``lowp``: dicts of out, lse, dq, dk, dv from an implementation, the
    float64 reference and the reference in ``dtype``. Rows that see no key have lse = -inf and
    output 0 in ``got`` exactly where the reference says so; the rest, and every gradient, within
    :func:`assert_close`'s bound (lse in float32 terms)."""
    assert got["out"].dtype == dtype and got["lse"].dtype == torch.float32
    empty = torch.isinf(ref64["lse"])
    assert torch.equal(torch.isinf(got["lse"]), empty), "rows with no key must have lse = -inf"
    assert (got["lse"][empty] < 0).all()
    assert not got["out"][empty].any(), "rows with no key must be 0"
    if (~empty).any():
        assert_close("lse", got["lse"][~empty], ref64["lse"][~empty], lowp["lse"][~empty],
                     torch.float32 if dtype == torch.float32 else dtype)
    for key in ("out", "dq", "dk", "dv"):
        assert_close(key, got[key], ref64[key], lowp[key], dtype)

def make_qkv(batch, heads_q, heads_kv, seqlen_q, seqlen_k, head_dim, dtype, *, scale=1.0,
             requires_grad=True, device=DEVICE):
    """Fresh standard-normal inputs (never zeros)."""
    def t(h, n):
        x = torch.randn(batch, h, n, head_dim, device=device, dtype=torch.float32) * scale
        return x.to(dtype).requires_grad_(requires_grad)
    return t(heads_q, seqlen_q), t(heads_kv, seqlen_k), t(heads_kv, seqlen_k)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Different inputs per test, reproducible per test id (the id seeds the generator)."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """40k characters of Python source (20k, twice), a stand-in for the default corpus."""
    path = tmp_path_factory.mktemp("data") / "text.py"
    path.write_text(Path(train.__file__).read_text()[:20_000] * 2, encoding="utf-8")
    return path


def tiny_model(backend, block_size=8, n_layer=2, **config):
    """A 16-wide model over 13 symbols, seeded, on DEVICE, in eval mode; ``config`` adds Config fields."""
    torch.manual_seed(0)
    return GPT(Config(vocab_size=13, block_size=block_size, n_layer=n_layer, n_embd=16,
                      backend=backend, **config)).to(DEVICE).eval()


def cached_generation_error(model, cache, cuts) -> float:
    """Generates 10 tokens after a 3-token prompt with and without the cache (same seed) and
    asserts they agree; then feeds the 13 tokens through ``cache`` in the pieces that ``cuts``
    (their boundaries) gives, and returns the largest difference of those logits from one
    uncached pass. Past ``block_size = 8`` in ``tiny_model``."""
    prompt = torch.randint(0, 13, (2, 3), generator=torch.Generator().manual_seed(1)).to(DEVICE)  # (B, T)
    cached = model.generate(prompt, 10, use_cache=True, generator=torch.Generator().manual_seed(2))
    uncached = model.generate(prompt, 10, use_cache=False, generator=torch.Generator().manual_seed(2))
    assert cached.shape == (2, 13) and cuts[0] == 0 and cuts[-1] == 13
    assert torch.equal(cached, uncached)
    full, _ = model(cached)  # (B, 13, V): one pass over the whole sequence
    steps = [model(cached[:, a:b], cache=cache)[0] for a, b in zip(cuts[:-1], cuts[1:])]
    return (torch.cat(steps, dim=1) - full).abs().max().item()


def interrupt_training_at(monkeypatch, at: int):
    """Make ``train.get_batch`` raise KeyboardInterrupt (a Ctrl-C) when asked for step ``at``;
    ``monkeypatch.undo()`` restores it."""
    real_get_batch = train.get_batch

    def get_batch(*args, step, **kwargs):
        if step == at:
            raise KeyboardInterrupt
        return real_get_batch(*args, step=step, **kwargs)

    monkeypatch.setattr(train, "get_batch", get_batch)


def train_flash_and_reference(text_file, out_root, args) -> dict:
    """Train the same tiny run (``args``) with ``--backend flash`` and ``reference`` into
    ``out_root/<backend>``; asserts that it learns and that the two loss curves agree to float32
    rounding (same seed, same batches). Returns the curves."""
    curves = {}
    for backend in ("flash", "reference"):
        history = train.main(["--data", str(text_file), "--backend", backend, "--steps", "4",
                              "--eval-interval", "2", "--out", str(out_root / backend), *args])
        curves[backend] = torch.tensor([r["train_loss"] for r in history])
    diff = (curves["flash"] - curves["reference"]).abs().max().item()
    print(f"flash {curves['flash'].tolist()}\nreference {curves['reference'].tolist()}\nmax diff {diff:.2e}")
    assert curves["flash"][-1] < curves["flash"][0]  # it learns
    assert diff < 1e-4
    return curves
