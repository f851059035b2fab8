"""Whether Triton is installed, decided without importing it (``kernels/__init__.py`` must set
``TRITON_INTERPRET`` before Triton's first import)."""

from __future__ import annotations

import importlib.util
import sys


def triton_installed() -> bool:
    """Triton can be imported (it ships Linux wheels only); ``sys.modules["triton"] = None``, as a
    test does, hides an installed one."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    return importlib.util.find_spec("triton") is not None
