"""The checks of the notebooks' exercises can fail: each reports failure for the stub and for
every plausible mistake listed beside its solution, and passes for the solution."""

from __future__ import annotations

import re
from pathlib import Path

import exercises
import pytest

import kernels

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = exercises.names()


def _stub(*args, **kwargs):
    raise NotImplementedError


def _skip_without_triton(name):
    if exercises.needs_triton(name) and not kernels.HAS_TRITON:
        pytest.skip("this exercise needs Triton")


@pytest.mark.parametrize("name", NAMES)
def test_stub_is_reported_not_implemented(name):
    _skip_without_triton(name)
    result = exercises.run(name, _stub)
    assert not result.passed and result.message.startswith("not implemented"), result


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name):
    _skip_without_triton(name)
    result = exercises.run(name, exercises.solution(name))
    assert result.passed, result


@pytest.mark.parametrize("name", NAMES)
def test_every_mistake_is_caught(name):
    _skip_without_triton(name)
    wrong = exercises.mistakes(name)
    assert wrong, f"{name}: list at least one plausible mistake in MISTAKES"
    for fn in wrong:
        result = exercises.run(name, fn)
        assert not result.passed, f"{name}: the check passes {fn.__name__} ({fn.__doc__})"
        assert not result.message.startswith("not implemented"), result


@pytest.mark.parametrize("name", NAMES)
def test_each_exercise_is_in_its_notebook(name):
    number = name.split(".")[0]
    (source,) = NOTEBOOKS.glob(f"{number}_*.py")
    text = source.read_text()
    assert re.search(rf"check\(\s*['\"]{re.escape(name)}['\"]", text), f"{source.name} never checks {name}"


def test_check_prints_and_never_raises_for_the_reader(capsys, monkeypatch):
    monkeypatch.delenv(exercises.SOLUTIONS_ENV, raising=False)
    name = NAMES[0]
    assert not exercises.check(name, _stub)
    assert not exercises.check(name, lambda *a: (_ for _ in ()).throw(ZeroDivisionError("oops")))
    out = capsys.readouterr().out
    assert "not implemented yet" in out and "raised ZeroDivisionError: oops" in out


def test_solutions_mode_runs_the_solution_for_a_stub_and_rejects_a_wrong_answer(monkeypatch):
    """In CI (EXERCISES_SOLUTIONS=1) a stub runs the solution; an answer that fails is an error."""
    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")
    name = "03.merge_lse"
    assert exercises.check(name, _stub).passed
    with pytest.raises(AssertionError):
        exercises.check(name, exercises.mistakes(name)[0])


def test_show_solution_prints_the_source(capsys):
    exercises.show_solution("03.merge_lse")
    assert "def merge_lse(" in capsys.readouterr().out


def test_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="no exercise called"):
        exercises.check("03.nope", _stub)
    with pytest.raises(TypeError, match="name"):
        exercises.check(3, _stub)
