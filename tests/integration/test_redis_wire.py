"""RedisWire against a real private redis-server: same values as redis-py, order under concurrency,
ACL users, error isolation, cancellation, and Redis killed, restarted and stopped under it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import uvloop

from serving.redis_wire import RedisWire, WireConnectionError
from tests.integration.test_deploy_redis_acl import ADMIN, SERVING, AclRedis, render_acl
from tests.support import RedisProcess, free_port

pytestmark = pytest.mark.integration

FIELDS: tuple[bytes | str, ...] = (b"\x01\x02\x03\x04", b"\x00\x00\x00\x00", "_ts:view", b"absent")
KEYS = [b"\x02\x00user\x00u%07d" % i for i in range(300)]


def value(key: bytes, field: bytes | str) -> bytes:
    return b"%b|%b" % (key, field.encode() if isinstance(field, str) else field)


def store(client: redis.Redis, keys: list[bytes] = KEYS) -> None:
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(keys):
        if i % 7 == 3:
            continue  # some keys absent
        present = FIELDS[:2] if i % 5 == 1 else FIELDS[:3]  # some fields absent
        pipe.hset(k, mapping={f: value(k, f) for f in present})
    pipe.set(b"a-string", b"x")
    pipe.execute()


def expected(client: redis.Redis, key: bytes) -> list[bytes | None]:
    return list(client.hmget(key, FIELDS))


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """On uvloop, the event loop the API runs on."""
    return uvloop.run(coro)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    r = RedisProcess(port=free_port(), workdir=tmp_path_factory.mktemp("wire")).start()
    store(r.client())
    yield r
    r.kill()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A server this test may kill, stop and restart."""
    r = RedisProcess(port=free_port(), workdir=tmp_path / "redis").start()
    store(r.client())
    yield r
    r.kill()  # SIGKILL ends a stopped process too


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_values_are_redis_pys(server: RedisProcess, loop: str) -> None:
    client = server.client()

    async def main() -> None:
        wire = RedisWire("127.0.0.1", server.port)
        try:
            assert await wire.ping()
            assert await wire.hmget_many(KEYS, FIELDS) == [expected(client, k) for k in KEYS]
            assert await wire.hmget(KEYS[3], FIELDS) == [None] * len(FIELDS)  # absent key
            assert await wire.hmget(b"nope", [b"f"]) == [None]
            assert await wire.hmget_many([], FIELDS) == []
            assert await wire.execute("HGET", KEYS[0], FIELDS[0]) == value(KEYS[0], FIELDS[0])
        finally:
            await wire.close()

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())


def test_many_concurrent_callers_each_get_their_own_replies(server: RedisProcess) -> None:
    client = server.client()
    want = {k: expected(client, k) for k in KEYS}

    async def main() -> None:
        wire = RedisWire("127.0.0.1", server.port)

        async def call(i: int) -> None:
            if i % 3 == 0:
                keys = KEYS[i % 250 : i % 250 + 1 + i % 50]
                got = await wire.hmget_many(keys, FIELDS)
                assert got == [want[k] for k in keys], i
            else:
                assert await wire.hmget(KEYS[i], FIELDS) == want[KEYS[i]], i

        try:
            await asyncio.gather(*(call(i) for i in range(200)))
            assert wire._proto is not None and not wire._proto.pending
        finally:
            await wire.close()

    run(main())


def test_an_error_reply_fails_its_caller_only(server: RedisProcess) -> None:
    client = server.client()

    async def main() -> None:
        wire = RedisWire("127.0.0.1", server.port)
        try:
            calls = [
                wire.hmget(KEYS[0], FIELDS),
                wire.hmget_many([KEYS[1], b"a-string", KEYS[2]], FIELDS),  # WRONGTYPE in the middle
                wire.hmget_many(KEYS[4:6], FIELDS),
                wire.execute("NOSUCHCOMMAND"),
            ]
            got = await asyncio.gather(*calls, return_exceptions=True)
            assert got[0] == expected(client, KEYS[0])
            assert isinstance(got[1], redis.ResponseError) and "WRONGTYPE" in str(got[1])
            assert got[2] == [expected(client, k) for k in KEYS[4:6]]
            assert isinstance(got[3], redis.ResponseError)
            assert await wire.ping()
        finally:
            await wire.close()

    run(main())


def test_cancelled_callers_keep_later_callers_in_step(server: RedisProcess) -> None:
    client = server.client()

    async def main() -> None:
        wire = RedisWire("127.0.0.1", server.port, stall_timeout_s=5)
        try:
            await wire.ping()
            # BLPOP holds the connection for 0.3 s: everything behind it waits, and these give up.
            blocker = asyncio.ensure_future(wire.execute("BLPOP", "no-list", "0.3"))
            await asyncio.sleep(0.01)  # BLPOP written first
            for keys in (KEYS[:1], KEYS[10:60]):
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await wire.hmget_many(keys, FIELDS)
            later = [wire.hmget(KEYS[100], FIELDS), wire.hmget_many(KEYS[200:230], FIELDS)]
            got = await asyncio.gather(*later)
            assert got == [expected(client, KEYS[100]), [expected(client, k) for k in KEYS[200:230]]]
            assert await blocker is None
        finally:
            await wire.close()

    run(main())


