"""A direct reader of the Redis layout Feast writes, for one feature plan.

Feast stays the writer and the definition of the layout: keys come from Feast's own
``serialize_entity_key`` and field names from the murmur3 helper Feast's Redis store uses.
A request then costs one HMGET per entity (one pipeline for a batch) and a protobuf parse
per value, instead of the SDK's generic response building. The on-demand views are still
computed by Feast's own transformation object (``transform_dict``), never re-implemented.

It serves only after ``check_layout`` passes (serialization version 3, plain Redis, no
versioned view names, a string join key); ``serving.features.OnlineFeatures`` also compares
it with the SDK on a real stored entity before switching to it, and keeps the SDK otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from feast import FeatureStore
from feast.infra.key_encoding_utils import deserialize_entity_key, serialize_entity_key, serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from serving.features import EntityFeatures, FeaturePlan, OdfvPlan, StalePolicy, is_missing, python_value

_parse_value = ValueProto.FromString
_parse_ts = Timestamp.FromString
# Parsed values by their stored bytes. Feature values repeat a lot (counts, flags, shared event
# times), and a dict hit costs ~50 ns against ~1.5 µs for a protobuf parse: a batch of 100
# entities parses ~2,200 values. Cleared when full, so memory stays bounded (~2 MB).
VALUE_CACHE_SIZE = 16_384


class LayoutError(ValueError):
    """Feast's Redis layout is not the one this reader understands; the SDK path serves instead."""


@dataclass(frozen=True)
class _View:
    """A stored view's slice of the HMGET reply: value fields, then its ``_ts`` field."""

    name: str
    ttl_seconds: float
    columns: tuple[int, ...]  # contract columns, in reply order
    start: int  # offset of the first value field in the reply
    ts: int  # offset of the timestamp field


def check_layout(store: FeatureStore, plan: FeaturePlan) -> None:
    """LayoutError naming the first thing that differs from the layout this reader knows."""
    config = store.config
    if config.entity_key_serialization_version != 3:
        raise LayoutError(f"entity_key_serialization_version is {config.entity_key_serialization_version}, not 3")
    online = config.online_store
    if getattr(online, "type", None) != "redis":
        raise LayoutError(f"online store is {getattr(online, 'type', '?')!r}, not redis")
    redis_type = getattr(online, "redis_type", "redis")
    if str(getattr(redis_type, "value", redis_type)) != "redis":
        raise LayoutError(f"redis_type is {redis_type!r}; only a single Redis is read directly")
    if getattr(config.registry, "enable_online_feature_view_versioning", False):
        raise LayoutError("online feature view versioning is on; view names in Redis carry versions")
    entity = store.get_entity(_entity_name(store, plan))
    if entity.value_type != ValueType.STRING or entity.join_key != plan.entity_key:
        raise LayoutError(f"join key {plan.entity_key!r} is not a single STRING key")


def _entity_name(store: FeatureStore, plan: FeaturePlan) -> str:
    fv = store.get_feature_view(plan.views[0].name)
    if len(fv.entities) != 1:
        raise LayoutError(f"view {fv.name} has {len(fv.entities)} entities; one join key is read directly")
    return str(fv.entities[0])


def _key(head: bytes, entity_id: str, project: bytes) -> bytes:
    value = entity_id.encode("utf-8")
    return head + len(value).to_bytes(4, "little") + value + project


