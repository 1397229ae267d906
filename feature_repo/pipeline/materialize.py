"""Materialize the offline tables into Redis, incrementally, only after validation passed."""

from __future__ import annotations

from datetime import UTC, datetime

from feast import FeatureStore

from feature_repo.pipeline.validate import is_marked_valid
from feature_repo.settings import FeastSettings


class NotValidatedError(RuntimeError):
    """The source files changed since they last passed validation (or never passed)."""


def materialize(store: FeatureStore, settings: FeastSettings, end: datetime | None = None) -> datetime:
    """Write every feature view's latest values up to ``end`` (default: now) to Redis.

    Incremental: each view resumes from where the previous run ended, as recorded in
    the registry. Feast writes a row only when its event time is newer than the stored
    one, so a re-run leaves Redis byte-identical.
    """
    if not is_marked_valid(settings.data_dir):
        raise NotValidatedError(
            f"source tables in {settings.data_dir} have not passed validation; run `make validate` first"
        )
    end = end or datetime.now(UTC)
    store.materialize_incremental(end_date=end)
    return end
