"""Predictions: one entity by path, or a batch by body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from serving.deps import check_entity_ids, get_model
from serving.errors import ApiError, OrjsonResponse
from serving.predict import not_found, predict
from serving.schemas import ErrorPublic, PredictBatchPublic, PredictBatchRequest, PredictionPublic
from serving.state import AppState

router = APIRouter(prefix="/v1/predict", tags=["predict"])

IncludeFeatures = Annotated[bool, Query(description="Also return the feature row the model scored.")]
EntityId = Annotated[str, Path(description="Entity ID, e.g. u0000042.", examples=["u0000042"])]
_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorPublic, "description": "Malformed entity ID or batch too large."},
    503: {"model": ErrorPublic, "description": "No model loaded, or the online store failed."},
}


@router.get(
    "/{entity_id}",
    response_model=PredictionPublic,
    responses={404: {"model": ErrorPublic, "description": "No features stored for this ID."}, **_ERRORS},
    summary="Score one entity",
)
async def predict_one(
    request: Request, entity_id: EntityId, include_features: IncludeFeatures = False
) -> OrjsonResponse:
    """Churn probability of one entity from its online features."""
    # No Depends on the hot path: FastAPI runs sync dependencies in a worker thread, and each
    # hop cost more than the whole feature read. The same checks run as plain calls.
    state: AppState = request.app.state.skewless
    model = get_model(state)
    check_entity_ids([entity_id], state)
    (pred,) = await predict(state, model, [entity_id], include_features)
    if pred["status"] == "not_found":
        raise not_found(entity_id)
    # Returned as bytes built by orjson: the dict already has PredictionPublic's shape (tests check it).
    return OrjsonResponse(pred)


@router.post("", response_model=PredictBatchPublic, responses=_ERRORS, summary="Score a batch of entities")
async def predict_batch(
    request: Request, body: PredictBatchRequest, include_features: IncludeFeatures = False
) -> OrjsonResponse:
    """One prediction per ID, in request order, each with its own status."""
    state: AppState = request.app.state.skewless
    model = get_model(state)
    cap = state.settings.max_batch_size
    if len(body.entity_ids) > cap:
        raise ApiError(422, "batch_too_large", f"at most {cap} entity IDs per request; got {len(body.entity_ids)}")
    check_entity_ids(body.entity_ids, state)
    return OrjsonResponse({"predictions": await predict(state, model, body.entity_ids, include_features)})
