"""What is serving: model version, contract and its evaluation metrics."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import ModelDep
from serving.errors import OrjsonResponse
from serving.schemas import ErrorPublic, ModelPublic

router = APIRouter(prefix="/v1", tags=["model"])


@router.get(
    "/model",
    response_model=ModelPublic,
    responses={503: {"model": ErrorPublic, "description": "No model loaded."}},
    summary="The serving model",
)
async def get_model_info(model: ModelDep) -> OrjsonResponse:
    """The model version, its feature service and ordered features, entity key, metrics and scorer."""
    return OrjsonResponse(
        {
            "model": model.ref,
            "feature_service": model.contract.feature_service,
            "features": list(model.contract.features),
            "entity_key": model.contract.entity_key,
            "metrics": model.metrics,
            "scorer": model.scorer,
        }
    )
