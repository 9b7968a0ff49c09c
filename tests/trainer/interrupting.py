"""Ctrl-C a command as a user does: start it, wait until it is working, send SIGINT."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def interrupt_when(python_argv: list[str], started: str, timeout: float = 180.0) -> tuple[int, str]:
    """Run `python PYTHON_ARGV...` (e.g. `-m MODULE ARGS`); once `started` shows on its stderr, SIGINT it.

    Returns its exit status and whole stderr. Fails if the command ends or stays silent first.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, *python_argv], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        while started.encode() not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{python_argv}: no {started!r} on stderr within {timeout} s: {seen[-2000:]!r}")
            ready, _, _ = select.select([process.stderr], [], [], min(remaining, 1.0))
            if ready:
                chunk = os.read(process.stderr.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"{python_argv} ended before {started!r}: {seen[-2000:]!r}")
                seen += chunk
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, (seen + rest).decode(errors="replace")


def entry_point(function: str) -> list[str]:
    """`python -c` arguments that run a console entry point such as `trainer.cli:eval_main`."""
    module, name = function.split(":")
    return ["-c", f"import sys; from {module} import {name}; sys.exit({name}())"]