class RedisLayout:
    """Keys, HMGET fields and reply parsing for one plan, all resolved once."""

    def __init__(self, store: FeatureStore, plan: FeaturePlan) -> None:
        check_layout(store, plan)
        self.plan = plan
        self.project = store.config.project.encode("utf-8")
        fields: list[bytes | str] = []
        views: list[_View] = []
        service_features = {
            p.name_to_use(): [f.name for f in p.features] for p in plan.service.feature_view_projections
        }
        for v in plan.views:
            names = service_features[v.name]
            start = len(fields)
            # Exactly the field names Feast's RedisOnlineStore asks for (_generate_hset_keys_for_features).
            fields.extend(_mmh3(f"{v.name}:{n}") for n in names)
            fields.append(f"_ts:{v.name}")
            views.append(_View(v.name, v.ttl_seconds, v.columns, start, start + len(names)))
        self.fields: tuple[bytes | str, ...] = tuple(fields)
        self.statement = "HMGET" + " ?" * (1 + len(fields))  # sanitised, as the redis-py instrumentation writes it
        self._views = tuple(views)
        self._key_head = self._derive_key_head()
        self._values: dict[bytes, Any] = {}  # see VALUE_CACHE_SIZE
        self._seconds: dict[bytes, float] = {}
        self._odfvs: list[tuple[OdfvPlan, list[tuple[str, str, int]]]] = []
        for o in plan.odfvs:
            odfv = o.odfv
            if odfv.mode != "python" or odfv.singleton or odfv.aggregations or odfv.feature_transformation is None:
                raise LayoutError(f"on-demand view {odfv.name} is not a plain Python-mode transformation")
            # Each input under its short and its view__feature name, as Feast's transform_dict feeds the UDF.
            feed_names = [
                (f.name, f"{p.name_to_use()}__{f.name}", plan.names.index(f.name))
                for p in odfv.source_feature_view_projections.values()
                for f in p.features
            ]
            self._odfvs.append((o, feed_names))

    def key(self, entity_id: str) -> bytes:
        """The Redis key Feast writes for this entity: serialized entity key (v3) + project.

        Built from a head derived from Feast's own serializer (see ``_derive_key_head``): the
        serializer costs ~12 µs a key, a batch of 100 spent more on keys than on Redis.
        """
        return _key(self._key_head, entity_id, self.project)

    def feast_key(self, entity_id: str) -> bytes:
        """The same key through Feast's ``serialize_entity_key``."""
        ek = EntityKeyProto(join_keys=[self.plan.entity_key], entity_values=[ValueProto(string_val=entity_id)])
        return serialize_entity_key(ek, entity_key_serialization_version=3) + self.project

    def _derive_key_head(self) -> bytes:
        """What Feast writes before a string key's length and bytes, checked against Feast on probes.

        For one string join key, serialization v3 is: the key count and the join key's name, the
        value type, then the value's length (4 bytes, little-endian) and UTF-8 bytes; the project
        follows. A Feast that writes anything else fails the probes, and the SDK serves instead.
        """
        head = self.feast_key("u")[: -(len("u") + 4 + len(self.project))]
        for p in ("", "u0000042", "é" * 70, "x" * 300):
            if _key(head, p, self.project) != self.feast_key(p):
                raise LayoutError(f"Feast's entity key for {p[:12]!r} is not head + length + bytes + project")
        return head

    def rows(
        self, entity_ids: Sequence[str], replies: Sequence[Sequence[bytes | None]], now: float, policy: StalePolicy
    ) -> list[EntityFeatures]:
        """Rows in contract order from one HMGET reply per entity, with the same TTL rules as ``assemble``."""
        width = len(self.plan.names)
        values = self._values
        rows: list[list[Any]] = []
        found: list[bool] = []
        stale: list[list[int]] = []
        for reply in replies:
            row: list[Any] = [None] * width
            hit = False
            old: list[int] = []
            for v in self._views:
                ts_raw = reply[v.ts]
                if not ts_raw:
                    continue  # no row for this entity in this view: Feast returns nulls
                seconds = self._seconds.get(ts_raw)
                if seconds is None:
                    ts = _parse_ts(ts_raw)
                    seconds = self._remember(self._seconds, ts_raw, ts.seconds + ts.nanos / 1e9)
                if seconds <= 0:
                    continue
                hit = True
                # Offline retrieval keeps a row when event_time >= t - ttl, so only strictly older is stale.
                if v.ttl_seconds and now - seconds > v.ttl_seconds:
                    old.extend(v.columns)
                    if policy == "missing":
                        continue  # a stale view reads as missing, as it does offline
                for k, c in enumerate(v.columns):
                    raw = reply[v.start + k]
                    if raw:
                        x = values.get(raw, values)  # the dict itself marks a miss: None is a value
                        row[c] = self._remember(values, raw, python_value(_parse_value(raw))) if x is values else x
            rows.append(row)
            found.append(hit)
            stale.append(old)
        self._on_demand(entity_ids, rows)
        names = self.plan.names
        return [
            EntityFeatures(
                entity_id=eid,
                found=found[i],
                values=row,
                missing=[names[c] for c, x in enumerate(row) if x is None or x != x],  # is_missing, inlined
                stale=[names[c] for c in sorted(stale[i])],
            )
            for i, (eid, row) in enumerate(zip(entity_ids, rows, strict=True))
        ]

    @staticmethod
    def _remember(cache: dict[bytes, Any], raw: bytes, value: Any) -> Any:
        if len(cache) >= VALUE_CACHE_SIZE:
            cache.clear()
        cache[raw] = value
        return value

    def _on_demand(self, entity_ids: Sequence[str], rows: list[list[Any]]) -> None:
        """Fill on-demand columns with Feast's own transformation object, fed what Feast's online path feeds it.

        ``feature_transformation.transform`` is what ``OnDemandFeatureView.transform_dict`` calls after
        adding the view__feature aliases; calling it directly skips typeguard's per-call checks (~65 µs).
        """
        for o, inputs in self._odfvs:
            feed: dict[str, list[Any]] = {self.plan.entity_key: list(entity_ids)}
            for short, full, c in inputs:
                feed[short] = feed[full] = [row[c] for row in rows]
            transformation = o.odfv.feature_transformation
            assert transformation is not None  # checked in __init__
            outputs = transformation.transform(feed)
            for c in o.columns:
                values = outputs[self.plan.names[c]]
                for row, x in zip(rows, values, strict=True):
                    row[c] = x


