"""Build the training table: label events joined point-in-time to the feature service."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from feast import FeatureStore

from feature_repo.contract import Contract, contract_for

ROW_ID = "__row_id"


@dataclass(frozen=True)
class Dataset:
    """Feature matrix in contract order, plus label, entity key and label time per row."""

    frame: pd.DataFrame  # entity key, event_timestamp, label, then contract.feature_names
    contract: Contract
    label: str
    source: str  # where the labels came from, for the MLflow dataset record

    @property
    def X(self) -> pd.DataFrame:  # noqa: N802 - conventional name for a feature matrix
        return self.frame.loc[:, list(self.contract.feature_names)]

    @property
    def y(self) -> np.ndarray:
        return self.frame[self.label].to_numpy(dtype=np.int64)

    @property
    def times(self) -> pd.Series:
        return self.frame["event_timestamp"]


def load_labels(path: Path, entity_key: str, label: str) -> pd.DataFrame:
    """Label events as an entity dataframe: entity key, event_timestamp (UTC), label."""
    df = pd.read_parquet(path, columns=[entity_key, "event_timestamp", label])
    df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
    if df[label].isna().any():
        raise ValueError(f"{path}: {int(df[label].isna().sum())} label rows have no {label!r}")
    return df


def historical_features(store: FeatureStore, service_name: str, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time features of ``service_name`` for every entity_df row, in entity_df's order.

    Feast reorders rows, so each row carries a private id through the join and we sort
    on it afterwards; the output has exactly one row per input row or this raises.
    """
    entities = entity_df.reset_index(drop=True).assign(**{ROW_ID: np.arange(len(entity_df), dtype=np.int64)})
    service = store.get_feature_service(service_name)
    out = store.get_historical_features(entity_df=entities, features=service, full_feature_names=False).to_df()
    if len(out) != len(entities) or out[ROW_ID].duplicated().any():
        raise RuntimeError(f"Feast returned {len(out)} rows for {len(entities)} label events")
    return out.sort_values(ROW_ID, kind="stable").drop(columns=ROW_ID).reset_index(drop=True)


def build_dataset(store: FeatureStore, service_name: str, labels_path: Path, label: str) -> Dataset:
    """Labels + point-in-time features; features as float64 in the contract's column order."""
    contract = contract_for(store, service_name)
    labels = load_labels(labels_path, contract.entity_key, label)
    feats = historical_features(store, service_name, labels)
    columns = [contract.entity_key, "event_timestamp", label]
    # Missing values (beyond TTL, unknown entity) come back as None/NaN: float64 keeps them NaN
    # for LightGBM, the imputer and the MLflow signature alike.
    x = feats.loc[:, list(contract.feature_names)].apply(pd.to_numeric, errors="raise").astype("float64")
    frame = pd.concat([feats.loc[:, columns], x], axis=1)
    return Dataset(frame=frame, contract=contract, label=label, source=str(labels_path.resolve()))


def content_hash(frame: pd.DataFrame) -> str:
    """sha256 over every row and column name: same table, same hash."""
    h = hashlib.sha256()
    h.update("\x1f".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()
