"""One training run end to end: dataset -> split -> fit -> evaluate -> log -> register -> gate."""

from __future__ import annotations

import json
import logging
import subprocess  # nosec B404 - `git rev-parse` with a fixed argument list
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from opentelemetry import trace

from feature_repo.contract import Contract, mismatch
from feature_repo.settings import PROJECT_ROOT, FeastSettings, get_feast_settings
from feature_repo.store import open_store
from observability.tracing import trace_id_hex
from training import card, evaluate, gate, registry
from training.dataset import Dataset, build_dataset, content_hash, historical_features
from training.models import BoosterScorer, LgbmConfig, fit_lgbm, fit_logreg, fit_prior
from training.settings import TrainSettings
from training.split import TimeSplit, time_split

log = logging.getLogger(__name__)

_tracer = trace.get_tracer("skewless.training")

CANDIDATE = "lightgbm"
BASELINES = ("prior", "logreg")


@dataclass
class TrainResult:
    """What a run produced; ``metrics`` maps model name -> test metric -> value."""

    version: str
    promoted: bool
    reason: str
    metrics: dict[str, dict[str, float]]
    run_id: str
    champion_version: str | None = None  # champion after the gate
    windows: dict[str, tuple[pd.Timestamp, pd.Timestamp, int, float]] = field(default_factory=dict)


def git_commit() -> str:
    """The checked-out commit, or "unknown" outside a git checkout or before the first commit."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH is the point
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _windows(ds: Dataset, split: TimeSplit) -> dict[str, tuple[pd.Timestamp, pd.Timestamp, int, float]]:
    out = {}
    for name, mask in (("train", split.train), ("valid", split.valid), ("test", split.test)):
        t = ds.times[mask]
        out[name] = (t.min(), t.max(), int(mask.sum()), float(ds.y[mask].mean()))
    return out


def _schema_witness(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows MLflow's schema inference needs to give ``frame``'s schema.

    MLflow takes a column's type from its dtype or, for object columns, from the Python types of
    its values, and marks a column optional when any value is missing (None, NaN, NA, NaT). The
    first row, each column's first missing value, and for object columns the first value of each
    Python type (missing values have types of their own) show it all of that.
    """
    rows = {0} if len(frame) else set()
    for _, column in frame.items():
        if column.dtype.kind == "O":
            kinds = column.map(type)
            rows.update(np.flatnonzero(~kinds.duplicated().to_numpy()).tolist())
        else:
            missing = column.isna().to_numpy()
            if missing.any():
                rows.add(int(missing.argmax()))
    return frame.iloc[sorted(rows)]


class ChampionUnservableError(Exception):
    """The champion's feature service is gone or changed (``feature_repo.contract.mismatch``):
    serving refuses it, so it no longer competes and the baselines decide."""


def _champion_scores(
    ds: Dataset,
    test: np.ndarray,
    store_features: Callable[[Contract, pd.DataFrame], pd.DataFrame],
    name: str,
    version: str,
) -> tuple[np.ndarray | None, str]:
    """The current champion's scores on this test window, or None and why serving would refuse it
    (no contract tags, no LightGBM model, ``ChampionUnservableError`` from ``store_features``).

    Any other failure (the offline store, MLflow failing) propagates: it says nothing about the
    champion, so it must not let a candidate in unopposed.
    """
    try:
        booster, contract = registry.load_version(name, version)
    except KeyError as e:  # no contract tags: serving refuses it too
        return None, f"champion v{version} cannot be served: no feature contract ({e})"
    except MlflowException as e:
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # MLflow down or failing: says nothing about the champion
            raise
        return None, f"champion v{version} cannot be served: {e}"  # no LightGBM model in it
    if contract == ds.contract:
        X = ds.X[test]  # noqa: N806
    else:
        # The champion uses another service (or another version of this one): fetch its features
        # for the same label events, if the registry can still serve that service unchanged.
        entity = ds.frame.loc[test, [ds.contract.entity_key, "event_timestamp"]]
        try:
            X = store_features(contract, entity).loc[:, list(contract.feature_names)]  # noqa: N806
        except ChampionUnservableError as e:
            return None, f"champion v{version} cannot be served: {e}"
        X = X.apply(pd.to_numeric).astype("float64")  # noqa: N806
    return BoosterScorer(booster).score(X), ""


