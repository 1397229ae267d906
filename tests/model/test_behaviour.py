"""Behavioural tests of the trained churn model: direction, invariance, minimum functionality.

Perturbations keep the features consistent with each other (Feast's on-demand ratios are
recomputed) and the checks are about populations, not single trees' thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.model.conftest import TrainedModel

pytestmark = pytest.mark.model


def test_model_uses_exactly_the_contract_features_and_no_profile_attributes(trained: TrainedModel) -> None:
    assert tuple(trained.booster.feature_name()) == trained.contract.feature_names
    # Country and acquisition channel are in the profile view but deliberately not in churn_v1.
    assert not {"country", "acquisition_source"} & set(trained.contract.feature_names)


def test_more_failed_payments_raise_the_churn_score(trained: TrainedModel) -> None:
    users = trained.test_X[trained.test_X["successful_payments_90d"].notna()]  # users with billing history
    assert len(users) >= 30
    worse = users.assign(failed_payments_90d=users["failed_payments_90d"] + 2)
    before, after = trained.score(users), trained.score(worse)
    assert after.mean() > before.mean()
    assert (after >= before - 1e-9).mean() >= 0.8


def test_a_recent_login_lowers_the_churn_score(trained: TrainedModel) -> None:
    users = trained.test_X[trained.test_X["days_since_last_login"] >= 3]
    assert len(users) >= 20
    before = trained.score(users)
    after = trained.score(users.assign(days_since_last_login=0.0))
    assert after.mean() < before.mean()
    assert (after <= before + 1e-9).mean() >= 0.8


def test_more_logins_in_the_last_week_lower_the_churn_score(trained: TrainedModel) -> None:
    # Users seen today with a quiet week; give them a full week at their own depth of use
    # (minutes per login unchanged) and carry the extra activity into the 30-day window.
    x = trained.test_X
    users = x[(x["active_days_7d"] <= 3) & (x["days_since_last_login"] == 0) & (x["logins_7d"] > 0)]
    assert len(users) >= 30
    extra_days = 7 - users["active_days_7d"]
    factor = 3.0
    busier = users.assign(
        active_days_7d=7.0,
        logins_7d=users["logins_7d"] * factor,
        video_minutes_7d=users["video_minutes_7d"] * factor,
        quiz_attempts_7d=users["quiz_attempts_7d"] * factor,
        active_days_30d=users["active_days_30d"] + extra_days,
        logins_30d=users["logins_30d"] + users["logins_7d"] * (factor - 1),
        video_minutes_30d=users["video_minutes_30d"] + users["video_minutes_7d"] * (factor - 1),
        quiz_attempts_30d=users["quiz_attempts_30d"] + users["quiz_attempts_7d"] * (factor - 1),
    )
    before, after = trained.score(users), trained.score(busier)
    assert after.mean() < before.mean()
    assert (after <= before + 1e-9).mean() >= 0.6  # trees are not monotone; most users must follow


def test_tiny_noise_barely_moves_the_score(trained: TrainedModel) -> None:
    rng = np.random.default_rng(0)
    users = trained.test_X
    noisy = users.assign(
        video_minutes_7d=users["video_minutes_7d"]
        + rng.uniform(-0.05, 0.05, len(users)).clip(-users["video_minutes_7d"]),
        video_minutes_30d=users["video_minutes_30d"]
        + rng.uniform(-0.05, 0.05, len(users)).clip(-users["video_minutes_30d"]),
    )
    diff = np.abs(trained.score(noisy) - trained.score(users))
    assert np.median(diff) < 1e-3
    assert np.quantile(diff, 0.99) < 0.05


def test_scores_do_not_depend_on_batch_composition_or_order(trained: TrainedModel) -> None:
    users = trained.test_X.head(50)
    batch = trained.score(users)
    reversed_batch = trained.score(users.iloc[::-1])[::-1]
    one_by_one = np.array([trained.score(users.iloc[[i]])[0] for i in range(len(users))])
    np.testing.assert_array_equal(batch, reversed_batch)
    np.testing.assert_allclose(batch, one_by_one, rtol=0, atol=1e-12)


def _template(trained: TrainedModel) -> pd.DataFrame:
    return trained.test_X.median(numeric_only=True).to_frame().T


def test_a_user_gone_for_weeks_scores_high(trained: TrainedModel) -> None:
    gone = _template(trained).assign(
        logins_7d=0.0, video_minutes_7d=0.0, quiz_attempts_7d=0.0, active_days_7d=0.0, days_since_last_login=40.0,
        logins_30d=0.0, video_minutes_30d=0.0, quiz_attempts_30d=0.0, active_days_30d=0.0,
    )  # fmt: skip
    assert trained.score(gone)[0] > 0.5


def test_a_devoted_user_scores_below_the_base_rate(trained: TrainedModel) -> None:
    devoted = _template(trained).assign(
        logins_7d=14.0, video_minutes_7d=300.0, quiz_attempts_7d=6.0, active_days_7d=7.0, days_since_last_login=0.0,
        logins_30d=50.0, video_minutes_30d=1200.0, quiz_attempts_30d=20.0, active_days_30d=28.0,
    )  # fmt: skip
    assert trained.score(devoted)[0] < trained.test_y.mean()


def test_missing_billing_history_is_scored_not_rejected(trained: TrainedModel) -> None:
    users = trained.test_X.head(20).assign(
        successful_payments_90d=np.nan, failed_payments_90d=np.nan, support_tickets_30d=np.nan
    )
    scores = trained.score(users)
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
