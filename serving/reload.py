"""Hot reload: poll the alias, load a new version off the event loop, check it, swap atomically."""

from __future__ import annotations

import asyncio
import logging

from feast import FeatureStore
from mlflow import MlflowClient

from feature_repo.contract import Contract
from serving.metrics import Metrics
from serving.model import ModelHolder, ModelRefusedError, check_contract, load_version, resolve_alias

log = logging.getLogger(__name__)


class Reloader:
    """Keeps ``holder`` on the version ``name@alias`` points at; a bad version never replaces a good one."""

    def __init__(
        self,
        holder: ModelHolder,
        store: FeatureStore,
        client: MlflowClient,
        name: str,
        alias: str,
        interval_s: float,
        metrics: Metrics,
    ) -> None:
        self.holder = holder
        self.store = store
        self.client = client
        self.name = name
        self.alias = alias
        self.interval_s = interval_s
        self.metrics = metrics

    def poll_once(self) -> str:
        """One check; blocking (run it in a thread). Returns the outcome, also counted in metrics."""
        outcome = self._poll()
        self.metrics.reloads.labels(outcome).inc()
        return outcome

    def _poll(self) -> str:
        holder = self.holder
        try:
            # The registry cache never expires on its own (cache_ttl_seconds: 0); refresh it here,
            # off the request path, so a changed service is noticed within one interval.
            self.store.refresh_registry()
            mv = resolve_alias(self.client, self.name, self.alias)
        except Exception as e:  # MLflow/registry down: keep serving what we have
            self._refuse(f"cannot resolve {self.name}@{self.alias}: {type(e).__name__}: {e}")
            return "error"
        current = holder.current
        if current is not None and current.version == str(mv.version):
            self._recheck(current.contract)
            return "unchanged"
        try:
            model = load_version(self.client, self.store, mv, self.alias)
        except ModelRefusedError as e:
            self._refuse(f"{self.name}@{self.alias} -> v{mv.version} refused: {e}")
            return "refused"
        except Exception as e:  # whatever broke, the old model keeps serving
            log.exception("loading %s v%s failed", self.name, mv.version)
            self._refuse(f"{self.name}@{self.alias} -> v{mv.version} failed to load: {type(e).__name__}: {e}")
            return "error"
        old = holder.swap(model)
        self.metrics.set_model(model.name, model.version, model.alias)
        log.info(
            "serving %s v%s (%s) [was %s]", model.name, model.version, model.alias, old.version if old else "nothing"
        )
        return "swapped"

    def _refuse(self, reason: str) -> None:
        if reason != self.holder.refused:  # log a refusal once, not every poll
            log.warning("%s; %s", reason, "previous model keeps serving" if self.holder.current else "no model")
        self.holder.refused = reason

    def _recheck(self, contract: Contract) -> None:
        try:
            check_contract(self.store, contract)
        except ModelRefusedError as e:
            if self.holder.drift != str(e):
                log.error("serving model no longer matches the registry: %s", e)
            self.holder.drift = str(e)
        else:
            self.holder.drift = None
            self.holder.refused = None

    async def run(self) -> None:
        """Poll forever; cancelled at shutdown."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.poll_once)
            except Exception:  # a poller that dies silently would freeze the model forever
                log.exception("model poll crashed; retrying next interval")
