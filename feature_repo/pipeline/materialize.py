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
    from redis import Redis

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
    online = _online_store(plan)
    try:
        resume = not _lost_its_data(online, plan)
        why_not = plan.why_not()
        if why_not is None:
            from feature_repo.pipeline import writer

            written = writer.materialize_incremental(plan, end, settings.materialize_chunk_rows, resume)
            log.info("materialized with the column-wise writer: %s rows per view", written)
        else:
            assert store is not None
            log.info("materialized through Feast's own writer: %s", why_not)
            if resume:
                store.materialize_incremental(end_date=end)
            else:  # the first-run window of every view, as the writer's refill
                now = datetime.now(UTC)
                for fv in plans.online_views(plan.registry, plan.target.project):
                    start = plans.start_of(fv, end, now, resume=False)
                    store.materialize(start_date=start, end_date=end, feature_views=[fv.spec.name])
        online.set(_mark(plan), end.isoformat())
    finally:
        online.close()
    return end


def _mark(plan: plans.Plan) -> str:
    """The key that says this online store holds the project's materialized rows (not a Feast key:
    the readers only look at keys made of an entity key and the project)."""
    return f"skewless:materialized:{plan.target.project}"


def _online_store(plan: plans.Plan) -> Redis:
    from redis import Redis

    host, port, params = plans.parse_connection_string(plan.target.connection_string)
    return Redis(host=host, port=port, **params)


def _lost_its_data(online: Redis, plan: plans.Plan) -> bool:
    """The registry records earlier runs but the store has no mark of them: it lost its data
    (restarted without persistence, failed over, flushed). Resuming from the recorded end would
    never write back the entities that have no newer rows, so the run refills instead."""
    recorded = any(plans.most_recent_end(fv) for fv in plans.online_views(plan.registry, plan.target.project))
    if not recorded or online.exists(_mark(plan)):
        return False
    log.warning(
        "the online store holds no mark of the runs the registry records (it lost its data?): "
        "refilling every view's first-run window instead of resuming"
    )
    return True
