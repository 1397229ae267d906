"""Feast definitions for churn prediction: entity -> sources -> views -> on-demand -> service.

Source paths come from SKEWLESS_DATA_DIR and are made absolute here, because Feast
resolves relative paths against the working directory of whoever runs it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

# Absolute (Feast resolves relative paths against the working directory); the folder is resolved,
# not each file, so a table that is a symlink is recorded inside the folder validation checks.
DATA_DIR = Path(os.environ.get("SKEWLESS_DATA_DIR", Path(__file__).resolve().parent.parent / "data")).resolve()


def _source(table: str) -> FileSource:
    return FileSource(
        name=f"{table}_source",
        path=str(DATA_DIR / f"{table}.parquet"),
        timestamp_field="event_timestamp",
        # A later `created` wins when two rows share an event time (late corrections).
        created_timestamp_column="created",
    )


# --- entity -------------------------------------------------------------------------
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A learner on the platform, e.g. u0000042.",
)

# --- sources ------------------------------------------------------------------------
users_source = _source("users")
activity_source = _source("activity")
billing_source = _source("billing")

# --- feature views ------------------------------------------------------------------
# Profile rows are written at signup and on plan changes: slowly changing, so the TTL is
# long enough to cover any user who is still around.
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=400),
    schema=[
        Field(name="is_paid", dtype=Int64, description="1 on a paid plan, 0 on the free plan."),
        Field(name="country", dtype=String, description="ISO country code at signup."),
        Field(name="acquisition_source", dtype=String, description="organic, paid_ads, referral or partner."),
    ],
    source=users_source,
    description="Slowly changing user profile.",
)

# Activity snapshots land daily. Two days of TTL: a user with no snapshot for two days has
# left the platform's view, and their aggregates must read as missing, not as old numbers.
activity_7d = FeatureView(
    name="activity_7d",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="logins_7d", dtype=Int64, description="Logins in the last 7 days."),
        Field(name="video_minutes_7d", dtype=Float64, description="Minutes of video watched, last 7 days."),
        Field(name="quiz_attempts_7d", dtype=Int64, description="Quiz attempts, last 7 days."),
        Field(name="active_days_7d", dtype=Int64, description="Days with any activity, last 7 days."),
        Field(name="days_since_last_login", dtype=Int64, description="Days since the last active day (cap 365)."),
    ],
    source=activity_source,
    description="Short-window engagement aggregates, snapshotted daily.",
)

activity_30d = FeatureView(
    name="activity_30d",
    entities=[user],
    ttl=timedelta(days=2),
    schema=[
        Field(name="logins_30d", dtype=Int64, description="Logins in the last 30 days."),
        Field(name="video_minutes_30d", dtype=Float64, description="Minutes of video watched, last 30 days."),
        Field(name="quiz_attempts_30d", dtype=Int64, description="Quiz attempts, last 30 days."),
        Field(name="active_days_30d", dtype=Int64, description="Days with any activity, last 30 days."),
        Field(name="courses_enrolled", dtype=Int64, description="Courses enrolled in so far."),
        Field(name="tenure_days", dtype=Int64, description="Days since signup."),
    ],
    source=activity_source,
    description="Long-window engagement aggregates, snapshotted daily.",
)

# Billing snapshots land on billing events (a charge or a support ticket). Paid users are
# charged every 30 days, so 35 days of TTL keeps an active subscriber's row alive.
billing = FeatureView(
    name="billing",
    entities=[user],
    ttl=timedelta(days=35),
    schema=[
        Field(name="successful_payments_90d", dtype=Int64, description="Successful charges, last 90 days."),
        Field(name="failed_payments_90d", dtype=Int64, description="Failed charges, last 90 days."),
        Field(name="support_tickets_30d", dtype=Int64, description="Support tickets, last 30 days."),
    ],
    source=billing_source,
    description="Payments and support, as of the last billing event.",
)


# --- on-demand views ----------------------------------------------------------------
# Computed at request time from the stored aggregates, by Feast, online and offline alike.
# Serving never re-implements these. Missing inputs give a missing output (None), never 0.
@on_demand_feature_view(
    sources=[activity_7d, activity_30d, billing],
    schema=[
        Field(name="minutes_per_login_7d", dtype=Float64),
        Field(name="login_trend", dtype=Float64),
        Field(name="payment_failure_rate", dtype=Float64),
    ],
    mode="python",
    description="Request-time ratios: depth of use, trend of the last week against the month, billing health.",
)
def engagement_ratios(inputs: dict[str, Any]) -> dict[str, Any]:
    """Ratios over the stored aggregates; lists in, lists out.

    Feast ships this function to the registry as source text, so the helper lives inside.
    """

    def _ratio(num: Any, den: Any) -> float | None:
        if num is None or den is None or num != num or den != den:  # x != x: NaN
            return None
        return float(num) / float(den) if den else 0.0

    out: dict[str, list[float | None]] = {"minutes_per_login_7d": [], "login_trend": [], "payment_failure_rate": []}
    for v7, l7, l30, ok, bad in zip(
        inputs["video_minutes_7d"],
        inputs["logins_7d"],
        inputs["logins_30d"],
        inputs["successful_payments_90d"],
        inputs["failed_payments_90d"],
        strict=True,
    ):
        out["minutes_per_login_7d"].append(_ratio(v7, l7))
        # Weekly logins against a quarter of the month's: below 1 means slowing down.
        out["login_trend"].append(_ratio(None if l7 is None else 4 * l7, None if l30 is None else l30 + 1))
        out["payment_failure_rate"].append(_ratio(bad, None if ok is None or bad is None else ok + bad))
    return out


# --- feature services ---------------------------------------------------------------
# The contract between training and serving: the model uses exactly these features, in
# this order. Change it by adding churn_v2, never by editing a service a model depends on.
churn_v1 = FeatureService(
    name="churn_v1",
    features=[
        user_profile[["is_paid"]],
        activity_7d,
        activity_30d,
        billing,
        engagement_ratios,
    ],
    description="Features of the churn model, version 1.",
)
