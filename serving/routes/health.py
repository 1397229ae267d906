"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.responses import Response

from serving.deps import StateDep
from serving.errors import OrjsonResponse
from serving.schemas import HealthPublic, ReadyPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic, summary="Liveness")
async def health() -> OrjsonResponse:
    """Always fast: touches nothing but the process."""
    return OrjsonResponse({"status": "ok"})


@router.get(
    "/ready",
    response_model=ReadyPublic,
    responses={503: {"model": ReadyPublic, "description": "Not ready, with the reason."}},
    summary="Readiness",
)
async def ready(state: StateDep) -> OrjsonResponse:
    """200 only with a model loaded, its contract matching the registry and Redis answering."""
    holder = state.holder
    model = holder.current
    reason: str | None = None
    if model is None:
        reason = f"no model loaded: {holder.refused or 'still loading'}"
    elif holder.drift:
        reason = f"contract mismatch for the serving model: {holder.drift}"
    else:
        try:
            await asyncio.wait_for(state.ping.ping(), timeout=state.online.deadline_s)
        except (TimeoutError, RedisError, OSError) as e:
            reason = f"redis does not answer: {type(e).__name__}: {e}"
    body = {"ready": reason is None, "reason": reason, "refused": holder.refused, "model": model.ref if model else None}
    return OrjsonResponse(body, status_code=200 if reason is None else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Text exposition of this process's registry."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
