"""Print a stretch of a kernel's source with its line numbers: how the notebooks read the kernels
line by line against the algorithm, without copying code that could drift from the real one.

The source is read as text, so a Triton kernel can be shown where Triton is not installed
(macOS, Windows): pass ``"kernels.flash_fwd:_attn_fwd"`` instead of the kernel object.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect


def _lines_by_name(target: str) -> tuple[list[str], int]:
    """The source lines of ``"package.module:function"`` and the line number of the first, read
    from the module's file without importing the module."""
    module, _, name = target.partition(":")
    spec = importlib.util.find_spec(module)
    if not name or spec is None or spec.origin is None:
        raise ValueError(f"{target!r}: expected 'package.module:function' of an installed module")
    with open(spec.origin, encoding="utf-8") as f:
        text = f.read()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            return text.splitlines(keepends=True)[first - 1:node.end_lineno], first
    raise ValueError(f"{name!r} not found in {spec.origin}")


def source_lines(fn) -> tuple[list[str], int]:
    """``(lines, first line number)`` of ``fn``: a function, a Triton kernel, or the text
    ``"package.module:function"`` (read from the file, nothing imported)."""
    if isinstance(fn, str):
        return _lines_by_name(fn)
    return inspect.getsourcelines(getattr(fn, "fn", fn))


def show_source(fn, first: str, last: str) -> None:
    """Print the lines of ``fn`` (see :func:`source_lines`) from the first one containing
    ``first`` through the next one containing ``last``, with the file's line numbers. Raises
    ``ValueError`` when either is missing: the kernel changed and the caller must follow."""
    lines, offset = source_lines(fn)
    starts = [i for i, line in enumerate(lines) if first in line]
    if not starts:
        raise ValueError(f"{first!r} not found in {fn}: the kernel changed, update the caller")
    stops = [i for i in range(starts[0], len(lines)) if last in lines[i]]
    if not stops:
        raise ValueError(f"{last!r} not found after {first!r} in {fn}")
    for i in range(starts[0], stops[0] + 1):
        print(f"{offset + i:4d} | {lines[i].rstrip()}")
