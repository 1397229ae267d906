"""``GET /v1/predict/{entity_id}`` answered in plain ASGI, before FastAPI's request machinery.

Measured in-process on the same app: FastAPI's handling of the route (parameter solving,
the Request object, exception middleware, response wrapping) cost ~200 µs of CPU per request
on a loaded machine, against ~60 µs for a plain Starlette route and ~2 µs for plain ASGI;
that was more than the feature read and the model together. So the hot route's plain form
(GET, one path segment, no query string, a valid ID, a model loaded) is answered here, by the
same ``serving.predict.predict`` the FastAPI route calls, with the same bytes.

Everything else goes on to FastAPI: other routes, any query string (``include_features``),
a malformed ID, no model loaded. So the FastAPI route stays the documented one and the only
place request errors are produced; ``tests/integration/test_fast_path.py`` checks that both
give the same answers. This sits innermost among the middleware, so the server span, the
API key, load shedding, the latency metric and the slow-request log all still apply.
"""

from __future__ import annotations

import logging

import orjson
from opentelemetry import trace
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.deps import check_entity_ids
from serving.errors import ApiError
from serving.limits import send_error
from serving.predict import not_found, predict
from serving.state import AppState

log = logging.getLogger(__name__)

PREFIX = "/v1/predict/"
_JSON = (b"content-type", b"application/json")


class PredictFastPath:
    """Pure ASGI middleware: the plain single-entity prediction, or on to the app."""

    def __init__(self, app: ASGIApp, route: BaseRoute) -> None:
        self.app = app
        self.route = route  # the FastAPI route it stands in for: its template names metrics and spans
        self.template = getattr(route, "path", PREFIX + "{entity_id}")
        self.span_name = f"GET {self.template}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or scope["query_string"]
            or scope.get("root_path")
            or not path.startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        entity_id = path[len(PREFIX) :]
        state: AppState = scope["app"].state.skewless
        model = state.holder.current
        if model is None or not entity_id or "/" in entity_id or not _valid(entity_id, state):
            await self.app(scope, receive, send)  # FastAPI answers: 503, 422 or 404 with its message
            return
        scope["route"] = self.route  # as the router would set it: the metric and the slow log read it
        span = trace.get_current_span()  # the server span, when tracing is on
        if span.is_recording():
            span.update_name(self.span_name)
            span.set_attribute("http.route", self.template)
        try:
            (pred,) = await predict(state, model, [entity_id], False)
        except ApiError as e:  # e.g. the online store failed and degraded mode is off
            await send_error(send, e.status_code, e.code, e.message)
            return
        except Exception:  # the same answer FastAPI's handler gives, with the traceback logged
            log.exception("unhandled error on GET %s", path)
            await send_error(send, 500, "internal_error", "internal error; see the server log")
            return
        if pred["status"] == "not_found":
            err = not_found(entity_id)
            await send_error(send, err.status_code, err.code, err.message)
            return
        body = orjson.dumps(pred, option=orjson.OPT_SERIALIZE_NUMPY)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _valid(entity_id: str, state: AppState) -> bool:
    try:
        check_entity_ids([entity_id], state)
    except ApiError:
        return False
    return True
