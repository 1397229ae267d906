"""Run our own interpreter on a model in a throwaway child process.

Parsing or compiling a model file can crash (LightGBM segfaults on a truncated model), hang or
take a lot of memory; in a child, none of that reaches the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

# Only what Python needs: the parent's env holds the Redis password and the API key.
_ENV_KEYS = ("PATH", "PYTHONPATH", "LANG", "LC_ALL", "HOME", "TMPDIR")


def run_python(code: str, *args: str, stdin: bytes, timeout_s: float) -> str | None:
    """Run ``python -c code *args`` with ``stdin``; None on success, else the last line of its stderr.

    ``subprocess.TimeoutExpired`` propagates when the child outlives ``timeout_s``.
    """
    proc = subprocess.run(  # noqa: S603  # nosec B603 - fixed argv, our own interpreter
        [sys.executable, "-c", code, *args],
        input=stdin,
        env={k: v for k, v in os.environ.items() if k in _ENV_KEYS},
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode == 0:
        return None
    if proc.returncode < 0:  # killed: what it printed last is noise (LightGBM dumps the bytes it choked on)
        return f"the child process died ({_signal_name(-proc.returncode)})"
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return lines[-1][:300] if lines else f"exit {proc.returncode}"


def _signal_name(number: int) -> str:
    """SIGSEGV for 11; the bare number for a signal Python does not name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
