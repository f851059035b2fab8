"""Print a stretch of a kernel's source with its line numbers: how the notebooks read the kernels
line by line against the algorithm, without copying code that could drift from the real one."""

from __future__ import annotations

import inspect


def show_source(fn, first: str, last: str) -> None:
    """Print the lines of ``fn`` (a Triton kernel or a function) from the first one containing
    ``first`` through the next one containing ``last``, with the file's line numbers. Raises
    ``ValueError`` when either is missing: the kernel changed and the caller must follow."""
    lines, offset = inspect.getsourcelines(getattr(fn, "fn", fn))
    starts = [i for i, line in enumerate(lines) if first in line]
    if not starts:
        raise ValueError(f"{first!r} not found in {fn}: the kernel changed, update the caller")
    stops = [i for i in range(starts[0], len(lines)) if last in lines[i]]
    if not stops:
        raise ValueError(f"{last!r} not found after {first!r} in {fn}")
    for i in range(starts[0], stops[0] + 1):
        print(f"{offset + i:4d} | {lines[i].rstrip()}")
