"""From entity IDs to prediction dicts: read features, decide what is scorable, score in one call."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from opentelemetry.util.types import AttributeValue

from serving.errors import ApiError
from serving.features import EntityFeatures, FeaturesUnavailableError
from serving.model import ServedModel
from serving.state import AppState
from serving.telemetry import count_entities, stage


def _prediction(
    model: ServedModel, row: EntityFeatures, status: str, score: float | None, include_features: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "entity_id": row.entity_id,
        "status": status,
        "score": score,
        "model": model.ref,
        "feature_service": model.contract.feature_service,
        "missing_features": row.missing,
        "stale_features": row.stale,
        "degraded": status == "degraded",
    }
    if include_features:
        out["features"] = dict(zip(model.plan.names, row.values, strict=True))
    return out


def _degraded(state: AppState, model: ServedModel, ids: Sequence[str], why: str) -> list[dict[str, Any]]:
    """The training prior for every ID, flagged; or 503 when degraded mode is off or there is no prior."""
    if not state.settings.degraded_mode:
        raise ApiError(503, "feature_store_unavailable", f"{why}; retry later")
    if model.prior is None:
        raise ApiError(503, "feature_store_unavailable", f"{why}; degraded mode is on but the model has no prior")
    names = list(model.plan.names)
    state.metrics.count_predictions("degraded", len(ids))
    return [
        _prediction(model, EntityFeatures(i, False, [None] * len(names), names, []), "degraded", model.prior, False)
        for i in ids
    ]


def not_found(entity_id: str) -> ApiError:
    """The 404 of a single-entity request whose ID has no stored features."""
    return ApiError(404, "entity_not_found", f"no features are stored for entity {entity_id!r}")


def _feature_attributes(model: ServedModel, n: int) -> dict[str, AttributeValue]:
    return {"skewless.feature_service": model.contract.feature_service, "skewless.entity_count": n}


def _inference_attributes(model: ServedModel, rows: int) -> dict[str, AttributeValue]:
    return {"skewless.model.name": model.name, "skewless.model.version": model.version, "skewless.model.rows": rows}


async def predict_one(state: AppState, model: ServedModel, entity_id: str, include_features: bool) -> dict[str, Any]:
    """``predict`` for one ID: the same answer and metrics, without the per-row lists a batch needs.

    The hot route (``GET /v1/predict/{id}``) is nothing but this call, so it is kept to the work
    one row needs: counted in-process with callgrind, the batch code's status list, Counter and
    per-row comprehensions were ~8% of a whole request's instructions.
    """
    m = state.metrics
    count_entities(1)
    t0 = time.perf_counter()
    try:
        with stage("feature_retrieval", _feature_attributes(model, 1)) as span:
            (row,) = await state.online.fetch(model.plan, [entity_id], state.clock())
            if span.is_recording():  # with export off nothing reads them
                span.set_attributes(
                    {
                        "skewless.features.missing_count": len(row.missing),
                        "skewless.features.stale_count": len(row.stale),
                        "skewless.entities.not_found": int(not row.found),
                    }
                )
    except FeaturesUnavailableError as e:
        m.feature_errors.inc()
        return _degraded(state, model, [entity_id], str(e))[0]
    t1 = time.perf_counter()
    m.feature_seconds.observe(t1 - t0)
    score: float | None = None
    if not row.found:
        status = "not_found"
    elif len(row.missing) >= state.settings.unknown_missing_fraction * len(model.plan.names):
        status = "unknown"
    else:
        status = "ok"
        matrix = np.array([row.values], dtype=np.float64)  # None becomes NaN, as float(x) per value would
        with stage("model_inference", _inference_attributes(model, 1), current=False):
            scored = model.predict(matrix)
        m.inference_seconds.observe(time.perf_counter() - t1)
        score = scored.item(0)
        m.score.observe(score)
    m.count_predictions(status, 1)
    if status != "not_found":
        m.observe_rows(row.missing, row.stale)
    return _prediction(model, row, status, score, include_features)


async def predict(
    state: AppState, model: ServedModel, ids: Sequence[str], include_features: bool
) -> list[dict[str, Any]]:
    """One dict per ID in order; status ok / not_found / unknown / degraded (see PredictionPublic)."""
    if len(ids) == 1:
        return [await predict_one(state, model, ids[0], include_features)]
    m = state.metrics
    n = len(ids)
    count_entities(n)
    t0 = time.perf_counter()
    try:
        # The exception leaves the span's block, so it is recorded on the span with ERROR status.
        with stage("feature_retrieval", _feature_attributes(model, n)) as span:
            batch = await state.online.fetch_batch(model.plan, ids, state.clock())
            if span.is_recording():  # with export off nothing reads them: skip the counting
                span.set_attributes(
                    {
                        "skewless.features.missing_count": int(batch.missing_mask.sum()),
                        "skewless.features.stale_count": int(batch.stale_mask.sum()),
                        "skewless.entities.not_found": n - sum(batch.found),
                    }
                )
    except FeaturesUnavailableError as e:
        m.feature_errors.inc()
        return _degraded(state, model, ids, str(e))
    t1 = time.perf_counter()
    m.feature_seconds.observe(t1 - t0)

    names = model.plan.names
    limit = state.settings.unknown_missing_fraction * len(names)
    found = batch.found
    # An ID with no stored row at all is not_found; a row missing too much is unknown. Neither is scored.
    status = [
        "not_found" if not f else "unknown" if k >= limit else "ok"
        for f, k in zip(found, batch.missing_mask.sum(axis=1).tolist(), strict=True)
    ]
    scores: list[float | None] = [None] * n
    scorable = [i for i, s in enumerate(status) if s == "ok"]
    if scorable:
        everyone = len(scorable) == n
        matrix = batch.matrix if everyone else batch.matrix[scorable]
        with stage("model_inference", _inference_attributes(model, len(scorable)), current=False):
            scored = model.predict(matrix)
        m.inference_seconds.observe(time.perf_counter() - t1)
        m.score.observe_many(scored)
        if everyone:
            scores = scored.tolist()
        else:
            for i, x in zip(scorable, scored.tolist(), strict=True):
                scores[i] = x
    # The PredictionPublic shape, as _prediction builds it; the model block is one dict for the batch.
    ref = model.ref
    service = model.contract.feature_service
    out: list[dict[str, Any]] = [
        {
            "entity_id": eid,
            "status": s,
            "score": x,
            "model": ref,
            "feature_service": service,
            "missing_features": missing,
            "stale_features": stale,
            "degraded": False,
        }
        for eid, s, x, missing, stale in zip(ids, status, scores, batch.missing, batch.stale, strict=True)
    ]
    if include_features:
        for p, values in zip(out, batch.values(), strict=True):
            p["features"] = dict(zip(names, values, strict=True))
    # Counted once per request and label, not once per row: a batch's label lookups dominated it.
    for label, k in Counter(status).items():
        m.count_predictions(label, k)
    # Missing and stale features of the rows that exist, counted per column at once (a row's
    # lists went into the tallies name by name before: ~1,300 names for a batch of 100).
    rows = np.array(found, dtype=bool)
    _tally(m.missing_features.tally, names, batch.missing_mask[rows].sum(axis=0).tolist())
    _tally(m.stale_features.tally, names, batch.stale_mask[rows].sum(axis=0).tolist())
    return out


def _tally(tally: Counter[str], names: Sequence[str], counts: list[int]) -> None:
    """Add ``counts[c]`` to ``names[c]``; names never counted keep no entry, as a name by name update."""
    added = {name: k for name, k in zip(names, counts, strict=True) if k}
    if added:
        tally.update(added)
