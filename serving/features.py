"""Online features through Feast: one read per request, then staleness and missing values.

Feast does not enforce a view's TTL on online reads (feast-dev/feast#6821), so this module
computes each view's age from the timestamps Feast returns. With the default policy a stale
view reads as missing, which is what point-in-time retrieval with the same TTL gives offline.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import redis.asyncio as aioredis
from feast import FeatureService, FeatureStore
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.types import Bool, Float32, Float64, Int32, Int64
from opentelemetry.util.types import AttributeValue
from redis.exceptions import RedisError, ResponseError

from feature_repo.contract import Contract
from serving.redis_wire import RedisWire, UnsupportedConfigError
from serving.telemetry import client_span, foreign_spans

if TYPE_CHECKING:
    from serving.redis_layout import RedisLayout

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 2.0  # the direct reader's start-up check, once per model
CHECK_RETRY_S = 5.0  # a check that failed (Redis down) is retried after this

_NUMERIC = {Int32, Int64, Float32, Float64, Bool}
StalePolicy = Literal["missing", "score"]


class PlanError(ValueError):
    """The feature service cannot be served as the contract says (refuses the model)."""


class FeaturesUnavailableError(RuntimeError):
    """The online store failed or missed the deadline."""


@dataclass(frozen=True)
class ViewPlan:
    """A stored feature view of the service: its TTL and the contract columns it fills."""

    name: str
    ttl_seconds: float  # 0: no TTL
    columns: tuple[int, ...]


@dataclass(frozen=True)
class OdfvPlan:
    """An on-demand view: Feast computes it; we only re-run it when a source view is stale."""

    odfv: OnDemandFeatureView
    columns: tuple[int, ...]
    sources: tuple[str, ...]  # stored view names it reads
    inputs: tuple[tuple[str, str], ...]  # (view, feature) it reads, all present in the service


@dataclass(frozen=True)
class FeaturePlan:
    """Everything resolved once per model load, so a request does no registry lookups."""

    service: FeatureService
    entity_key: str
    refs: tuple[str, ...]  # contract order
    names: tuple[str, ...]  # model column names, contract order
    views: tuple[ViewPlan, ...]
    odfvs: tuple[OdfvPlan, ...]

    @classmethod
    def build(cls, store: FeatureStore, contract: Contract) -> FeaturePlan:
        """Resolve the contract's service against the registry the store holds; PlanError if unusable."""
        try:
            service = store.get_feature_service(contract.feature_service)
        except Exception as e:  # Feast raises its own not-found types
            raise PlanError(f"feature service {contract.feature_service!r} is not in the registry: {e}") from e
        names = contract.feature_names
        if len(set(names)) != len(names):
            raise PlanError("two features of the service share a name; the model could not tell them apart")
        column = {ref: i for i, ref in enumerate(contract.features)}
        views: list[ViewPlan] = []
        odfvs: list[OdfvPlan] = []
        seen: set[str] = set()
        stored: dict[str, list[str]] = {}
        for proj in service.feature_view_projections:
            view = proj.name_to_use()
            refs = [f"{view}:{f.name}" for f in proj.features]
            unknown = [r for r in refs if r not in column]
            if unknown:
                raise PlanError(f"service {service.name} has features the model does not: {unknown}")
            bad = [f"{view}:{f.name}" for f in proj.features if f.dtype not in _NUMERIC]
            if bad:
                raise PlanError(f"features {bad} are not numeric; LightGBM needs numbers")
            seen.update(refs)
            cols = tuple(column[r] for r in refs)
            try:
                fv = store.get_feature_view(proj.name)
            except Exception:  # not a stored view, so an on-demand one
                odfv = store.get_on_demand_feature_view(proj.name)
                odfvs.append(_odfv_plan(odfv, cols))
                continue
            stored[view] = [f.name for f in proj.features]
            views.append(ViewPlan(view, fv.ttl.total_seconds() if fv.ttl else 0.0, cols))
        if seen != set(contract.features):
            raise PlanError(f"model expects features the service lacks: {sorted(set(contract.features) - seen)}")
        for o in odfvs:
            lacking = [f"{v}:{f}" for v, f in o.inputs if f not in stored.get(v, ())]
            if lacking:
                # Without them in the response we could neither check their TTL nor re-run the view.
                raise PlanError(f"on-demand view {o.odfv.name} reads {lacking}, which service {service.name} lacks")
        return cls(service, contract.entity_key, contract.features, names, tuple(views), tuple(odfvs))


