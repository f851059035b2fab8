"""The mini Transformer with ``attention="linear"``: generation from the recurrent state, the
backends agree in training, checkpoints remember the choice, and the errors are clear.

Sizes are tiny so that the flash backend, which runs in Triton's interpreter on a CPU, stays fast;
on a GPU (conftest.DEVICE) the same tests run the compiled kernels.
"""


import pytest
import torch
from conftest import DEVICE, cached_generation_error, tiny_model, train_flash_and_reference

import minitransformer.model as model_module
from minitransformer import sample, train
from minitransformer.checkpoint import load_checkpoint
from minitransformer.model import Config, RecurrentState

# flags of minitransformer.train for a few steps of a one-layer model, as in test_minitransformer
TINY = ["--n-layer", "1", "--n-embd", "16", "--block-size", "32", "--batch-size", "2", "--warmup", "2",
        "--eval-batches", "1", "--sample-chars", "0", "--device", DEVICE, "--attention", "linear"]


def tiny_linear_model(backend, block_size=8, n_layer=2):
    return tiny_model(backend, block_size, n_layer, attention="linear", decay=0.9)


@pytest.mark.parametrize("backend", ["flash", "reference", "sdpa"])
def test_cached_generation_equals_uncached(backend):
    """Generating from the recurrent state, one token at a time, gives the tokens and logits of
    recomputing the whole sequence, also past block_size (linear attention has no window), and the
    state keeps its size."""
    model = tiny_linear_model(backend)
    state = model.new_cache()
    assert isinstance(state, RecurrentState)
    # a prefill, one token at a time, then several tokens against an existing state
    err = cached_generation_error(model, state, [0, *range(4, 10), 13])
    print(f"{backend}: max |cached - full| logit = {err:.2e}")
    assert err < 1e-5
    assert state.pos == 13
    assert all(s.shape == (2, 1, 16, 17) and s.dtype == torch.float32 for s in state.states)


def test_generation_steps_use_the_state_only(monkeypatch):
    """Guards the point of the recurrent state: the prefill runs the chunked kernel once over the
    prompt, and each later token is one ``linear_attention_step``: no softmax attention, no
    kernel call over the past, nothing that grows with the text."""
    model = tiny_linear_model("flash", block_size=16, n_layer=1)
    calls = []
    real_linear, real_step = model_module.linear_attention, model_module.linear_attention_step

    def spy_linear(q, k, v, **kw):
        calls.append(("linear_attention", tuple(q.shape)))
        return real_linear(q, k, v, **kw)

    def spy_step(q, k, v, state, **kw):
        calls.append(("linear_attention_step", tuple(q.shape), tuple(state.shape)))
        return real_step(q, k, v, state, **kw)

    def forbidden(*args, **kwargs):
        raise AssertionError("softmax attention called by a linear-attention model")

    monkeypatch.setattr(model_module, "linear_attention", spy_linear)
    monkeypatch.setattr(model_module, "linear_attention_step", spy_step)
    for name in ("flash_attention", "flash_decode", "attention_reference"):
        monkeypatch.setattr(model_module, name, forbidden)
    state = model.new_cache()
    model(torch.zeros(1, 5, dtype=torch.long, device=DEVICE), cache=state)
    for _ in range(3):
        model(torch.zeros(1, 1, dtype=torch.long, device=DEVICE), cache=state)
    assert calls == [("linear_attention", (1, 1, 5, 16))] + \
        [("linear_attention_step", (1, 1, 1, 16), (1, 1, 16, 17))] * 3


def test_flash_and_reference_train_the_same(text_file, tmp_path, capsys):
    """The chunked kernel (flash) and the parallel form (reference) train the same model: same
    seed, same batches, loss curves equal to float32 rounding; the checkpoint records the
    attention, and sample.py generates from it with the recurrent state."""
    train_flash_and_reference(text_file, tmp_path, TINY)
    assert "linear attention" in capsys.readouterr().out

    ckpt = load_checkpoint(tmp_path / "reference" / "ckpt.pt")
    assert ckpt["config"]["attention"] == "linear" and ckpt["config"]["decay"] == Config.decay
    sample.main(["--ckpt", str(tmp_path / "reference" / "ckpt.pt"), "--prompt", "def ", "--chars", "12",
                 "--backend", "reference", "--device", DEVICE])
    out = capsys.readouterr().out
    assert out.startswith("def ") and "linear attention, recurrent state" in out


def test_resume_checkpoint_from_before_the_flag(text_file, tmp_path):
    """A checkpoint written before --attention existed resumes as the softmax run it was."""
    args = ["--data", str(text_file), "--backend", "reference", "--steps", "2", "--eval-interval", "1",
            "--out", str(tmp_path), *TINY[:-2]]
    train.main(args)
    path = tmp_path / "ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    for name in ("attention", "decay"):
        del ckpt["args"][name], ckpt["config"][name]
    torch.save(ckpt, path)
    history = train.main([*args, "--resume"])  # the same flags: accepted as the same run
    assert history[-1]["step"] == 2


# ----------------------------------------------------------------------------------------------
# Bad input: one clear line
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,pattern", [
    (dict(attention="performer"), r"unknown attention 'performer': choose one of softmax, linear"),
    (dict(attention="linear", decay=0.0), r"decay must be in \(0, 1\]"),
    (dict(attention="linear", n_embd=192), r"n_embd must be <= 128 for linear attention on the flash backend"),
], ids=["attention", "decay", "n_embd"])
def test_bad_config(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Config(**kwargs)


def test_linear_config_allows_wide_heads_off_the_kernel():
    """The 128 limit is the kernel's: the plain-PyTorch forms take any width."""
    Config(attention="linear", n_embd=192, backend="reference")


@pytest.mark.parametrize("case", ["packed", "decay"])
def test_train_bad_input(case, text_file, tmp_path):
    argv = {"packed": ["--packed"], "decay": ["--decay", "1.5"]}[case]
    expected = {"packed": "error: --packed needs --attention softmax",
                "decay": "error: --decay must be in (0, 1]"}[case]
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(text_file), "--steps", "1", "--out", str(tmp_path), *TINY, *argv])
    message = str(e.value.code)
    assert message.startswith(expected) and "\n" not in message, message


def test_packed_forward_is_refused():
    model = tiny_linear_model("reference")
    packing = (torch.tensor([0, 3, 8], dtype=torch.int32), 5)
    with pytest.raises(ValueError, match="packed documents need softmax attention"):
        model(torch.zeros(1, 8, dtype=torch.long, device=DEVICE), packing=packing)