def run_training(
    settings: TrainSettings,
    feast_settings: FeastSettings | None = None,
    on_step: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, evaluate against baselines, log and register one model version, then gate it.

    ``on_step`` is told the name of each stage as it starts (the CLI draws progress with it).
    """
    step = on_step or (lambda _: None)
    fs = feast_settings or get_feast_settings()

    @contextmanager
    def stage(span_name: str, description: str) -> Iterator[trace.Span]:
        # One span per stage under the run's root span (see training.cli), and a progress line.
        step(description)
        with _tracer.start_as_current_span(span_name) as span:
            yield span

    with stage("historical_retrieval", "retrieving point-in-time features") as span:
        store = open_store(fs)
        labels_path = settings.labels_file or fs.data_dir / "labels.parquet"
        ds = build_dataset(store, settings.feature_service, labels_path, settings.label_column)
        span.set_attributes({"skewless.feature_service": settings.feature_service, "skewless.rows": len(ds.y)})
    split = time_split(ds.times, settings.train_fraction, settings.valid_fraction, settings.gap_days)
    X, y = ds.X, ds.y  # noqa: N806
    dataset_hash = content_hash(ds.frame)

    with stage("fit", "fitting baselines and LightGBM"):
        config = LgbmConfig(
            seed=settings.seed,
            max_rounds=settings.max_rounds,
            early_stopping_rounds=settings.early_stopping_rounds,
            learning_rate=settings.learning_rate,
            num_leaves=settings.num_leaves,
            min_data_in_leaf=settings.min_data_in_leaf,
            num_threads=settings.num_threads,
        )
        scorers = {
            "prior": fit_prior(X[split.train], y[split.train]),
            "logreg": fit_logreg(X[split.train], y[split.train], settings.seed),
        }
        lgbm = fit_lgbm(X[split.train], y[split.train], X[split.valid], y[split.valid], config)

    with stage("evaluate", "evaluating on the test window"):
        X_test, y_test = X[split.test], y[split.test]  # noqa: N806
        scores = {CANDIDATE: lgbm.score(X_test), **{k: s.score(X_test) for k, s in scorers.items()}}
        results = {k: evaluate.metrics(y_test, p) for k, p in scores.items()}

        client = registry.connect(settings)
        champion = registry.version_by_alias(client, settings.model_name, registry.CHAMPION)
        champion_note = blocked = ""
        if champion is not None:
            step(f"scoring champion v{champion.version} on the same test window")

            def fetch(contract: Contract, entity: pd.DataFrame) -> pd.DataFrame:
                # Serving refuses a model whose service is gone or changed; so does the comparison.
                why = mismatch(store, contract)
                if why is not None:
                    raise ChampionUnservableError(why)
                return historical_features(store, contract.feature_service, entity)

            try:
                champ_scores, champion_note = _champion_scores(
                    ds, split.test, fetch, settings.model_name, champion.version
                )
            except Exception as e:  # transient or unknown: keep the champion, still register the candidate
                log.exception("scoring champion v%s failed", champion.version)
                champ_scores = None
                blocked = f"champion v{champion.version} could not be scored ({type(e).__name__}: {e})"
            if champ_scores is not None:
                scores["champion"] = champ_scores
                results["champion"] = evaluate.metrics(y_test, champ_scores)
        decision = gate.decide(
            results[CANDIDATE],
            {k: results[k] for k in BASELINES},
            results.get("champion"),
            settings.gate_metric,
            settings.gate_min_delta,
        )
        if blocked:
            decision = gate.Decision(False, f"{blocked}; the champion stays, train again to compare")
    reason = f"{decision.reason}; {champion_note}" if champion_note else decision.reason

    with stage("register", "logging the run and registering the model") as register_span:
        windows = _windows(ds, split)
        commit = git_commit()
        with mlflow.start_run(run_name=f"{settings.model_name}-{settings.feature_service}") as run:
            mlflow.set_tags(
                {
                    "git_commit": commit,
                    "feast_project": ds.contract.project,
                    "feature_service": ds.contract.feature_service,
                    "dataset_sha256": dataset_hash,
                    # The run's trace in Jaeger: retrieval, fit, evaluate and register spans.
                    "otel.trace_id": trace_id_hex() or "none",
                }
            )
            mlflow.log_params(
                {
                    **{f"lgbm_{k}": v for k, v in config.params().items() if k != "metric"},
                    "max_rounds": settings.max_rounds,
                    "early_stopping_rounds": settings.early_stopping_rounds,
                    "best_iteration": lgbm.booster.current_iteration(),
                    "train_fraction": settings.train_fraction,
                    "valid_fraction": settings.valid_fraction,
                    "gap_days": settings.gap_days,
                    "gate_metric": settings.gate_metric,
                    "label": settings.label_column,
                    "feature_service": settings.feature_service,
                    "valid_start": split.valid_start.isoformat(),
                    "test_start": split.test_start.isoformat(),
                }
            )
            for model, vals in results.items():
                prefix = "test_" if model == CANDIDATE else f"{model}_test_"
                mlflow.log_metrics({prefix + k: v for k, v in vals.items()})
            with warnings.catch_warnings():
                # MLflow registers its local artifact source twice and warns on every path, and
                # hints about integer columns (the label) that never reach the model.
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
                for name, mask in (("training", split.train), ("validation", split.valid), ("testing", split.test)):
                    part = ds.frame[mask].reset_index(drop=True)
                    dataset = from_pandas(
                        part, source=ds.source, targets=ds.label, name=name, digest=content_hash(part)[:16]
                    )
                    # MLflow infers the schema value by value in Python (5-10 s for these three
                    # parts on 100k users); the same inference on a few witness rows gives the same schema. The
                    # property is a functools.cached_property, so seeding its cache is enough.
                    witness = _schema_witness(part)
                    dataset.__dict__["schema"] = from_pandas(witness, source=ds.source, digest="-").schema
                    mlflow.log_input(dataset, context=name)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp)
                plots = evaluate.plot_curves(y_test, scores, out)
                plots.append(evaluate.plot_importance(lgbm.booster, out))
                for p in plots:
                    mlflow.log_artifact(str(p), artifact_path="plots")
                cal = {k: evaluate.calibration(y_test, p) for k, p in scores.items() if np.ptp(p) > 0}
                mlflow.log_dict(cal, "metrics/calibration.json")
                mlflow.log_dict(results, "metrics/test_metrics.json")

            example = X_test.head(5)
            info = mlflow.lightgbm.log_model(
                lgbm.booster,
                name="model",
                signature=infer_signature(example, lgbm.score(example)),
                input_example=example,
                registered_model_name=settings.model_name,
                # Declared, not inferred: inference re-imports the model in subprocesses (~10 s per run).
                pip_requirements=[
                    f"lightgbm=={lgb.__version__}",
                    f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}",
                ],
            )
            version = str(info.registered_model_version)
            registry.tag_contract(client, settings.model_name, version, ds.contract)
            client.set_model_version_tag(settings.model_name, version, "dataset_sha256", dataset_hash)
            # The training base rate: serving's degraded-mode answer when Redis is down.
            prior = float(ds.y[split.train].mean())
            client.set_model_version_tag(settings.model_name, version, "skewless.prior", repr(prior))
            client.set_model_version_tag(settings.model_name, version, "test_metrics", json.dumps(results[CANDIDATE]))
            client.set_registered_model_alias(settings.model_name, registry.CHALLENGER, version)
            if decision.promote:
                registry.promote(client, settings.model_name, version, champion.version if champion else None)

            facts = card.CardFacts(
                model_name=settings.model_name,
                version=version,
                contract=ds.contract,
                label=settings.label_column,
                windows=windows,
                metrics=results,
                best_iteration=lgbm.booster.current_iteration(),
                dataset_hash=dataset_hash,
                decision=("promoted to champion: " if decision.promote else "not promoted: ") + reason,
                git_commit=commit,
            )
            text = card.render(facts)
            mlflow.log_text(text, "model_card.md")
            client.update_model_version(settings.model_name, version, description=text)
            mlflow.set_tags({"promoted": str(decision.promote).lower(), "gate_reason": reason[:5000]})
        register_span.set_attributes(
            {
                "skewless.model.name": settings.model_name,
                "skewless.model.version": version,
                "mlflow.run_id": run.info.run_id,
            }
        )

    champion_after = version if decision.promote else (champion.version if champion else None)
    return TrainResult(
        version=version,
        promoted=decision.promote,
        reason=reason,
        metrics=json.loads(json.dumps(results)),
        run_id=run.info.run_id,
        champion_version=str(champion_after) if champion_after else None,
        windows=windows,
    )
