"""Time-based splits: train on the past, validate and test on later label times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class TimeSplit:
    """Boolean row masks plus the window edges, for the model card."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    valid_start: pd.Timestamp
    test_start: pd.Timestamp


def time_split(times: pd.Series, train_fraction: float, valid_fraction: float, gap_days: float = 0.0) -> TimeSplit:
    """Cut label times at their quantiles into train < valid < test windows.

    Rows that share a timestamp always land in the same window, so no instant is both
    trained on and tested on. ``gap_days`` drops the rows just before each cut; set it to
    the label horizon so no training label looks into the test window's period.
    """
    if not 0 < train_fraction < 1 or not 0 < valid_fraction < 1 or train_fraction + valid_fraction >= 1:
        raise ValueError("fractions must be in (0, 1) and leave room for a test window")
    t = pd.to_datetime(times, utc=True)
    if t.isna().any():
        raise ValueError("label times must not be missing")
    values = t.dt.tz_localize(None).to_numpy()  # naive UTC datetime64, fast to compare
    ordered = np.sort(values)
    n = len(ordered)
    valid_start = pd.Timestamp(ordered[min(int(n * train_fraction), n - 1)]).tz_localize("UTC")
    test_start = pd.Timestamp(ordered[min(int(n * (train_fraction + valid_fraction)), n - 1)]).tz_localize("UTC")
    gap = pd.Timedelta(days=gap_days).to_timedelta64()
    vs, ts = valid_start.tz_localize(None).to_datetime64(), test_start.tz_localize(None).to_datetime64()
    train = values < vs - gap
    valid = (values >= vs) & (values < ts - gap)
    test = values >= ts
    for name, mask in (("train", train), ("valid", valid), ("test", test)):
        if not mask.any():
            raise ValueError(f"the {name} window is empty: too few distinct label times for these fractions/gap")
    return TimeSplit(train=train, valid=valid, test=test, valid_start=valid_start, test_start=test_start)
