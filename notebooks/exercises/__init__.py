"""Exercises for the notebooks: you write the function, ``check`` runs it against a reference.

In a notebook::

    from exercises import check, show_solution

    def merge_lse(o_a, lse_a, o_b, lse_b):
        raise NotImplementedError  # your code here

    check("03.merge_lse", merge_lse)   # prints pass, or the first wrong element and what it should be
    show_solution("03.merge_lse")      # prints one answer (kept in exercises/solutions/, not on the page)

Each check runs your function on awkward shapes (lengths 1, primes, not multiples of the block)
and stops at the first case that differs from the reference, saying which case, which element,
what you returned and what was expected. It never raises for a wrong answer, so the notebook goes
on; your function is not used by the rest of the notebook.

The test suite checks the checks: each one must report failure for the stub, for every plausible
mistake listed beside its solution (``MISTAKES`` in ``solutions/nbNN.py``), and pass for the
solution (``tests/test_exercises.py``). When the environment sets ``EXERCISES_SOLUTIONS=1`` (the
test suite does, for the notebooks it executes), a check given a stub runs the solution instead
and fails loudly if that solution is wrong, so CI exercises every check on every notebook run.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["Mismatch", "Result", "check", "describe", "exercise", "expect_close", "mistakes", "names",
           "needs_triton", "run", "show_solution", "solution"]

#: set to "1" to run the solution wherever a stub stands (the test suite sets it for notebooks)
SOLUTIONS_ENV = "EXERCISES_SOLUTIONS"
#: the notebook modules that hold checks (nbNN.py beside this file), imported on first use
MODULES = tuple(sorted(p.stem for p in Path(__file__).parent.glob("nb[0-9][0-9].py")))


class Mismatch(Exception):
    """Raised inside a check when the reader's answer differs from the reference."""


@dataclass(frozen=True)
class Result:
    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        status = "pass" if self.passed else "FAIL"
        if self.message.startswith(("not implemented", "skipped")):
            status = "todo" if self.message.startswith("not") else "skip"
        return f"{status} {self.name}: {self.message}"


@dataclass(frozen=True)
class Exercise:
    name: str  # "03.merge": notebook number, then the function the reader writes
    body: Callable  # body(fn) raises Mismatch, or returns a short description of what passed
    needs_triton: bool


_REGISTRY: dict[str, Exercise] = {}


def exercise(name: str, *, needs_triton: bool = False):
    """Register a check body under ``name`` ("NN.function"). The body calls the reader's function
    on its cases, raises :class:`Mismatch` at the first wrong one, and returns what it checked."""
    def register(body):
        if name in _REGISTRY:
            raise ValueError(f"exercise {name!r} is registered twice")
        _REGISTRY[name] = Exercise(name, body, needs_triton)
        return body
    return register


def _load_all() -> None:
    for module in MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{module}":
                raise


def _get(name: str) -> Exercise:
    if not isinstance(name, str):
        raise TypeError(f"name: expected an exercise name such as '03.merge', got {type(name).__name__}")
    if name not in _REGISTRY:
        _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"name: no exercise called {name!r}; there are {', '.join(names())}")
    return _REGISTRY[name]


def names(notebook: str | None = None) -> list[str]:
    """Every exercise's name, or those of one notebook ("03")."""
    _load_all()
    return sorted(n for n in _REGISTRY if notebook is None or n.split(".")[0] == notebook)


def needs_triton(name: str) -> bool:
    """Whether exercise ``name`` launches a Triton kernel (its check says ``skip`` without Triton)."""
    return _get(name).needs_triton


def _triton_missing() -> bool:
    import kernels

    return not kernels.HAS_TRITON


def _solution_module(name: str):
    return importlib.import_module(f"{__name__}.solutions.nb{name.split('.')[0]}")


def solution(name: str) -> Callable:
    """One correct answer to exercise ``name``: ``merge = solution("03.merge")`` uses it."""
    _get(name)
    return getattr(_solution_module(name), name.split(".", 1)[1])


def show_solution(name: str) -> None:
    """Print the source of one correct answer to exercise ``name`` (Jupyter: ``%load`` the file)."""
    fn = solution(name)
    fn = getattr(fn, "fn", fn)  # a @triton.jit kernel: the Python function inside it
    print(f"# {name}: from {inspect.getsourcefile(fn)}\n")
    print(inspect.getsource(fn))


def mistakes(name: str) -> list[Callable]:
    """The plausible wrong answers the check of ``name`` must catch (tests use them)."""
    _get(name)
    return list(getattr(_solution_module(name), "MISTAKES", {}).get(name.split(".", 1)[1], []))


def run(name: str, fn: Callable) -> Result:
    """Run exercise ``name``'s check on ``fn`` and say what happened; never raises for ``fn``'s
    sake (a stub, a wrong answer, an exception in ``fn`` each become a failed result)."""
    ex = _get(name)
    if ex.needs_triton and _triton_missing():
        return Result(name, False, "skipped: this exercise needs Triton (Linux wheels only)")
    try:
        what = ex.body(fn)
    except NotImplementedError:
        return Result(name, False, "not implemented yet: write the function, then run this cell again "
                                   f"(show_solution({name!r}) prints one answer)")
    except Mismatch as err:
        return Result(name, False, str(err))
    except Exception as err:  # the reader's code raised: say what, not a 30-line trace
        return Result(name, False, f"your function raised {type(err).__name__}: {err}")
    return Result(name, True, what or "every case matches the reference")


def check(name: str, fn: Callable) -> Result:
    """Check the reader's ``fn`` for exercise ``name`` and print the result (see the module doc)."""
    result = run(name, fn)
    if not result.passed and os.environ.get(SOLUTIONS_ENV, "0") == "1":
        if not result.message.startswith("skipped"):
            if not result.message.startswith("not implemented"):
                raise AssertionError(str(result))  # in CI only the stubs stand in the notebooks
            result = run(name, solution(name))
            if not result.passed:
                raise AssertionError(f"the solution of {name} fails its own check: {result.message}")
            result = Result(name, True, f"(the stub stood here; the solution ran) {result.message}")
    print(result)
    return result


# --------------------------------------------------------------------------------------------
# What check bodies use
# --------------------------------------------------------------------------------------------
def _as_array(x, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    if isinstance(x, np.ndarray | float | int | np.floating | np.integer | list | tuple):
        return np.asarray(x, dtype=np.float64)
    raise Mismatch(f"{what}: expected an array or tensor, got {type(x).__name__}")


def expect_close(what: str, got, want, *, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Raise :class:`Mismatch` naming ``what``, the first element where ``got`` and ``want``
    differ (by more than ``atol + rtol * |want|``; infinities and NaNs must match exactly), and
    both values. Shapes must match."""
    g, w = _as_array(got, what), _as_array(want, what)
    if g.shape != w.shape:
        raise Mismatch(f"{what}: shape {tuple(g.shape)}, expected {tuple(w.shape)}")
    finite = np.isfinite(w)
    with np.errstate(invalid="ignore"):
        close = np.abs(g - w) <= atol + rtol * np.abs(w)
        bad = np.where(finite, ~close, ~((g == w) | (np.isnan(g) & np.isnan(w))))
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        where = f" at index {index}" if g.ndim else ""
        raise Mismatch(f"{what}{where}: got {float(g[index]):.6g}, expected {float(w[index]):.6g} "
                       f"({int(bad.sum())} of {bad.size} elements wrong)")


def describe(case: dict) -> str:
    """A case's sizes in words, for messages: ``describe({"n": 7}) == "n=7"``."""
    return ", ".join(f"{k}={v}" for k, v in case.items())

