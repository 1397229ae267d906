"""Open the Feast store from settings, with the env vars feature_store.yaml expands."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from feature_repo.settings import FeastSettings

if TYPE_CHECKING:  # importing Feast takes seconds; `apply` only needs feast_env before its CLI child
    from feast import FeatureStore


def feast_env(settings: FeastSettings, socket_timeout: float | None = None) -> dict[str, str]:
    """The variables feature_store.yaml and definitions.py read."""
    return {
        "SKEWLESS_FEAST_REGISTRY": settings.feast_registry,
        "SKEWLESS_FEAST_REGISTRY_TYPE": "sql" if "://" in settings.feast_registry else "file",
        "SKEWLESS_FEAST_CONNECTION": settings.feast_connection_string(socket_timeout),
        "SKEWLESS_DATA_DIR": str(settings.data_dir.resolve()),
    }


def open_store(settings: FeastSettings, socket_timeout: float | None = None) -> FeatureStore:
    """A FeatureStore for the repo; the secret reaches Feast only through this process's env."""
    from feast import FeatureStore

    os.environ.update(feast_env(settings, socket_timeout))
    return FeatureStore(repo_path=str(settings.repo_path))
