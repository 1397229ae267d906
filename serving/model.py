"""Load a model version from MLflow in LightGBM's native format, check its contract, hold it.

Only a native LightGBM text model is accepted; a pickled model is refused before any byte of
it is deserialised. The version's contract tags must match the live Feast registry.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightgbm
import numpy as np
from feast import FeatureStore
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from feature_repo.contract import Contract, mismatch
from serving.child import run_python
from serving.compiled_model import Scorer, compile_scorer
from serving.features import FeaturePlan, PlanError
from serving.memory import release_free_heap
from serving.scoring import SingleRowScorer

log = logging.getLogger(__name__)

NATIVE_CLASS = "lightgbm.basic.Booster"
# Where training may leave the positive rate it saw, the fallback score in degraded mode.
PRIOR_TAG = "skewless.prior"
PRIOR_METRICS = ("train_prior", "prior", "train_positive_rate")


class ModelRefusedError(RuntimeError):
    """A version that must not serve: not native, no contract, or a contract the registry disagrees with."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded version with everything a request needs, swapped as a unit."""

    name: str
    version: str
    alias: str
    booster: lightgbm.Booster = field(repr=False)
    contract: Contract
    plan: FeaturePlan = field(repr=False)
    metrics: dict[str, float]
    prior: float | None
    text: str = field(default="", repr=False, compare=False)  # the booster's text model, to compile
    single: SingleRowScorer = field(init=False, repr=False, compare=False)
    # Attached by ModelHolder once compiled and verified; until then LightGBM scores.
    compiled: Scorer | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "single", SingleRowScorer(self.booster))

    def attach(self, scorer: Scorer) -> None:
        """Score with ``scorer`` from now on (``compile_scorer`` verified it against this booster)."""
        # One reference assignment: a request, which reads it once, scores wholly with one or the other.
        object.__setattr__(self, "compiled", scorer)

    @property
    def scorer(self) -> Literal["compiled", "lightgbm"]:
        """Which scorer serves: "compiled" (lleaves) or "lightgbm"."""
        return "lightgbm" if self.compiled is None else "compiled"

    @property
    def ref(self) -> dict[str, str]:
        """The {name, version, alias} block of every answer."""
        return {"name": self.name, "version": self.version, "alias": self.alias}

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Churn probabilities for float64 rows in contract order (NaN = missing)."""
        compiled = self.compiled
        # Every batch size: one row costs the same either way (~20 µs), and a single-entity answer
        # then equals the batch answer to the last bit.
        if compiled is not None:
            return compiled.predict(rows)
        if rows.shape[0] == 1:  # the hot path: one entity by ID
            return np.array([self.single.score(np.ascontiguousarray(rows[0], dtype=np.float64))])
        # One thread: a request scores a handful of rows; OpenMP start-up would cost more than it saves.
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float64)


def resolve_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion:
    """The version an alias points at now."""
    return client.get_model_version_by_alias(name, alias)


def check_contract(store: FeatureStore, contract: Contract) -> FeaturePlan:
    """Compare the model's contract with the registry; the serving plan, or ModelRefusedError saying why."""
    try:
        why = mismatch(store, contract)
    except Exception as e:  # any registry failure means we cannot vouch for the model
        raise ModelRefusedError(f"feature service {contract.feature_service!r} unusable: {e}") from e
    if why is not None:
        raise ModelRefusedError(why)
    try:
        return FeaturePlan.build(store, contract)
    except PlanError as e:
        raise ModelRefusedError(str(e)) from e


