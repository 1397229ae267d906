"""What an incremental materialization writes, and where, read as Feast would read it.

Two sources give the same picture: ``feature_store.yaml`` and the registry file read directly
(``read_repo``, no Feast import: the CLI's path), or an open ``FeatureStore`` (``read_store``:
any registry Feast can open, SQL included). Either way the result is a ``Plan``: the Redis
target, the registry as a ``RegistryProto``, and a way to record a run in it. ``why_not`` says
what the column-wise writer would not reproduce; such runs go through Feast unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from feature_repo.pipeline.protos import (
    AVAILABLE_ONLINE,
    STATE_UNSPECIFIED,
    FeatureViewProto,
    RegistryProto,
)

if TYPE_CHECKING:
    from feast import FeatureStore

# Feast's own first-run window for a view whose TTL is 0.
FIRST_RUN_WITHOUT_TTL = timedelta(weeks=52)
FILE_SOURCE = "feast.infra.offline_stores.file_source.FileSource"

# feature_store.yaml keys whose meaning is read here; any other key (batch_engine, materialization,
# openlineage, mlflow, feature_server, ...) may change what Feast does, so Feast runs instead.
_TOP_KEYS = {"project", "provider", "registry", "online_store", "offline_store", "entity_key_serialization_version"}
_REGISTRY_KEYS = {"registry_type", "path", "cache_ttl_seconds", "cache_mode"}
_ONLINE_KEYS = {"type", "connection_string", "redis_type", "key_ttl_seconds", "skip_dedup"}


@dataclass(frozen=True)
class Target:
    """The configuration the writer depends on, from feature_store.yaml or Feast's ``RepoConfig``."""

    project: str
    connection_string: str
    online_type: str
    redis_type: str
    key_ttl_seconds: int | None
    skip_dedup: bool
    offline_type: str
    entity_key_serialization_version: int
    feature_view_versioning: bool
    other: str | None = None  # configured behaviour the writer does not reproduce

    def why_not(self) -> str | None:
        """None when the column-wise writer reproduces Feast's writes for this configuration."""
        if self.other:
            return self.other
        if self.online_type != "redis":
            return f"online store is {self.online_type!r}"
        if self.redis_type != "redis":
            return f"redis_type is {self.redis_type!r}"
        if self.key_ttl_seconds:
            return "Redis key TTLs are configured"
        if self.skip_dedup:
            return "skip_dedup is on (Feast then overwrites without comparing timestamps)"
        if self.offline_type != "duckdb":
            return f"offline store is {self.offline_type!r}, not duckdb"
        if self.entity_key_serialization_version != 3:
            return f"entity_key_serialization_version is {self.entity_key_serialization_version}"
        if self.feature_view_versioning:
            return "online feature view versioning is on"
        return None


def most_recent_end(fv: FeatureViewProto) -> datetime | None:
    """Feast's ``most_recent_end_time``: the latest recorded end, UTC."""
    ends = [i.end_time.ToDatetime(tzinfo=UTC) for i in fv.meta.materialization_intervals]
    return max(ends) if ends else None


def start_of(fv: FeatureViewProto, end: datetime, now: datetime, resume: bool = True) -> datetime:
    """Where an incremental run starts: the last recorded end; on a first run (or with
    ``resume=False``, a refill), ttl before ``end``.

    Feast's own first run starts ttl before *now*. Anchored on ``end`` instead, a run is
    repeatable: re-run with the same end (after a crash, say), it covers exactly the same window,
    whatever the clock says. With the default end, now, the two agree.
    """
    last = most_recent_end(fv) if resume else None
    if last is not None:
        return last
    ttl = fv.spec.ttl.ToTimedelta()
    return min(end, now) - (ttl if ttl > timedelta(0) else FIRST_RUN_WITHOUT_TTL)


def online_views(registry: RegistryProto, project: str) -> list[FeatureViewProto]:
    """The views Feast's ``materialize_incremental`` writes: online and enabled, in registry order."""
    return [
        fv for fv in registry.feature_views if fv.spec.project == project and fv.spec.online and not fv.spec.disabled
    ]


