"""Validation rejects each kind of bad table, saying which column, which rule, how many rows."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_repo.datagen.generate import generate
from feature_repo.pipeline.validate import is_marked_valid, mark_valid, validate_dir
from feature_repo.tables import arrow_schema

pytestmark = pytest.mark.unit
END = pd.Timestamp("2026-06-01", tz="UTC")


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("good")
    generate(d, users=150, days=60, seed=5, end=END, progress=False)
    return d


def _corrupt(
    src: Path, dst: Path, table: str, change: Callable[[pd.DataFrame], pd.DataFrame], typed: bool = True
) -> None:
    import shutil

    shutil.copytree(src, dst)
    df = change(pd.read_parquet(dst / f"{table}.parquet"))
    tbl = pa.Table.from_pandas(df, schema=arrow_schema(table) if typed else None, preserve_index=False)
    pq.write_table(tbl, dst / f"{table}.parquet")


def test_good_data_passes(good_dir: Path) -> None:
    report = validate_dir(good_dir)
    assert report.ok, report.failures
    assert report.rows["activity"] > 0


def _set(col: str, value: object, rows: int = 3) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(df: pd.DataFrame) -> pd.DataFrame:
        df = df.copy()
        df[col] = df[col].astype(object)
        df.loc[df.index[:rows], col] = value
        return df

    return change


@pytest.mark.parametrize(
    ("table", "change", "typed", "column", "rule_part"),
    [
        ("activity", _set("logins_7d", -1), True, "logins_7d", "greater_than_or_equal_to"),
        ("activity", _set("active_days_7d", 9), True, "active_days_7d", "less_than_or_equal_to"),
        ("users", _set("is_paid", 2), True, "is_paid", "isin"),
        ("users", _set("user_id", "bob"), True, "user_id", "str_matches"),
        ("labels", _set("churned", None), False, "churned", "not_nullable"),
        ("billing", _set("event_timestamp", pd.Timestamp("2099-01-01", tz="UTC")), True, "event_timestamp", "future"),
        ("activity", lambda df: df.assign(logins_7d=df["logins_7d"].astype(float) + 0.5), False, "logins_7d", "dtype"),
        ("activity", lambda df: pd.concat([df, df.head(2)]), True, "user_id+event_timestamp+created", "unique key"),
        ("users", lambda df: df.drop(columns=["country"]), False, "country", "column present"),
        (
            "billing",
            lambda df: df.assign(created=df["event_timestamp"] - pd.Timedelta(hours=1)),
            True,
            "(row)",
            "created earlier than event_timestamp",
        ),
    ],
)
def test_each_kind_of_bad_table_is_rejected_with_a_clear_failure(
    good_dir: Path,
    tmp_path: Path,
    table: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    typed: bool,
    column: str,
    rule_part: str,
) -> None:
    bad = tmp_path / "bad"
    _corrupt(good_dir, bad, table, change, typed)
    report = validate_dir(bad)
    assert not report.ok
    hits = [f for f in report.failures if f.table == table and f.column == column and rule_part in f.rule]
    assert hits, [(f.table, f.column, f.rule) for f in report.failures]
    assert hits[0].rows > 0
    assert hits[0].examples


def test_marker_tracks_file_changes(good_dir: Path, tmp_path: Path) -> None:
    import shutil

    d = tmp_path / "m"
    shutil.copytree(good_dir, d)
    assert not is_marked_valid(d)
    mark_valid(d)
    assert is_marked_valid(d)
    df = pd.read_parquet(d / "labels.parquet").head(10)
    pq.write_table(pa.Table.from_pandas(df, schema=arrow_schema("labels"), preserve_index=False), d / "labels.parquet")
    assert not is_marked_valid(d)
