"""Optional API key: the `X-API-Key` header, compared in constant time, on every non-probe path.

Off when no key is configured (the embedded default); compose and Kubernetes set one. The
probes and /metrics stay open: orchestrators and Prometheus call them without credentials,
and they reveal no entity data and no secret.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.limits import HEALTH_PATHS, send_error

HEADER = "X-API-Key"
_HEADER_KEY = HEADER.lower().encode()


class ApiKeyAuth:
    """401 with the error shape unless the request carries the configured key."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self._key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        sent = next((v for k, v in scope["headers"] if k == _HEADER_KEY), None)
        # compare_digest takes time independent of where the bytes differ, so the key cannot
        # be guessed byte by byte from response timings.
        if sent is None or not hmac.compare_digest(sent, self._key):
            await send_error(
                send,
                401,
                "unauthorized",
                f"missing or invalid {HEADER} header",
                [(b"www-authenticate", HEADER.encode())],
            )
            return
        await self.app(scope, receive, send)


def document_api_key(app: FastAPI) -> None:
    """Declare the key in the OpenAPI spec, so /docs offers it and clients see the 401."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["ApiKey"] = {
            "type": "apiKey",
            "in": "header",
            "name": HEADER,
        }
        for path, ops in schema.get("paths", {}).items():
            if path in HEALTH_PATHS:
                continue
            for op in ops.values():
                op["security"] = [{"ApiKey": []}]
                op.setdefault("responses", {})["401"] = {
                    "description": "Missing or invalid API key.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}},
                }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
