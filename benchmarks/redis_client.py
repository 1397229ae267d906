"""Client CPU per HMGET: redis-py asyncio (hiredis packer, as serving.features uses it) vs RedisWire.

Starts a private redis-server, stores ``--keys`` hashes shaped like Feast's (4-byte murmur field
names, small protobuf values, ``_ts:<view>`` fields), then on uvloop times, per call:

- one HMGET of ``--fields`` fields, awaited one after another;
- a pipeline of ``--batch`` HMGETs, awaited one after another;
- ``--concurrency`` tasks each looping over single HMGETs (the API under load).

CPU is this process' ``time.process_time`` (the client's cost; Redis runs in its own process);
wall is elapsed time. Other processes on the machine add noise: compare ratios, run twice.

Run: ``python -m benchmarks.redis_client [--seconds 2]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis
import uvloop
from redis.asyncio.connection import Connection as AsyncConnection
from redis.connection import HiredisRespSerializer  # type: ignore[attr-defined]  # stubs predate it

from serving.redis_wire import RedisWire
from tests.support import RedisProcess, free_port


class _HiredisPackedConnection(AsyncConnection):
    """The reference: redis-py's asyncio connection with the C packer its sync connection uses,
    as serving read Redis before RedisWire."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)


def populate(client: redis.Redis, keys: list[bytes], fields: tuple[bytes | str, ...]) -> None:
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        pipe.hset(k, mapping={f: b"\x10" + bytes([i % 100]) * 4 for f in fields})
    pipe.execute()


async def timed(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[float, float, int]:
    """(cpu µs per call, wall µs per call p50, calls)."""
    for _ in range(200):  # warm up: connection, caches
        await call()
    walls: list[float] = []
    cpu0, end = time.process_time(), time.perf_counter() + seconds
    while (t := time.perf_counter()) < end:
        await call()
        walls.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    return cpu / len(walls) * 1e6, statistics.median(walls) * 1e6, len(walls)


async def concurrent(call: Callable[[], Awaitable[Any]], tasks: int, seconds: float) -> tuple[float, float]:
    """(calls per second, cpu µs per call) with ``tasks`` loops sharing the client."""
    count = 0
    end = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal count
        while time.perf_counter() < end:
            await call()
            count += 1

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(tasks)))
    return count / (time.perf_counter() - t0), (time.process_time() - cpu0) / count * 1e6


async def bench(port: int, keys: list[bytes], fields: tuple[bytes | str, ...], args: argparse.Namespace) -> None:
    pool = aioredis.ConnectionPool(
        connection_class=_HiredisPackedConnection, host="127.0.0.1", port=port, socket_timeout=5
    )
    rp = aioredis.Redis.from_pool(pool)  # type: ignore[attr-defined]
    wire = RedisWire("127.0.0.1", port, stall_timeout_s=5)
    batch = keys[: args.batch]

    async def rp_one() -> Any:
        return [await rp.hmget(keys[0], fields)]

    async def rp_batch() -> Any:
        async with rp.pipeline(transaction=False) as pipe:
            for k in batch:
                pipe.hmget(k, fields)
            return list(await pipe.execute())

    async def wire_one() -> Any:
        return await wire.hmget_many((keys[0],), fields)

    async def wire_batch() -> Any:
        return await wire.hmget_many(batch, fields)

    assert await rp_batch() == await wire_batch()
    assert await rp_one() == await wire_one()
    print(f"HMGET of {len(fields)} fields; {args.seconds:g} s per row; CPU is this process only")
    for name, call in (("redis-py 1", rp_one), ("RedisWire 1", wire_one)):
        cpu, wall, n = await timed(call, args.seconds)
        print(f"{name:<22} cpu {cpu:8.1f} µs/call   wall p50 {wall:8.1f} µs   ({n} calls)")
    for name, call in ((f"redis-py {args.batch}", rp_batch), (f"RedisWire {args.batch}", wire_batch)):
        cpu, wall, n = await timed(call, args.seconds)
        print(f"{name:<22} cpu {cpu:8.1f} µs/call   wall p50 {wall:8.1f} µs   ({n} calls)")
    for name, call in (("redis-py 1", rp_one), ("RedisWire 1", wire_one)):
        rate, cpu = await concurrent(call, args.concurrency, args.seconds)
        print(f"{name + f' x{args.concurrency} tasks':<22} {rate:9.0f} calls/s   cpu {cpu:6.1f} µs/call")
    await rp.aclose()
    await wire.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--fields", type=int, default=21)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    fields: tuple[bytes | str, ...] = tuple(
        [i.to_bytes(4, "little") for i in range(1, args.fields - 1)] + ["_ts:view_a", "_ts:view_b"]
    )
    keys = [b"\x02\x00\x00\x00user_id\x00" + f"u{i:07d}".encode() + b"churn" for i in range(args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        if shutil.which("redis-server") is None:
            raise SystemExit("redis-server is not installed")
        server = RedisProcess(port=free_port(), workdir=Path(tmp)).start()
        try:
            populate(server.client(), keys, fields)
            uvloop.run(bench(server.port, keys, fields, args))
        finally:
            server.kill()


if __name__ == "__main__":
    main()
