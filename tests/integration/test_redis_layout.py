"""The direct reader of Feast's Redis layout returns exactly what the Feast SDK path returns."""

from __future__ import annotations

import asyncio
import functools
import math
import time

import numpy as np
import pandas as pd
import pytest

import serving.redis_layout
from feature_repo.contract import Contract
from feature_repo.store import open_store
from serving.features import EntityFeatures, FeatureBatch, FeaturePlan, OnlineFeatures, StalePolicy
from serving.redis_layout import LayoutError, RedisLayout, canary_mismatch
from tests.conftest import FeatureEnv
from tests.integration.conftest import MODEL_NAME, Registry

pytestmark = pytest.mark.integration

ABSENT = ["u9999998", "u9999999"]


def _plan(feature_env: FeatureEnv, registry: Registry) -> tuple[OnlineFeatures, FeaturePlan]:
    store = open_store(feature_env.settings, 5.0)  # a store per test: Feast's async client binds to one loop
    contract = Contract.from_tags(registry.client.get_model_version_by_alias(MODEL_NAME, "champion").tags)
    return OnlineFeatures(store, 5.0, 5.0, "missing"), FeaturePlan.build(store, contract)


def _identical(a: object, b: object) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _diff(sdk: list[EntityFeatures], direct: list[EntityFeatures], names: tuple[str, ...]) -> list[str]:
    out = []
    for s, d in zip(sdk, direct, strict=True):
        if (s.entity_id, s.found, s.missing, s.stale) != (d.entity_id, d.found, d.missing, d.stale):
            out.append(f"{s.entity_id}: sdk {s.found, s.missing, s.stale} direct {d.found, d.missing, d.stale}")
        out += [
            f"{s.entity_id}.{n}: sdk {x!r} direct {y!r}"
            for n, x, y in zip(names, s.values, d.values, strict=True)
            if not _identical(x, y)
        ]
    return out


def _matrix_problems(sdk: list[EntityFeatures], batch: FeatureBatch) -> list[str]:
    """Where the batch's matrix and masks differ from the SDK's rows, as the old per-row code built them."""
    names = batch.names
    expected = np.array([[np.nan if x is None else float(x) for x in r.values] for r in sdk], dtype=np.float64)
    out = []
    if batch.matrix.shape != expected.shape or not batch.matrix.flags.c_contiguous:
        out.append(f"matrix {batch.matrix.shape} (contiguous {batch.matrix.flags.c_contiguous}), want {expected.shape}")
    elif not np.array_equal(batch.matrix, expected, equal_nan=True):  # the model sees what it saw before
        out.append("matrix values differ")
    for i, r in enumerate(sdk):
        if [names[c] for c in np.flatnonzero(batch.missing_mask[i])] != r.missing:
            out.append(f"{r.entity_id}: missing mask")
        if [names[c] for c in np.flatnonzero(batch.stale_mask[i])] != r.stale:
            out.append(f"{r.entity_id}: stale mask")
    return out


# 0 days: nothing stale; 3: the activity views (TTL 2 days) are stale and engagement_ratios is
# re-run on nulls; 40: billing too (35 days); 500: every view, the profile's 400 days included.
# Small caches: the column reader's caches fill and clear part way through the batch.
@pytest.mark.parametrize("days_later", [0, 3, 40, 500])
@pytest.mark.parametrize("policy", ["missing", "score"])
@pytest.mark.parametrize("cache_size", [16_384, 7])
def test_direct_reader_returns_what_the_feast_sdk_returns(
    feature_env: FeatureEnv,
    registry: Registry,
    days_later: int,
    policy: StalePolicy,
    cache_size: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serving.redis_layout, "VALUE_CACHE_SIZE", cache_size)
    monkeypatch.setattr(serving.redis_layout, "PATTERN_CACHE_SIZE", min(cache_size, 3))
    online, plan = _plan(feature_env, registry)
    online.stale_policy = policy
    layout = RedisLayout(online.store, plan)
    users = sorted(pd.read_parquet(feature_env.data_dir / "users.parquet")["user_id"].unique())
    # Absent IDs first, last and twice, and a present ID twice: the batch keeps each in place.
    ids = [ABSENT[0], *users, users[0], *ABSENT]
    now = time.time() + days_later * 86400

    async def both() -> tuple[list[EntityFeatures], list[EntityFeatures], list[EntityFeatures], list[FeatureBatch]]:
        try:
            sdk = await online._sdk(plan, ids, now)
            replies = await online._hmget(layout, ids)
            direct = layout.rows(ids, replies, now, policy)
            # Twice: the second read meets the caches the first one filled.
            batches = [layout.batch(ids, replies, now, policy) for _ in range(2)]
            one = [layout.rows([i], await online._hmget(layout, [i]), now, policy)[0] for i in (users[0], ABSENT[0])]
            return sdk, direct, one, batches
        finally:
            await online.close()
            await online.store.close()

    sdk, direct, one, batches = asyncio.run(both())
    problems = _diff(sdk, direct, plan.names)
    assert not problems, f"{len(problems)} differences, e.g. {problems[:5]}"
    for batch in batches:  # the column-by-column reader of batch requests
        problems = _diff(sdk, batch.rows(), plan.names) + _matrix_problems(sdk, batch)
        assert not problems, f"{len(problems)} differences, e.g. {problems[:5]}"
    assert _diff([sdk[1], sdk[0]], one, plan.names) == []  # the single-entity command path too
    assert [r.found for r in direct[-2:]] == [False, False] and not direct[0].found
    assert sum(r.found for r in direct) == len(users) + 1
    # Partial rows (some views without a row for the user) are part of what is compared.
    assert any(r.found and r.missing for r in direct)
    if days_later and policy == "missing":  # the stale path really ran and nulled something
        assert any(r.stale for r in direct) and any(r.missing for r in direct)
    if days_later and policy == "score":  # stale, reported, and still there
        assert any(r.stale and not set(r.stale) & set(r.missing) for r in direct)


