"""App factory: `uvicorn serving.app:create_app --factory`. Nothing heavy happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI

from feature_repo.settings import FeastSettings
from observability.logs import setup_logging
from observability.settings import TelemetrySettings
from serving.errors import OrjsonResponse, install_error_handlers
from serving.limits import BodySizeLimit, ConcurrencyLimit, document_limits
from serving.memory import release_free_heap
from serving.metrics import Metrics, RequestTimer
from serving.security import ApiKeyAuth, document_api_key
from serving.settings import ServingSettings
from serving.state import AppState, Clock

log = logging.getLogger(__name__)


def _ping_client(feast_settings: FeastSettings, timeout_s: float) -> aioredis.Redis:
    """An async Redis client for /ready, parsed exactly as Feast parses its connection string."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    nodes, params = RedisOnlineStore._parse_connection_string(feast_settings.feast_connection_string(timeout_s))
    return aioredis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)


async def _warm_up(state: AppState) -> None:
    """One throwaway read before serving: the first read opens the Redis connection and
    builds Feast's on-demand transform, which alone can exceed the request deadline."""
    model = state.holder.current
    if model is None:
        return
    try:
        await state.online.fetch(model.plan, ["__warm_up__"], state.clock())
    except Exception as e:  # a failed warm-up is not fatal; /ready reports Redis
        log.warning("warm-up read failed (the first request may be slow): %s: %s", type(e).__name__, e)


def create_app(
    settings: ServingSettings | None = None,
    feast_settings: FeastSettings | None = None,
    clock: Clock | None = None,
    telemetry: TelemetrySettings | None = None,
) -> FastAPI:
    """Build the API. Settings are validated here, so bad configuration fails at start-up."""
    settings = settings or ServingSettings()
    feast_settings = feast_settings or FeastSettings()
    telemetry = telemetry or TelemetrySettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        # Here, not at import: uvicorn has configured its loggers by now and we take them over.
        # First, so that what the imports below warn about is logged as JSON too.
        setup_logging(telemetry)
        from mlflow import MlflowClient

        from feature_repo.store import open_store
        from serving.features import OnlineFeatures
        from serving.model import ModelHolder
        from serving.reload import Reloader

        deadline_s = settings.request_deadline_ms / 1000
        # One store per process; its Redis socket timeout is the request deadline.
        store = await asyncio.to_thread(open_store, feast_settings, deadline_s)
        client = await asyncio.to_thread(MlflowClient, settings.mlflow_tracking_uri)
        # Compiles wait for the end of start-up: on one core, the compiled model's load and check slowed it.
        holder = ModelHolder(settings.compile_model, settings.compile_cache_dir, defer_compiles=True)
        reloader = Reloader(
            holder, store, client, settings.model_name, settings.model_alias, settings.reload_interval_s, metrics
        )
        state = AppState(
            settings=settings,
            feast_settings=feast_settings,
            store=store,
            online=OnlineFeatures(
                store, deadline_s, settings.batch_deadline_ms / 1000, settings.stale_features, settings.feature_reader
            ),
            holder=holder,
            reloader=reloader,
            metrics=metrics,
            ping=_ping_client(feast_settings, deadline_s),
            clock=clock or time.time,
        )
        app.state.skewless = state
        poller: asyncio.Task[None] | None = None
        try:  # from here on, a failed start-up still closes what it opened
            await store.initialize()
            # The first load is awaited so a started server has a model (or a reason in /ready).
            outcome = await asyncio.to_thread(reloader.poll_once)
            log.info("start-up model load: %s", outcome)
            await _warm_up(state)
            # Start-up objects (Feast, MLflow, pandas, the model) live as long as the process. Frozen,
            # a full garbage collection no longer walks them: unfrozen it took ~140 ms, long enough to
            # stall /health past 50 ms when a Redis fault churned out exceptions.
            # serving.server runs start-up with the collector off (collections walking the growing heap
            # again and again were ~1 s of CPU). Frozen before the collection, too: collecting first
            # walked all ~600k objects for ~0.4 s of CPU to free ~0.4 MB of start-up cycles (measured).
            gc.freeze()
            release_free_heap()  # still returns the pages start-up freed to the OS
            gc.enable()
            holder.start_compiles()
            poller = asyncio.create_task(reloader.run(), name="model-poller")
            log.info(
                "start-up done: %.2f s in the lifespan, %.2f s of CPU since the process started",
                time.perf_counter() - started,
                time.process_time(),
            )
            yield
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            await state.ping.aclose()  # type: ignore[attr-defined]  # stubs predate redis 5
            await state.online.close()
            await store.close()

    from serving.telemetry import fastapi_telemetry, instrument

    app = FastAPI(
        telemetry=fastapi_telemetry(telemetry),
        title="skewless",
        summary="Churn scores from Feast online features, with the model's feature contract enforced.",
        version="1",
        lifespan=lifespan,
        default_response_class=OrjsonResponse,
    )
    from serving.fast_path import BATCH_PATH, PREFIX, PredictFastPath  # here, like the routes: imports the model code
    from serving.routes import health, model, predict

    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(model.router)
    app.include_router(health.router)
    # Added innermost first, so requests meet: timer -> API key -> load shedding -> body cap ->
    # fast path -> app. The timer counts every refusal; callers without the key never take an
    # in-flight slot that keyed callers need; the body is read only once a slot is held.
    hot = next(r for r in predict.router.routes if getattr(r, "path", None) == PREFIX + "{entity_id}")
    batch = next(r for r in predict.router.routes if getattr(r, "path", None) == BATCH_PATH)
    app.add_middleware(PredictFastPath, route=hot, batch_route=batch)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_ms / 1000)
    document_limits(app)
    app.add_middleware(ConcurrencyLimit, max_in_flight=settings.max_in_flight)
    api_key = settings.resolved_api_key()
    if api_key:
        app.add_middleware(ApiKeyAuth, key=api_key)
        document_api_key(app)
    app.add_middleware(RequestTimer, metrics=metrics)
    instrument(app, telemetry)  # last: its middleware (which makes the server span) is outermost of ours
    return app
