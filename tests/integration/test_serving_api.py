"""Serving against real Redis, Feast and MLflow: every error path, readiness, model info, metrics."""

from __future__ import annotations

import time

import pytest

from feature_repo.contract import TAG_PREFIX
from tests.conftest import FeatureEnv
from tests.integration.conftest import MODEL_NAME, AppFactory, Registry

pytestmark = pytest.mark.integration

USER = "u0000042"


@pytest.fixture(scope="module")
def active_user(feature_env: FeatureEnv) -> str:
    """A user whose activity views hold values online now (so they can go stale)."""
    store = feature_env.store
    ids = [f"u{i:07d}" for i in range(100)]
    rows = store.get_online_features(features=["activity_7d:logins_7d"], entity_rows=[{"user_id": i} for i in ids])
    values = rows.to_dict()["logins_7d"]
    return next(i for i, v in zip(ids, values, strict=True) if v is not None)


def test_single_prediction_has_the_documented_shape(make_client: AppFactory, registry: Registry) -> None:
    r = make_client().get(f"/v1/predict/{USER}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {
        "entity_id", "status", "score", "model", "feature_service",
        "missing_features", "stale_features", "degraded",
    }  # fmt: skip
    assert body["model"] == {"name": MODEL_NAME, "version": registry.champion_version, "alias": "champion"}
    assert body["feature_service"] == "churn_v1" and body["degraded"] is False
    assert 0.0 <= body["score"] <= 1.0


def test_unknown_entity_is_404_alone_and_not_found_in_a_batch(make_client: AppFactory) -> None:
    client = make_client()
    r = client.get("/v1/predict/u9999999")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "entity_not_found"
    batch = client.post("/v1/predict", json={"entity_ids": ["u9999999", USER, "u9999999"]}).json()["predictions"]
    assert [p["status"] for p in batch] == ["not_found", "ok", "not_found"]
    assert batch[0]["score"] is None  # an all-null row is never scored


@pytest.mark.parametrize("bad", ["abc", "u12", "U0000042", "u0000042x", "u" + "1" * 100])
def test_malformed_ids_are_422_with_a_readable_message(make_client: AppFactory, bad: str) -> None:
    client = make_client()
    r = client.get(f"/v1/predict/{bad}")
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_entity_id"
    assert "must match" in r.json()["error"]["message"]
    r = client.post("/v1/predict", json={"entity_ids": [USER, bad]})
    assert r.status_code == 422 and "must match" in r.json()["error"]["message"]


def test_batch_above_the_cap_is_422(make_client: AppFactory) -> None:
    client = make_client(max_batch_size=10)
    r = client.post("/v1/predict", json={"entity_ids": [f"u{i:07d}" for i in range(11)]})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "batch_too_large", "message": "at most 10 entity IDs per request; got 11"}
    assert client.post("/v1/predict", json={"entity_ids": []}).status_code == 422


def test_stale_views_read_as_missing_by_default_and_as_values_when_asked(
    make_client: AppFactory, active_user: str
) -> None:
    later = time.time() + 3 * 86400  # activity views (TTL 2 days) are now past their TTL
    url = f"/v1/predict/{active_user}"
    strict = make_client(clock=lambda: later).get(url, params={"include_features": "true"}).json()
    assert "logins_7d" in strict["stale_features"] and "logins_30d" in strict["stale_features"]
    assert set(strict["stale_features"]) <= set(strict["missing_features"])
    assert strict["features"]["logins_7d"] is None
    assert strict["features"]["login_trend"] is None  # Feast re-ran the on-demand view on missing inputs
    assert strict["status"] == "ok" and strict["score"] is not None  # partial rows are still scored

    lax = make_client(clock=lambda: later, stale_features="score")
    body = lax.get(url, params={"include_features": "true"}).json()
    assert body["stale_features"] == strict["stale_features"]
    assert body["features"]["logins_7d"] is not None
    assert "logins_7d" not in body["missing_features"]


def test_entity_with_every_view_stale_is_unknown_not_scored(make_client: AppFactory) -> None:
    much_later = time.time() + 500 * 86400  # past even user_profile's 400-day TTL
    body = make_client(clock=lambda: much_later).get(f"/v1/predict/{USER}").json()
    assert body["status"] == "unknown" and body["score"] is None
    assert len(body["missing_features"]) == 18


