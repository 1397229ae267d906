"""MLflow: tracking setup, model registration with the contract, promotion and rollback.

Aliases: every new version gets ``challenger``; ``champion`` is what serving loads.
When a version is promoted, the version it replaced is recorded on it in the tag
``skewless.previous_champion``; rollback follows that tag one step back, so repeated
rollbacks walk the promotion history backwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm as lgb
import mlflow
import mlflow.lightgbm
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from feature_repo.contract import TAG_PREFIX, Contract, mismatch
from feature_repo.settings import FeastSettings, get_feast_settings
from training.settings import TrainSettings

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION_TAG = TAG_PREFIX + "previous_champion"
ROLLED_BACK_TAG = TAG_PREFIX + "rolled_back"


class RollbackError(RuntimeError):
    """There is no champion, or no earlier champion to go back to."""


def connect(settings: TrainSettings) -> MlflowClient:
    """Point MLflow at the configured tracking URI and experiment (created on first use)."""
    db = settings.sqlite_path()
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
    # Set both explicitly: a process (or a test session) may have pointed MLflow elsewhere before.
    registry_uri = settings.registry_uri or settings.tracking_uri
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=registry_uri)
    if client.get_experiment_by_name(settings.experiment_name) is None:
        client.create_experiment(settings.experiment_name, artifact_location=settings.resolved_artifact_location())
    mlflow.set_experiment(settings.experiment_name)
    return client


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version behind ``alias``, or None when the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(name: str, version: str) -> tuple[lgb.Booster, Contract]:
    """A registered version's native LightGBM booster and the contract it was trained with."""
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    booster = mlflow.lightgbm.load_model(f"models:/{name}/{version}")
    return booster, Contract.from_tags(mv.tags)


def tag_contract(client: MlflowClient, name: str, version: str, contract: Contract) -> None:
    """Write every contract tag on the model version: serving reads them to fetch features."""
    for key, value in contract.to_tags().items():
        client.set_model_version_tag(name, version, key, value)


def promote(client: MlflowClient, name: str, version: str, previous: str | None) -> None:
    """Move ``champion`` to ``version``, remembering which version it replaces."""
    if previous is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION_TAG, previous)
    client.set_registered_model_alias(name, CHAMPION, version)


@dataclass(frozen=True)
class Rollback:
    """Which version lost ``champion`` and which got it back."""

    from_version: str
    to_version: str


def _unservable_because(tags: dict[str, str], feast_settings: FeastSettings) -> str | None:
    """Why serving would refuse a version with these tags against the live Feast registry; None if it would not."""
    from feature_repo.store import open_store

    try:
        contract = Contract.from_tags(tags)
    except KeyError as e:
        return f"it carries no feature contract ({e})"
    return mismatch(open_store(feast_settings), contract)


def rollback(settings: TrainSettings, feast_settings: FeastSettings | None = None, force: bool = False) -> Rollback:
    """Move ``champion`` back to the version the current champion replaced.

    Raises RollbackError when there is no champion, it never replaced one, or (unless ``force``)
    serving would refuse the earlier version: its feature service is gone or changed. Moving the
    alias then would leave the current version serving (or, after a restart, nothing).
    """
    client = connect(settings)
    name = settings.model_name
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        raise RollbackError(f"model {name!r} has no {CHAMPION} to roll back")
    previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RollbackError(f"{name} v{current.version} is the first champion; there is nothing to roll back to")
    earlier = client.get_model_version(name, previous)  # fails loudly if the version was deleted
    if not force:
        why = _unservable_because(earlier.tags, feast_settings or get_feast_settings())
        if why is not None:
            raise RollbackError(
                f"{name} v{previous} cannot be served any more: {why}. Serving would refuse it and keep "
                f"v{current.version}; retrain, or pass --force to move the alias anyway"
            )
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current.version, ROLLED_BACK_TAG, "true")
    return Rollback(from_version=str(current.version), to_version=previous)
