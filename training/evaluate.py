"""Test-window metrics and the plots logged next to the model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs in jobs and CI without a display

import lightgbm as lgb
import matplotlib.pyplot as plt
import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

# Metrics where a smaller value is better; the gate needs to know the direction.
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})
CALIBRATION_BINS = 10


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), log loss and Brier score of scores ``p``."""
    if len(np.unique(y)) < 2:
        raise ValueError("the test window has one class only; AUCs are undefined")
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
    }


def calibration(y: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    """Mean predicted vs observed rate per quantile bin (equal-count bins are stable on small tests)."""
    observed, predicted = calibration_curve(y, p, n_bins=CALIBRATION_BINS, strategy="quantile")
    return {"predicted": [float(v) for v in predicted], "observed": [float(v) for v in observed]}


def plot_curves(y: np.ndarray, scores: dict[str, np.ndarray], out_dir: Path) -> list[Path]:
    """ROC, precision-recall and calibration plots, one line per model; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test window")
    ax.legend(loc="lower right")
    files.append(_save(fig, out_dir / "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"{name} (AP {average_precision_score(y, p):.3f})")
    ax.axhline(float(np.mean(y)), ls=":", c="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall, test window")
    ax.legend(loc="upper right")
    files.append(_save(fig, out_dir / "pr.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        if np.ptp(p) == 0:  # a constant score is one point, not a curve
            continue
        cal = calibration(y, p)
        ax.plot(cal["predicted"], cal["observed"], marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed churn rate", title="Calibration, test window")
    ax.legend(loc="upper left")
    files.append(_save(fig, out_dir / "calibration.png"))
    return files


def plot_importance(booster: lgb.Booster, out_dir: Path) -> Path:
    """Total gain per feature, largest on top."""
    gain = booster.feature_importance(importance_type="gain")
    names = np.asarray(booster.feature_name())
    order = np.argsort(gain)
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(names) + 1.5))
    ax.barh(names[order], gain[order])
    ax.set(xlabel="total gain", title="LightGBM feature importance")
    return _save(fig, out_dir / "feature_importance.png")


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
