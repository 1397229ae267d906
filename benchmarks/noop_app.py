"""The framework's ceiling: a FastAPI endpoint that does nothing, served like ours."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse


def create_app() -> FastAPI:
    """A no-op app with the same response class as the service."""
    app = FastAPI(default_response_class=ORJSONResponse)

    @app.get("/v1/predict/{entity_id}")
    async def noop(entity_id: str) -> dict[str, str]:
        return {"entity_id": entity_id}

    return app
