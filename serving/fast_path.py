"""``GET /v1/predict/{entity_id}`` and ``POST /v1/predict`` answered in plain ASGI, before FastAPI.

Measured in-process on the same app: FastAPI's handling of the route (parameter solving,
the Request object, exception middleware, response wrapping) cost ~200 µs of CPU per request
on a loaded machine, against ~60 µs for a plain Starlette route and ~2 µs for plain ASGI;
that was more than the feature read and the model together. So the hot routes' plain forms
are answered here, by the same ``serving.predict`` functions the FastAPI routes call, with the
same bytes:

- GET with one path segment, no query string, a valid ID and a model loaded;
- POST with no query string, content-type exactly ``application/json``, and a body
  (already read whole by ``BodySizeLimit``) that orjson parses to an object whose
  ``entity_ids`` is a list of 1..max_batch_size valid string IDs (other keys are ignored, as
  the request schema ignores them).

Everything else goes on to FastAPI, with the body replayed to it: other routes, any query
string (``include_features``), a malformed ID or body, no model loaded. So the FastAPI routes
stay the documented ones and the only place request errors are produced;
``tests/unit/test_fast_path.py`` checks that both give the same answers. This sits innermost
among the middleware, so the server span, the API key, load shedding, the latency metric and
the slow-request log all still apply.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable
from typing import Any, NamedTuple, TypeVar

import orjson
from fastapi.telemetry._api import _route_selected
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import ApiError
from serving.limits import send_error
from serving.predict import not_found, predict, predict_one
from serving.settings import ServingSettings
from serving.state import AppState

log = logging.getLogger(__name__)

PREFIX = "/v1/predict/"
BATCH_PATH = "/v1/predict"
_JSON = (b"content-type", b"application/json")
_T = TypeVar("_T")


class PredictFastPath:
    """Pure ASGI middleware: the plain single-entity and batch predictions, or on to the app."""

    def __init__(self, app: ASGIApp, route: BaseRoute, batch_route: BaseRoute) -> None:
        self.app = app
        # The FastAPI routes it stands in for: their templates name metrics and spans.
        self.route = route
        self.template = getattr(route, "path", PREFIX + "{entity_id}")
        self.batch_route = batch_route
        self.batch_template = getattr(batch_route, "path", BATCH_PATH)
        self._ids = _IdRule(None, re.compile(""), 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["query_string"] or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "GET" and path.startswith(PREFIX):
            await self._one(scope, receive, send, path[len(PREFIX) :])
        elif method == "POST" and path == self.batch_template:
            await self._batch(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _one(self, scope: Scope, receive: Receive, send: Send, entity_id: str) -> None:
        state: AppState = scope["app"].state.skewless
        model = state.holder.current
        if model is None or not entity_id or "/" in entity_id or not self._valid(entity_id, state.settings):
            await self.app(scope, receive, send)  # FastAPI answers: 503, 422 or 404 with its message
            return
        _take(scope, self.route, self.template)
        pred = await _scored(scope, send, predict_one(state, model, entity_id, False))
        if pred is None:
            return
        if pred["status"] == "not_found":
            err = not_found(entity_id)
            await send_error(send, err.status_code, err.code, err.message)
            return
        await _send_json(send, pred)

    async def _batch(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: AppState = scope["app"].state.skewless
        model = state.holder.current
        if model is None or not _plain_json(scope["headers"]):
            await self.app(scope, receive, send)  # FastAPI answers: 503, or parses the body its way
            return
        message = await receive()
        ids = None
        if message["type"] == "http.request" and not message.get("more_body", False):
            ids = self._batch_ids(message.get("body", b""), state.settings)
        if ids is None:
            # FastAPI reads the same message and words the error (422, or 200 for what it accepts).
            await self.app(scope, _replay(message, receive), send)
            return
        _take(scope, self.batch_route, self.batch_template)
        preds = await _scored(scope, send, predict(state, model, ids, False))
        if preds is not None:
            await _send_json(send, {"predictions": preds})

    def _batch_ids(self, body: bytes, settings: ServingSettings) -> list[str] | None:
        """The body's IDs when ``PredictBatchRequest`` and the batch route would accept them as they are."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        ids = doc.get("entity_ids") if type(doc) is dict else None
        if type(ids) is not list or not 0 < len(ids) <= settings.max_batch_size:
            return None
        rule = self._rule(settings)
        fullmatch, max_length = rule.pattern.fullmatch, rule.max_length
        for entity_id in ids:
            # Only exact str: the route's list[str] would refuse other JSON types (a 422 it words).
            if type(entity_id) is not str or len(entity_id) > max_length or fullmatch(entity_id) is None:
                return None
        return ids

    def _valid(self, entity_id: str, settings: ServingSettings) -> bool:
        """``serving.deps.check_entity_ids``' rule for one ID, with the pattern compiled once per settings.

        Restated rather than called: that function builds lists and an error message to say no
        (0.9 µs against 0.3 µs a call). tests/unit/test_fast_path.py keeps the two in step: a
        malformed ID must reach the FastAPI route and get its 422.
        """
        rule = self._rule(settings)
        return len(entity_id) <= rule.max_length and rule.pattern.fullmatch(entity_id) is not None

    def _rule(self, settings: ServingSettings) -> _IdRule:
        rule = self._ids
        if rule.settings is not settings:
            rule = self._ids = _IdRule(settings, re.compile(settings.entity_id_pattern), settings.entity_id_max_length)
        return rule


class _IdRule(NamedTuple):
    settings: ServingSettings | None  # the settings it was compiled from
    pattern: re.Pattern[str]
    max_length: int


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """Content-type exactly ``application/json``.

    Not when absent: FastAPI's strict content-type check (on by default) refuses an untyped body,
    so that, like parameters (``; charset=utf-8``), is left to it.
    """
    for name, value in headers:
        if name == b"content-type":
            return value == b"application/json"  # the first one: Starlette's headers.get reads that too
    return False


def _replay(message: Message, receive: Receive) -> Receive:
    """``receive`` for the app behind: the message already read, then the server's own."""
    pending = [message]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def _take(scope: Scope, route: BaseRoute, template: str) -> None:
    """What FastAPI's router does on choosing ``route``: the metric, the slow log and the server span read it."""
    scope["route"] = route
    # FastAPI's own hook: names FastAPI's server span (SKEWLESS_SERVER_SPAN=fastapi); a no-op otherwise,
    # since observability.server_span names its span from scope["route"] when the request ends.
    _route_selected(scope=scope, path=template)


async def _scored(scope: Scope, send: Send, work: Awaitable[_T]) -> _T | None:
    """``work``'s result, or None once the error answer FastAPI's handlers would give is sent."""
    try:
        return await work
    except ApiError as e:  # e.g. the online store failed and degraded mode is off
        await send_error(send, e.status_code, e.code, e.message)
    except Exception:  # the same answer FastAPI's handler gives, with the traceback logged
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        await send_error(send, 500, "internal_error", "internal error; see the server log")
    return None


async def _send_json(send: Send, content: Any) -> None:
    """``content`` as ``OrjsonResponse`` renders it, with the same headers."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), _JSON],
        }
    )
    await send({"type": "http.response.body", "body": body})
