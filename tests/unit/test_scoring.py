"""The single-row fast path scores exactly as Booster.predict, bit for bit."""

from __future__ import annotations

import lightgbm
import numpy as np
import pytest

from serving.scoring import SingleRowScorer

pytestmark = pytest.mark.unit


def _rows(n: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width))
    x[rng.random(x.shape) < 0.25] = np.nan  # missing values take LightGBM's default branches
    return x


@pytest.fixture(scope="module")
def booster() -> lightgbm.Booster:
    x = _rows(2000, 6, 0)
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * np.isnan(x[:, 2]) > 0.3).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1, "deterministic": True}
    trained = lightgbm.train(params, lightgbm.Dataset(x, y), num_boost_round=60)
    return lightgbm.Booster(model_str=trained.model_to_string())  # as serving loads it: from text


def test_scores_equal_booster_predict_bit_for_bit(booster: lightgbm.Booster) -> None:
    scorer = SingleRowScorer(booster)
    x = _rows(500, 6, 1)
    x[0] = np.nan  # a row with nothing known
    x[1] = 0.0
    expected = booster.predict(x, num_threads=1)
    got = np.array([scorer.score(np.ascontiguousarray(r)) for r in x])
    assert np.array_equal(got, expected)


def test_best_iteration_is_respected(booster: lightgbm.Booster) -> None:
    text = booster.model_to_string(num_iteration=-1)
    limited = lightgbm.Booster(model_str=text)
    limited.best_iteration = 20  # as after early stopping: predict() then uses only 20 trees
    x = _rows(50, 6, 2)
    got = np.array([SingleRowScorer(limited).score(np.ascontiguousarray(r)) for r in x])
    assert np.array_equal(got, limited.predict(x, num_threads=1))
    assert not np.array_equal(got, limited.predict(x, num_iteration=-1, num_threads=1))


@pytest.mark.parametrize(
    "row",
    [np.zeros(5), np.zeros(7), np.zeros(6, dtype=np.float32), np.zeros((1, 6)), np.zeros(12)[::2]],
    ids=["short", "long", "float32", "2d", "strided"],
)
def test_rejects_rows_it_cannot_read(booster: lightgbm.Booster, row: np.ndarray) -> None:
    with pytest.raises(ValueError, match="contiguous float64 row of 6"):
        SingleRowScorer(booster).score(row)
