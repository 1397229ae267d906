"""Promotion gate: beat every baseline and the champion on the same test window, strictly."""

from __future__ import annotations

import pytest

from training.gate import decide

pytestmark = pytest.mark.unit

BASELINES = {"prior": {"roc_auc": 0.5, "log_loss": 0.30}, "logreg": {"roc_auc": 0.78, "log_loss": 0.22}}


def m(auc: float, ll: float = 0.2) -> dict[str, float]:
    return {"roc_auc": auc, "log_loss": ll}


def test_first_model_becomes_champion_when_it_beats_the_baselines() -> None:
    d = decide(m(0.9), BASELINES, None, "roc_auc")
    assert d.promote
    assert "first champion" in d.reason


def test_first_model_that_loses_to_a_baseline_is_not_promoted() -> None:
    d = decide(m(0.7), BASELINES, None, "roc_auc")
    assert not d.promote
    assert "logreg" in d.reason


def test_better_than_champion_and_baselines_is_promoted() -> None:
    assert decide(m(0.91), BASELINES, m(0.90), "roc_auc").promote


def test_worse_than_champion_keeps_the_champion_and_says_so() -> None:
    d = decide(m(0.85), BASELINES, m(0.90), "roc_auc")
    assert not d.promote
    assert "champion" in d.reason and "0.9000" in d.reason


def test_a_tie_with_the_champion_is_not_enough() -> None:
    assert not decide(m(0.9), BASELINES, m(0.9), "roc_auc").promote


def test_beating_the_champion_but_not_a_baseline_is_not_enough() -> None:
    # The champion may have gone stale; a baseline beating the candidate still blocks it.
    d = decide(m(0.77), BASELINES, m(0.60), "roc_auc")
    assert not d.promote
    assert "baseline logreg" in d.reason


def test_min_delta_demands_a_margin() -> None:
    assert not decide(m(0.905), BASELINES, m(0.90), "roc_auc", min_delta=0.01).promote
    assert decide(m(0.915), BASELINES, m(0.90), "roc_auc", min_delta=0.01).promote


def test_lower_is_better_metrics_compare_the_other_way() -> None:
    assert decide(m(0.5, ll=0.15), BASELINES, m(0.5, ll=0.18), "log_loss").promote
    assert not decide(m(0.99, ll=0.25), BASELINES, None, "log_loss").promote


def test_no_baselines_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="baseline"):
        decide(m(0.9), {}, None, "roc_auc")
