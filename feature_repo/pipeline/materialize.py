"""Materialize the offline tables into Redis, incrementally, only after validation passed."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from feature_repo.pipeline import plan as plans
from feature_repo.pipeline.marker import is_marked_valid
from feature_repo.settings import FeastSettings
from feature_repo.store import feast_env, open_store

if TYPE_CHECKING:
    from feast import FeatureStore

log = logging.getLogger(__name__)


class NotValidatedError(RuntimeError):
    """The source files changed since they last passed validation (or never passed)."""


def materialize(store: FeatureStore | None, settings: FeastSettings, end: datetime | None = None) -> datetime:
    """Write every feature view's latest values up to ``end`` (default: now) to Redis.

    Incremental: each view resumes from where the previous run ended, as recorded in the
    registry. A row is written only when its event time is newer than the stored one, so a
    re-run leaves Redis byte-identical. The column-wise writer (``feature_repo.pipeline.writer``)
    writes the bytes Feast's own materializer would; whatever it declines runs through Feast.

    Without ``store``, a local file registry and a configuration the writer reproduces are read
    directly and Feast is never imported. With a ``store`` (or any other registry), the run goes
    through that store's registry, so its cache and the file never disagree.
    """
    if not is_marked_valid(settings.data_dir):
        raise NotValidatedError(
            f"source tables in {settings.data_dir} have not passed validation; run `make validate` first"
        )
    end = end or datetime.now(UTC)
    plan = None
    if store is None:
        os.environ.update(feast_env(settings))  # the variables feature_store.yaml expands, as open_store sets
        plan = plans.read_repo(settings.repo_path)
        if plan is None or plan.why_not():
            store = open_store(settings)
    if store is not None:
        plan = plans.read_store(store)
    assert plan is not None
    outside = plans.sources_outside(plan.registry, plan.target.project, settings.data_dir)
    if outside:
        raise NotValidatedError(
            f"the registry's feature views read {', '.join(outside)}, outside the validated folder "
            f"{settings.data_dir}; run `make apply` with this SKEWLESS_DATA_DIR first"
        )
    why_not = plan.why_not()
    if why_not is None:
        written = _write(plan, end, settings.materialize_chunk_rows)
        log.info("materialized with the column-wise writer: %s rows per view", written)
    else:
        assert store is not None
        log.info("materialized through Feast's own writer: %s", why_not)
        store.materialize_incremental(end_date=end)
    return end


def mark_key(project: str) -> str:
    """The key saying the online store holds what the registry records as materialized for
    ``project`` (not a Feast key: the readers only look at keys made of an entity key and the project)."""
    return f"skewless:materialized:{project}"


def _write(plan: plans.Plan, end: datetime, chunk_rows: int) -> dict[str, int]:
    """The column-wise writer's run, refilling a store that lost its data.

    The registry says how far earlier runs got; only the store can say whether it still holds what
    they wrote. A store that restarted without persistence, failed over or was flushed has lost the
    mark each finished run leaves, and resuming from the recorded end would never write back the
    entities without newer rows: so the run writes every view's first-run window instead (its ttl,
    or 52 weeks without one). A key set for this run, checked at its end, catches a loss during it.
    Only here, where the store is one plain Redis (``Plan.why_not``); Feast's path resumes as Feast does.
    """
    from uuid import uuid4

    from redis import Redis

    from feature_repo.pipeline import writer

    project = plan.target.project
    mark, running, run_id = mark_key(project), f"skewless:materializing:{project}", uuid4().hex
    host, port, params = plans.parse_connection_string(plan.target.connection_string)
    online = Redis(host=host, port=port, **params)
    try:
        recorded = any(plans.most_recent_end(fv) for fv in plans.online_views(plan.registry, project))
        resume = not recorded or bool(online.exists(mark))
        if not resume:
            log.warning(
                "the online store holds no mark of the runs the registry records (it lost its data?): "
                "refilling every view's first-run window instead of resuming"
            )
        online.set(running, run_id)
        written = writer.materialize_incremental(plan, end, chunk_rows, resume)
        if online.get(running) == run_id.encode():
            online.set(mark, end.isoformat())
            online.delete(running)
        else:
            log.warning(
                "the online store lost its data during the run (or another run overlapped); the next refills it"
            )
        return written
    finally:
        online.close()
