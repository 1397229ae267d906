"""Incremental materialization into Redis, a column at a time: the bytes Feast's materializer writes.

What is written is decided as Feast decides it: each view's window (``plan.start_of``), and the
latest row per entity in it by the query Feast's DuckDB offline store runs (``pull``: the same
filter, the same ordering, the same first row). How it is written differs, and none of it
imports Feast (about 1.8 s of start-up; see ``feature_repo.pipeline.protos``):

- Values: each column is dictionary-encoded and only its *distinct* values are converted, by
  Feast's rules for scalars (``_proto_values``; any other type goes to Feast's own converter).
  A column of 100,000 small counts costs a few hundred conversions.
- Keys: Feast's v3 entity-key layout for a single string or int64 join key, built for the whole
  column at once (any other key goes through Feast's serializer row by row). Fields are the
  murmur3 of ``view:feature``, as Feast's ``_mmh3``.
- Commands: the RESP of every ``HMGET``/``HSET`` of a chunk is assembled by Arrow kernels and
  sent in one write; hiredis parses the replies. Per-row Python (a tuple, a packer call and a
  reply object per command) cost more than everything else put together.
- Views reading the same source over the same window share one pull, one ``HMGET`` of their
  ``_ts`` fields and one ``HSET`` per entity. Feast's rule holds per view: a row is written
  only when its event time is newer than the stored one (or none is stored).
- The pull is streamed ``chunk_rows`` entities at a time, so memory is bounded by the chunk.

``tests/integration/test_materialize_writer.py`` proves Redis and the registry identical to
Feast's own run on the same data; ``plan.Plan.why_not`` lists what this writer declines.
"""

from __future__ import annotations

import os
import queue
import struct
import tempfile
import threading
import uuid
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
import hiredis
import mmh3
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo.pipeline.plan import Plan, online_views, parse_connection_string, start_of
from feature_repo.pipeline.protos import FeatureViewProto, ValueProto

T = TypeVar("T")

# feast.types.Value.ValueType numbers (Feast's Python ValueType enum uses the same).
BYTES, STRING, INT32, INT64, DOUBLE, FLOAT, BOOL = 1, 2, 3, 4, 5, 6, 7

# Per scalar type: the Value field Feast sets, the Arrow column types it is read from here, and
# Feast's conversion (PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE). Other pairs go to Feast's converter.
_SCALARS: dict[int, tuple[str, Any, Any]] = {
    INT32: ("int32_val", pa.types.is_integer, int),
    INT64: ("int64_val", pa.types.is_integer, int),
    FLOAT: ("float_val", pa.types.is_floating, float),
    DOUBLE: ("double_val", lambda t: t == pa.float64(), float),
    STRING: ("string_val", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t), str),
    BYTES: ("bytes_val", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t), bytes),
    BOOL: ("bool_val", pa.types.is_boolean, bool),
}
_EMPTY = ValueProto().SerializeToString()


def _proto_values(values: pa.Array, value_type: int) -> list[bytes]:
    """Each value's serialized ``feast.types.Value``, as Feast's ``python_values_to_proto_values`` makes it.

    Feast converts ``column.to_numpy()``: an integer column with a null arrives as floats, and a
    null or NaN becomes an empty Value. The same array is converted the same way here.
    """
    scalar = _SCALARS.get(value_type)
    if scalar is None or not scalar[1](values.type):
        from feast.type_map import python_values_to_proto_values  # a type only Feast knows: its converter
        from feast.value_type import ValueType

        array = values.to_numpy(zero_copy_only=False)
        return [p.SerializeToString() for p in python_values_to_proto_values(array, ValueType(value_type))]
    field, _, convert = scalar
    items = values.to_pylist()  # to_numpy's copying path would import pandas (0.3 s) for these few values
    if values.null_count and pa.types.is_integer(values.type):
        items = [None if v is None else float(v) for v in items]  # numpy's int-with-nulls to float
    return [_EMPTY if v is None or v != v else ValueProto(**{field: convert(v)}).SerializeToString() for v in items]


