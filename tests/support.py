"""Test helpers: private redis-server processes and a throwaway feature repo environment."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor


class EndedSpans(SpanProcessor):
    """Keeps ended spans and does nothing at start, as the exporting processors do: so the lean
    tracer's ``start_child`` takes its own path (a processor with ``on_start`` gets the context
    ``start_span`` builds)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisProcess:
    """A private redis-server that tests may kill, pause and restart."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make setup` installs it")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, socket_connect_timeout=2)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"


def feast_keys(client: redis.Redis) -> list[bytes]:
    """Every key Feast's layout stores: all but the column-wise writer's own marks
    (``skewless:materialized:<project>``; feature_repo/pipeline/materialize.py), which Feast does not write."""
    return [k for k in client.scan_iter(count=1000) if not k.startswith(b"skewless:materializ")]


def redis_digest(client: redis.Redis) -> str:
    """A digest of every Feast key and hash field in the database (order-independent)."""
    import hashlib

    items = []
    for key in feast_keys(client):
        fields = client.hgetall(key)
        items.append(key + b"|" + b"|".join(k + b"=" + v for k, v in sorted(fields.items())))
    return hashlib.sha256(b"\n".join(sorted(items))).hexdigest()


@dataclass
class ApiServer:
    """The API as a real server process (as `make serve` runs it), its output kept in a file."""

    env: dict[str, str]
    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_path: str = "/health", timeout: float = 90) -> ApiServer:
        import sys
        import urllib.request

        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parent.parent
        # The production entry point, as the image and `make serve` run it.
        argv = [sys.executable, "-O", "-m", "serving.server", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, env=self.env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(self.url(wait_path), timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"API not answering {wait_path} after {timeout}s:\n{self.logs()}")

    @property
    def log_path(self) -> Path:
        return self.workdir / "api.log"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM and wait; returns the seconds shutdown took (killed after ``timeout``)."""
        t0 = time.monotonic()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return time.monotonic() - t0