class NothingStoredError(LookupError):
    """Redis holds no entity of the service yet, so the direct reader cannot be compared with Feast."""


SdkRows = Callable[[list[str], float], Awaitable[list[EntityFeatures]]]
DirectRead = Callable[[list[str]], Awaitable[list[list[bytes | None]]]]  # HMGET replies, one per ID


def _same_rows(a: Sequence[EntityFeatures], b: Sequence[EntityFeatures]) -> bool:
    def same(x: Any, y: Any) -> bool:
        if is_missing(x) or is_missing(y):
            return is_missing(x) and is_missing(y)
        return bool(x == y or math.isclose(x, y, rel_tol=0.0, abs_tol=0.0))

    return all(
        (r.entity_id, r.found, r.missing, r.stale) == (s.entity_id, s.found, s.missing, s.stale)
        and all(same(x, y) for x, y in zip(r.values, s.values, strict=True))
        for r, s in zip(a, b, strict=True)
    )


async def canary_mismatch(
    client: aioredis.Redis,
    layout: RedisLayout,
    direct_read: DirectRead,
    sdk_rows: SdkRows,
    now: float,
    scans: int = 20,
) -> str | None:
    """Compare the direct read with Feast's SDK on a real stored key; None when they agree, else why.

    The key is found by scanning Redis, decoded with Feast's ``deserialize_entity_key``, re-derived
    with ``layout.key`` and must come out byte for byte; then the entity (and an absent one) is read
    both ways, now and with the clock past every TTL, and the rows must be identical.
    With nothing stored yet there is no key to compare: NothingStoredError, and the caller
    keeps Feast's SDK serving and checks again later.
    """
    prefix = serialize_entity_key_prefix([layout.plan.entity_key])
    project = layout.project
    cursor: int = 0
    found: bytes | None = None
    for _ in range(scans):
        cursor, keys = await client.scan(cursor, count=1000)
        found = next((k for k in keys if k.startswith(prefix) and k.endswith(project)), None)
        if found is not None or cursor == 0:
            break
    if found is None:
        raise NothingStoredError(f"no stored {layout.plan.entity_key} key found to compare the readers on yet")
    ek = deserialize_entity_key(found[: -len(project)], entity_key_serialization_version=3)
    entity_id = ek.entity_values[0].string_val
    if layout.key(entity_id) != found or layout.feast_key(entity_id) != found:
        return f"key of {entity_id!r} derived as {layout.key(entity_id)!r}, Feast stored {found!r}"
    ids = [entity_id, "\x00skewless-absent"]
    later = now + max((v.ttl_seconds for v in layout.plan.views), default=0.0) + 1
    for t in (now, later):
        direct = layout.rows(ids, await direct_read(ids), t, "missing")
        if not _same_rows(direct, await sdk_rows(ids, t)):
            return f"rows for {entity_id!r} differ at t={t:.0f}"
    return None