def _odfv_plan(odfv: OnDemandFeatureView, cols: tuple[int, ...]) -> OdfvPlan:
    if odfv.source_request_sources:
        raise PlanError(f"on-demand view {odfv.name} needs request data; serving has none to give it")
    inputs = tuple((p.name_to_use(), f.name) for p in odfv.source_feature_view_projections.values() for f in p.features)
    sources = tuple(dict.fromkeys(v for v, _ in inputs))
    return OdfvPlan(odfv, cols, sources, inputs)


@dataclass
class EntityFeatures:
    """One entity's row in contract order; None where missing."""

    entity_id: str
    found: bool  # any stored view has a row for this entity
    values: list[Any]
    missing: list[str]
    stale: list[str]


class FeatureBatch:
    """A batch's features column by column: the model's matrix and what the response reports.

    ``matrix[i, c]`` is entity i's contract column c as the model sees it (float64, NaN where
    missing); ``missing[i]`` and ``stale[i]`` name entity i's missing and stale features in
    contract order, as ``EntityFeatures`` does; ``missing_mask`` and ``stale_mask`` are the same
    as booleans. The Python values (what Feast's SDK returns; only ``include_features`` and
    ``rows`` need them) are built on first use.
    """

    def __init__(
        self,
        entity_ids: Sequence[str],
        names: tuple[str, ...],
        matrix: np.ndarray,
        found: list[bool],
        missing: list[list[str]],
        stale: list[list[str]],
        missing_mask: np.ndarray,
        stale_mask: np.ndarray,
        columns: Callable[[], list[list[Any]]],
    ) -> None:
        self.entity_ids = entity_ids
        self.names = names
        self.matrix = matrix
        self.found = found
        self.missing = missing
        self.stale = stale
        self.missing_mask = missing_mask
        self.stale_mask = stale_mask
        self._make_columns = columns
        self._columns: list[list[Any]] | None = None

    @property
    def columns(self) -> list[list[Any]]:
        """``columns[c][i]``: entity i's value of column c as Feast's SDK gives it; None where missing."""
        if self._columns is None:
            self._columns = self._make_columns()
        return self._columns

    def values(self) -> list[list[Any]]:
        """One list of Python values per entity, in contract order."""
        if not self.names:
            return [[] for _ in self.entity_ids]
        return [list(v) for v in zip(*self.columns, strict=True)]

    def rows(self) -> list[EntityFeatures]:
        """The same batch as ``EntityFeatures``, one per entity."""
        return [
            EntityFeatures(eid, f, v, m, s)
            for eid, f, v, m, s in zip(
                self.entity_ids, self.found, self.values(), self.missing, self.stale, strict=True
            )
        ]

    @classmethod
    def from_rows(cls, names: tuple[str, ...], rows: Sequence[EntityFeatures]) -> FeatureBatch:
        """The batch of rows another reader (Feast's SDK) assembled."""
        n, width = len(rows), len(names)
        column = {name: c for c, name in enumerate(names)}
        missing_mask = np.zeros((n, width), dtype=bool)
        stale_mask = np.zeros((n, width), dtype=bool)
        for i, r in enumerate(rows):
            missing_mask[i, [column[x] for x in r.missing]] = True
            stale_mask[i, [column[x] for x in r.stale]] = True
        values = [r.values for r in rows]
        return cls(
            [r.entity_id for r in rows],
            names,
            float_matrix(values, n, width),
            [r.found for r in rows],
            [r.missing for r in rows],
            [r.stale for r in rows],
            missing_mask,
            stale_mask,
            lambda: [list(c) for c in zip(*values, strict=True)] if width else [],
        )


def float_matrix(rows: Sequence[Sequence[Any]], n: int, width: int) -> np.ndarray:
    """Rows of Python values as float64, NaN where None: what ``float(x)`` per value gives."""
    if not n or not width:
        return np.empty((n, width), dtype=np.float64)
    return np.array(rows, dtype=np.float64)  # numpy turns None into NaN


def python_value(v: ValueProto) -> Any:
    """A Feast Value protobuf as the Python value Feast's SDK returns; None when null or unset."""
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    return getattr(v, kind)


