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

from serving.limits import HEALTH_PATHS, add_error_response, extend_openapi, send_error

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

    def edit(schema: dict[str, Any]) -> None:
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": HEADER}
        for path, operations in schema.get("paths", {}).items():
            if path in HEALTH_PATHS:
                continue
            for operation in operations.values():
                operation["security"] = [{"ApiKey": []}]
                add_error_response(operation, 401, "Missing or invalid API key.")

    extend_openapi(app, edit)
