"""One error shape for every failure: {"error": {"code", "message"}}, never a bare 500."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """JSON via orjson; handlers build plain dicts and return this directly (no re-validation).

    A JSONResponse subclass: FastAPI documents response models only for JSON response classes
    (with plain Response every 200 in the spec read `type: string`).
    """

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    """An error a client can act on: HTTP status, stable code, human message."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


def error_response(status_code: int, code: str, message: str) -> OrjsonResponse:
    """The JSON body every error path returns."""
    return OrjsonResponse({"error": {"code": code, "message": message}}, status_code=status_code)


def _describe(err: dict[str, Any]) -> str:
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, FastAPI's validation errors and anything unexpected to the error shape."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc.status_code, exc.code, exc.message)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        message = "; ".join(_describe(e) for e in exc.errors()[:5])
        return error_response(422, "invalid_request", message)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(exc.status_code, "http_error", str(exc.detail))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Logged with the traceback; the client gets the error shape, not a stack trace.
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal error; see the server log")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
