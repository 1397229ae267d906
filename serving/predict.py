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


async def predict(
    state: AppState, model: ServedModel, ids: Sequence[str], include_features: bool
) -> list[dict[str, Any]]:
    """One dict per ID in order; status ok / not_found / unknown / degraded (see PredictionPublic)."""
    m = state.metrics
    count_entities(len(ids))
    t0 = time.perf_counter()
    try:
        # The exception leaves the span's block, so it is recorded on the span with ERROR status.
        with stage("feature_retrieval", _feature_attributes(model, len(ids))) as span:
            rows = await state.online.fetch(model.plan, ids, state.clock())
            if span.is_recording():  # with export off nothing reads them: skip the counting
                span.set_attribute("skewless.features.missing_count", sum(len(r.missing) for r in rows))
                span.set_attribute("skewless.features.stale_count", sum(len(r.stale) for r in rows))
                span.set_attribute("skewless.entities.not_found", sum(not r.found for r in rows))
    except FeaturesUnavailableError as e:
        m.feature_errors.inc()
        return _degraded(state, model, ids, str(e))
    t1 = time.perf_counter()
    m.feature_seconds.observe(t1 - t0)

    n_features = len(model.plan.names)
    limit = state.settings.unknown_missing_fraction
    # An ID with no stored row at all is not_found; a row missing too much is unknown. Neither is scored.
    status = ["not_found" if not r.found else "unknown" if len(r.missing) >= limit * n_features else "ok" for r in rows]
    scorable = [i for i, s in enumerate(status) if s == "ok"]
    scores: dict[int, float] = {}
    if scorable:
        matrix = np.array(
            [[np.nan if x is None else float(x) for x in rows[i].values] for i in scorable], dtype=np.float64
        )
        with stage("model_inference", _inference_attributes(model, len(scorable)), current=False):
            scored = model.predict(matrix)
        m.inference_seconds.observe(time.perf_counter() - t1)
        m.score.observe_many(scored)
        scores = dict(zip(scorable, scored.tolist(), strict=True))
    out = []
    missing: list[str] = []
    stale: list[str] = []
    for i, r in enumerate(rows):
        if status[i] == "not_found":
            out.append(_prediction(model, r, "not_found", None, include_features))
            continue
        missing += r.missing
        stale += r.stale
        out.append(_prediction(model, r, status[i], scores.get(i), include_features))
    # Counted once per request and label, not once per row: a batch's label lookups dominated it.
    for label, n in Counter(status).items() if len(status) > 1 else ((s, 1) for s in status):
        m.count_predictions(label, n)
    m.observe_rows(missing, stale)
    return out