def test_an_empty_batch_reads_as_no_rows(feature_env: FeatureEnv, registry: Registry) -> None:
    online, plan = _plan(feature_env, registry)
    batch = RedisLayout(online.store, plan).batch([], [], time.time(), "missing")
    assert batch.matrix.shape == (0, len(plan.names)) and batch.rows() == [] and batch.found == []


def test_fetch_switches_to_the_direct_reader_once_the_check_passes(feature_env: FeatureEnv, registry: Registry) -> None:
    online, plan = _plan(feature_env, registry)
    ids = ["u0000001", ABSENT[0]]

    async def go() -> tuple[list[str], list[EntityFeatures], list[EntityFeatures], list[EntityFeatures]]:
        try:
            paths = [online.path(plan)]
            first = await online.fetch(plan, ids, time.time())  # served by the SDK; starts the check
            for _ in range(3000):  # the check runs beside the requests (30 s at most)
                if online.path(plan) != "unchecked":
                    break
                await asyncio.sleep(0.01)
            paths.append(online.path(plan))
            rows = await online.fetch(plan, ids, time.time())
            return paths, first, rows, await online._sdk(plan, ids, time.time())
        finally:
            await online.close()
            await online.store.close()

    paths, first, rows, sdk = asyncio.run(go())
    assert paths == ["unchecked", "direct"]
    assert _diff(sdk, first, plan.names) == [] and _diff(sdk, rows, plan.names) == []


def test_unsupported_layout_falls_back_to_the_sdk(feature_env: FeatureEnv, registry: Registry) -> None:
    online, plan = _plan(feature_env, registry)
    # Feast only supports version 3 today; a store configured otherwise must not be read directly.
    online.store.config.__dict__["entity_key_serialization_version"] = 2
    with pytest.raises(LayoutError, match="not 3"):
        RedisLayout(online.store, plan)

    async def go() -> str:
        try:
            return await online.prepare(plan)
        finally:
            await online.close()
            await online.store.close()

    assert asyncio.run(go()) == "sdk"


class _WrongKeys(RedisLayout):
    """A reader whose key derivation disagrees with Feast's (what a layout change would look like)."""

    def key(self, entity_id: str) -> bytes:
        return super().key(entity_id)[:-1]


def test_the_start_up_check_catches_a_reader_that_disagrees_with_feast(
    feature_env: FeatureEnv, registry: Registry
) -> None:
    online, plan = _plan(feature_env, registry)

    async def go() -> tuple[str | None, str | None]:
        assert online._redis is not None
        try:

            def sdk(ids: list[str], t: float) -> object:
                return online._sdk(plan, ids, t)

            answers = []
            for layout in (RedisLayout(online.store, plan), _WrongKeys(online.store, plan)):
                answers.append(
                    await canary_mismatch(
                        online._redis,
                        layout,
                        functools.partial(online._hmget, layout),
                        sdk,  # type: ignore[arg-type]
                        time.time(),
                    )
                )
            good, bad = answers
            return good, bad
        finally:
            await online.close()
            await online.store.close()

    good, bad = asyncio.run(go())
    assert good is None
    assert bad is not None and "derived" in bad


@pytest.mark.parametrize("policy", ["missing", "score"])
def test_the_direct_reader_serves_under_either_stale_policy(
    feature_env: FeatureEnv, registry: Registry, policy: StalePolicy
) -> None:
    # The check compares the readers under the policy that serves: with "score" it once compared a
    # "missing" direct read with a "score" SDK read, failed, and left the SDK serving.
    online, plan = _plan(feature_env, registry)
    online.stale_policy = policy

    async def go() -> str:
        try:
            return await online.prepare(plan)
        finally:
            await online.close()
            await online.store.close()

    assert asyncio.run(go()) == "direct"


class _WrongBatch(RedisLayout):
    """A reader whose batch path (only) disagrees with Feast: a stale view left in under "missing"."""

    def batch(self, entity_ids: object, replies: object, now: float, policy: StalePolicy) -> FeatureBatch:
        return super().batch(entity_ids, replies, now, "score")  # type: ignore[arg-type]


def test_the_start_up_check_covers_the_batch_path(feature_env: FeatureEnv, registry: Registry) -> None:
    online, plan = _plan(feature_env, registry)

    async def go() -> str | None:
        assert online._redis is not None
        layout = _WrongBatch(online.store, plan)
        try:
            return await canary_mismatch(
                online._redis,
                layout,
                functools.partial(online._hmget, layout),
                lambda ids, t: online._sdk(plan, ids, t),
                time.time(),
            )
        finally:
            await online.close()
            await online.store.close()

    why = asyncio.run(go())
    assert why is not None and "batch rows" in why
