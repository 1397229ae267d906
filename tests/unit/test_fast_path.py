"""The plain-ASGI hot path answers exactly as the documented FastAPI route, and only where it should.

A query string sends the same request to the FastAPI route (``?include_features=false`` asks
for nothing more), so each case is asked both ways and the answers compared.
"""

from __future__ import annotations

from typing import Any

import pytest

import serving.fast_path
from tests.unit.test_serving_api import _client
from tests.unit.test_serving_features import tiny_model

pytestmark = pytest.mark.unit


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The IDs the fast path scored (it calls ``predict_one`` only once it has taken a request)."""
    calls: list[str] = []
    real = serving.fast_path.predict_one

    async def spy(state: Any, model: Any, entity_id: str, include_features: bool) -> Any:
        calls.append(entity_id)
        return await real(state, model, entity_id, include_features)

    monkeypatch.setattr(serving.fast_path, "predict_one", spy)
    return calls


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
    assert client.post("/v1/predict", json={"entity_ids": ["u0000001"]}).status_code == 200
    assert client.delete("/v1/predict/u0000001").status_code == 405
    assert client.get("/v1/predict/u0000001/extra").status_code == 404
    assert client.get("/health").status_code == 200
    assert fast_calls == []
