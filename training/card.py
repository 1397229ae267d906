"""A markdown model card, generated from the facts of one training run."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from feature_repo.contract import Contract


@dataclass(frozen=True)
class CardFacts:
    """What the card reports; all of it is also on the MLflow run."""

    model_name: str
    version: str | None
    contract: Contract
    label: str
    windows: dict[str, tuple[pd.Timestamp, pd.Timestamp, int, float]]  # name -> (first, last, rows, positive rate)
    metrics: dict[str, dict[str, float]]  # model name -> metric -> value, test window
    best_iteration: int
    dataset_hash: str
    decision: str
    git_commit: str


def render(f: CardFacts) -> str:
    """The card as markdown."""
    names = sorted({m for scores in f.metrics.values() for m in scores})
    header = "| model | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names)
    rows = "\n".join(
        f"| {model} | " + " | ".join(f"{scores.get(m, float('nan')):.4f}" for m in names) + " |"
        for model, scores in f.metrics.items()
    )
    windows = "\n".join(
        f"| {name} | {a:%Y-%m-%d %H:%M} | {b:%Y-%m-%d %H:%M} | {n:,} | {rate:.3f} |"
        for name, (a, b, n, rate) in f.windows.items()
    )
    features = "\n".join(f"- `{ref}`" for ref in f.contract.features)
    return f"""# Model card: {f.model_name} {"v" + f.version if f.version else "(unregistered)"}

## Intended use
Ranks the platform's users by the probability that they have no activity in the next 30 days
(`{f.label}` = 1), so retention teams can reach out to the riskiest first. It scores one user at a
time from online features, through the Feast feature service `{f.contract.feature_service}`.

Not intended for: decisions about an individual's price, access or eligibility; users outside the
platform; horizons other than 30 days.

## Data
Label events joined point-in-time to the feature service (`get_historical_features`), Feast
project `{f.contract.project}`, entity key `{f.contract.entity_key}`. Split by label time:

| window | first label | last label | rows | churn rate |
|---|---|---|---:|---:|
{windows}

Dataset content hash: `{f.dataset_hash}`. Code commit: `{f.git_commit}`.

## Features (contract, in model column order)
{features}

Schema fingerprint: `{f.contract.fingerprint}`.

## Test-window metrics against baselines
{header}
{rows}

LightGBM stopped at round {f.best_iteration} (early stopping on the validation window).

Promotion: {f.decision}

## Limitations
- Trained and tested on simulated data; real behaviour will differ. Retrain on real labels.
- A user contributes several label events, so the same user can appear in the train and test
  windows; windows are separated in time, not by user.
- Labels look 30 days ahead: the last training labels overlap the start of the test period unless
  `SKEWLESS_GAP_DAYS` is set to the horizon.
- Missing features (no snapshot within the TTL) are passed to LightGBM as missing; a user without any
  recent row is scored from profile and billing alone.
- Calibration is checked on one window only (see `calibration.png`); probabilities drift with the base rate.
"""