def is_missing(x: Any) -> bool:
    """None or NaN: what the model sees as a missing value."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def assemble(
    plan: FeaturePlan,
    entity_ids: Sequence[str],
    response_names: Sequence[str],
    results: Sequence[Any],
    now: float,
    stale_policy: StalePolicy,
) -> list[EntityFeatures]:
    """Turn Feast's response vectors into rows, applying TTLs; pure, so unit tests feed it directly.

    ``results[j]`` is Feast's FeatureVector for ``response_names[j]`` (values, event_timestamps).
    """
    where = {name: j for j, name in enumerate(response_names)}
    col_src = [where[name] for name in plan.names]
    n = len(entity_ids)
    rows = [[python_value(results[j].values[i]) for j in col_src] for i in range(n)]
    stale_cols: list[list[int]] = [[] for _ in range(n)]
    found = [False] * n
    stale_views: list[set[str]] = [set() for _ in range(n)]
    for view in plan.views:
        stamps = results[col_src[view.columns[0]]].event_timestamps
        for i in range(n):
            seconds = stamps[i].seconds + stamps[i].nanos / 1e9
            if seconds <= 0:  # Feast's zero timestamp: no row for this entity in this view
                continue
            found[i] = True
            # Offline retrieval keeps a row when event_time >= t - ttl, so only strictly older is stale.
            if view.ttl_seconds and now - seconds > view.ttl_seconds:
                stale_views[i].add(view.name)
                stale_cols[i].extend(view.columns)
    if stale_policy == "missing":
        _drop_stale(plan, rows, stale_cols, stale_views)
    out: list[EntityFeatures] = []
    for i, eid in enumerate(entity_ids):
        row = rows[i]
        stale_set = set(stale_cols[i])
        out.append(
            EntityFeatures(
                entity_id=eid,
                found=found[i],
                values=row,
                missing=[plan.names[c] for c, x in enumerate(row) if is_missing(x)],
                stale=[plan.names[c] for c in range(len(row)) if c in stale_set],
            )
        )
    return out


def _drop_stale(
    plan: FeaturePlan, rows: list[list[Any]], stale_cols: list[list[int]], stale_views: list[set[str]]
) -> None:
    """Null stale views and re-run, through Feast's own transform, the on-demand views that read them."""
    for i, cols in enumerate(stale_cols):
        for c in cols:
            rows[i][c] = None
    name_col = {name: c for c, name in enumerate(plan.names)}
    for o in plan.odfvs:
        hit = [i for i, views in enumerate(stale_views) if views.intersection(o.sources)]
        if not hit:
            continue
        # Same inputs Feast's online path gives the UDF: plain Python values, None for missing.
        inputs = {f: [rows[i][name_col[f]] for i in hit] for _, f in o.inputs}
        outputs = o.odfv.transform_dict(inputs)
        for c in o.columns:
            values = outputs[plan.names[c]]
            for k, i in enumerate(hit):
                rows[i][c] = values[k]


def _unavailable(e: Exception, deadline: float) -> FeaturesUnavailableError:
    """The error a failed or late feature read answers with."""
    if isinstance(e, TimeoutError):
        return FeaturesUnavailableError(f"online store missed the {deadline * 1000:.0f} ms deadline")
    if isinstance(e, (RedisError, OSError)):
        return FeaturesUnavailableError(f"online store failed: {type(e).__name__}: {e}")
    # e.g. the registry changed under a running model; still an answer, not a bare 500.
    return FeaturesUnavailableError(f"feature read failed: {type(e).__name__}: {e}")


