"""The Makefile's targets work where readers run them: in a container, as root, too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_is_set_up() -> bool:
    """`make` would not reinstall the virtual environment first (as in CI, after `make test`)."""
    return subprocess.run(["make", "-q", "install"], cwd=ROOT, capture_output=True).returncode == 0


@pytest.mark.skipif(not _make_is_set_up(), reason="needs make and the .venv that `make install` builds")
def test_make_notebooks_starts_jupyter_and_passes_args():
    """`make notebooks` exited at once as root, the usual user of a container ("Running as root
    is not recommended. Use --allow-root to bypass."), and passed no arguments through. It must
    start Jupyter Lab here (tests run as root in CI) on the port given in ARGS."""
    port = _free_port()
    args = f"ARGS=--no-browser --ip=127.0.0.1 --port={port} --ServerApp.port_retries=0"
    proc = subprocess.Popen(["make", "notebooks", args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines, started = [], False
    deadline = time.monotonic() + 120
    try:
        for line in proc.stdout:
            lines.append(line)
            if f":{port}/lab" in line:  # "Jupyter Server ... is running at: http://127.0.0.1:PORT/lab?token=..."
                started = True
                break
            if time.monotonic() > deadline:
                break
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    output = "".join(lines)
    print(output[-3000:])
    assert started, "Jupyter Lab did not start on the port passed in ARGS"
