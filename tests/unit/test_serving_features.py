"""Feature assembly without services: TTLs, missing values, unknown entities, on-demand re-runs.

The builders at the top (a plan from the real definitions, Feast-shaped response vectors and a
tiny real booster) are shared with the other serving unit tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import lightgbm
import numpy as np
import pytest
from feast.protos.feast.serving.ServingService_pb2 import GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo import definitions as d
from feature_repo.contract import Contract
from serving.features import FeaturePlan, ViewPlan, _odfv_plan, assemble
from serving.model import ServedModel

NOW = 1_800_000_000.0
DAY = 86400.0


def churn_plan() -> FeaturePlan:
    """The churn_v1 plan as FeaturePlan.build would make it, without a registry."""
    refs: list[str] = []
    views: list[ViewPlan] = []
    ttl = {v.name: v.ttl for v in (d.user_profile, d.activity_7d, d.activity_30d, d.billing)}
    for proj in d.churn_v1.feature_view_projections:
        cols = tuple(range(len(refs), len(refs) + len(proj.features)))
        refs += [f"{proj.name}:{f.name}" for f in proj.features]
        if proj.name in ttl:
            views.append(ViewPlan(proj.name, (ttl[proj.name] or timedelta()).total_seconds(), cols))
        else:
            odfv_cols = cols
    names = tuple(r.split(":", 1)[1] for r in refs)
    return FeaturePlan(
        d.churn_v1, "user_id", tuple(refs), names, tuple(views), (_odfv_plan(d.engagement_ratios, odfv_cols),)
    )


def vectors(
    plan: FeaturePlan, rows: list[dict[str, Any]], ages: Sequence[Mapping[str, float | None]]
) -> tuple[list[str], list[Any]]:
    """Feast's response layout: entity column first, then one FeatureVector per feature.

    ``ages[i][view]`` is the age in days of entity i's row in that view; None means no row.
    """
    names = ["user_id", *plan.names]
    view_of = {c: v.name for v in plan.views for c in v.columns}
    out = [GetOnlineFeaturesResponse.FeatureVector()]
    for c, name in enumerate(plan.names):
        vec = GetOnlineFeaturesResponse.FeatureVector()
        for row, age in zip(rows, ages, strict=True):
            x = row.get(name)
            vec.values.append(
                Value() if x is None else Value(double_val=x) if isinstance(x, float) else Value(int64_val=x)
            )
            days = age.get(view_of.get(c, ""))
            vec.event_timestamps.append(Timestamp() if days is None else Timestamp(seconds=int(NOW - days * DAY)))
        out.append(vec)
    return names, out


def tiny_model(plan: FeaturePlan, prior: float | None = 0.3, version: str = "1") -> ServedModel:
    """A real LightGBM booster over the plan's columns, trained on noise in a few milliseconds."""
    rng = np.random.default_rng(0)
    x = rng.random((200, len(plan.names)))
    y = (x[:, 1] > 0.5).astype(int)
    booster = lightgbm.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(x, y, feature_name=list(plan.names)),
        num_boost_round=5,
    )
    contract = Contract("churn_v1", plan.refs, "user_id", "skewless", "f" * 64)
    return ServedModel("churn", version, "champion", booster, contract, plan, {"test_roc_auc": 0.8}, prior)


pytestmark = pytest.mark.unit

FULL = {
    "is_paid": 1, "logins_7d": 4, "video_minutes_7d": 60.0, "quiz_attempts_7d": 2, "active_days_7d": 3,
    "days_since_last_login": 1, "logins_30d": 15, "video_minutes_30d": 200.0, "quiz_attempts_30d": 9,
    "active_days_30d": 12, "courses_enrolled": 2, "tenure_days": 100, "successful_payments_90d": 3,
    "failed_payments_90d": 1, "support_tickets_30d": 0,
    # As Feast computes them online from the values above.
    "minutes_per_login_7d": 15.0, "login_trend": 1.0, "payment_failure_rate": 0.25,
}  # fmt: skip
FRESH = {"user_profile": 10.0, "activity_7d": 0.5, "activity_30d": 0.5, "billing": 5.0}


def _assemble(rows: list[dict[str, Any]], ages: Sequence[Mapping[str, float | None]], policy: str = "missing") -> Any:
    plan = churn_plan()
    names, vecs = vectors(plan, rows, ages)
    ids = [f"u{i:07d}" for i in range(len(rows))]
    return assemble(plan, ids, names, vecs, NOW, policy)  # type: ignore[arg-type]


def test_fresh_row_comes_back_in_contract_order_with_nothing_missing() -> None:
    (row,) = _assemble([FULL], [FRESH])
    assert row.found and row.missing == [] and row.stale == []
    assert row.values == list(FULL.values())


def test_unknown_entity_is_not_found_and_all_missing() -> None:
    (row,) = _assemble([{}], [{}])
    assert not row.found
    assert len(row.missing) == 18


def test_stale_view_reads_as_missing_and_feast_reruns_the_on_demand_view() -> None:
    ages = FRESH | {"activity_7d": 3.0, "activity_30d": 3.0}  # TTL is 2 days
    (row,) = _assemble([FULL], [ages])
    stale = {"logins_7d", "video_minutes_7d", "quiz_attempts_7d", "active_days_7d", "days_since_last_login",
             "logins_30d", "video_minutes_30d", "quiz_attempts_30d", "active_days_30d", "courses_enrolled",
             "tenure_days"}  # fmt: skip
    assert set(row.stale) == stale
    # The ratios of activity become missing as the UDF says; the billing ratio survives.
    assert set(row.missing) == stale | {"minutes_per_login_7d", "login_trend"}
    values = dict(zip(churn_plan().names, row.values, strict=True))
    assert values["payment_failure_rate"] == 0.25 and values["is_paid"] == 1


def test_score_policy_keeps_stale_values_but_still_reports_them() -> None:
    (row,) = _assemble([FULL], [FRESH | {"billing": 40.0}], policy="score")
    assert row.stale == ["successful_payments_90d", "failed_payments_90d", "support_tickets_30d"]
    assert row.missing == []


def test_age_equal_to_ttl_is_not_stale_like_offline_retrieval() -> None:
    (row,) = _assemble([FULL], [FRESH | {"activity_7d": 2.0}])
    assert row.stale == []


def test_a_batch_keeps_each_entity_separate() -> None:
    rows = _assemble([FULL, {}, FULL], [FRESH, {}, FRESH | {"billing": 36.0}])
    assert [r.found for r in rows] == [True, False, True]
    assert rows[0].missing == [] and "payment_failure_rate" in rows[2].missing
