"""Open-loop load: requests leave on a fixed schedule, whatever the server is doing.

Latency is measured from each request's *scheduled* send time, so a stalled server
shows up as queueing delay instead of being hidden (coordinated omission). wrk is a
closed-loop tool and cannot do this; a small asyncio HTTP/1.1 keep-alive client can,
at the rates we need (a few thousand per second on one core). Written by hand because
the Python HTTP clients we tried add ~200 µs of their own per request.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)
    return status


async def run(port: int, rate: float, seconds: float, users: int, max_conns: int = 64) -> dict[str, float]:
    """Send ``rate`` req/s for ``seconds``; return latency percentiles (ms) and errors."""
    rng = random.Random(45)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    lat: list[float] = []
    errors = 0

    async def fire(scheduled: float) -> None:
        nonlocal opened, errors
        if pool.empty() and opened < max_conns:
            opened += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        else:
            conn = await pool.get()
        try:
            status = await _one(*conn, f"/v1/predict/u{rng.randrange(users):07d}")
            if status >= 500:
                errors += 1
            pool.put_nowait(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            opened -= 1
        lat.append(time.perf_counter() - scheduled)

    n = int(rate * seconds)
    t0 = time.perf_counter() + 0.2
    tasks = []
    for i in range(n):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    lat.sort()

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e3

    return {
        "requests": len(lat),
        "rps": len(lat) / elapsed,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "max": lat[-1] * 1e3,
        "errors": errors,
    }


if __name__ == "__main__":
    port, rate, seconds, users = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(run(port, rate, seconds, users))))
