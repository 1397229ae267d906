"""Time one point-in-time retrieval of the training set (run as its own process for RSS)."""

from __future__ import annotations

import json
import sys
import time

import pandas as pd

from feature_repo.settings import get_feast_settings
from feature_repo.store import open_store


def main(labels_limit: int) -> None:
    """Print rows, seconds for get_historical_features(churn_v1) over the label events."""
    settings = get_feast_settings()
    store = open_store(settings)
    labels = pd.read_parquet(settings.data_dir / "labels.parquet", columns=["user_id", "event_timestamp"])
    if labels_limit:
        labels = labels.head(labels_limit)
    t0 = time.perf_counter()
    df = store.get_historical_features(entity_df=labels, features=store.get_feature_service("churn_v1")).to_df()
    print(json.dumps({"rows": len(df), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