class OnlineFeatures:
    """Reads a plan's features for some entities in one pipelined Redis round trip.

    Two readers give the same rows: Feast's SDK (``get_online_features_async``), and a direct
    reader of the layout Feast writes (``serving.redis_layout``), which is several times
    cheaper per request. The direct one serves a plan only after its start-up check passed
    (``reader="auto"``); ``reader="sdk"`` forces the SDK.
    """

    def __init__(
        self,
        store: FeatureStore,
        deadline_s: float,
        batch_deadline_s: float,
        stale_policy: StalePolicy,
        reader: Literal["auto", "sdk"] = "auto",
    ) -> None:
        self.store = store
        self.deadline_s = deadline_s
        self.batch_deadline_s = batch_deadline_s
        self.stale_policy: StalePolicy = stale_policy
        self.reader = reader
        # id(plan) -> (plan, layout or None for "SDK serves this plan"); one entry per loaded model.
        self._layouts: dict[int, tuple[FeaturePlan, RedisLayout | None]] = {}
        self._redis: aioredis.Redis | None = None  # the start-up check's SCAN; the reads without RedisWire
        self._wire: RedisWire | None = None  # the direct reader's reads
        self._span_attributes: dict[str, AttributeValue] = {}
        self._checks: dict[int, asyncio.Task[None]] = {}  # strong references to running checks
        self._retry_at: dict[int, float] = {}  # after a failed check, not before (monotonic seconds)
        if reader == "auto":
            from feast.infra.online_stores.redis import RedisOnlineStore

            # Same parse as Feast's own client, so timeouts, TLS and credentials match. redis-py
            # serves the start-up check's SCAN, and the reads when RedisWire cannot take the
            # connection (TLS); it reconnects by itself after a Redis restart.
            conn = getattr(store.config.online_store, "connection_string", "")
            nodes, params = RedisOnlineStore._parse_connection_string(conn)
            if nodes:
                self._redis = aioredis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)
                try:
                    self._wire = RedisWire.from_feast_params(nodes[0]["host"], nodes[0]["port"], params)
                except UnsupportedConfigError as e:  # e.g. TLS: redis-py reads instead
                    log.info("direct reader uses redis-py: %s", e)
                # What the redis-py instrumentation puts on its spans, for ours.
                self._span_attributes = {
                    "db.system": "redis",
                    "db.redis.database_index": int(params.get("db", 0)),
                    "net.peer.name": str(nodes[0]["host"]),
                    "net.peer.port": int(nodes[0]["port"]),
                    "net.transport": "ip_tcp",
                }

    async def close(self) -> None:
        """Stop pending checks and close the direct reader's connections."""
        tasks = list(self._checks.values())
        for task in tasks:
            task.cancel()
        # Wait for them to unwind before their connection pool goes away.
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._wire is not None:
            await self._wire.close()
        if self._redis is not None:
            await self._redis.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5

    def path(self, plan: FeaturePlan) -> str:
        """Which reader serves ``plan`` now: "direct", "sdk", or "unchecked" before its first read."""
        entry = self._layouts.get(id(plan))
        if entry is None or entry[0] is not plan:
            return "unchecked"
        return "direct" if entry[1] is not None else "sdk"

    async def fetch(self, plan: FeaturePlan, entity_ids: Sequence[str], now: float) -> list[EntityFeatures]:
        """Rows for ``entity_ids`` in request order; FeaturesUnavailableError on failure or deadline."""
        deadline = self._deadline(entity_ids)
        layout = self._layout(plan)
        try:
            async with asyncio.timeout(deadline):
                if layout is not None:
                    replies = await self._hmget(layout, entity_ids)
                    return layout.rows(entity_ids, replies, now, self.stale_policy)
                return await self._sdk(plan, entity_ids, now)
        except Exception as e:
            raise _unavailable(e, deadline) from e

    async def fetch_batch(self, plan: FeaturePlan, entity_ids: Sequence[str], now: float) -> FeatureBatch:
        """The same as ``fetch``, column by column (``FeatureBatch``): what a batch request reads."""
        deadline = self._deadline(entity_ids)
        layout = self._layout(plan)
        try:
            async with asyncio.timeout(deadline):
                if layout is not None:
                    replies = await self._hmget(layout, entity_ids)
                    return layout.batch(entity_ids, replies, now, self.stale_policy)
                return FeatureBatch.from_rows(plan.names, await self._sdk(plan, entity_ids, now))
        except Exception as e:
            raise _unavailable(e, deadline) from e

    def _deadline(self, entity_ids: Sequence[str]) -> float:
        # Redis' socket timeout stays the single-entity deadline; a batch gets more time for the
        # Python work (protobuf parsing, on-demand views) that scales with its size.
        return self.deadline_s if len(entity_ids) == 1 else self.batch_deadline_s

    def _layout(self, plan: FeaturePlan) -> RedisLayout | None:
        """The direct reader serving ``plan``, or None while Feast's SDK serves it."""
        entry = self._layouts.get(id(plan))
        if entry is None or entry[0] is not plan:
            # A new model's plan: Feast's SDK serves until the check, run beside the requests, says
            # the direct reader agrees with it. The request path never waits for the check.
            self._check_soon(plan)
            return None
        return entry[1] if self._redis is not None else None

    async def prepare(self, plan: FeaturePlan) -> str:
        """Run the direct reader's check for ``plan`` now; which path serves it afterwards."""
        entry = (plan, await asyncio.wait_for(self._choose(plan), CHECK_TIMEOUT_S))
        self._layouts = {id(plan): entry, **dict(list(self._layouts.items())[:2])}  # bounded: old models go
        return self.path(plan)

    def _check_soon(self, plan: FeaturePlan) -> None:
        key = id(plan)
        if key in self._checks or time.monotonic() < self._retry_at.get(key, 0.0):
            return

        async def check() -> None:
            try:
                await self.prepare(plan)
            except Exception as e:  # Redis down or slow: the SDK keeps serving; retried a little later
                self._retry_at[key] = time.monotonic() + CHECK_RETRY_S
                log.warning("direct reader check for %s postponed: %s: %s", plan.service.name, type(e).__name__, e)
            finally:
                self._checks.pop(key, None)

        # In a context of its own: started from a request, it would otherwise inherit the request's
        # trace (and current stage), and the check's Redis and Feast calls would land in a user's trace.
        self._checks[key] = asyncio.get_running_loop().create_task(
            check(), name="direct-reader-check", context=contextvars.Context()
        )

    async def _hmget(self, layout: RedisLayout, entity_ids: Sequence[str]) -> list[list[bytes | None]]:
        if self._wire is not None:
            # One span per round trip, as the redis-py instrumentation gives its own commands.
            attributes = {**self._span_attributes, "db.statement": layout.statement}
            if len(entity_ids) > 1:
                attributes["db.redis.pipeline_length"] = len(entity_ids)
            with client_span("HMGET", attributes):
                return await self._wire.hmget_many(layout.keys(entity_ids), layout.fields)
        assert self._redis is not None  # instrumented by opentelemetry-instrumentation-redis
        with foreign_spans():
            if len(entity_ids) == 1:  # one command, no pipeline object: the common case, kept cheap
                return [await self._redis.hmget(layout.key(entity_ids[0]), layout.fields)]
            async with self._redis.pipeline(transaction=False) as pipe:
                for eid in entity_ids:
                    pipe.hmget(layout.key(eid), layout.fields)
                return list(await pipe.execute())

    async def _sdk(self, plan: FeaturePlan, entity_ids: Sequence[str], now: float) -> list[EntityFeatures]:
        # Feast's async read batches every view's HMGETs into one pipeline (redis-py's spans).
        with foreign_spans():
            response = await self.store.get_online_features_async(
                features=plan.service, entity_rows={plan.entity_key: list(entity_ids)}
            )
        proto = response.proto
        return assemble(plan, entity_ids, list(proto.metadata.feature_names.val), proto.results, now, self.stale_policy)

    async def _choose(self, plan: FeaturePlan) -> RedisLayout | None:
        """The direct reader for ``plan`` if its layout checks out against Feast, else None (SDK serves)."""
        from serving.redis_layout import LayoutError, RedisLayout, canary_mismatch

        if self.reader == "sdk" or self._redis is None:
            log.info("feature reader for %s: Feast SDK (configured)", plan.service.name)
            return None
        try:
            layout = RedisLayout(self.store, plan)
        except LayoutError as e:
            log.warning("feature reader for %s: Feast SDK, direct layout unsupported: %s", plan.service.name, e)
            return None
        try:
            why = await canary_mismatch(
                self._redis,
                layout,
                lambda ids: self._hmget(layout, ids),
                lambda ids, t: self._sdk(plan, ids, t),
                time.time(),
                policy=self.stale_policy,
            )
        except ResponseError as e:  # e.g. an ACL without SCAN: Redis answers, so serve through the SDK
            why = f"the check could not run: {e}"
        if why:
            log.warning("feature reader for %s: Feast SDK, direct read differs from Feast: %s", plan.service.name, why)
            return None
        log.info("feature reader for %s: direct Redis layout (checked against Feast)", plan.service.name)
        return layout