def _source_why_not(fv: FeatureViewProto) -> str | None:
    source = fv.spec.batch_source
    uri = source.file_options.uri
    if source.data_source_class_type != FILE_SOURCE or "://" in uri:
        return f"view {fv.spec.name} does not read a local file"
    file_format = source.file_options.file_format.WhichOneof("format")
    if not (file_format == "parquet_format" or (file_format is None and uri.endswith(".parquet"))):
        return f"view {fv.spec.name} does not read Parquet"
    if source.field_mapping or source.file_options.s3_endpoint_override:
        return f"view {fv.spec.name} renames its fields or names an S3 endpoint"
    if not source.timestamp_field:
        return f"view {fv.spec.name} has no timestamp field"
    return None


def sources_outside(registry: RegistryProto, project: str, data_dir: Path) -> list[str]:
    """The local files the project's online views read (as ``feast apply`` recorded them) that are
    not in ``data_dir``: validating ``data_dir`` says nothing about them."""
    root = data_dir.resolve()
    outside = []
    for fv in online_views(registry, project):
        uri = fv.spec.batch_source.file_options.uri
        if uri and "://" not in uri and not Path(uri).parent.resolve().is_relative_to(root):
            outside.append(uri)
    return sorted(set(outside))


def registry_why_not(registry: RegistryProto, project: str) -> str | None:
    """None when the writer reproduces Feast's run over what ``registry`` holds for ``project``."""
    if not any(p.spec.name == project for p in registry.projects):
        return f"project {project!r} is not in the registry yet"
    for sfv in registry.stream_feature_views:
        if sfv.spec.project == project and sfv.spec.online and not sfv.spec.disabled:
            return f"stream feature view {sfv.spec.name} is materialized too"
    for odfv in registry.on_demand_feature_views:
        if odfv.spec.project == project and odfv.spec.write_to_online_store and not odfv.spec.disabled:
            return f"on-demand view {odfv.spec.name} is written online"
    for service in registry.feature_services:
        if service.spec.project == project and service.spec.precompute_online:
            return f"feature service {service.spec.name} precomputes vectors after materialization"
    for fv in online_views(registry, project):
        if fv.spec.source_views or fv.spec.HasField("feature_transformation"):
            return f"view {fv.spec.name} is derived from other views"
        if fv.spec.version not in ("", "latest"):
            return f"view {fv.spec.name} pins version {fv.spec.version}"
        if fv.meta.state not in (STATE_UNSPECIFIED, AVAILABLE_ONLINE):
            return f"view {fv.spec.name} is in lifecycle state {fv.meta.state}"
        if not fv.spec.entity_columns:
            return f"view {fv.spec.name} has no entity columns"
        why = _source_why_not(fv)
        if why:
            return why
    return None


@dataclass
class Plan:
    """The target, the registry as it stands, and how to record a finished view in it."""

    target: Target
    registry: RegistryProto
    record: Callable[[FeatureViewProto, datetime, datetime], None]

    def why_not(self) -> str | None:
        """None when the column-wise writer reproduces Feast's run."""
        return self.target.why_not() or registry_why_not(self.registry, self.target.project)


def _parse_yaml(path: Path) -> Mapping[str, Any]:
    # Read as Feast's load_repo_config reads it: environment variables expanded, then YAML.
    raw = yaml.safe_load(os.path.expandvars(path.read_text()))
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a mapping")
    return raw


def _registry_file(raw: Mapping[str, Any], repo_path: Path) -> Path | None:
    """The local registry file, or None when the registry is anything else."""
    reg = raw.get("registry")
    if isinstance(reg, str):
        reg = {"path": reg}
    if not isinstance(reg, dict) or set(reg) - _REGISTRY_KEYS or reg.get("registry_type", "file") != "file":
        return None
    path = str(reg.get("path", ""))
    if not path or "://" in path:
        return None
    return Path(path) if Path(path).is_absolute() else repo_path / path


def _target_from_yaml(raw: Mapping[str, Any]) -> Target | None:
    online = raw.get("online_store")
    offline = raw.get("offline_store")
    if (
        set(raw) - _TOP_KEYS
        or raw.get("provider", "local") != "local"
        or not isinstance(online, dict)
        or set(online) - _ONLINE_KEYS
        or not isinstance(offline, dict)
        or set(offline) != {"type"}
    ):
        return None
    return Target(
        project=str(raw["project"]),
        connection_string=str(online.get("connection_string", "localhost:6379")),
        online_type=str(online.get("type", "sqlite")),
        redis_type=str(online.get("redis_type", "redis")),
        key_ttl_seconds=online.get("key_ttl_seconds"),
        skip_dedup=bool(online.get("skip_dedup", False)),
        offline_type=str(offline["type"]),
        entity_key_serialization_version=int(raw.get("entity_key_serialization_version", 3)),
        feature_view_versioning=False,
    )


