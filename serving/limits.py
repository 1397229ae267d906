"""Load limits as pure ASGI middleware: a request-body cap (413) and a concurrency cap (503 + Retry-After).

Both answer before the app runs, so an oversized or surplus request costs almost nothing and
never reaches the feature store. Pure ASGI (not BaseHTTPMiddleware) so streaming and the
event loop stay untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes must answer even when the service sheds load: an orchestrator that saw /health fail
# under a burst would restart a healthy pod and make the overload worse.
HEALTH_PATHS = frozenset({"/health", "/ready", "/metrics"})


async def send_error(
    send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """The service's error shape ({"error": {code, message}}) written straight to ASGI."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a body over ``max_bytes``, declared (Content-Length) or streamed (chunked); 408 for
    one that takes longer than ``timeout_s`` to arrive.

    The body is read here, up to the cap, and replayed to the app: bodies are small (a batch
    of IDs), and a limit enforced before parsing cannot be turned into a 400 by the framework.
    The time limit matters because this runs inside the concurrency limit, and uvicorn sets none
    on a body: a client trickling a byte a minute would hold its slot for as long as it liked.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float = 5.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is None and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body
            return
        too_large = f"request body exceeds {self.max_bytes} bytes"
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await send_error(send, 400, "bad_content_length", "Content-Length is not a number")
                return
            if size > self.max_bytes:
                await send_error(send, 413, "body_too_large", too_large)
                return
        chunks: list[bytes] = []
        total = 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            try:  # only the wait is timed: an answer below must never be cut off by the deadline
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                slow = f"request body not received within {self.timeout_s:g} s"
                await send_error(send, 408, "body_timeout", slow, [(b"connection", b"close")])
                return
            if message["type"] == "http.disconnect":
                return  # the client went away; nobody to answer
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await send_error(send, 413, "body_too_large", too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls wait for the disconnect, as the server would

        await self.app(scope, replay, send)


class ConcurrencyLimit:
    """Sheds requests beyond ``max_in_flight`` at once with 503 and Retry-After, never queueing them.

    Queueing would turn overload into latency for everyone; answering at once keeps the
    requests that are admitted inside their deadline and lets clients back off.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0  # one event loop: no lock needed
        self.shed = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            await send_error(
                send,
                503,
                "overloaded",
                f"more than {self.max_in_flight} requests in flight; retry after {self.retry_after.decode()} s",
                [(b"retry-after", self.retry_after)],
            )
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def extend_openapi(app: FastAPI, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the generated spec once, after any edits registered before it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            edit(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_error_response(operation: dict[str, Any], status: int, description: str) -> None:
    """Document an error answer with the service's error shape, unless the route already does."""
    operation.setdefault("responses", {}).setdefault(
        str(status),
        {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorPublic"}}},
        },
    )


def document_limits(app: FastAPI) -> None:
    """Declare the answers the middleware gives on any route, so the spec covers every response."""

    def edit(schema: dict[str, Any]) -> None:
        for path, operations in schema.get("paths", {}).items():
            if path in HEALTH_PATHS:
                continue
            for operation in operations.values():
                add_error_response(operation, 503, "Overloaded (Retry-After), no model, or the online store failed.")
                if "requestBody" in operation:
                    add_error_response(operation, 400, "The body could not be read (not UTF-8, bad Content-Length).")
                    add_error_response(operation, 408, "The body took longer than SKEWLESS_BODY_TIMEOUT_MS to arrive.")
                    add_error_response(operation, 413, "The body is larger than SKEWLESS_MAX_BODY_BYTES.")

    extend_openapi(app, edit)