def _native_booster(model_dir: Path) -> tuple[lightgbm.Booster, str]:
    """Read MLmodel as YAML and load only a native Booster text file, never unpickle; the booster and its text."""
    from mlflow.models import Model

    mlmodel = Model.load(str(model_dir / "MLmodel"))
    flavor: dict[str, Any] | None = mlmodel.flavors.get("lightgbm")
    if flavor is None:
        raise ModelRefusedError(f"not a LightGBM model (flavors: {sorted(mlmodel.flavors)})")
    model_class = flavor.get("model_class", "")
    data = str(flavor.get("data", ""))
    if model_class != NATIVE_CLASS or not data.endswith((".lgb", ".txt")):
        raise ModelRefusedError(
            f"not LightGBM's native format ({model_class or '?'}, {data or '?'}); refusing to unpickle"
        )
    raw = (model_dir / data).read_bytes()
    # LightGBM's file parser never returns on a NUL byte (4.x: the load hangs forever, and with
    # it start-up or the reload thread), so bytes that are not a text model are refused first.
    if b"\x00" in raw:
        raise ModelRefusedError(f"corrupt model file {data}: not a text model (NUL byte)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelRefusedError(f"corrupt model file {data}: not UTF-8 text ({e.reason})") from e
    _parse_in_child(data, text)
    return lightgbm.Booster(model_str=text), text


# LightGBM's parser is not safe on damaged input: a model cut short crashes the process with
# SIGSEGV. So a throwaway process parses it first; the same text then loads the same way here.
# The child makes the C calls ``Booster(model_str=...)`` makes (load, class count, loaded params),
# in the library this process loaded, through ctypes rather than the lightgbm package: importing
# the package (NumPy, SciPy, pandas) was ~0.8 s of the child's CPU and the parse ~10 ms, and the
# child shares the server's core at start-up (measured: ~0.05 s of CPU this way).
_PARSE_CHECK = """\
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.LGBM_GetLastError.restype = ctypes.c_char_p
def check(ret):
    if ret != 0:
        sys.exit("LightGBMError: " + lib.LGBM_GetLastError().decode(errors="replace"))
handle, n, size = ctypes.c_void_p(), ctypes.c_int(), ctypes.c_int64()
check(lib.LGBM_BoosterLoadModelFromString(sys.stdin.buffer.read(), ctypes.byref(n), ctypes.byref(handle)))
check(lib.LGBM_BoosterGetNumClasses(handle, ctypes.byref(n)))
check(lib.LGBM_BoosterGetLoadedParam(handle, ctypes.c_int64(0), ctypes.byref(size), None))
buf = ctypes.create_string_buffer(size.value)
check(lib.LGBM_BoosterGetLoadedParam(handle, ctypes.c_int64(size.value), ctypes.byref(size), buf))
"""
PARSE_TIMEOUT_S = 60.0


def _lightgbm_library() -> str:
    """Path of the LightGBM shared library this process loaded (the one ``lightgbm.Booster`` calls)."""
    # lightgbm has no public accessor; ctypes keeps the loaded path in ``_name``.
    return str(lightgbm.basic._LIB._name)


def _parse_in_child(name: str, text: str) -> None:
    """ModelRefusedError unless a child process parses ``text`` as a LightGBM model."""
    try:
        why = run_python(_PARSE_CHECK, _lightgbm_library(), stdin=text.encode(), timeout_s=PARSE_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise ModelRefusedError(f"corrupt model file {name}: parsing did not finish in {PARSE_TIMEOUT_S:.0f} s") from e
    if why is not None:
        raise ModelRefusedError(f"corrupt model file {name}: {why}")


def load_version(client: MlflowClient, store: FeatureStore, mv: ModelVersion, alias: str) -> ServedModel:
    """Download, verify and load one version; ModelRefusedError if it must not serve. Blocking."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # defence in depth; we never call a loader
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a server log is no terminal
    label = f"{mv.name} v{mv.version}"
    try:
        contract = Contract.from_tags(dict(mv.tags or {}))
    except (KeyError, ValueError) as e:
        raise ModelRefusedError(f"{label}: {e}") from e
    try:
        plan = check_contract(store, contract)
    except ModelRefusedError as e:
        raise ModelRefusedError(f"{label}: {e}") from e
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="skewless-model-") as tmp:
        try:
            # Resolve the storage location through *this* client: a models:/ URI would be
            # resolved against MLflow's global registry URI, not the one we were given.
            source = client.get_model_version_download_uri(mv.name, mv.version)
            path = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp)
        except Exception as e:  # storage errors come in many types
            raise ModelRefusedError(f"{label}: could not download artifacts: {e}") from e
        try:
            booster, text = _native_booster(Path(path))
        except ModelRefusedError as e:
            raise ModelRefusedError(f"{label}: {e}") from e
        except Exception as e:  # a corrupt file must not take the server down
            raise ModelRefusedError(f"{label}: unreadable model: {e}") from e
    if tuple(booster.feature_name()) != contract.feature_names:
        raise ModelRefusedError(
            f"{label}: booster columns {booster.feature_name()} differ from contract {list(contract.feature_names)}"
        )
    metrics: dict[str, float] = {}
    prior: float | None = None
    if mv.run_id:
        try:
            metrics = dict(client.get_run(mv.run_id).data.metrics)
        except Exception as e:  # metrics are informative, not required
            log.warning("%s: run metrics unavailable: %s", label, e)
    tags = dict(mv.tags or {})
    if PRIOR_TAG in tags:
        prior = float(tags[PRIOR_TAG])
    else:
        prior = next((float(metrics[k]) for k in PRIOR_METRICS if k in metrics), None)
    return ServedModel(mv.name, str(mv.version), alias, booster, contract, plan, metrics, prior, text)


class ModelHolder:
    """The model that serves now. Requests read ``current`` once, so a swap never splits a request."""

    def __init__(
        self, compile_model: bool = False, compile_cache_dir: Path | None = None, *, defer_compiles: bool = False
    ) -> None:
        """With ``compile_model``, each installed version is compiled in the background (compiled_model);
        with ``defer_compiles``, not before ``start_compiles`` (start-up keeps the CPU for itself)."""
        self.compile_model = compile_model
        self.compile_cache_dir = compile_cache_dir
        self.current: ServedModel | None = None
        self.refused: str | None = None  # why the last candidate version did not load
        self.drift: str | None = None  # why the serving model's contract no longer matches the registry
        self._lock = threading.Lock()  # serialises writers; readers need no lock
        self._compiles_deferred = defer_compiles

    def swap(self, model: ServedModel) -> ServedModel | None:
        """Install ``model`` atomically (one reference assignment); return the previous one."""
        with self._lock:
            old, self.current = self.current, model
            self.refused = None
            self.drift = None
            compile_now = not self._compiles_deferred
        if compile_now:
            self._start_compile(model)
        return old

    def start_compiles(self) -> None:
        """End ``defer_compiles``: compile the serving model now, and each version installed from now on."""
        with self._lock:
            if not self._compiles_deferred:
                return
            self._compiles_deferred = False
            model = self.current
        if model is not None:
            self._start_compile(model)

    def _start_compile(self, model: ServedModel) -> None:
        if self.compile_model and model.text:
            # A daemon: the compile's child process is bounded by its timeout, and nothing waits for it.
            threading.Thread(target=self._compile, args=(model,), name=f"compile-v{model.version}", daemon=True).start()

    def _compile(self, model: ServedModel) -> None:
        """Attach a compiled scorer to ``model`` if one can be built and verified; else LightGBM keeps scoring."""
        scorer = compile_scorer(model.booster, model.text, self.compile_cache_dir)
        if scorer is None:
            return  # compile_scorer logged why
        if self.current is not model:
            log.info("compiled scorer for %s v%s not attached: no longer serving", model.name, model.version)
            return
        model.attach(scorer)
        # Logged before the heap release: /v1/model already says "compiled", and the release (a garbage
        # collection and malloc_trim) can take long enough under load for a reader to miss the line.
        log.info(
            "%s v%s: compiled scorer attached (%.1f s to compile or load and verify; max diff from LightGBM %.1e)",
            model.name,
            model.version,
            scorer.seconds,
            scorer.max_diff,
        )
        release_free_heap()  # the check against the booster and the load leave freed heap behind
