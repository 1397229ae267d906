"""Training end to end on real Feast (private Redis) and a real SQLite MLflow in tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from feature_repo.contract import Contract, contract_for
from tests.conftest import FeatureEnv
from training.pipeline import TrainResult, run_training
from training.registry import CHAMPION, PREVIOUS_CHAMPION_TAG, RollbackError, rollback
from training.settings import TrainSettings

pytestmark = pytest.mark.integration

MODEL = "churn"


@dataclass
class History:
    """A sequence of trainings in one registry, and what happened to the champion."""

    settings: TrainSettings
    client: MlflowClient
    weak: TrainResult  # 1 round, made champion by hand: "yesterday's model"
    strong: TrainResult
    same_again: TrainResult
    worse: TrainResult
    champion_before_rollback: str
    champion_after_rollback: str


@pytest.fixture(scope="module")
def history(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        settings = TrainSettings(model_name=MODEL, max_rounds=200, seed=7)
        assert settings.tracking_uri == uri
        weak_settings = settings.model_copy(update={"max_rounds": 1})
        weak = run_training(weak_settings, feature_env.settings)
        client = MlflowClient(uri)
        # Whether or not one round beats the baselines, make it the champion a better model must replace.
        client.set_registered_model_alias(MODEL, CHAMPION, weak.version)
        strong = run_training(settings, feature_env.settings)
        same_again = run_training(settings, feature_env.settings)
        worse = run_training(weak_settings, feature_env.settings)
        before = client.get_model_version_by_alias(MODEL, CHAMPION).version
        rollback(settings, feature_env.settings)
        after = client.get_model_version_by_alias(MODEL, CHAMPION).version
        yield History(settings, client, weak, strong, same_again, worse, str(before), str(after))


def test_version_carries_the_feature_service_contract(history: History, feature_env: FeatureEnv) -> None:
    tags = history.client.get_model_version(MODEL, history.strong.version).tags
    assert Contract.from_tags(tags) == contract_for(feature_env.store, "churn_v1")
    # The training base rate, for serving's degraded mode.
    assert 0.0 < float(tags["skewless.prior"]) < 1.0


def test_lightgbm_beats_both_baselines_on_roc_auc(history: History) -> None:
    m = history.strong.metrics
    assert m["lightgbm"]["roc_auc"] > m["logreg"]["roc_auc"]
    assert m["lightgbm"]["roc_auc"] > m["prior"]["roc_auc"]
    assert m["prior"]["roc_auc"] == pytest.approx(0.5)


def test_better_model_replaces_the_champion_and_remembers_it(history: History) -> None:
    assert history.strong.promoted, history.strong.reason
    tags = history.client.get_model_version(MODEL, history.strong.version).tags
    assert tags[PREVIOUS_CHAMPION_TAG] == history.weak.version
    # The old champion was scored on the new test window, and lost.
    assert history.strong.metrics["champion"]["roc_auc"] == pytest.approx(history.weak.metrics["lightgbm"]["roc_auc"])


def test_same_seed_same_data_gives_same_metrics(history: History) -> None:
    assert history.same_again.metrics["lightgbm"] == history.strong.metrics["lightgbm"]
    assert history.worse.metrics["lightgbm"] == history.weak.metrics["lightgbm"]


def test_equal_or_worse_model_is_registered_but_not_promoted(history: History) -> None:
    assert not history.same_again.promoted
    assert not history.worse.promoted
    assert "champion" in history.same_again.reason
    assert history.champion_before_rollback == history.strong.version
    aliases = history.client.get_registered_model(MODEL).aliases
    assert str(aliases["challenger"]) == history.worse.version


def test_rollback_moves_champion_back_to_the_previous_one(history: History) -> None:
    assert history.champion_after_rollback == history.weak.version


def test_run_records_metrics_dataset_and_artifacts(history: History) -> None:
    run = history.client.get_run(history.strong.run_id)
    assert {"test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "logreg_test_roc_auc"} <= set(
        run.data.metrics
    )
    assert run.data.tags["feast_project"] == "skewless"
    assert "git_commit" in run.data.tags
    assert {d.dataset.digest for d in run.inputs.dataset_inputs}  # the three windows are recorded
    assert len(run.inputs.dataset_inputs) == 3
    files = {f.path for f in history.client.list_artifacts(run.info.run_id, "plots")}
    assert files == {"plots/roc.png", "plots/pr.png", "plots/calibration.png", "plots/feature_importance.png"}
    card = history.client.download_artifacts(run.info.run_id, "model_card.md")
    text = Path(card).read_text()
    assert "Intended use" in text
    assert "logreg" in text


def test_cli_trains_from_env_and_exits_zero(feature_env: FeatureEnv, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the registry too: the history fixture exported its own
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "SKEWLESS_MODEL_NAME": "cli"}
    proc = subprocess.run(
        [sys.executable, "-m", "training", "train", "--max-rounds", "50"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "registered cli v1" in proc.stdout
    assert (tmp_path / "mlartifacts").is_dir()  # artifacts next to the SQLite file, not in the repo


def test_rollback_cli_explains_when_there_is_nothing_to_go_back_to(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from training.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", history.settings.tracking_uri)
    # The champion is now the first one (v1): it replaced nobody.
    result = CliRunner().invoke(app, ["rollback", "--model-name", MODEL])
    assert result.exit_code == 1
    assert "nothing to roll back to" in result.output


def test_rollback_refuses_a_version_serving_would_refuse_unless_forced(
    history: History, feature_env: FeatureEnv
) -> None:
    client, settings = history.client, history.settings
    strong, weak = history.strong.version, history.weak.version
    fingerprint = client.get_model_version(MODEL, weak).tags["skewless.fingerprint"]
    client.set_registered_model_alias(MODEL, CHAMPION, strong)  # strong replaced weak
    client.set_model_version_tag(MODEL, weak, "skewless.fingerprint", "trained-on-another-schema")
    try:
        with pytest.raises(RollbackError, match=f"v{weak} cannot be served any more: contract mismatch"):
            rollback(settings, feature_env.settings)
        assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == strong  # untouched
        assert rollback(settings, feature_env.settings, force=True).to_version == weak
    finally:
        client.set_model_version_tag(MODEL, weak, "skewless.fingerprint", fingerprint)
        client.set_registered_model_alias(MODEL, CHAMPION, weak)


def test_a_champion_that_cannot_be_scored_keeps_its_alias(
    history: History, feature_env: FeatureEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failure that says nothing about the champion (the offline store, MLflow) must not let the
    # candidate in on the baselines alone: it is registered, not promoted.
    import training.pipeline as pipeline

    def offline_store_down(*args: object) -> None:
        raise OSError("parquet file busy")

    champion = str(history.client.get_model_version_by_alias(MODEL, CHAMPION).version)
    monkeypatch.setattr(pipeline, "_champion_scores", offline_store_down)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", history.settings.tracking_uri)
    result = run_training(history.settings.model_copy(update={"max_rounds": 20}), feature_env.settings)
    assert not result.promoted
    assert "could not be scored (OSError: parquet file busy)" in result.reason
    assert str(history.client.get_model_version_by_alias(MODEL, CHAMPION).version) == champion
