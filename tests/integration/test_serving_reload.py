"""Hot reload under load: promote, roll back and refuse versions while a client keeps asking."""

from __future__ import annotations

import itertools
import threading

import pytest

from feature_repo.contract import TAG_PREFIX
from tests.integration.conftest import AppFactory, Registry, wait_for

pytestmark = pytest.mark.integration

NAME = "churn_reload"
USER = "u0000042"


def test_promote_rollback_and_refusal_without_a_failed_request(make_client: AppFactory, registry: Registry) -> None:
    v1 = registry.register_copy(NAME, alias="champion")
    client = make_client(model_name=NAME, reload_interval_s=0.2)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            r = client.get(f"/v1/predict/{USER}")
            seen.append((r.status_code, r.json().get("model", {}).get("version", "?")))

    worker = threading.Thread(target=hammer, daemon=True)
    worker.start()
    try:
        assert wait_for(lambda: len(seen) > 20)
        v2 = registry.register_copy(NAME, alias="champion")
        assert wait_for(lambda: seen[-1][1] == v2), "promotion not picked up"

        registry.client.set_registered_model_alias(NAME, "champion", v1)  # roll back: move the alias
        assert wait_for(lambda: seen[-1][1] == v1), "rollback not picked up"

        bad = registry.register_copy(NAME, {TAG_PREFIX + "fingerprint": "f" * 64}, alias="champion")
        assert wait_for(lambda: f"v{bad} refused" in (client.get("/ready").json()["refused"] or ""))
        n = len(seen)
        assert wait_for(lambda: len(seen) > n + 20)
    finally:
        stop.set()
        worker.join(5)

    ready = client.get("/ready")
    assert ready.status_code == 200  # the old model serves and its own contract still matches
    assert "contract mismatch" in ready.json()["refused"]
    assert {code for code, _ in seen} == {200}, "a request failed during a swap"
    versions = [v for _, v in seen]
    switches = [b for a, b in itertools.pairwise(versions) if a != b]
    assert switches == [v2, v1], switches  # promoted, rolled back, and the bad version never served
    assert bad not in versions
    assert client.get("/v1/model").json()["model"]["version"] == v1
