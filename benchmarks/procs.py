"""Process helpers for the harness: private redis, servers pinned to a core, RSS sampling."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(argv: Sequence[str], core: int) -> list[str]:
    """Prefix ``argv`` with taskset when the machine has a core to spare for it."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core), *argv]
    return list(argv)


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private redis-server on a free port, kept in ``workdir``, on core 1 with the load generator.

    Core 0 is the server's alone: Redis stands in for the separate machine it runs on in a
    deployment, so its CPU time must not be taken from the server under test (the no-op has none).
    """
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        pinned(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            core=1,
        ),
        stdout=subprocess.DEVNULL,
    )
    wait_http_or_port(port, None, 10)
    return proc, port


def wait_http_or_port(port: int, path: str | None, timeout: float) -> float:
    """Wait until ``path`` answers 200 (or the port accepts); return the seconds it took."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if path is None:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return time.perf_counter() - t0
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"port {port}{path or ''} not ready after {timeout}s")


class PeakRSS:
    """Samples the resident memory of a process tree every 50 ms; `.peak_mb` is the max."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                p = psutil.Process(self.pid)
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.05)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak / 2**20


def run_measured(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float, str]:
    """Run a command to completion; return (seconds, peak RSS in MB, its output). Raises on failure."""
    t0 = time.perf_counter()
    # stderr too: the pipeline CLIs print their summaries there (rich consoles on stderr).
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rss = PeakRSS(proc.pid)
    out, _ = proc.communicate()
    mb = rss.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{out[-3000:]}")
    return time.perf_counter() - t0, mb, out


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server and its workers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
