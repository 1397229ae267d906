"""Simulate an e-learning platform's users, daily activity, billing and churn labels.

Churn is driven by a latent engagement process per user (an AR(1) random walk with a
per-user drift). The features only reveal it through noisy counts, so a model can learn
a good but not perfect ranking. All arrays are (users, days) for one chunk of users,
which keeps memory bounded no matter how many users are generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

COUNTRIES = np.array(["US", "IN", "BR", "DE", "GB", "FR", "NG", "ID"])
COUNTRY_P = np.array([0.28, 0.22, 0.12, 0.09, 0.09, 0.08, 0.07, 0.05])
SOURCES = np.array(["organic", "paid_ads", "referral", "partner"])
SOURCE_P = np.array([0.45, 0.3, 0.15, 0.1])
SOURCE_ENGAGEMENT = np.array([0.0, -0.35, 0.35, 0.15])

CHURN_HORIZON_DAYS = 30
BILLING_PERIOD_DAYS = 30
LABELS_PER_USER = 4
RECENT_DAYS = 7


@dataclass(frozen=True)
class Chunk:
    """The four source tables for one block of users."""

    users: pd.DataFrame
    activity: pd.DataFrame
    billing: pd.DataFrame
    labels: pd.DataFrame


def _window_sum(daily: np.ndarray, window: int) -> np.ndarray:
    """Trailing sum over `window` days, inclusive of the current day, along axis 1."""
    csum = np.cumsum(daily, axis=1, dtype=np.float64)
    out = csum.copy()
    out[:, window:] = csum[:, window:] - csum[:, :-window]
    return out


def _days_since_last(active: np.ndarray, cap: int) -> np.ndarray:
    """Days since the last active day (0 if active today), capped at `cap`."""
    days = active.shape[1]
    idx = np.where(active, np.arange(days)[None, :], -10_000)
    last = np.maximum.accumulate(idx, axis=1)
    return np.minimum(np.arange(days)[None, :] - last, cap)


def _label_churn(active: np.ndarray) -> np.ndarray:
    """churned[u, d] is True when user u has no active day in d+1 .. d+30.

    A label taken during day d+1 (after the day-d snapshot) therefore asks: "is this
    user active at all in the 30 days starting today?"
    """
    users, days = active.shape
    csum = np.concatenate([np.zeros((users, 1), dtype=np.int64), np.cumsum(active, axis=1)], axis=1)
    end = np.minimum(np.arange(days) + 1 + CHURN_HORIZON_DAYS, days)
    counts = csum[:, end] - csum[:, np.arange(days) + 1]
    return counts == 0


def simulate_chunk(first_user: int, n_users: int, days: int, start: pd.Timestamp, seed: int) -> Chunk:
    """Simulate users ``first_user .. first_user + n_users - 1`` over ``days`` days.

    ``start`` is midnight UTC of day 0. Each chunk has its own RNG stream derived from
    the seed and its first user, so output does not depend on the chunk size.
    """
    rng = np.random.default_rng([seed, first_user])
    u = np.arange(first_user, first_user + n_users)
    user_ids = np.array([f"u{i:07d}" for i in u])

    # Profile. Some users predate the window (negative signup day).
    signup_day = rng.integers(-60, days - 14, size=n_users)
    country = rng.choice(len(COUNTRIES), size=n_users, p=COUNTRY_P)
    source = rng.choice(len(SOURCES), size=n_users, p=SOURCE_P)
    paid_at_signup = rng.random(n_users) < 0.25
    upgrade_day = np.where(
        ~paid_at_signup & (rng.random(n_users) < 0.2),
        signup_day + rng.integers(5, 60, size=n_users),
        np.iinfo(np.int64).max,
    )

    # Latent engagement: AR(1) around a per-user mean, with a slow per-user drift.
    day_idx = np.arange(days)[None, :]
    paid = paid_at_signup[:, None] | (day_idx >= upgrade_day[:, None])
    base = rng.normal(0.4, 0.7, size=n_users) + SOURCE_ENGAGEMENT[source] + 0.3 * paid_at_signup
    drift = rng.normal(-0.015, 0.02, size=n_users)
    payment_risk = rng.beta(1.2, 12, size=n_users)
    shocks = rng.normal(0.0, 0.35, size=(n_users, days))
    engagement = np.empty((n_users, days))
    level = base + rng.normal(0, 0.5, size=n_users)
    for d in range(days):
        age = d - signup_day
        level = 0.92 * level + 0.08 * (base + drift * np.maximum(age, 0)) + shocks[:, d]
        engagement[:, d] = level
    engagement += 0.25 * paid

    # Billing: paid users are charged every 30 days after signup/upgrade; a failed
    # charge lowers engagement for the following weeks (involuntary churn).
    anchor = np.where(paid_at_signup, signup_day, upgrade_day)
    since_anchor = day_idx - anchor[:, None]
    charge_day = paid & (since_anchor >= 0) & (since_anchor % BILLING_PERIOD_DAYS == 0)
    failed = charge_day & (rng.random((n_users, days)) < payment_risk[:, None])
    succeeded = charge_day & ~failed
    failed_recent = _window_sum(failed.astype(np.float64), 21) > 0
    engagement -= 0.9 * failed_recent

    # A user who falls below the threshold for good has churned: no activity after.
    alive_since = day_idx >= signup_day[:, None]
    # Some users leave for reasons the platform never sees (a new job, a finished
    # course elsewhere): a small daily hazard that no feature can predict.
    hazard = 0.008 + 0.008 * (1 - paid)
    # A failed charge also ends some subscriptions outright (involuntary churn).
    # It takes effect the day after, so the failed charge itself is still recorded.
    card_lapse = np.zeros_like(failed)
    card_lapse[:, 1:] = (failed & (rng.random((n_users, days)) < 0.4))[:, :-1]
    quit_today = ((engagement < -1.2) | (rng.random((n_users, days)) < hazard) | card_lapse) & alive_since
    quit = np.maximum.accumulate(quit_today, axis=1)
    alive = alive_since & ~quit

    rate = np.exp(np.clip(engagement, -3, 2.5))
    p_active = 1.0 - np.exp(-0.6 * rate)
    active = alive & (rng.random((n_users, days)) < p_active)
    logins = np.where(active, 1 + rng.poisson(0.8 * rate), 0)
    video = np.where(active, rng.gamma(2.0, 9.0 * rate + 1.0), 0.0).round(1)
    quizzes = np.where(active, rng.poisson(0.5 * rate), 0)
    enrol_events = active & (rng.random((n_users, days)) < 0.02 + 0.02 * (rate > 1))
    courses = 1 + np.cumsum(enrol_events, axis=1)
    tickets = alive & (rng.random((n_users, days)) < 0.01 + 0.04 * failed_recent)
    succeeded &= alive
    failed &= alive

    churned = _label_churn(active)
    since_last = _days_since_last(active, cap=365)

    # Rows: a daily snapshot for each day from signup while the user is still around
    # (up to 30 days after their last activity). Snapshots land at the end of the day.
    last_active = np.where(active.any(axis=1), days - 1 - np.argmax(active[:, ::-1], axis=1), -1)
    last_seen = np.maximum(last_active, signup_day)
    visible = alive_since & (day_idx <= last_seen[:, None] + CHURN_HORIZON_DAYS)
    uu, dd = np.nonzero(visible)
    snap_ts = start + pd.to_timedelta(dd + 1, unit="D")
    delay = pd.to_timedelta(rng.integers(60, 3 * 3600, size=len(dd)), unit="s")

    activity = pd.DataFrame(
        {
            "user_id": user_ids[uu],
            "event_timestamp": snap_ts,
            "created": snap_ts + delay,
            "logins_7d": _window_sum(logins, 7)[uu, dd].astype(np.int64),
            "video_minutes_7d": _window_sum(video, 7)[uu, dd].round(1),
            "quiz_attempts_7d": _window_sum(quizzes, 7)[uu, dd].astype(np.int64),
            "active_days_7d": _window_sum(active, 7)[uu, dd].astype(np.int64),
            "days_since_last_login": since_last[uu, dd].astype(np.int64),
            "logins_30d": _window_sum(logins, 30)[uu, dd].astype(np.int64),
            "video_minutes_30d": _window_sum(video, 30)[uu, dd].round(1),
            "quiz_attempts_30d": _window_sum(quizzes, 30)[uu, dd].astype(np.int64),
            "active_days_30d": _window_sum(active, 30)[uu, dd].astype(np.int64),
            "courses_enrolled": courses[uu, dd].astype(np.int64),
            "tenure_days": (dd - signup_day[uu]).astype(np.int64),
        }
    )

    # Billing snapshots land on days with a billing event (a charge or a ticket).
    billing_event = (succeeded | failed | tickets) & visible
    bu, bd = np.nonzero(billing_event)
    bill_ts = start + pd.to_timedelta(bd + 1, unit="D")
    billing = pd.DataFrame(
        {
            "user_id": user_ids[bu],
            "event_timestamp": bill_ts,
            "created": bill_ts + pd.to_timedelta(rng.integers(60, 3600, size=len(bd)), unit="s"),
            "successful_payments_90d": _window_sum(succeeded, 90)[bu, bd].astype(np.int64),
            "failed_payments_90d": _window_sum(failed, 90)[bu, bd].astype(np.int64),
            "support_tickets_30d": _window_sum(tickets, 30)[bu, bd].astype(np.int64),
        }
    )

    # Profile rows: one at signup, and one more when a free user upgrades.
    upgraded = upgrade_day < days
    prof_user = np.concatenate([np.arange(n_users), np.nonzero(upgraded)[0]])
    prof_day = np.concatenate([signup_day, upgrade_day[upgraded]])
    prof_paid = np.concatenate([paid_at_signup, np.ones(upgraded.sum(), dtype=bool)])
    prof_ts = (
        start
        + pd.to_timedelta(prof_day, unit="D")
        + pd.to_timedelta(rng.integers(0, 86_400, size=len(prof_day)), unit="s")
    )
    users = pd.DataFrame(
        {
            "user_id": user_ids[prof_user],
            "event_timestamp": prof_ts,
            "created": prof_ts,
            "is_paid": prof_paid.astype(np.int64),
            "country": COUNTRIES[country[prof_user]],
            "acquisition_source": SOURCES[source[prof_user]],
        }
    )

    # Labels: several times per user, spread over the days we can observe 30 days past.
    # Only the past decides who gets a label (active within the last week, or newly
    # signed up), the users a retention team would score. Conditioning on future
    # activity would leak the label into the features.
    observable = (
        alive_since
        & (day_idx < days - CHURN_HORIZON_DAYS)
        & ((since_last <= RECENT_DAYS) | ((day_idx - signup_day[:, None]) <= RECENT_DAYS))
    )
    lu, ld = [], []
    counts = observable.sum(axis=1)
    for i in np.nonzero(counts)[0]:
        k = min(LABELS_PER_USER, int(counts[i]))
        picks = rng.choice(np.nonzero(observable[i])[0], size=k, replace=False)
        lu.extend([i] * k)
        ld.extend(sorted(picks))
    lu_a, ld_a = np.asarray(lu, dtype=np.int64), np.asarray(ld, dtype=np.int64)
    # The label time is a moment during the day after the snapshot, as a request would be.
    label_ts = (
        start
        + pd.to_timedelta(ld_a + 1, unit="D")
        + pd.to_timedelta(rng.integers(4 * 3600, 86_400, size=len(ld_a)), unit="s")
    )
    labels = pd.DataFrame(
        {
            "user_id": user_ids[lu_a],
            "event_timestamp": label_ts,
            "churned": churned[lu_a, ld_a].astype(np.int64),
        }
    )
    return Chunk(users=users, activity=activity, billing=billing, labels=labels)
