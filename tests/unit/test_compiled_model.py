"""The compiled scorer: Booster.predict's scores (≤ 1e-12 apart), cached by content, never from an untrusted place."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import lightgbm
import numpy as np
import pytest

from serving import compiled_model as cm

pytestmark = pytest.mark.unit


def _train(objective: str, seed: int, **params: object) -> tuple[lightgbm.Booster, str]:
    """A small model on data with NaN, zeros and a categorical column; its booster and its text."""
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.normal(size=(n, 6)) * 10
    x[:, 3] = rng.integers(0, 6, n)  # categorical
    x[:, 4] = np.where(rng.random(n) < 0.4, 0.0, x[:, 4])
    x[rng.random((n, 6)) < 0.15] = np.nan
    y = (np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 1]) * (x[:, 3] % 2) + rng.normal(size=n) * 5 > 0).astype(float)
    if objective == "regression":
        y = y * 3 + np.nan_to_num(x[:, 2])
    ds = lightgbm.Dataset(x, y, categorical_feature=[3], free_raw_data=False)
    booster = lightgbm.train(
        {"objective": objective, "num_leaves": 15, "verbose": -1, "seed": seed, "min_data_in_leaf": 5, **params},
        ds,
        num_boost_round=40,
    )
    text = booster.model_to_string()
    return lightgbm.Booster(model_str=text), text


@pytest.fixture(scope="module")
def binary() -> tuple[lightgbm.Booster, str]:
    return _train("binary", 1)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compiled") / "cache"


@pytest.fixture(scope="module")
def scorer(binary: tuple[lightgbm.Booster, str], cache: Path) -> cm.Scorer:
    booster, text = binary
    s = cm.compile_scorer(booster, text, cache)
    assert s is not None
    return s


# Stock lleaves sums blocks of trees apart, so the last bits may differ: measured ≤ 1e-15.
CLOSE = 1e-12


def test_scores_equal_the_booster(binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer) -> None:
    booster, _ = binary
    rows = np.vstack([cm.probe_rows(booster, 20_000, seed=7), np.random.default_rng(2).normal(size=(2000, 6)) * 10])
    want = booster.predict(rows, num_threads=1)
    got = scorer.predict(rows)
    assert got.dtype == np.float64
    assert np.abs(got - want).max() <= CLOSE
    assert cm.verify(scorer, booster, rows) <= CLOSE
    assert scorer.max_diff <= CLOSE and scorer.seconds > 0
    # Values in LightGBM's zero band (|v| <= 1e-35) score as 0.0 there; they must here too.
    tiny = np.zeros((1, 6))
    tiny[0, :] = -1e-36
    assert np.abs(scorer.predict(tiny) - booster.predict(tiny, num_threads=1)).max() <= CLOSE


@pytest.mark.parametrize(
    ("objective", "params"),
    [("regression", {"zero_as_missing": True}), ("cross_entropy", {"use_missing": False})],
    ids=["regression-zero-as-missing", "xentropy-no-missing"],
)
def test_other_objectives_and_missing_modes_agree_too(
    tmp_path: Path, objective: str, params: dict[str, object]
) -> None:
    booster, text = _train(objective, 3, **params)
    s = cm.compile_scorer(booster, text, tmp_path / "c")
    assert s is not None
    rows = cm.probe_rows(booster, 5000, seed=11)
    assert np.abs(s.predict(rows) - booster.predict(rows, num_threads=1)).max() <= CLOSE


def test_batch_shapes_and_layouts(binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer) -> None:
    booster, _ = binary
    rows = cm.probe_rows(booster, 100, seed=5)
    assert scorer.predict(rows[:0]).shape == (0,)
    assert np.abs(scorer.predict(rows[:1]) - booster.predict(rows[:1], num_threads=1)).max() <= CLOSE
    # Fortran order, float32 and strided views are copied to C-contiguous float64 first.
    assert np.array_equal(scorer.predict(np.asfortranarray(rows)), scorer.predict(rows))
    assert np.array_equal(scorer.predict(rows[::2]), scorer.predict(np.ascontiguousarray(rows[::2])))
    with pytest.raises(ValueError, match="rows must be"):
        scorer.predict(rows[:, :5])
    with pytest.raises(ValueError, match="rows must be"):
        scorer.predict(rows[0])


def test_concurrent_calls_agree(binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer) -> None:
    booster, _ = binary
    rows = cm.probe_rows(booster, 100, seed=9)
    want = scorer.predict(rows)
    bad: list[int] = []

    def work() -> None:
        for _ in range(200):
            if not np.array_equal(scorer.predict(rows), want):
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_second_load_comes_from_the_cache_without_compiling(
    binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booster, text = binary
    assert scorer.object_path.parent == cache
    assert scorer.object_path.name == f"{cm.cache_key(text)}.o"
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert (scorer.object_path.stat().st_mode & 0o777) == 0o600
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp leftovers

    def no_compile(*_: object) -> None:
        raise AssertionError("compiled again despite the cache")

    monkeypatch.setattr(cm, "_build_in_child", no_compile)
    again = cm.compile_scorer(booster, text, cache)
    assert again is not None and again.key == scorer.key


def test_the_key_follows_the_content(binary: tuple[lightgbm.Booster, str]) -> None:
    _, text = binary
    assert cm.cache_key(text) == cm.cache_key(text)
    assert cm.cache_key(text) != cm.cache_key(text.replace("sigmoid:1", "sigmoid:2", 1))


def test_a_scorer_for_another_model_fails_verification(scorer: cm.Scorer) -> None:
    other, _ = _train("binary", 2)
    with pytest.raises(cm.CompileError, match="differ"):
        cm.verify(scorer, other)


def test_a_cache_dir_others_can_write_is_refused(
    binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer, tmp_path: Path
) -> None:
    booster, text = binary
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert cm.compile_scorer(booster, text, shared) is None
    link = tmp_path / "link"
    link.symlink_to(scorer.object_path.parent, target_is_directory=True)
    assert cm.compile_scorer(booster, text, link) is None


def test_a_cached_object_others_can_write_is_refused(
    binary: tuple[lightgbm.Booster, str], scorer: cm.Scorer, tmp_path: Path
) -> None:
    booster, text = binary
    cache = tmp_path / "c"
    cache.mkdir(mode=0o700)
    planted = cache / scorer.object_path.name
    planted.write_bytes(scorer.object_path.read_bytes())
    os.chmod(planted, 0o666)
    assert cm.compile_scorer(booster, text, cache) is None


def test_what_cannot_compile_leaves_the_booster_serving(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    multi = lightgbm.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lightgbm.Dataset(x, rng.integers(0, 3, 500)),
        num_boost_round=5,
    )
    assert cm.compile_scorer(multi, multi.model_to_string(), tmp_path / "a") is None
    binary, text = _train("binary", 4)
    assert cm.compile_scorer(binary, "not a model", tmp_path / "b") is None
    assert cm.compile_scorer(binary, text[: len(text) // 2], tmp_path / "c") is None  # cut short
