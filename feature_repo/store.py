"""Open the Feast store from settings, with the env vars feature_store.yaml expands."""

from __future__ import annotations

import os

from feast import FeatureStore

from feature_repo.settings import FeastSettings


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
    os.environ.update(feast_env(settings, socket_timeout))
    return FeatureStore(repo_path=str(settings.repo_path))