def _write_atomically(path: Path, data: bytes) -> None:
    # Feast rewrites the file in place; a replace means a reader never sees half a registry.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_in_file(
    path: Path, registry: RegistryProto, project: str
) -> Callable[[FeatureViewProto, datetime, datetime], None]:
    """Feast's file-registry ``apply_materialization``, on the protobuf: the same fields, the same order."""

    def record(fv: FeatureViewProto, start: datetime, end: datetime) -> None:
        for idx, stored in enumerate(registry.feature_views):
            if stored.spec.name == fv.spec.name and stored.spec.project == project:
                updated = FeatureViewProto()
                updated.CopyFrom(stored)
                interval = updated.meta.materialization_intervals.add()
                interval.start_time.FromDatetime(start)
                interval.end_time.FromDatetime(end)
                now = datetime.now(UTC)
                updated.meta.last_updated_timestamp.FromDatetime(now)
                updated.meta.state = AVAILABLE_ONLINE
                # Feast deletes the view and appends its new version: the same order here.
                del registry.feature_views[idx]
                registry.feature_views.append(updated)
                registry.version_id = str(uuid.uuid4())
                registry.last_updated.FromDatetime(now)
                _write_atomically(path, registry.SerializeToString())
                return
        raise KeyError(f"feature view {fv.spec.name} is not in {path}")

    return record


def read_repo(repo_path: Path) -> Plan | None:
    """The plan from feature_store.yaml and a local registry file, without importing Feast.

    None when the configuration holds anything only Feast should interpret (then open the store
    and use ``read_store``). The caller sets the variables the YAML expands.
    """
    if os.environ.get("FEAST_CA_CERT_FILE_PATH"):  # Feast points the TLS libraries at it when it opens a store
        return None
    # The file Feast's FeatureStore reads: FEAST_FS_YAML_FILE_PATH when set.
    raw = _parse_yaml(Path(os.environ.get("FEAST_FS_YAML_FILE_PATH") or repo_path / "feature_store.yaml"))
    target = _target_from_yaml(raw)
    path = _registry_file(raw, repo_path)
    if target is None or path is None or not path.exists():
        return None
    registry = RegistryProto.FromString(path.read_bytes())
    return Plan(target, registry, record_in_file(path, registry, target.project))


def read_store(store: FeatureStore) -> Plan:
    """The plan from an open ``FeatureStore``: its configuration and its registry, whatever kind."""
    config = store.config
    online = config.online_store
    redis_type = getattr(online, "redis_type", "redis")
    other = None
    if (
        config.batch_engine_config not in (None, "local")
        or getattr(config, "openlineage_config", None)
        or getattr(config, "mlflow_config", None)
    ):
        other = "a batch engine, lineage events or MLflow logging are configured"
    target = Target(
        project=config.project,
        connection_string=str(getattr(online, "connection_string", "")),
        online_type=str(getattr(online, "type", "?")),
        redis_type=str(getattr(redis_type, "value", redis_type)),
        key_ttl_seconds=getattr(online, "key_ttl_seconds", None),
        skip_dedup=bool(getattr(online, "skip_dedup", False)),
        offline_type=str(getattr(config.offline_store, "type", "?")),
        entity_key_serialization_version=config.entity_key_serialization_version,
        feature_view_versioning=bool(getattr(config.registry, "enable_online_feature_view_versioning", False)),
        other=other,
    )

    def record(fv: FeatureViewProto, start: datetime, end: datetime) -> None:
        view = store.registry.get_feature_view(fv.spec.name, config.project)
        store.registry.apply_materialization(view, config.project, start, end)

    return Plan(target, store.registry.proto(), record)


def parse_connection_string(connection_string: str) -> tuple[str, int, dict[str, Any]]:
    """Host, port and client options from Feast's Redis connection string (``host:port,key=value,...``).

    As Feast reads it: the first ``host:port`` entry, and each option's value JSON-decoded when it can be.
    """
    nodes = [c for c in connection_string.split(",") if "=" not in c]
    params: dict[str, Any] = {}
    for c in connection_string.split(","):
        if "=" in c:
            key, value = c.split("=", 1)
            try:
                params[key] = json.loads(value)
            except json.JSONDecodeError:
                params[key] = value
    host, port = nodes[0].split(":")
    return host, int(port), params
