"""RedisWire without a Redis: command packing, option parsing, and the reply FIFO fed by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from feast.infra.online_stores.redis import RedisOnlineStore
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from serving.redis_wire import RedisWire, UnsupportedConfigError, WireConnectionError, _pack_command, _Protocol
from tests.support import free_port

pytestmark = pytest.mark.unit


def hmget_reply(*values: bytes | None) -> bytes:
    out = b"*%d\r\n" % len(values)
    for v in values:
        out += b"$-1\r\n" if v is None else b"$%d\r\n%b\r\n" % (len(v), v)
    return out


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.aborted = True


def with_protocol(
    test: Callable[[_Protocol, FakeTransport], Awaitable[None]], stall_s: float = 5.0, max_pending: int = 1000
) -> None:
    async def main() -> None:
        proto = _Protocol(asyncio.get_running_loop(), stall_s, max_pending)
        transport = FakeTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        await test(proto, transport)

    asyncio.run(main())


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def test_packing_is_byte_identical_to_hiredis() -> None:
    wire = RedisWire()
    fields: tuple[bytes | str, ...] = (b"\x00\x01\x02\x03", "_ts:view", "é", b"", b"a\r\nb")
    keys = [b"k", b"", b"\x00\xff\r\n", b"x" * 300]
    expected = b"".join(_pack_command((b"HMGET", k, *fields)) for k in keys)
    assert wire._pack_hmgets(keys, fields) == expected
    assert wire._pack_hmgets(keys, list(fields)) == expected  # any sequence; cached by content


def test_feast_params_map_to_the_client() -> None:
    conn = "redis.svc:6380,username=skewless-serving,password=123,db=2,socket_timeout=0.25,socket_connect_timeout=1"
    nodes, params = RedisOnlineStore._parse_connection_string(conn)
    wire = RedisWire.from_feast_params(nodes[0]["host"], nodes[0]["port"], params)
    assert (wire.host, wire.port, wire.db) == ("redis.svc", 6380, 2)
    assert (wire.socket_connect_timeout, wire.stall_timeout_s) == (1.0, 0.25)
    assert (wire._username, wire._password) == ("skewless-serving", "123")  # json.loads made it an int
    assert "123" not in repr(wire)
    assert RedisWire.from_feast_params("h", 1, params, stall_timeout_s=3).stall_timeout_s == 3
    assert RedisWire.from_feast_params("h", 1, {"ssl": False}).db == 0


@pytest.mark.parametrize("conn", ["h:1,ssl=true", "h:1,retry_on_timeout=true", "h:1,ssl_ca_certs=/x"])
def test_unsupported_options_are_refused(conn: str) -> None:
    nodes, params = RedisOnlineStore._parse_connection_string(conn)
    with pytest.raises(UnsupportedConfigError):
        RedisWire.from_feast_params(nodes[0]["host"], nodes[0]["port"], params)


def test_replies_split_anywhere_reach_their_callers_in_order() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        one = proto.send(b"x", 1)
        batch = proto.send(b"y", 3)
        last = proto.send(b"z", 1)
        data = hmget_reply(b"a") + hmget_reply(b"b", None) + hmget_reply() + hmget_reply(None) + hmget_reply(b"e")
        await settle()
        assert transport.written == [b"xyz"]  # the same iteration's calls, one write
        for i in range(len(data)):
            proto.data_received(data[i : i + 1])
        assert await one == [[b"a"]]
        assert await batch == [[b"b", None], [], [None]]
        assert await last == [[b"e"]]
        assert not proto.pending and proto.outstanding == 0

    with_protocol(test)


def test_an_error_reply_fails_only_its_own_call() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        batch = proto.send(b"", 3)
        other = proto.send(b"", 1)
        proto.data_received(hmget_reply(b"a") + b"-WRONGTYPE Operation against a key\r\n" + hmget_reply(b"c"))
        proto.data_received(hmget_reply(b"d"))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await batch
        assert await other == [[b"d"]]
        assert proto.error is None and not transport.aborted

    with_protocol(test)


def test_a_cancelled_call_still_consumes_its_replies() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        waiter = asyncio.ensure_future(proto.send(b"", 3))
        later = proto.send(b"", 1)
        await settle()
        proto.data_received(hmget_reply(b"a1"))  # part of the batch arrived, then its caller gives up
        waiter.cancel()
        await settle()
        proto.data_received(hmget_reply(b"a2") + hmget_reply(b"a3") + hmget_reply(b"b"))
        assert await later == [[b"b"]]
        assert waiter.cancelled() and not proto.pending

    with_protocol(test)


def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        proto.data_received(hmget_reply(b"?"))
        assert transport.aborted and isinstance(proto.error, WireConnectionError)
        with pytest.raises(WireConnectionError):
            proto.send(b"", 1)

    with_protocol(test)


def test_garbage_fails_pending_calls() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        call = proto.send(b"", 1)
        proto.data_received(b"!not resp\r\n")
        with pytest.raises(WireConnectionError, match="protocol"):
            await call
        assert transport.aborted

    with_protocol(test)


def test_a_call_over_the_outstanding_limit_is_refused_alone() -> None:
    # Big batches under a high concurrency cap reach the limit while Redis keeps up: the calls
    # already sent must still get their replies, and the connection must stay.
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        first = proto.send(b"", 6)
        with pytest.raises(WireConnectionError, match="outstanding"):
            proto.send(b"", 5)
        proto.data_received(b"".join(hmget_reply(b"v") for _ in range(6)))
        assert await first == [[b"v"]] * 6
        assert not transport.aborted and proto.error is None
        again = proto.send(b"", 10)  # within the limit once the replies are in
        proto.data_received(b"".join(hmget_reply(b"w") for _ in range(10)))
        assert await again == [[b"w"]] * 10

    with_protocol(test, max_pending=10)


def test_an_overdue_reply_drops_the_connection_and_a_timely_one_does_not() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        first = proto.send(b"", 1)
        await asyncio.sleep(0.06)
        proto.data_received(hmget_reply(b"a"))  # in time (0.1 s)
        second = proto.send(b"", 1)  # the watchdog must now measure from this one
        await asyncio.sleep(0.06)
        assert await first == [[b"a"]] and proto.error is None
        with pytest.raises(WireConnectionError, match="no Redis reply"):
            await asyncio.wait_for(second, 1)
        assert transport.aborted

    with_protocol(test, stall_s=0.1)


def test_connection_lost_fails_pending_calls_even_abandoned_ones() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        abandoned = proto.send(b"", 1)
        abandoned.cancel()
        call = proto.send(b"", 2)
        proto.connection_lost(ConnectionResetError("reset"))
        with pytest.raises(RedisConnectionError, match="lost"):
            await call
        assert proto.lost.done()

    with_protocol(test)


def test_unreachable_redis_fails_fast_and_closed_client_refuses() -> None:
    async def main() -> None:
        wire = RedisWire("127.0.0.1", free_port(), socket_connect_timeout=1)
        with pytest.raises(WireConnectionError, match=r"127\.0\.0\.1"):
            await wire.hmget(b"k", [b"f"])
        await wire.close()
        with pytest.raises(WireConnectionError, match="closed"):
            await wire.ping()

    asyncio.run(main())


def test_concurrent_first_calls_share_one_connection_attempt() -> None:
    attempts: list[Any] = []

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: attempts.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = RedisWire("127.0.0.1", port, password="pw", socket_connect_timeout=0.2)
        # The server accepts and never answers AUTH: every caller fails on the one shared attempt.
        results = await asyncio.gather(*(wire.ping() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, WireConnectionError) for r in results), results
        assert len(attempts) == 1
        await wire.close()
        server.close()
        for w in attempts:
            w.close()
        await server.wait_closed()

    asyncio.run(main())


def test_close_during_connect_fails_waiters_with_a_connection_error() -> None:
    async def main() -> None:
        held: list[Any] = []
        server = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        wire = RedisWire("127.0.0.1", port, password="pw", socket_connect_timeout=5)
        waiter = asyncio.ensure_future(wire.ping())
        await asyncio.sleep(0.05)  # connected, AUTH unanswered
        await wire.close()
        with pytest.raises(WireConnectionError, match="closed"):
            await waiter
        server.close()

    asyncio.run(main())


def test_a_dropped_connection_writes_nothing_more() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        call = proto.send(b"x", 1)
        proto.drop(WireConnectionError("gone"))
        await settle()
        assert transport.written == []
        with pytest.raises(WireConnectionError, match="gone"):
            await call

    with_protocol(test)


def test_a_slow_but_answering_redis_is_not_dropped() -> None:
    async def test(proto: _Protocol, transport: FakeTransport) -> None:
        batch = proto.send(b"", 4)
        for i in range(4):  # 0.24 s in all, more than the stall timeout, but never 0.1 s silent
            await asyncio.sleep(0.06)
            proto.data_received(hmget_reply(b"%d" % i))
        assert await batch == [[b"0"], [b"1"], [b"2"], [b"3"]]
        assert proto.error is None and not transport.aborted

    with_protocol(test, stall_s=0.1)
