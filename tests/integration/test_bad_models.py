"""Corrupt and missing model artifacts are refused: the previous version keeps serving, or the
service stays not-ready at start-up with the reason in /ready and the logs. It never crashes.
(Pickled versions and contract mismatches: test_serving_api.py and test_serving_reload.py.)"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.integration.conftest import AppFactory, Registry, wait_for

pytestmark = pytest.mark.integration

USER = "u0000042"


def _artifact_dir(registry: Registry, name: str, version: str) -> Path:
    uri = registry.client.get_model_version_download_uri(name, version)
    path = Path(urlparse(uri).path if uri.startswith("file:") else uri)
    assert (path / "MLmodel").exists(), f"expected a local artifact folder, got {uri}"
    return path


def corrupt(registry: Registry, name: str, alias: str | None = None) -> str:
    """A version whose native model file is binary garbage (a NUL byte once hung LightGBM's loader)."""
    v = registry.register_copy(name)
    (_artifact_dir(registry, name, v) / "model.lgb").write_bytes(b"tree\nthis is not a LightGBM model\x00\xff")
    if alias:
        registry.client.set_registered_model_alias(name, alias, v)
    return v


def truncated(registry: Registry, name: str, alias: str | None = None) -> str:
    """A version whose native model file was cut short (an interrupted upload)."""
    v = registry.register_copy(name)
    path = _artifact_dir(registry, name, v) / "model.lgb"
    text = path.read_text()
    path.write_text(text[: len(text) // 3])
    if alias:
        registry.client.set_registered_model_alias(name, alias, v)
    return v


def missing(registry: Registry, name: str, alias: str | None = None) -> str:
    """A version whose artifacts were deleted from the store."""
    v = registry.register_copy(name)
    shutil.rmtree(_artifact_dir(registry, name, v))
    if alias:
        registry.client.set_registered_model_alias(name, alias, v)
    return v


REASONS = ("corrupt model file", "corrupt model file", "could not download")  # corrupt, truncated, missing


@pytest.mark.parametrize("make_bad", [corrupt, truncated, missing], ids=["corrupt", "truncated", "missing"])
def test_bad_version_at_start_up_leaves_the_service_not_ready_with_the_reason(
    make_client: AppFactory, registry: Registry, make_bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"churn_startup_{make_bad.__name__}"  # type: ignore[attr-defined]
    v = make_bad(registry, name, alias="champion")  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        client = make_client(model_name=name)
        ready = client.get("/ready")
    assert ready.status_code == 503
    reason = ready.json()["reason"]
    assert f"v{v}" in reason and any(words in reason for words in REASONS), reason
    assert client.get("/health").status_code == 200
    r = client.get(f"/v1/predict/{USER}")
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
    assert any(f"v{v} refused" in rec.getMessage() for rec in caplog.records), "the refusal is not in the logs"


def test_bad_versions_on_reload_never_replace_the_serving_one(
    make_client: AppFactory, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    name = "churn_bad_reload"
    good = registry.register_copy(name, alias="champion")
    client = make_client(model_name=name, reload_interval_s=0.2)
    assert client.get("/v1/model").json()["model"]["version"] == good
    with caplog.at_level(logging.WARNING):
        for make_bad, words in zip((corrupt, truncated, missing), REASONS, strict=True):
            v = make_bad(registry, name, alias="champion")
            assert wait_for(lambda v=v: f"v{v} refused" in (client.get("/ready").json()["refused"] or ""))
            ready = client.get("/ready").json()
            assert ready["ready"] is True and words in ready["refused"], ready
            r = client.get(f"/v1/predict/{USER}")
            assert r.status_code == 200 and r.json()["model"]["version"] == good
    refusals = [rec.getMessage() for rec in caplog.records if "refused" in rec.getMessage()]
    assert len(refusals) >= 3, refusals
