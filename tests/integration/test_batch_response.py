"""A batch answers with the bytes the per-row code gave, missing, stale and absent entities included.

The batch route reads features column by column (``RedisLayout.batch``). The reference here is
what the route built before, row by row from ``OnlineFeatures.fetch`` (the per-entity reader,
itself compared with Feast's SDK in ``test_redis_layout.py``): the same statuses, scores,
missing and stale lists, feature values and metrics, down to the response bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.predict import _prediction
from serving.state import AppState
from tests.conftest import FeatureEnv
from tests.integration.conftest import AppFactory, wait_for

pytestmark = pytest.mark.integration


def _per_row_answer(
    client: TestClient, ids: list[str], include_features: bool, now: float
) -> tuple[bytes, Counter[str], Counter[str]]:
    """The body and the missing/stale tallies the row-by-row batch code produced for ``ids``."""
    state: AppState = client.app.state.skewless  # type: ignore[attr-defined]
    model = state.holder.current
    assert model is not None
    rows = client.portal.call(state.online.fetch, model.plan, ids, now)  # type: ignore[union-attr]
    n_features = len(model.plan.names)
    limit = state.settings.unknown_missing_fraction
    status = ["not_found" if not r.found else "unknown" if len(r.missing) >= limit * n_features else "ok" for r in rows]
    scorable = [i for i, s in enumerate(status) if s == "ok"]
    scores: dict[int, float] = {}
    if scorable:
        matrix = np.array(
            [[np.nan if x is None else float(x) for x in rows[i].values] for i in scorable], dtype=np.float64
        )
        scores = dict(zip(scorable, model.predict(matrix).tolist(), strict=True))
    out: list[dict[str, Any]] = []
    missing: Counter[str] = Counter()
    stale: Counter[str] = Counter()
    for i, r in enumerate(rows):
        if status[i] != "not_found":
            missing.update(r.missing)
            stale.update(r.stale)
        out.append(_prediction(model, r, status[i], scores.get(i), include_features))
    return orjson.dumps({"predictions": out}, option=orjson.OPT_SERIALIZE_NUMPY), missing, stale


@pytest.mark.parametrize("days_later", [0, 3, 40, 500])
@pytest.mark.parametrize("overrides", [{}, {"stale_features": "score"}, {"unknown_missing_fraction": 0.5}])
def test_batch_response_bytes_match_the_per_row_answer(
    make_client: AppFactory, feature_env: FeatureEnv, days_later: int, overrides: dict[str, Any]
) -> None:
    now = time.time() + days_later * 86400
    client = make_client(clock=lambda: now, **overrides)
    state: AppState = client.app.state.skewless  # type: ignore[attr-defined]
    model = state.holder.current
    assert model is not None
    assert wait_for(lambda: state.online.path(model.plan) == "direct", 30), "the direct reader never served"
    users = sorted(pd.read_parquet(feature_env.data_dir / "users.parquet")["user_id"].unique())
    # Absent IDs at the ends and twice, a present ID twice.
    ids = ["u9999998", *users[:150], users[3], "u9999999", "u9999998"]
    statuses: set[str] = set()
    for include in (False, True):
        before_missing = Counter(state.metrics.missing_features.tally)
        before_stale = Counter(state.metrics.stale_features.tally)
        url = "/v1/predict?include_features=true" if include else "/v1/predict"
        r = client.post(url, json={"entity_ids": ids})
        assert r.status_code == 200
        want, missing, stale = _per_row_answer(client, ids, include, now)
        assert r.content == want
        assert state.metrics.missing_features.tally - before_missing == missing
        assert state.metrics.stale_features.tally - before_stale == stale
        statuses.update(p["status"] for p in r.json()["predictions"])
    assert "not_found" in statuses
    if "unknown_missing_fraction" in overrides:  # rows without activity miss more than half
        assert "unknown" in statuses