def test_missing_fraction_setting_makes_partial_rows_unknown(make_client: AppFactory, active_user: str) -> None:
    later = time.time() + 3 * 86400
    body = make_client(clock=lambda: later, unknown_missing_fraction=0.5).get(f"/v1/predict/{active_user}").json()
    assert body["status"] == "unknown" and body["score"] is None


def test_model_endpoint_reports_the_contract_and_metrics(make_client: AppFactory, registry: Registry) -> None:
    body = make_client().get("/v1/model").json()
    assert body["model"]["version"] == registry.champion_version
    assert body["feature_service"] == "churn_v1" and body["entity_key"] == "user_id"
    assert body["features"][0] == "user_profile:is_paid" and len(body["features"]) == 18
    assert "test_roc_auc" in body["metrics"]


def test_ready_and_health_when_all_is_well(make_client: AppFactory) -> None:
    client = make_client()
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_no_model_means_503_everywhere_but_health(make_client: AppFactory) -> None:
    client = make_client(model_name="no_such_model")
    assert client.get("/health").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 503 and "no_such_model" in r.json()["reason"]
    r = client.get(f"/v1/predict/{USER}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"


def test_contract_mismatch_is_refused_with_the_reason(make_client: AppFactory, registry: Registry) -> None:
    registry.register_copy("churn_bad", {TAG_PREFIX + "fingerprint": "0" * 64}, alias="champion")
    client = make_client(model_name="churn_bad")
    r = client.get("/ready")
    assert r.status_code == 503
    assert "contract mismatch" in r.json()["reason"]


def test_pickled_model_is_refused(make_client: AppFactory, registry: Registry, feature_env: FeatureEnv) -> None:
    import lightgbm
    import mlflow
    import numpy as np

    names = list(registry.booster(MODEL_NAME, registry.champion_version).feature_name())
    rng = np.random.default_rng(0)
    clf = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(rng.random((50, len(names))), rng.integers(0, 2, 50))
    with mlflow.start_run(run_name="pickled"):
        info = mlflow.lightgbm.log_model(clf, name="model", registered_model_name="churn_pickled")
    v = str(info.registered_model_version)
    for k, val in registry.client.get_model_version(MODEL_NAME, registry.champion_version).tags.items():
        if k.startswith(TAG_PREFIX):
            registry.client.set_model_version_tag("churn_pickled", v, k, val)
    registry.client.set_registered_model_alias("churn_pickled", "champion", v)
    r = make_client(model_name="churn_pickled").get("/ready")
    assert r.status_code == 503 and "native" in r.json()["reason"]


def test_redis_down_is_a_fast_503_or_a_flagged_prior(
    make_client: AppFactory, registry: Registry, feature_env: FeatureEnv
) -> None:
    registry.register_copy("churn_prior", {"skewless.prior": "0.31"}, alias="champion")
    strict = make_client()
    degraded = make_client(model_name="churn_prior", degraded_mode=True)
    assert strict.get(f"/v1/predict/{USER}").status_code == 200
    assert degraded.get(f"/v1/predict/{USER}").status_code == 200
    feature_env.redis.pause()  # SIGSTOP: connections hang, the worst case for a client
    try:
        start = time.monotonic()
        r = strict.get(f"/v1/predict/{USER}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "feature_store_unavailable"
        assert time.monotonic() - start < 2.0
        assert strict.get("/ready").status_code == 503
        body = degraded.get(f"/v1/predict/{USER}").json()
        assert body["degraded"] is True and body["status"] == "degraded" and body["score"] == 0.31
        batch = degraded.post("/v1/predict", json={"entity_ids": [USER, "u0000043"]}).json()["predictions"]
        assert all(p["degraded"] for p in batch)
    finally:
        feature_env.redis.resume()
    assert strict.get(f"/v1/predict/{USER}").status_code == 200  # recovers without a restart


def test_metrics_expose_latency_features_scores_and_model(make_client: AppFactory, registry: Registry) -> None:
    client = make_client()
    client.get(f"/v1/predict/{USER}")
    text = client.get("/metrics").text
    for series in (
        'skewless_http_request_duration_seconds_bucket{le="0.001",method="GET",route="/v1/predict/{entity_id}"',
        "skewless_feature_retrieval_seconds_count",
        "skewless_inference_seconds_count",
        "skewless_prediction_score_bucket",
        f'skewless_model_info{{alias="champion",name="{MODEL_NAME}",version="{registry.champion_version}"}} 1.0',
        'skewless_predictions_total{status="ok"}',
    ):
        assert series in text, series