def _bulk(items: Sequence[bytes]) -> list[bytes]:
    """RESP bulk strings."""
    return [b"$%d\r\n%s\r\n" % (len(b), b) for b in items]


# Arrays and scalars below are built from buffers: ``pa.array``, ``pa.scalar`` and a copying
# ``to_numpy`` first import pandas to check their argument, 0.25 s of a 1.5 s run.


def _binary(items: Sequence[bytes]) -> pa.Array:
    """A binary array holding ``items``."""
    offsets = np.zeros(len(items) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, items), dtype=np.int32, count=len(items)), out=offsets[1:])
    data = pa.py_buffer(b"".join(items))
    return pa.Array.from_buffers(pa.binary(), len(items), [None, pa.py_buffer(offsets), data])


def _const(value: bytes) -> pa.Scalar:
    """A binary scalar, for the constant parts of element-wise joins."""
    return _binary([value])[0]


def _ints(values: np.ndarray) -> pa.Array:
    """An int64 array of ``values``."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _mask(values: np.ndarray) -> pa.Array:
    """A boolean array of ``values`` (Arrow packs booleans into bits, least significant first)."""
    bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])


def _numpy(column: pa.Array, dtype: Any) -> np.ndarray:
    """A fixed-width Arrow array without nulls, viewed as numpy without copying."""
    assert column.null_count == 0
    return np.frombuffer(column.buffers()[1], dtype=dtype)[column.offset : column.offset + len(column)]


def _join(*parts: pa.Array | bytes) -> pa.Array:
    """Element-wise concatenation of arrays and constants."""
    args = [_const(p) if isinstance(p, bytes) else p for p in parts]
    return pc.binary_join_element_wise(*args, _const(b""))


def _bulk_array(column: pa.Array) -> pa.Array:
    """RESP bulk strings, one per element, built by Arrow kernels."""
    sizes = pc.binary_length(column).cast(pa.string()).cast(pa.binary())
    return _join(b"$", sizes, b"\r\n", column, b"\r\n")


def _column_segments(prefix: bytes, column: pa.Array, value_type: int) -> pa.Array:
    """Each row's ``prefix`` followed by its value as Feast serializes it, as a RESP bulk string."""
    # A null is one more distinct value, converted with the others: the array then has the
    # type Feast's whole-column conversion would have (an int column with a null is floats).
    encoded = pc.dictionary_encode(column, null_encoding="encode")
    table = _binary([prefix + s for s in _bulk(_proto_values(encoded.dictionary, value_type))])
    return table.take(encoded.indices)


