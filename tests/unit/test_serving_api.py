"""Routes without services: the app with a fake online store and a tiny real model on app.state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from feature_repo.settings import FeastSettings
from serving.app import create_app
from serving.features import EntityFeatures, FeatureBatch, FeaturePlan, FeaturesUnavailableError
from serving.metrics import Metrics
from serving.model import ModelHolder, ModelRefusedError, _native_booster
from serving.schemas import PredictBatchPublic, PredictionPublic
from serving.settings import ServingSettings
from serving.state import AppState
from tests.unit.test_serving_features import FULL, churn_plan, tiny_model

pytestmark = pytest.mark.unit


class FakeOnline:
    """Answers from a dict; ``down`` simulates Redis failing."""

    deadline_s = 0.25

    def __init__(self) -> None:
        self.down = False
        self.rows: dict[str, dict[str, Any]] = {"u0000001": FULL, "u0000002": {"is_paid": 0}}

    async def fetch(self, plan: FeaturePlan, ids: Sequence[str], now: float) -> list[EntityFeatures]:
        if self.down:
            raise FeaturesUnavailableError("online store missed the 250 ms deadline")
        out = []
        for i in ids:
            row = self.rows.get(i, {})
            values = [row.get(n) for n in plan.names]
            out.append(
                EntityFeatures(
                    i, bool(row), values, [n for n, v in zip(plan.names, values, strict=True) if v is None], []
                )
            )
        return out

    async def fetch_batch(self, plan: FeaturePlan, ids: Sequence[str], now: float) -> FeatureBatch:
        return FeatureBatch.from_rows(plan.names, await self.fetch(plan, ids, now))


class FakePing:
    async def ping(self) -> bool:
        return True


def _client(with_model: bool = True, **settings: Any) -> tuple[TestClient, FakeOnline, ModelHolder]:
    app = create_app(ServingSettings(**settings), FeastSettings())
    holder = ModelHolder()
    if with_model:
        holder.swap(tiny_model(churn_plan()))
    online = FakeOnline()
    none = cast(Any, None)  # store and reloader are not used by the routes
    app.state.skewless = AppState(
        ServingSettings(**settings), FeastSettings(), none, cast(Any, online), holder, none, Metrics(),
        cast(Any, FakePing()), lambda: 0.0,
    )  # fmt: skip
    return TestClient(app, raise_server_exceptions=False), online, holder


def test_single_prediction_matches_its_schema() -> None:
    client, _, _ = _client()
    r = client.get("/v1/predict/u0000001", params={"include_features": "true"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = PredictionPublic.model_validate(r.json())
    assert body.status == "ok" and body.score is not None and 0 <= body.score <= 1
    assert body.features == FULL and body.missing_features == []


def test_partially_missing_row_is_scored_and_lists_what_is_missing() -> None:
    client, _, _ = _client()
    body = client.get("/v1/predict/u0000002").json()
    assert body["status"] == "ok" and body["score"] is not None
    assert len(body["missing_features"]) == 17


def test_batch_answers_per_entity_in_order() -> None:
    client, _, _ = _client()
    r = client.post("/v1/predict", json={"entity_ids": ["u0000009", "u0000001", "u0000002"]})
    body = PredictBatchPublic.model_validate(r.json())
    assert [(p.entity_id, p.status) for p in body.predictions] == [
        ("u0000009", "not_found"), ("u0000001", "ok"), ("u0000002", "ok"),
    ]  # fmt: skip


def test_unknown_single_entity_is_404() -> None:
    client, _, _ = _client()
    r = client.get("/v1/predict/u0000009")
    assert r.status_code == 404
    assert r.json() == {
        "error": {"code": "entity_not_found", "message": "no features are stored for entity 'u0000009'"}
    }


def test_id_pattern_and_length_are_settings() -> None:
    client, _, _ = _client(entity_id_pattern=r"^[a-z]+$", entity_id_max_length=5)
    assert client.get("/v1/predict/abc").status_code == 404
    r = client.get("/v1/predict/abcdef")
    assert r.status_code == 422 and "at most 5 characters" in r.json()["error"]["message"]


def test_malformed_body_is_422_in_the_error_shape() -> None:
    client, _, _ = _client()
    r = client.post("/v1/predict", json={"ids": ["u0000001"]})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_request" and "entity_ids" in r.json()["error"]["message"]


def test_too_many_missing_is_unknown_and_not_scored() -> None:
    client, _, _ = _client(unknown_missing_fraction=0.9)
    body = client.get("/v1/predict/u0000002").json()
    assert body["status"] == "unknown" and body["score"] is None


def test_redis_failure_is_503_unless_degraded_mode() -> None:
    client, online, _ = _client()
    online.down = True
    r = client.get("/v1/predict/u0000001")
    assert r.status_code == 503 and r.json()["error"]["code"] == "feature_store_unavailable"

    client, online, _ = _client(degraded_mode=True)
    online.down = True
    body = client.get("/v1/predict/u0000001").json()
    assert body == body | {"status": "degraded", "degraded": True, "score": 0.3}


def test_degraded_mode_without_a_prior_is_still_503() -> None:
    client, online, holder = _client(degraded_mode=True)
    holder.swap(tiny_model(churn_plan(), prior=None))
    online.down = True
    assert client.get("/v1/predict/u0000001").status_code == 503


def test_no_model_is_503_and_not_ready() -> None:
    client, _, holder = _client(with_model=False)
    holder.refused = "churn@champion -> v3 refused: contract mismatch"
    assert client.get("/v1/predict/u0000001").status_code == 503
    r = client.get("/ready")
    assert r.status_code == 503 and "contract mismatch" in r.json()["reason"]
    assert client.get("/health").status_code == 200


def test_openapi_documents_versioned_routes_with_examples() -> None:
    client, _, _ = _client()
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict/{entity_id}", "/v1/predict", "/v1/model", "/health", "/ready"} <= set(spec["paths"])
    assert spec["components"]["schemas"]["PredictionPublic"]["examples"][0]["entity_id"] == "u0000042"


def test_swap_replaces_the_model_as_one_reference() -> None:
    holder = ModelHolder()
    first, second = tiny_model(churn_plan(), version="1"), tiny_model(churn_plan(), version="2")
    assert holder.swap(first) is None
    holder.refused = "v9 refused"
    assert holder.swap(second) is first
    assert holder.current is second and holder.refused is None


def test_settings_reject_bad_values_at_start() -> None:
    with pytest.raises(ValidationError, match="regular expression"):
        ServingSettings(entity_id_pattern="(")
    with pytest.raises(ValidationError):
        ServingSettings(stale_features="ignore")


def test_stale_default_is_missing_the_skew_free_choice() -> None:
    assert ServingSettings.model_fields["stale_features"].default == "missing"


def test_pickled_lightgbm_model_is_refused_before_loading(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  lightgbm:\n    data: model.pkl\n    model_class: lightgbm.sklearn.LGBMClassifier\n"
        "    serialization_format: cloudpickle\n"
    )
    (tmp_path / "model.pkl").write_bytes(b"not to be unpickled")
    with pytest.raises(ModelRefusedError, match="native"):
        _native_booster(tmp_path)
