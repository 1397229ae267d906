"""The Grafana dashboard and every alert rule query series the live API really exposes.

A real app (model from the training CLI, features in a private Redis, API key on as in compose
and k8s) serves some traffic; then /metrics is scraped without the key, as Prometheus does.
"""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import AppFactory
from tests.unit.test_deploy_monitoring import SUFFIXES, SYNTHETIC, alert_exprs, dashboard_exprs, metric_names

pytestmark = pytest.mark.integration

KEY = "test-api-key"
DAY_S = 86_400.0


def scrape(make_client: AppFactory) -> tuple[set[str], set[str]]:
    """(sample names with a value, every name the declared families can expose) after real traffic."""
    offset = [0.0]
    client = make_client(clock=lambda: time.time() + offset[0], api_key=KEY)
    auth = {"X-API-Key": KEY}
    assert client.get("/v1/predict/u0000042").status_code == 401
    ids = [f"u{i:07d}" for i in range(50)]
    assert client.get("/v1/predict/u0000042", headers=auth).status_code == 200
    assert client.get("/v1/predict/u9999999", headers=auth).status_code == 404
    assert client.get("/v1/predict/bob", headers=auth).status_code == 422
    assert client.post("/v1/predict", json={"entity_ids": ids}, headers=auth).status_code == 200
    offset[0] = 45 * DAY_S  # past every view's TTL: stale and missing features get counted
    assert client.post("/v1/predict", json={"entity_ids": ids}, headers=auth).status_code == 200
    r = client.get("/metrics")  # no key: Prometheus scrapes without one
    assert r.status_code == 200, r.text
    samples: set[str] = set()
    declared: set[str] = set()
    for family in text_string_to_metric_families(r.text):
        samples |= {s.name for s in family.samples}
        base = family.name
        declared |= {base + s for s in SUFFIXES.get(family.type, ("",))}
    return samples, declared


def test_dashboard_and_alerts_query_only_series_the_live_api_exposes(make_client: AppFactory) -> None:
    samples, declared = scrape(make_client)
    panels = set().union(*(metric_names(e) for e in dashboard_exprs()))
    alerts = set().union(*(metric_names(e) for e in alert_exprs()))
    assert panels and alerts
    # Every dashboard panel has data after ordinary traffic.
    assert panels <= samples, f"dashboard series with no samples on /metrics: {sorted(panels - samples)}"
    # Alert series may legitimately be empty until the failure they watch happens (Redis errors).
    unknown = alerts - declared - samples - SYNTHETIC
    assert not unknown, f"alert rules query series /metrics does not expose: {sorted(unknown)}"
