"""The generator: deterministic, typed as DuckDB needs, labels that mean what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from feature_repo.datagen.generate import generate
from feature_repo.datagen.simulate import _label_churn, _window_sum
from feature_repo.tables import TABLES, arrow_schema

pytestmark = pytest.mark.unit
END = pd.Timestamp("2026-06-01", tz="UTC")


def _read(d: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(d / f"{t}.parquet") for t in TABLES}


def test_same_seed_same_files_and_chunking_does_not_matter(tmp_path: Path) -> None:
    generate(tmp_path / "a", users=300, days=60, seed=3, end=END, chunk_users=300, progress=False)
    generate(tmp_path / "b", users=300, days=60, seed=3, end=END, chunk_users=300, progress=False)
    generate(tmp_path / "c", users=300, days=60, seed=4, end=END, chunk_users=300, progress=False)
    a, b, c = _read(tmp_path / "a"), _read(tmp_path / "b"), _read(tmp_path / "c")
    for t in TABLES:
        pd.testing.assert_frame_equal(a[t], b[t])
    assert not a["activity"].equals(c["activity"])


def test_schema_is_microsecond_utc_and_matches_declared_types(tmp_path: Path) -> None:
    generate(tmp_path, users=200, days=60, seed=1, end=END, progress=False)
    for t in TABLES:
        schema = pq.read_schema(tmp_path / f"{t}.parquet")
        assert schema.remove_metadata().equals(arrow_schema(t)), t
        assert str(schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"


def test_labels_are_spread_over_time_with_several_per_user(tmp_path: Path) -> None:
    generate(tmp_path, users=400, days=90, seed=2, end=END, progress=False)
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    per_user = labels.groupby("user_id").size()
    assert per_user.median() >= 3
    assert labels["event_timestamp"].dt.floor("D").nunique() > 30
    # The label horizon must be observable: no label in the last 30 days of data.
    assert labels["event_timestamp"].max() <= END - pd.Timedelta(days=29)
    assert 0.03 < labels["churned"].mean() < 0.5


def test_label_semantics_on_hand_made_activity() -> None:
    active = np.zeros((3, 70), dtype=bool)
    active[0, 10] = True  # user 0: active on day 10 only
    active[1, ::5] = True  # user 1: active every 5 days
    # user 2: never active
    churned = _label_churn(active)
    assert not churned[0, 9]  # day 10 is within d+1..d+30 of day 9
    assert churned[0, 10]  # nothing after day 10
    assert not churned[0, 0]  # day 10 is day 0 + 10
    assert churned[0, 40]
    assert not churned[1, :30].any()
    assert churned[2, :39].all()


def test_window_sum_is_trailing_and_inclusive() -> None:
    daily = np.array([[1, 0, 2, 0, 0, 3, 0, 0, 1]], dtype=float)
    assert _window_sum(daily, 7)[0].tolist() == [1, 1, 3, 3, 3, 6, 6, 5, 6]


def test_rejects_too_short_a_period(tmp_path: Path) -> None:
    import typer

    with pytest.raises(typer.BadParameter):
        generate(tmp_path, users=10, days=20, seed=1, end=END, progress=False)
