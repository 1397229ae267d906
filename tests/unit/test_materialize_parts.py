"""Each part of the column-wise writer gives the bytes Feast's own functions give, value by value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from feature_repo.pipeline import plan as plans
from feature_repo.pipeline import writer

pytestmark = pytest.mark.unit

COLUMNS = [
    (pa.array([1, 2**53 + 1, -5, 0, 1], pa.int64()), ValueType.INT64),
    (pa.array([1, None, 2**53 + 1, 1], pa.int64()), ValueType.INT64),  # a null: Feast sees floats
    (pa.array([7, None, -3], pa.int32()), ValueType.INT32),
    (pa.array([0.0, -0.0, float("nan"), 1.5, None, float("inf"), 1.5]), ValueType.DOUBLE),
    (pa.array([1.1, None, 2.5], pa.float32()), ValueType.FLOAT),
    (pa.array(["a", "ü", "", None, "a"]), ValueType.STRING),
    (pa.array([True, False, None, True]), ValueType.BOOL),
    (pa.array([b"x", b"", None], pa.binary()), ValueType.BYTES),
    (pa.array([3, 4], pa.int64()), ValueType.DOUBLE),  # a pair only Feast's converter handles
]


@pytest.mark.parametrize(("column", "value_type"), COLUMNS, ids=lambda c: str(getattr(c, "type", c)))
def test_values_serialize_as_feasts_converter_does(column: pa.Array, value_type: ValueType) -> None:
    values: Any = column.to_numpy(zero_copy_only=False)  # what Feast's materializer hands its converter
    feast = [p.SerializeToString() for p in python_values_to_proto_values(values, value_type)]
    assert writer._column_segments(b"", column, value_type.value).to_pylist() == writer._bulk(feast)


@pytest.mark.parametrize(
    ("values", "value_type"),
    [
        (["u0000001", "ü-ß", "", "x" * 300], ValueType.STRING),
        ([0, -1, 2**62, -(2**63)], ValueType.INT64),
    ],
)
def test_keys_are_feasts_entity_keys(values: list[object], value_type: ValueType) -> None:
    column = pa.array(values, pa.string() if value_type == ValueType.STRING else pa.int64())
    batch = pa.RecordBatch.from_arrays([column], names=["user_id"])
    array: Any = column.to_numpy(zero_copy_only=False)
    protos = python_values_to_proto_values(array, value_type)
    expected = [_redis_key("proj", EntityKey(join_keys=["user_id"], entity_values=[p]), 3) for p in protos]
    assert writer._keys("proj", batch, [("user_id", value_type.value)]).to_pylist() == expected


def test_two_join_keys_go_through_feasts_serializer() -> None:
    batch = pa.RecordBatch.from_arrays([pa.array(["a", "b"]), pa.array([1, 2])], names=["k", "n"])
    keys: Any = np.array(["a", "b"], dtype=object)
    numbers: Any = np.array([1, 2])
    values = list(
        zip(
            python_values_to_proto_values(keys, ValueType.STRING),
            python_values_to_proto_values(numbers, ValueType.INT64),
            strict=True,
        )
    )
    expected = [_redis_key("p", EntityKey(join_keys=["k", "n"], entity_values=list(v)), 3) for v in values]
    assert (
        writer._keys("p", batch, [("k", ValueType.STRING.value), ("n", ValueType.INT64.value)]).to_pylist() == expected
    )


@pytest.mark.parametrize("name", ["user_profile:is_paid", "activity_7d:logins_7d", "vü:ß"])
def test_field_names_are_feasts_murmur3(name: str) -> None:
    view, feature = name.split(":")
    assert writer.field_name(view, feature) == _mmh3(name)


@pytest.mark.parametrize(
    "connection",
    ["127.0.0.1:6379", "redis:6380,db=2,ssl=true,password=p=w", "h:1,socket_timeout=5,socket_connect_timeout=2.0"],
)
def test_connection_string_read_as_feast_reads_it(connection: str) -> None:
    nodes, params = RedisOnlineStore._parse_connection_string(connection)
    assert plans.parse_connection_string(connection) == (nodes[0]["host"], int(nodes[0]["port"]), params)


def test_timestamps_serialize_as_protobuf_does() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    rng = np.random.default_rng(3)
    seconds = np.concatenate([[0, 0, 1, -1, 127, 128, -(2**40), 2**62], rng.integers(-(2**34), 2**34, 200)])
    nanos = np.concatenate([[0, 999_999_999, 0, 5, 0, 128, 1, 0], rng.integers(0, 10**9, 200)])
    expected = [
        Timestamp(seconds=s, nanos=n).SerializeToString() for s, n in zip(seconds.tolist(), nanos.tolist(), strict=True)
    ]
    assert writer._timestamp_protos(seconds, nanos).to_pylist() == expected


def test_newer_follows_feasts_skip_rule() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    def ts(nanos: int) -> bytes:
        return Timestamp(seconds=nanos // 10**9, nanos=nanos % 10**9).SerializeToString()

    # Stored: none, older, the same instant, newer, the epoch itself (which Feast reads as "none").
    stored: list[list[bytes | None]] = [[None], [ts(5 * 10**9)], [ts(9 * 10**9)], [ts(12 * 10**9)], [ts(0)]]
    rows = np.array([9 * 10**9] * 5, dtype=np.int64)
    assert writer._newer(stored, rows, 1).tolist() == [[True, True, False, False, True]]
    assert writer._newer([[None, None]], rows[:1], 2).tolist() == [[True], [True]]


def _yaml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "feature_store.yaml").write_text(text)
    return tmp_path


BASE = """project: p
provider: local
registry: {path: reg.db}
online_store: {type: redis, connection_string: "h:1"}
offline_store: {type: duckdb}
"""


def test_plan_from_files_only_for_what_it_reads(tmp_path: Path) -> None:
    assert plans.read_repo(_yaml(tmp_path, BASE)) is None  # no registry file yet: Feast's business
    (tmp_path / "reg.db").write_bytes(b"")
    plan = plans.read_repo(_yaml(tmp_path, BASE))
    assert plan is not None and plan.target.why_not() is None
    assert "not in the registry" in (plan.why_not() or "")
    # Keys whose meaning Feast alone knows hand the run to Feast.
    assert plans.read_repo(_yaml(tmp_path, BASE + "batch_engine: {type: spark.engine}\n")) is None
    assert plans.read_repo(_yaml(tmp_path, BASE.replace("{path: reg.db}", "gs://b/reg.db"))) is None
    skip = plans.read_repo(_yaml(tmp_path, BASE.replace('"h:1"}', '"h:1", skip_dedup: true}')))
    assert skip is not None and "skip_dedup" in (skip.why_not() or "")


def test_prefetching_hands_over_items_errors_and_closes_its_source() -> None:
    closed: list[str] = []

    def source(fail: bool) -> Iterator[int]:
        try:
            yield from range(5)
            if fail:
                raise ValueError("pull failed")
        finally:
            closed.append("closed")

    assert list(writer._ahead(source(fail=False))) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="pull failed"):
        list(writer._ahead(source(fail=True)))
    consumer = writer._ahead(source(fail=False), depth=1)
    assert next(consumer) == 0
    consumer.close()  # the consumer stops early (a Redis error, say): the source is closed all the same
    assert closed == ["closed"] * 3


@pytest.mark.parametrize(
    ("given", "utc"),
    [
        ("2026-05-01T00:00:00", "2026-05-01T00:00:00+00:00"),  # no offset: UTC, whatever TZ says
        ("2026-05-01T02:00:00+02:00", "2026-05-01T00:00:00+00:00"),
        ("2026-05-01", "2026-05-01T00:00:00+00:00"),
    ],
)
def test_materialize_end_is_read_as_utc(given: str, utc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from feature_repo.pipeline.cli import parse_end

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_end(given).isoformat() == utc
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_malformed_end_is_a_usage_error() -> None:
    import typer

    from feature_repo.pipeline.cli import parse_end

    with pytest.raises(typer.BadParameter, match="not an ISO 8601 time"):
        parse_end("yesterday")
