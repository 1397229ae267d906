"""Time split: past trains, later label times validate and test, ties never straddle a cut."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.split import time_split

pytestmark = pytest.mark.unit


def _times(n: int, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    hours = rng.integers(0, 24 * 60, size=n)
    return pd.Series(pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(hours, unit="h"))


def test_windows_are_disjoint_cover_everything_and_ordered_in_time() -> None:
    t = _times(1000)
    s = time_split(t, 0.6, 0.2)
    assert not (s.train & s.valid).any() and not (s.valid & s.test).any() and not (s.train & s.test).any()
    assert (s.train | s.valid | s.test).all()
    assert t[s.train].max() < t[s.valid].min() <= t[s.valid].max() < t[s.test].min()
    assert s.valid_start == t[s.valid].min() and s.test_start == t[s.test].min()


def test_fractions_are_roughly_respected() -> None:
    s = time_split(_times(5000), 0.6, 0.2)
    assert s.train.mean() == pytest.approx(0.6, abs=0.02)
    assert s.valid.mean() == pytest.approx(0.2, abs=0.02)
    assert s.test.mean() == pytest.approx(0.2, abs=0.02)


def test_rows_sharing_a_timestamp_stay_in_one_window() -> None:
    # 30 rows share one instant spanning the 80% quantile, where the valid/test cut falls.
    base = pd.Timestamp("2025-01-01", tz="UTC")
    t = pd.Series([base + pd.Timedelta(hours=h) for h in range(70)] + [base + pd.Timedelta(hours=100)] * 30)
    s = time_split(t, 0.6, 0.2)
    tied = (t == base + pd.Timedelta(hours=100)).to_numpy()
    windows = {name for name, m in (("train", s.train), ("valid", s.valid), ("test", s.test)) if (m & tied).any()}
    assert len(windows) == 1


def test_gap_drops_the_rows_just_before_each_cut() -> None:
    t = _times(2000)
    s = time_split(t, 0.6, 0.2, gap_days=5)
    gap = pd.Timedelta(days=5)
    assert t[s.train].max() < s.valid_start - gap
    assert t[s.valid].max() < s.test_start - gap
    assert (~(s.train | s.valid | s.test)).sum() > 0  # the embargoed rows are dropped, not moved


def test_input_order_does_not_matter() -> None:
    t = _times(500)
    shuffled = t.sample(frac=1.0, random_state=3)
    a, b = time_split(t, 0.5, 0.25), time_split(shuffled, 0.5, 0.25)
    assert set(t.index[a.test]) == set(shuffled.index[b.test])


@pytest.mark.parametrize(("train", "valid"), [(0.8, 0.2), (0.0, 0.5), (0.5, 0.0), (1.2, 0.1)])
def test_bad_fractions_are_rejected(train: float, valid: float) -> None:
    with pytest.raises(ValueError, match="fractions"):
        time_split(_times(100), train, valid)


def test_a_single_instant_cannot_be_split() -> None:
    t = pd.Series([pd.Timestamp("2025-01-01", tz="UTC")] * 10)
    with pytest.raises(ValueError, match="empty"):
        time_split(t, 0.6, 0.2)
