"""The plain-ASGI hot paths answer exactly as the documented FastAPI routes, and only where they should.

A query string sends the same request to the FastAPI route (``?include_features=false`` asks
for nothing more), so each case is asked both ways and the answers compared: status, headers,
body bytes, and the latency series the request is counted in.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

import serving.fast_path
import serving.routes.predict
from serving.metrics import Metrics
from tests.unit.test_serving_api import _client
from tests.unit.test_serving_features import tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the fast path scored: an ID per GET, a list per batch (it scores only requests it took)."""
    calls: list[Any] = []
    real_one, real_batch = serving.fast_path.predict_one, serving.fast_path.predict

    async def spy_one(state: Any, model: Any, entity_id: str, include_features: bool) -> Any:
        calls.append(entity_id)
        return await real_one(state, model, entity_id, include_features)

    async def spy_batch(state: Any, model: Any, ids: list[str], include_features: bool) -> Any:
        calls.append(list(ids))
        return await real_batch(state, model, ids, include_features)

    monkeypatch.setattr(serving.fast_path, "predict_one", spy_one)
    monkeypatch.setattr(serving.fast_path, "predict", spy_batch)
    return calls


@pytest.fixture
def timed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, int]]:
    """The (method, route, status) labels of every request the latency histogram counted."""
    seen: list[tuple[str, str, int]] = []
    real = Metrics.observe_request

    def spy(self: Metrics, method: str, route: str, status: int, seconds: float) -> None:
        seen.append((method, route, status))
        real(self, method, route, status, seconds)

    monkeypatch.setattr(Metrics, "observe_request", spy)
    return seen


def _both_ways(client: Any, entity_id: str) -> tuple[Any, Any]:
    return client.get(f"/v1/predict/{entity_id}"), client.get(f"/v1/predict/{entity_id}?include_features=false")


@pytest.mark.parametrize(
    ("entity_id", "status", "fast"),
    [
        ("u0000001", 200, True),  # scored
        ("u0000002", 200, True),  # mostly missing: unknown, not scored
        ("u0000999", 404, True),  # nothing stored
        ("u1", 422, False),  # malformed: FastAPI's route words the error
        ("u0000001 ", 422, False),
    ],
)
def test_same_answer_as_the_fastapi_route(fast_calls: list[str], entity_id: str, status: int, fast: bool) -> None:
    client, _, _ = _client()
    quick, documented = _both_ways(client, entity_id)
    assert quick.status_code == documented.status_code == status
    assert quick.json() == documented.json()
    assert quick.headers["content-type"] == documented.headers["content-type"] == "application/json"
    assert fast_calls == ([entity_id] if fast else [])


def test_store_down_and_degraded_answers_match(fast_calls: list[str]) -> None:
    client, online, _ = _client()
    online.down = True
    quick, documented = _both_ways(client, "u0000001")
    assert quick.status_code == documented.status_code == 503
    assert quick.json() == documented.json()

    client, online, _ = _client(degraded_mode=True)
    online.down = True
    quick, documented = _both_ways(client, "u0000001")
    assert quick.status_code == documented.status_code == 200
    assert quick.json() == documented.json() and quick.json()["status"] == "degraded"
    assert fast_calls == ["u0000001", "u0000001"]


def test_no_model_goes_to_the_route_for_its_reason(fast_calls: list[str]) -> None:
    client, _, holder = _client(with_model=False)
    holder.refused = "v3 refused: contract mismatch"
    quick, documented = _both_ways(client, "u0000001")
    assert quick.status_code == documented.status_code == 503
    assert quick.json() == documented.json() and "contract mismatch" in quick.json()["error"]["message"]
    assert fast_calls == []


def test_other_routes_methods_and_queries_pass_through(fast_calls: list[str]) -> None:
    client, _, holder = _client()
    holder.swap(tiny_model(holder.current.plan))  # type: ignore[union-attr]
    assert client.get("/v1/predict/u0000001?include_features=true").json()["features"]
    assert client.post("/v1/predict?include_features=true", json={"entity_ids": ["u0000001"]}).json()["predictions"][0][
        "features"
    ]
    assert client.put("/v1/predict", json={"entity_ids": ["u0000001"]}).status_code == 405
    assert client.delete("/v1/predict/u0000001").status_code == 405
    assert client.get("/v1/predict/u0000001/extra").status_code == 404
    assert client.get("/health").status_code == 200
    assert fast_calls == []


def _same(quick: Any, documented: Any) -> None:
    assert quick.status_code == documented.status_code
    # Each request has its own trace ID; every other header must match.
    assert quick.headers.keys() == documented.headers.keys()
    assert {**quick.headers, "x-trace-id": ""} == {**documented.headers, "x-trace-id": ""}
    assert quick.content == documented.content  # the same bytes, not only the same JSON


def _batch_both_ways(client: Any, body: bytes, content_type: str | None = "application/json") -> tuple[Any, Any]:
    headers = {} if content_type is None else {"content-type": content_type}
    return (
        client.post("/v1/predict", content=body, headers=headers),
        client.post("/v1/predict?include_features=false", content=body, headers=headers),
    )


OK = ["u0000001", "u0000002"]


