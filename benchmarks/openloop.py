"""Open-loop load: requests leave on a fixed schedule, whatever the server is doing.

Latency is measured from each request's *scheduled* send time, so a stalled server shows
up as queueing delay instead of being hidden (coordinated omission). wrk is closed-loop and
cannot do this, and wrk2 is not packaged by Debian, so this is a small HTTP/1.1 keep-alive
client on uvloop: raw protocols (no streams, no task per request) and a sender that sleeps
until just before each send and then yields in a tight loop, because event-loop timers only
have millisecond resolution. `--check` runs it against the no-op app first: the harness
trusts a rate only if the client delivers it there with sub-millisecond latency.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, cast


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight, answers matched in order."""

    def __init__(self, client: OpenLoop) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.status = 0
        self.scheduled = 0.0
        self.need = -1  # bytes of the response still expected once the head is parsed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def send(self, path: bytes, scheduled: float) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.transport.write(b"GET " + path + b" HTTP/1.1\r\nHost: bench\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower() + b"\r\n"
            at = head.find(b"content-length:")
            length = int(head[at + 15 : head.find(b"\r\n", at)]) if at >= 0 else 0
            self.status = int(head[9:12])
            self.need = end + 4 + length
        if len(self.buf) >= self.need:
            self.buf = self.buf[self.need :]
            self.need = -1
            self.client.done(self, self.status, time.perf_counter() - self.scheduled)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class OpenLoop:
    """Sends ``rate`` GETs per second for ``seconds`` on up to ``max_conns`` connections."""

    def __init__(self, port: int, rate: float, seconds: float, users: int, max_conns: int = 64) -> None:
        self.port, self.rate, self.seconds, self.users, self.max_conns = port, rate, seconds, users, max_conns
        self.idle: collections.deque[_Conn] = collections.deque()
        self.backlog: collections.deque[tuple[bytes, float]] = collections.deque()  # waiting for a connection
        self.opened = 0
        self.lat: list[float] = []
        self.errors = 0
        self.pending = 0

    def done(self, conn: _Conn, status: int, latency: float) -> None:
        self.lat.append(latency)
        self.pending -= 1
        if status >= 500:
            self.errors += 1
        if self.backlog:
            path, scheduled = self.backlog.popleft()
            conn.send(path, scheduled)
        else:
            self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        self.opened -= 1
        if conn.need >= 0 or conn.buf:  # died mid-request
            self.errors += 1
            self.pending -= 1
        if conn in self.idle:
            self.idle.remove(conn)

    def _dispatch(self, path: bytes, scheduled: float, loop: asyncio.AbstractEventLoop) -> None:
        self.pending += 1
        if self.idle:
            self.idle.popleft().send(path, scheduled)
            return
        self.backlog.append((path, scheduled))
        if self.opened < self.max_conns:
            self.opened += 1
            loop.create_task(self._open(loop))

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            _, conn = await loop.create_connection(lambda: _Conn(self), "127.0.0.1", self.port)
        except OSError:
            self.opened -= 1
            return
        if self.backlog:
            path, scheduled = self.backlog.popleft()
            conn.send(path, scheduled)
        else:
            self.idle.append(conn)

    async def run(self) -> dict[str, float]:
        """Send on schedule, wait for the stragglers (at most 10 s), return percentiles in ms."""
        loop = asyncio.get_running_loop()
        rng = random.Random(45)
        n = int(self.rate * self.seconds)
        paths = [f"/v1/predict/u{rng.randrange(self.users):07d}".encode() for _ in range(n)]
        t0 = time.perf_counter() + 0.3
        for i in range(n):
            scheduled = t0 + i / self.rate
            while True:
                ahead = scheduled - time.perf_counter()
                if ahead <= 0:
                    break
                # Coarse sleep while far away, then yield (still serving I/O) until the exact time.
                await asyncio.sleep(ahead - 0.0015 if ahead > 0.002 else 0)
            self._dispatch(paths[i], scheduled, loop)
        stop = time.perf_counter() + 10
        while self.pending > 0 and time.perf_counter() < stop:
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
        self.errors += self.pending  # never answered
        lat = sorted(self.lat) or [0.0]

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3

        return {
            "requests": len(self.lat),
            "rps": len(self.lat) / elapsed,
            "target_rps": self.rate,
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": lat[-1] * 1e3,
            "errors": self.errors,
        }


def main(argv: list[str]) -> None:
    """argv: PORT RATE SECONDS USERS; prints one JSON line."""
    port, rate, seconds, users = int(argv[0]), float(argv[1]), float(argv[2]), int(argv[3])
    runner: Callable[[Coroutine[Any, Any, dict[str, float]]], dict[str, float]] = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        pass
    print(json.dumps(runner(OpenLoop(port, rate, seconds, users).run())))


if __name__ == "__main__":
    main(sys.argv[1:])
