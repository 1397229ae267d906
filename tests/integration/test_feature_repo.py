"""`feast apply` + materialize into a private redis-server: the online store serves exactly
the latest offline values inside the TTL, unknown users read as null, re-runs change nothing."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from feature_repo.pipeline.materialize import NotValidatedError, materialize
from feature_repo.pipeline.validate import clear_mark
from feature_repo.store import feast_env
from tests.conftest import FeatureEnv
from tests.support import redis_digest

pytestmark = pytest.mark.integration


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def test_feast_apply_cli_works_from_the_repo_folder(feature_env: FeatureEnv) -> None:
    """The real `feast` CLI, run where users run it, sees our definitions."""
    env = {**os.environ, **feast_env(feature_env.settings)}
    feast = str(Path(sys.executable).parent / "feast")
    out = subprocess.run(
        [feast, "feature-services", "list"],
        cwd=feature_env.settings.repo_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "churn_v1" in out.stdout
    plan = subprocess.run(
        [feast, "plan"],
        cwd=feature_env.settings.repo_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "No changes to infrastructure" in plan.stdout


def test_online_equals_latest_offline_values_inside_ttl(feature_env: FeatureEnv) -> None:
    store = feature_env.store
    service = store.get_feature_service("churn_v1")
    labels = pd.read_parquet(feature_env.data_dir / "labels.parquet")
    users = sorted(labels["user_id"].unique())[:120]
    now = pd.Timestamp.now(tz="UTC")
    online = store.get_online_features(features=service, entity_rows=[{"user_id": u} for u in users]).to_dict()
    offline = (
        store.get_historical_features(
            entity_df=pd.DataFrame({"user_id": users, "event_timestamp": [now] * len(users)}), features=service
        )
        .to_df()
        .set_index("user_id")
        .loc[users]
    )
    # Feast does not enforce the TTL online (feast-dev/feast#6821); the offline PIT join
    # does. Compare only views whose online row is inside its TTL: that is the contract
    # serving enforces by treating stale views as missing.
    fresh_cols = _fresh_columns(feature_env, users, now)
    compared = 0
    for i, user in enumerate(users):
        for col in offline.columns.drop("event_timestamp"):
            if col not in fresh_cols[user]:
                continue
            on, off = online[col][i], offline.loc[user, col]
            if _missing(on) or _missing(off):
                assert _missing(on) and _missing(off), (user, col, on, off)
            else:
                assert float(on) == pytest.approx(float(off), rel=0, abs=1e-12), (user, col, on, off)
                compared += 1
    assert compared > 500


def _fresh_columns(env: FeatureEnv, users: list[str], now: pd.Timestamp) -> dict[str, set[str]]:
    """Per user, the feature columns whose source row is within its view's TTL at ``now``."""
    store = env.store
    out: dict[str, set[str]] = {u: set() for u in users}
    odfv_inputs_fresh: dict[str, bool] = dict.fromkeys(users, True)
    for fv in store.list_feature_views():
        table = "users" if fv.name == "user_profile" else ("billing" if fv.name == "billing" else "activity")
        src = pd.read_parquet(env.data_dir / f"{table}.parquet")
        latest = src[src.event_timestamp <= now].groupby("user_id")["event_timestamp"].max()
        for u in users:
            ts = latest.get(u)
            fresh = ts is not None and now - ts <= fv.ttl
            if fresh:
                out[u].update(f.name for f in fv.features)
            elif fv.name in ("activity_7d", "activity_30d", "billing"):
                odfv_inputs_fresh[u] = False
    for u in users:
        if odfv_inputs_fresh[u]:
            out[u].update(["minutes_per_login_7d", "login_trend", "payment_failure_rate"])
    return out


def test_unknown_user_reads_as_nulls(feature_env: FeatureEnv) -> None:
    store = feature_env.store
    res = store.get_online_features(
        features=store.get_feature_service("churn_v1"), entity_rows=[{"user_id": "u9999999"}]
    ).to_dict()
    values = [v[0] for k, v in res.items() if k != "user_id"]
    assert values and all(_missing(v) for v in values)


def test_rematerialization_leaves_redis_identical(feature_env: FeatureEnv) -> None:
    client = feature_env.redis.client()
    before = redis_digest(client)
    assert client.dbsize() > 0
    materialize(feature_env.store, feature_env.settings)  # incremental: nothing new
    assert redis_digest(client) == before
    # Re-writing rows that are already there (same window as the first run) changes nothing.
    end = pd.Timestamp.now(tz="UTC").to_pydatetime()
    feature_env.store.materialize(start_date=end - timedelta(days=2), end_date=end)
    assert redis_digest(client) == before


def test_failed_validation_writes_nothing(feature_env: FeatureEnv, tmp_path: Path) -> None:
    client = feature_env.redis.client()
    before = redis_digest(client)
    clear_mark(feature_env.data_dir)
    try:
        with pytest.raises(NotValidatedError, match="make validate"):
            materialize(feature_env.store, feature_env.settings)
        assert redis_digest(client) == before
    finally:
        from feature_repo.pipeline.validate import mark_valid

        mark_valid(feature_env.data_dir)


def test_validating_one_folder_does_not_bless_the_files_the_registry_reads(
    feature_env: FeatureEnv, tmp_path: Path
) -> None:
    """The views read the files `feast apply` recorded; a validated copy elsewhere says nothing about them."""
    import shutil

    from feature_repo.pipeline.validate import mark_valid

    elsewhere = tmp_path / "data"
    shutil.copytree(feature_env.data_dir, elsewhere, ignore=shutil.ignore_patterns("registry*"))
    mark_valid(elsewhere)
    client = feature_env.redis.client()
    before = redis_digest(client)
    settings = feature_env.settings.model_copy(update={"data_dir": elsewhere})
    with pytest.raises(NotValidatedError, match="outside the validated folder"):
        materialize(feature_env.store, settings)
    assert redis_digest(client) == before