def _timestamps_via_datetime(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``_timestamps`` through Feast's own steps, a ``datetime`` per distinct value (any column type)."""
    import pandas as pd  # only for columns that are not plain timestamps
    from feast.utils import _coerce_datetime, make_tzaware

    encoded = pc.dictionary_encode(column)
    serialized: list[bytes] = []
    nanos: list[int] = []
    for value in pd.to_datetime(encoded.dictionary.to_numpy(zero_copy_only=False)):
        ts = Timestamp()
        ts.FromDatetime(make_tzaware(_coerce_datetime(value)))  # Feast's own steps, in its order
        serialized.append(ts.SerializeToString())
        nanos.append(ts.seconds * 1_000_000_000 + ts.nanos)
    index = encoded.indices.to_numpy(zero_copy_only=False)
    return _binary(serialized).take(encoded.indices), np.asarray(nanos, dtype=np.int64)[index]


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Protobuf varints of int64 values: their bytes as rows of a (n, 10) matrix, and their lengths.

    Seven bits a byte, least significant first, the high bit set on all but the last; a negative
    value is its 64-bit two's complement (ten bytes).
    """
    unsigned = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
    groups = unsigned[:, np.newaxis] >> (np.arange(10, dtype=np.uint64) * np.uint64(7))
    lengths = np.maximum((groups != 0).sum(axis=1), 1)
    data = (groups & np.uint64(0x7F)).astype(np.uint8)
    data[np.arange(10)[np.newaxis, :] < (lengths - 1)[:, np.newaxis]] |= 0x80
    return data, lengths


def _timestamp_protos(seconds: np.ndarray, nanos: np.ndarray) -> pa.Array:
    """``google.protobuf.Timestamp(seconds, nanos).SerializeToString()`` for whole columns.

    Field 1 (tag 0x08) and field 2 (tag 0x10) as varints, each left out when zero (proto3).
    Serializing a message per row cost a tenth of the run; ``test_materialize_parts`` checks these
    bytes against protobuf's own.
    """
    rows = len(seconds)
    message = np.zeros((rows, 22), dtype=np.uint8)
    keep = np.zeros((rows, 22), dtype=bool)
    for column, values in ((0, seconds), (11, nanos)):
        data, lengths = _varints(values)
        message[:, column] = 0x08 if column == 0 else 0x10
        message[:, column + 1 : column + 11] = data
        present = values != 0
        keep[:, column] = present
        keep[:, column + 1 : column + 11] = present[:, np.newaxis] & (np.arange(10) < lengths[:, np.newaxis])
    offsets = np.zeros(rows + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(message[keep].tobytes())]
    return pa.Array.from_buffers(pa.binary(), rows, buffers)


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _timestamps(column: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each row's serialized ``Timestamp`` (as Feast writes ``_ts:<view>``) and its nanoseconds.

    Feast goes through a Python ``datetime`` per row, which keeps whole microseconds (UTC when
    naive). The same integers come from the column directly, floored to microseconds.
    """
    if not pa.types.is_timestamp(column.type) or column.null_count:
        return _timestamps_via_datetime(column)
    raw = _numpy(column.view(pa.int64()), np.int64)
    per_second = _PER_SECOND[column.type.unit]
    micros = raw // (per_second // 1_000_000) if per_second > 1_000_000 else raw * (1_000_000 // per_second)
    seconds, rest = np.divmod(micros, 1_000_000)
    return _timestamp_protos(seconds, rest * 1_000), micros * 1_000


def field_name(view: str, feature: str) -> bytes:
    """The hash field of ``view:feature``: Feast's ``_mmh3`` (murmur3_32, 4 bytes little-endian)."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def _fixed(data: bytes, width: int, count: int) -> pa.Array:
    """``count`` binary values of ``width`` bytes each, cut from ``data``."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), count, [None, pa.py_buffer(data)]).cast(pa.binary())


def _feast_keys(project: str, batch: pa.RecordBatch, join_keys: list[tuple[str, int]]) -> pa.Array:
    """Redis keys by Feast's own serializer, row by row (join keys this module does not build itself)."""
    from feast.infra.online_stores.helpers import _redis_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    values = [
        python_values_to_proto_values(batch.column(k).to_numpy(zero_copy_only=False), ValueType(t))
        for k, t in join_keys
    ]
    names = [k for k, _ in join_keys]
    keys = [
        _redis_key(project, EntityKey(join_keys=names, entity_values=[v[i] for v in values]), 3)
        for i in range(batch.num_rows)
    ]
    return pa.array(keys, pa.binary())


def _keys(project: str, batch: pa.RecordBatch, join_keys: list[tuple[str, int]]) -> pa.Array:
    """Each row's Redis key: Feast's v3 entity key (count, key name, value type, value) + project.

    Built for the whole column for one string or int64 join key: a fixed head, then the value's
    length and bytes (``<I`` + UTF-8) or its 8 bytes (``<q``), then the project name.
    """
    if len(join_keys) == 1:
        name, value_type = join_keys[0]
        column = batch.column(name)
        encoded = name.encode("utf-8")
        head = struct.pack("<III", 1, STRING, len(encoded)) + encoded + struct.pack("<I", value_type)
        tail = project.encode("utf-8")
        if column.null_count == 0 and value_type == STRING and _SCALARS[STRING][1](column.type):
            data = column.cast(pa.binary())
            sizes = _numpy(pc.binary_length(data), np.int32).astype("<u4")
            return _join(head, _fixed(sizes.tobytes(), 4, len(data)), data, tail)
        if column.null_count == 0 and value_type == INT64 and pa.types.is_integer(column.type):
            ints = _numpy(column.cast(pa.int64()), np.int64).astype("<i8")
            return _join(head + struct.pack("<I", 8), _fixed(ints.tobytes(), 8, len(ints)), tail)
    return _feast_keys(project, batch, join_keys)


class Wire:
    """One Redis connection for bursts of commands: one write per burst, replies parsed by hiredis.

    redis-py opens the connection (address, TLS, AUTH, SELECT and timeouts from Feast's
    connection string, as Feast's client gets them); the bursts then use its socket directly,
    because reading 300,000 replies through ``read_response`` cost more than building them.
    A burst's replies are read when the next ``receive`` asks, so Redis applies one chunk's
    writes while the next chunk is pulled and built.
    """

    def __init__(self, connection_string: str) -> None:
        import redis

        host, port, params = parse_connection_string(connection_string)
        self._client = redis.Redis(host=host, port=port, **params)
        self._conn = self._client.connection_pool.get_connection()
        self._errors: list[Exception] = []
        errors = self._errors

        class RecordedError(Exception):
            """An error reply; recorded as hiredis parses it, so replies need no type check one by one."""

            def __init__(self, *args: object) -> None:
                super().__init__(*args)
                errors.append(self)

        self._reader = hiredis.Reader(replyError=RecordedError)
        self._pending: deque[int] = deque()  # replies owed, per burst sent
        self._buffer = bytearray(1 << 20)

    def send(self, commands: pa.Array) -> None:
        """Send ``commands`` (RESP, one command per element, in order) without waiting for replies."""
        _, offsets_buffer, data_buffer = commands.buffers()
        offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[commands.offset : commands.offset + len(commands) + 1]
        try:
            self._socket().sendall(memoryview(data_buffer)[offsets[0] : offsets[-1]])
        except BaseException:
            self._conn.disconnect()  # part of a burst may have gone: this connection is not reused
            raise
        self._pending.append(len(commands))

    def receive(self) -> list[Any]:
        """Read the replies of every burst sent so far (raising on any error); return the last burst's."""
        if not self._pending:
            return []
        total, last = sum(self._pending), self._pending[-1]
        self._pending.clear()
        replies: list[Any] = []
        gets = self._reader.gets
        try:
            while True:
                while (reply := gets()) is not False:
                    replies.append(reply)
                if len(replies) >= total:
                    break
                n = self._socket().recv_into(self._buffer)
                if not n:
                    raise ConnectionError("Redis closed the connection")
                self._reader.feed(self._buffer, 0, n)  # type: ignore[arg-type]  # hiredis reads any buffer
        except BaseException:
            self._conn.disconnect()  # replies may be left unread: this connection is not reused
            raise
        if self._errors:
            raise self._errors[0]
        return replies[total - last :]

    def _socket(self) -> Any:
        # redis-py's connected socket (``Connection._sock`` since redis-py 2); None once disconnected.
        sock = getattr(self._conn, "_sock", None)
        if sock is None:
            raise ConnectionError("the Redis connection is closed")
        return sock

    def close(self) -> None:
        """Release the connection and close the client."""
        self._client.connection_pool.release(self._conn)
        self._client.close()


def _newer(stored: list[list[bytes | None]], nanos: np.ndarray, views: int) -> np.ndarray:
    """Per view and row, whether the row is written: Feast's rule, no stored time or an older one.

    Feast skips a row when the stored time (0 when none) is set and the row's is not later.
    """
    if not any(map(any, stored)):  # nothing stored for any view: every row is written
        return np.ones((views, len(stored)), dtype=bool)
    parsed: dict[bytes, int] = {}
    previous = np.zeros((views, len(stored)), dtype=np.int64)
    for i, values in enumerate(stored):
        for j, raw in enumerate(values):
            if raw:
                if raw not in parsed:
                    ts = Timestamp.FromString(raw)
                    parsed[raw] = ts.seconds * 1_000_000_000 + ts.nanos
                previous[j, i] = parsed[raw]
    latest = np.maximum(previous, 0)
    return (latest == 0) | (nanos[np.newaxis, :] > latest)


def write_batch(wire: Wire, project: str, views: list[FeatureViewProto], batch: pa.RecordBatch) -> list[int]:
    """Send one chunk of rows for views sharing a source; returns the rows written per view.

    The writes' replies are left to the next ``wire.receive()``: call it before counting them done.
    The stored times are asked for first, and the fields built while Redis answers.

    The pull holds one row per entity, so a key appears once in a chunk and across chunks.
    """
    fv = views[0]
    keys = _bulk_array(_keys(project, batch, [(c.name, c.value_type) for c in fv.spec.entity_columns]))
    ts_fields = [f"_ts:{v.spec.name}".encode() for v in views]
    wire.send(_join(b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(views)), keys, b"".join(_bulk(ts_fields))))
    ts_rows, nanos = _timestamps(batch.column(fv.spec.batch_source.timestamp_field))
    ts_values = _bulk_array(ts_rows)
    segments = []  # per view and row: the RESP of its `_ts` field and of each feature field
    for view, ts_field in zip(views, ts_fields, strict=True):
        ts_prefix = _bulk([ts_field])[0]
        parts = [_join(ts_prefix, ts_values)]
        for f in view.spec.features:
            prefix = _bulk([field_name(view.spec.name, f.name)])[0]
            parts.append(_column_segments(prefix, batch.column(f.name), f.value_type))
        segments.append(_join(*parts))
    newer = _newer(wire.receive(), nanos, len(views))  # receive() also reads the previous chunk's write replies
    sizes = np.array([2 * (1 + len(v.spec.features)) for v in views])
    if newer.all():
        commands = _join(b"*%d\r\n$4\r\nHSET\r\n" % (2 + sizes.sum()), keys, *segments)
    else:
        fields = sizes @ newer
        counts, which = np.unique(fields + 2, return_inverse=True)
        heads = _binary([b"*%d\r\n$4\r\nHSET\r\n" % c for c in counts.tolist()]).take(_ints(which))
        masked = [pc.if_else(_mask(newer[j]), s, _const(b"")) for j, s in enumerate(segments)]
        commands = _join(heads, keys, *masked).filter(_mask(fields > 0))
    if len(commands):
        wire.send(commands)  # replies read with the next chunk's, or by the caller's receive()
    return [int(n) for n in newer.sum(axis=1)]


