"""The fast paths of materialization and training logging give exactly what the slow ones give."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow.data.pandas_dataset import from_pandas

from feature_repo.pipeline.writer import _timestamps, _timestamps_via_datetime
from training.pipeline import _schema_witness

pytestmark = pytest.mark.unit

# Microsecond values around the epoch, with repeats, sub-second parts and a pre-1970 instant.
MICROS = [0, 1, 999_999, 1_000_000, 1_767_323_045_678_901, 1_767_323_045_678_901, -1_500_000, 86_400_000_000]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin"])
def test_timestamps_from_integers_match_feasts_datetime_steps(unit: str, tz: str | None) -> None:
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    # The same instants in each unit; nanoseconds get a sub-microsecond part Feast truncates.
    raw = [m * per_second // 1_000_000 + (789 if unit == "ns" else 0) for m in MICROS]
    column = pa.array(raw, type=pa.timestamp(unit, tz=tz))

    def per_row(result: tuple[pa.Array, np.ndarray]) -> tuple[list[bytes], list[int]]:
        serialized, nanos = result
        return serialized.to_pylist(), nanos.tolist()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns when Feast's path drops nanoseconds
        assert per_row(_timestamps(column)) == per_row(_timestamps_via_datetime(column))


def _schema(frame: pd.DataFrame) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return repr(from_pandas(frame, source="/tmp/labels.parquet", digest="-").schema)


@pytest.mark.parametrize(
    "change",
    [
        lambda df: df,
        lambda df: df.assign(f=[1.0, np.nan, 3.0, np.nan, 5.0, 6.0]),
        lambda df: df.assign(k=["a", "b", None, "d", "e", "f"]),
        lambda df: df.assign(k=["a", "b", 3, "d", "e", "f"]),
        lambda df: df.assign(t=pd.Series([pd.Timestamp("2026-01-01", tz="UTC")] * 5 + [pd.NaT])),
        lambda df: df.assign(i=pd.array([1, None, 3, 4, 5, 6], dtype="Int64")),
        lambda df: df.iloc[:0],
    ],
)
def test_schema_from_witness_rows_equals_mlflows_full_inference(change: object) -> None:
    base = pd.DataFrame(
        {
            "k": list("abcdef"),
            "t": pd.date_range("2026-01-01", periods=6, tz="UTC"),
            "y": np.arange(6, dtype=np.int64),
            "f": np.linspace(0, 1, 6),
            "i": pd.array(range(6), dtype="Int64"),
        }
    )
    frame = change(base)  # type: ignore[operator]
    assert _schema(_schema_witness(frame)) == _schema(frame)