@pytest.mark.parametrize(
    ("body", "status", "fast"),
    [
        ({"entity_ids": OK}, 200, True),
        ({"entity_ids": ["u0000009", "u0000001", "u0000999"]}, 200, True),  # not_found inside the 200
        ({"entity_ids": ["u0000001", "u0000001", "u0000002"]}, 200, True),  # duplicates answered in place
        ({"entity_ids": ["u0000001", "u0000002", "u0000009"]}, 200, True),  # exactly max_batch_size
        ({"entity_ids": ["u0000001"]}, 200, True),
        ({"entity_ids": OK, "model": "v9", "include_features": True}, 200, True),  # the schema ignores extras
        ({"entity_ids": ["u0000001", "u0000002", "u0000009", "u0000003"]}, 422, False),  # over the cap
        ({"entity_ids": []}, 422, False),
        ({"entity_ids": "u0000001"}, 422, False),
        ({"entity_ids": [1, 2]}, 422, False),
        ({"entity_ids": ["u0000001", None]}, 422, False),
        ({"entity_ids": ["u0000001", "u1"]}, 422, False),  # malformed ID: the route names it
        ({"entity_ids": ["u0000001\n"]}, 422, False),
        ({"ids": OK}, 422, False),
        ([OK], 422, False),
    ],
)
def test_batch_same_answer_as_the_fastapi_route(
    fast_calls: list[Any], timed: list[tuple[str, str, int]], body: Any, status: int, fast: bool
) -> None:
    client, _, _ = _client(max_batch_size=3)
    quick, documented = _batch_both_ways(client, orjson.dumps(body))
    _same(quick, documented)
    assert quick.status_code == status
    assert fast_calls == ([body["entity_ids"]] if fast else [])
    assert timed == [("POST", "/v1/predict", status)] * 2  # counted under the route's template both ways
    if status == 200:
        preds = quick.json()["predictions"]
        assert [p["entity_id"] for p in preds] == body["entity_ids"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fast"),
    [
        # FastAPI's strict content-type check refuses an untyped body; the fast path leaves it that call.
        (b'{"entity_ids": ["u0000001"]}', None, 422, False),
        (b'{"entity_ids": ["u0000001"]}', "application/json; charset=utf-8", 200, False),
        (b'{"entity_ids": ["u0000001"]}', "text/plain", 422, False),
        (b'{"entity_ids": ["u0000001",', "application/json", 422, False),  # malformed JSON
        (b"", "application/json", 422, False),
        (b"", None, 422, False),
    ],
)
def test_batch_body_forms(
    fast_calls: list[Any],
    timed: list[tuple[str, str, int]],
    body: bytes,
    content_type: str | None,
    status: int,
    fast: bool,
) -> None:
    client, _, _ = _client()
    quick, documented = _batch_both_ways(client, body, content_type)
    _same(quick, documented)
    assert quick.status_code == status
    assert fast_calls == ([["u0000001"]] if fast else [])
    assert timed == [("POST", "/v1/predict", status)] * 2


def test_batch_store_down_and_degraded_answers_match(fast_calls: list[Any]) -> None:
    body = orjson.dumps({"entity_ids": OK})
    client, online, _ = _client()
    online.down = True
    quick, documented = _batch_both_ways(client, body)
    _same(quick, documented)
    assert quick.status_code == 503

    client, online, _ = _client(degraded_mode=True)
    online.down = True
    quick, documented = _batch_both_ways(client, body)
    _same(quick, documented)
    assert quick.status_code == 200 and {p["status"] for p in quick.json()["predictions"]} == {"degraded"}
    assert fast_calls == [OK, OK]


def test_batch_unexpected_error_is_the_same_500(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: Any) -> Any:
        raise RuntimeError("boom")

    # Both routes' own references: each path fails the same way inside its predict call.
    monkeypatch.setattr(serving.fast_path, "predict", broken)
    monkeypatch.setattr(serving.routes.predict, "predict", broken)
    client, _, _ = _client()
    quick, documented = _batch_both_ways(client, orjson.dumps({"entity_ids": OK}))
    # Not _same: FastAPI answers a crash from its outermost layer, outside the span that adds x-trace-id.
    assert quick.status_code == documented.status_code == 500
    assert quick.content == documented.content and quick.json()["error"]["code"] == "internal_error"


def test_batch_without_a_model_goes_to_the_route(fast_calls: list[Any], timed: list[tuple[str, str, int]]) -> None:
    client, _, holder = _client(with_model=False)
    holder.refused = "v3 refused: contract mismatch"
    quick, documented = _batch_both_ways(client, orjson.dumps({"entity_ids": OK}))
    _same(quick, documented)
    assert quick.status_code == 503 and "contract mismatch" in quick.json()["error"]["message"]
    assert fast_calls == []
    assert timed == [("POST", "/v1/predict", 503)] * 2


def test_batch_include_features_goes_to_the_route(fast_calls: list[Any]) -> None:
    client, _, holder = _client()
    holder.swap(tiny_model(holder.current.plan))  # type: ignore[union-attr]
    r = client.post("/v1/predict?include_features=true", json={"entity_ids": OK})
    assert r.status_code == 200 and all(p["features"] for p in r.json()["predictions"])
    assert fast_calls == []