PULL_MEMORY_LIMIT = "512MB"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pull(
    fv: FeatureViewProto, features: list[str], start: datetime, end: datetime, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """The latest row per entity with ``start <= event time <= end``, ``chunk_rows`` at a time.

    Feast's DuckDB store (``pull_latest_from_table_or_query_ibis``) runs this query through Ibis:
    the session in UTC, ``CAST(ts AS TIMESTAMP)`` between the naive UTC bounds, ``ROW_NUMBER()``
    per entity by event time then created time, descending, first row kept. DuckDB evaluates that
    cast row by row and cannot push it into the Parquet scan, so a filter on the column itself, a
    day wider on each side, is added in front: it only drops rows the cast filter would drop.
    """
    source = fv.spec.batch_source
    ts, created = source.timestamp_field, source.created_timestamp_column
    join = [c.name for c in fv.spec.entity_columns]
    columns = [*join, *features, ts, *([created] if created else [])]
    table = "read_parquet('" + source.file_options.uri.replace("'", "''") + "')"
    lo, hi = (t.astimezone(UTC).replace(tzinfo=None) for t in (start, end))
    # The window sorts every row of the window; past this much memory DuckDB spills it to disk,
    # so the process stays bounded whatever the number of rows (the output is streamed in chunks).
    # DuckDB creates the spill folder only when it spills, and removes it when the connection closes.
    spill = os.path.join(tempfile.gettempdir(), f"skewless-pull-{uuid.uuid4().hex}")
    con = duckdb.connect(config={"memory_limit": PULL_MEMORY_LIMIT, "temp_directory": spill})
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # a long pull would draw one on the job's output
        # Identifiers are quoted and the path is a quoted literal; values are parameters.
        kind = con.execute(f"DESCRIBE SELECT {_quote(ts)} FROM {table}").fetchall()[0][1]  # noqa: S608
        narrow, params = "", [lo, hi]
        if kind in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP"):
            wide = [start - timedelta(days=1), end + timedelta(days=1)]
            if kind == "TIMESTAMP":  # naive columns hold UTC wall time, as Feast assumes
                wide = [t.astimezone(UTC).replace(tzinfo=None) for t in wide]
            narrow, params = f"{_quote(ts)} >= ? AND {_quote(ts)} <= ? AND ", [*wide, lo, hi]
        order = f"{_quote(ts)} DESC" + (f", {_quote(created)} DESC" if created else "")
        query = (
            f"SELECT * EXCLUDE (__skewless_rn) FROM ("  # noqa: S608 - quoted identifiers, values as parameters
            f"SELECT {', '.join(map(_quote, columns))}, ROW_NUMBER() OVER ("
            f"PARTITION BY {', '.join(map(_quote, join))} ORDER BY {order}) AS __skewless_rn "
            f"FROM {table} WHERE {narrow}"
            f"CAST({_quote(ts)} AS TIMESTAMP) >= ? AND CAST({_quote(ts)} AS TIMESTAMP) <= ?"
            f") WHERE __skewless_rn = 1"
        )
        for batch in con.sql(query, params=params).to_arrow_reader(chunk_rows):
            yield from (batch.slice(o, chunk_rows) for o in range(0, batch.num_rows, chunk_rows))
    finally:
        con.close()


def _ahead(items: Iterator[T], depth: int = 2) -> Generator[T, None, None]:
    """``items``, produced on a thread up to ``depth`` ahead of the consumer.

    DuckDB runs the query and builds each Arrow chunk without holding the GIL, so the next chunk
    is pulled while this one is written, and Redis applies writes meanwhile: the run's three
    workers (DuckDB, Python, Redis) share two cores instead of taking turns. Memory grows by at
    most ``depth`` chunks. ``items`` is advanced and closed on the thread only.
    """
    slots: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put("end", None)
        except BaseException as e:  # handed to the consumer, raised there
            put("error", e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own cleanup (the DuckDB connection) runs here, on its thread

    worker = threading.Thread(target=produce, name="skewless-pull", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def materialize_incremental(plan: Plan, end: datetime, chunk_rows: int = 20_000, resume: bool = True) -> dict[str, int]:
    """Feast's ``materialize_incremental`` up to ``end`` with this writer; rows written per view.

    Check ``plan.why_not()`` first. Views that read the same source over the same window share one
    pull (the latest row per entity does not depend on which feature columns are selected) and
    one write per entity. A view's run is recorded in the registry once all its rows are written.
    ``resume=False`` ignores the recorded runs: every view's first-run window, to refill a store.
    """
    project = plan.target.project
    now = datetime.now(UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    grouped: dict[tuple[Any, ...], list[FeatureViewProto]] = {}
    for fv in online_views(plan.registry, project):
        source = fv.spec.batch_source
        start = start_of(fv, end, now, resume)
        join = tuple(c.name for c in fv.spec.entity_columns)
        key = (source.file_options.uri, source.timestamp_field, source.created_timestamp_column, join, start)
        grouped.setdefault(key, []).append(fv)
    groups = [(key[-1], views) for key, views in grouped.items()]

    def pulls() -> Iterator[tuple[int, pa.RecordBatch | None]]:
        for g, (start, views) in enumerate(groups):
            features = list(dict.fromkeys(f.name for v in views for f in v.spec.features))
            for batch in pull(views[0], features, start, end, chunk_rows):
                yield g, batch
            yield g, None  # the group's last chunk

    written: dict[str, int] = {}
    counts = [[0] * len(views) for _, views in groups]
    wire = Wire(plan.target.connection_string)
    try:
        for g, batch in _ahead(pulls()):
            start, views = groups[g]
            if batch is not None:
                counts[g] = [a + b for a, b in zip(counts[g], write_batch(wire, project, views, batch), strict=True)]
                continue
            wire.receive()  # every write of these views acknowledged before the registry records them
            for view, n in zip(views, counts[g], strict=True):
                written[view.spec.name] = n
                plan.record(view, start, end)
    finally:
        wire.close()
    return written