def test_acl_user_authenticates_and_wrong_password_is_refused(tmp_path: Path) -> None:
    acl = tmp_path / "users.acl"
    render_acl(acl)
    server = AclRedis(port=free_port(), workdir=tmp_path / "redis", extra_args=("--aclfile", str(acl)))
    server.start()
    try:
        admin = server.as_user(*ADMIN)
        store(admin)
        with redis.Redis(port=server.port, username=ADMIN[0], password=ADMIN[1], db=2) as admin_db2:
            admin_db2.hset(KEYS[0], mapping={FIELDS[0]: b"in-db-2"})

        async def main() -> None:
            wire = RedisWire("127.0.0.1", server.port, username=SERVING[0], password=SERVING[1])
            db2 = RedisWire("127.0.0.1", server.port, username=SERVING[0], password=SERVING[1], db=2)
            anonymous = RedisWire("127.0.0.1", server.port)
            wrong = RedisWire("127.0.0.1", server.port, username=SERVING[0], password="wrong")
            try:
                assert await wire.hmget_many(KEYS[:20], FIELDS) == [expected(admin, k) for k in KEYS[:20]]
                assert (await db2.hmget(KEYS[0], FIELDS))[0] == b"in-db-2"
                with pytest.raises(redis.ResponseError, match="NOPERM"):  # the serving user cannot write
                    await wire.execute("HSET", KEYS[0], "f", "v")
                assert await wire.ping()
                with pytest.raises(redis.ResponseError, match="NOAUTH"):
                    await anonymous.ping()
                with pytest.raises(redis.AuthenticationError):
                    await wrong.ping()
            finally:
                for w in (wire, db2, anonymous, wrong):
                    await w.close()

        run(main())
    finally:
        server.kill()


def test_killed_redis_fails_pending_and_new_calls_fast_then_restart_recovers(own_server: RedisProcess) -> None:
    client = own_server.client()
    want = expected(client, KEYS[0])

    async def main() -> None:
        wire = RedisWire("127.0.0.1", own_server.port, stall_timeout_s=5)
        try:
            assert await wire.hmget(KEYS[0], FIELDS) == want
            blocked = asyncio.ensure_future(wire.execute("BLPOP", "no-list", "5"))
            behind = asyncio.ensure_future(wire.hmget_many(KEYS[:50], FIELDS))
            await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await asyncio.to_thread(own_server.kill)
            for call in (blocked, behind):
                with pytest.raises(WireConnectionError):
                    await asyncio.wait_for(call, 1)
            with pytest.raises(WireConnectionError):  # nothing listens: refused at once
                await wire.hmget(KEYS[0], FIELDS)
            assert time.monotonic() - t0 < 1
            await asyncio.to_thread(own_server.start)  # same port
            store(own_server.client())
            assert await wire.hmget(KEYS[0], FIELDS) == want
        finally:
            await wire.close()

    run(main())


def test_stopped_redis_times_callers_out_drops_the_connection_and_recovers(own_server: RedisProcess) -> None:
    client = own_server.client()
    want = expected(client, KEYS[0])

    async def main() -> None:
        wire = RedisWire("127.0.0.1", own_server.port, stall_timeout_s=0.4)
        try:
            assert await wire.hmget(KEYS[0], FIELDS) == want
            first = wire._proto
            own_server.pause()
            with pytest.raises(TimeoutError):  # the caller's own deadline
                async with asyncio.timeout(0.1):
                    await wire.hmget(KEYS[0], FIELDS)
            t0 = time.monotonic()
            with pytest.raises(WireConnectionError, match="no Redis reply"):  # no deadline: the stall timeout
                await wire.hmget_many(KEYS[:100], FIELDS)
            assert time.monotonic() - t0 < 0.6
            assert first is not None and first.error is not None and not first.pending
            own_server.resume()
            assert await wire.hmget(KEYS[0], FIELDS) == want
            assert wire._proto is not first
        finally:
            await wire.close()

    run(main())


def test_stall_timeout_counts_from_the_oldest_pending_reply(own_server: RedisProcess) -> None:
    async def main() -> None:
        wire = RedisWire("127.0.0.1", own_server.port, stall_timeout_s=0.3)
        try:
            await wire.ping()
            own_server.pause()

            async def waited() -> float:
                t0 = time.monotonic()
                with pytest.raises(WireConnectionError, match="no Redis reply"):
                    await wire.ping()
                return time.monotonic() - t0

            calls: list[asyncio.Future[float]] = []
            for _ in range(6):  # a new call every 0.1 s must not postpone the drop of older ones
                calls.append(asyncio.ensure_future(waited()))
                await asyncio.sleep(0.1)
            waits = await asyncio.gather(*calls)
            # The oldest call fails at the stall timeout, not later; younger ones go with the connection.
            assert waits[0] > 0.25, waits
            assert max(waits) < 0.5, waits
        finally:
            own_server.resume()
            await wire.close()

    run(main())
