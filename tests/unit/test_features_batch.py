"""FeatureBatch: the column view of a batch says what the row view says (no services)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from serving.features import EntityFeatures, FeatureBatch, float_matrix

pytestmark = pytest.mark.unit

NAMES = ("is_paid", "logins_7d", "video_minutes_7d", "login_trend")


def _rows() -> list[EntityFeatures]:
    return [
        EntityFeatures("u0000001", True, [1, 4, 60.5, 1.0], [], []),
        EntityFeatures(
            "u0000002", True, [0, None, math.nan, None], ["logins_7d", "video_minutes_7d", "login_trend"], []
        ),
        EntityFeatures("u0000003", True, [True, 2**53 + 1, -0.0, 0.25], [], ["logins_7d", "video_minutes_7d"]),
        EntityFeatures("u9999999", False, [None] * 4, list(NAMES), []),
    ]


def test_from_rows_keeps_every_row_and_builds_the_masks_the_lists_say() -> None:
    rows = _rows()
    batch = FeatureBatch.from_rows(NAMES, rows)
    assert batch.rows() == rows
    assert batch.found == [True, True, True, False]
    assert batch.missing_mask.tolist() == [[n in r.missing for n in NAMES] for r in rows]
    assert batch.stale_mask.tolist() == [[n in r.stale for n in NAMES] for r in rows]


def test_the_matrix_is_float_of_each_value_with_nan_for_none() -> None:
    rows = _rows()
    matrix = FeatureBatch.from_rows(NAMES, rows).matrix
    # What the per-row code gave the model: float(x), NaN for None; ints past 2**53 round the same way.
    want = [[math.nan if x is None else float(x) for x in r.values] for r in rows]
    assert matrix.dtype == np.float64 and matrix.flags.c_contiguous
    assert np.array_equal(matrix, np.array(want), equal_nan=True)
    assert matrix[2, 1] == float(2**53 + 1) and math.copysign(1.0, matrix[2, 2]) == -1.0


def test_an_empty_batch_or_plan_gives_empty_shapes() -> None:
    assert float_matrix([], 0, 4).shape == (0, 4)
    assert float_matrix([[], []], 2, 0).shape == (2, 0)
    empty = FeatureBatch.from_rows(NAMES, [])
    assert empty.rows() == [] and empty.matrix.shape == (0, 4)
