"""An optional compiled scorer: the served LightGBM text model compiled to native code by lleaves.

Why: ``Booster.predict`` costs ~22 µs a row (100 rows ≈ 2.2 ms); the compiled forest ≈ 1.7 µs a row.
It scores only once ``verify`` has shown it within ``TOLERANCE`` of the booster; until then, or if
anything fails, serving keeps the booster. ``compile_scorer`` never raises: it returns None.

How: the compile (LLVM, ~20 s of CPU and ~120 MiB for a 400-tree model) runs in a child process
at low priority, so the server keeps serving meanwhile; the child writes a native object file and
exits, and the server only maps that object (~20 ms). lleaves reads the LightGBM *text* model
itself (no pickle anywhere). Its forest sums blocks of trees apart, so a score may differ from
LightGBM's in the last bits (measured ≤ 1e-15); that is well within the skew test's 1e-9.

The object-file cache is native code the server executes, so:
- it lives in a directory this process creates 0700 and refuses to use unless it is ours, not a
  symlink and not group/world writable (default ``$TMPDIR/skewless-compiled-<uid>``);
- a file's name is the SHA-256 of the model text and everything that shapes the machine code
  (lleaves, llvmlite, CPU, options), so another model or machine never reuses it; files are
  written 0600 under a temporary name and renamed into place;
- a loaded object must still pass ``verify`` against the booster before it scores anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import math
import os
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np

from serving.child import run_python

log = logging.getLogger(__name__)

TOLERANCE = 1e-9  # the skew test's bound between served and offline scores
FBLOCKSIZE = 34  # lleaves' default: trees per pass over the rows
COMPILE_TIMEOUT_S = 600.0
VERIFY_ROWS = 4096
_DOUBLE = ctypes.c_double
# LightGBM's kZeroThreshold (1e-35f). Its dense-row reader keeps a value only if |v| > this or NaN,
# so a value in that band scores as 0.0 there (a split at exactly -kZeroThreshold sends it right);
# lleaves compares the raw value. Mapping the band to 0.0 first makes the two agree.
K_ZERO_THRESHOLD = float(np.float32(1e-35))


class CompileError(RuntimeError):
    """The model could not be compiled, loaded or shown equal to the booster."""


@dataclass(frozen=True)
class Scorer:
    """A compiled forest: ``predict`` gives the booster's float64 scores (within ``TOLERANCE``)."""

    key: str
    num_feature: int
    object_path: Path
    # The lleaves model owns the LLVM execution engine: the machine code lives as long as it does.
    _model: Any = field(repr=False)
    _entry: Any = field(repr=False)
    max_diff: float = math.inf  # from ``verify``; inf until verified
    seconds: float = 0.0  # compile (or cache load) and verification time

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Scores for float64 rows in contract order (NaN = missing). Thread-safe; releases the GIL."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.num_feature:
            raise ValueError(f"rows must be (n, {self.num_feature}), got {rows.shape}")
        # A new C-contiguous array: the caller's rows are never modified.
        rows = np.ascontiguousarray(np.where(np.abs(rows) <= K_ZERO_THRESHOLD, 0.0, rows))
        n = rows.shape[0]
        if n >= 2**31 - 1:  # the entry point takes int32 indices
            raise ValueError("too many rows for one call")
        out = np.empty(n, dtype=np.float64)
        if n:
            # Straight to the compiled function: lleaves' own predict adds ~5-15 µs of Python per call.
            # The arrays go as ctypes arrays over their buffers (C calls only; a ctypes array passes
            # where a double* is expected): ``ndarray.ctypes.data_as`` is five Python calls an array,
            # ~7 µs for the two against ~2.5 µs.
            rows_p = (_DOUBLE * rows.size).from_buffer(rows)  # type: ignore[arg-type]  # ndarray is a buffer
            out_p = (_DOUBLE * n).from_buffer(out)
            self._entry(rows_p, out_p, 0, n)
        return out


def compile_scorer(
    booster: lightgbm.Booster, model_text: str, cache_dir: Path | None = None, *, timeout_s: float = COMPILE_TIMEOUT_S
) -> Scorer | None:
    """A verified scorer for ``model_text`` (the text ``booster`` was loaded from), or None.

    Blocks for as long as a compile takes (~20 s; milliseconds from the cache): call it from a
    background thread and keep scoring with the booster until it returns.
    """
    started = time.perf_counter()
    try:
        scorer = load_or_build(model_text, cache_dir or default_cache_dir(), timeout_s=timeout_s)
        diff = verify(scorer, booster)
    except Exception as e:  # the booster keeps serving whatever went wrong here
        log.warning("compiled scorer unavailable, serving with LightGBM: %s", e)
        return None
    return replace(scorer, max_diff=diff, seconds=time.perf_counter() - started)


def verify(scorer: Scorer, booster: lightgbm.Booster, rows: np.ndarray | None = None) -> float:
    """Max abs difference from ``booster.predict`` on ``rows`` (default ``probe_rows``); CompileError if > TOLERANCE."""
    if scorer.num_feature != booster.num_feature():
        raise CompileError(f"compiled model has {scorer.num_feature} features, booster {booster.num_feature()}")
    rows = probe_rows(booster, VERIFY_ROWS) if rows is None else np.ascontiguousarray(rows, dtype=np.float64)
    want = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    got = scorer.predict(rows)
    # NaN in the same places counts as equal; NaN against a number is infinitely far.
    diff = np.where(np.isnan(want) & np.isnan(got), 0.0, np.abs(want - got))
    worst = float(np.nan_to_num(diff, nan=math.inf).max()) if diff.size else 0.0
    if not worst <= TOLERANCE:
        raise CompileError(f"compiled scores differ from the booster's by up to {worst:g} (allowed {TOLERANCE:g})")
    return worst


def probe_rows(booster: lightgbm.Booster, n: int, seed: int = 0) -> np.ndarray:
    """Rows that exercise every split: values on and beside thresholds, zeros, NaN, out of range."""
    rng = np.random.default_rng(seed)
    nf = booster.num_feature()
    ranges, thresholds = _split_values(booster.model_to_string(), nf)
    rows = np.empty((n, nf))
    for j, ((lo, hi), t) in enumerate(zip(ranges, thresholds, strict=True)):
        at = np.array(t or [0.0])[rng.integers(0, max(1, len(t)), n)]
        uniform = rng.uniform(lo, hi, n)
        odd = [0.0, -0.0, 1e-36, lo - 1.0, hi * 10 + 1, np.nan]  # 1e-36: inside kZeroThreshold
        candidates = [uniform, np.round(uniform), at, np.nextafter(at, np.inf), np.nextafter(at, -np.inf)]
        candidates += [np.full(n, v) for v in odd]
        p = np.array([0.2, 0.2, 0.15, 0.1, 0.1, 0.03, 0.01, 0.01, 0.01, 0.04, 0.15])
        rows[:, j] = np.stack(candidates)[rng.choice(len(candidates), size=n, p=p / p.sum()), np.arange(n)]
    # Whole-row patterns serving produces: an entity with nothing online, one missing a view.
    rows[: max(1, n // 50)] = np.nan
    rows[n // 50 : n // 25, : nf // 2] = np.nan
    return rows


def _split_values(text: str, nf: int) -> tuple[list[tuple[float, float]], list[list[float]]]:
    """Per feature: its range and the values splits test, from the text model (dump_model's JSON is ~25x slower)."""
    ranges = [(0.0, 1.0)] * nf
    values: list[list[float]] = [[] for _ in range(nf)]
    split_feature: list[int] = []
    thresholds: list[str] = []
    for line in text.splitlines():
        key, _, val = line.partition("=")
        if key == "feature_infos":
            for j, info in enumerate(val.split()[:nf]):
                if info.startswith("["):  # numerical: [min:max]
                    lo, _, hi = info[1:-1].partition(":")
                    ranges[j] = (float(lo), float(hi))
                elif info != "none":  # categorical: the categories seen, 1:3:7
                    values[j] = [float(c) for c in info.split(":")]
                    ranges[j] = (min(values[j]), max(values[j]))
        elif key == "split_feature":
            split_feature = [int(v) for v in val.split()]
        elif key == "threshold":
            thresholds = val.split()
        elif key == "decision_type":
            for f, thr, dt in zip(split_feature, thresholds, val.split(), strict=False):
                if not int(dt) & 1:  # categorical thresholds are bitset indices, not values
                    values[f].append(float(thr))
        elif line == "end of trees":
            break
    ranges = [r if all(map(math.isfinite, r)) else (-1e6, 1e6) for r in ranges]
    return ranges, values


# ---- the cache ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Per-user directory under the temp dir (in the image: /tmp, per container)."""
    return Path(tempfile.gettempdir()) / f"skewless-compiled-{os.getuid()}"


def _private_dir(path: Path) -> Path:
    """Create ``path`` 0700, or accept it only if it is ours and nobody else can write there."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise CompileError(f"cache dir {path} is not a private directory of ours; refusing to load native code")
    return path


def _trusted_file(path: Path) -> bool:
    """False if absent; True for a private regular file of ours; CompileError for anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise CompileError(f"cached {path} is not a private regular file; refusing to load it")
    return True


def cache_key(model_text: str) -> str:
    """SHA-256 of the model text and everything that shapes the machine code."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # lleaves then compiles for no extra features
        features = ""
    h = hashlib.sha256()
    for part in (
        metadata.version("lleaves"),
        metadata.version("llvmlite"),
        llvm.get_process_triple(),
        llvm.get_host_cpu_name(),
        features,
        f"fblocksize={FBLOCKSIZE}",
        model_text,
    ):
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def load_or_build(model_text: str, cache_dir: Path, *, timeout_s: float = COMPILE_TIMEOUT_S) -> Scorer:
    """The scorer from the cached object for this model, compiling it first (in a child) if absent."""
    if "\0" in model_text or not model_text.startswith("tree"):
        raise CompileError("not a LightGBM text model")
    if "\nnum_tree_per_iteration=1\n" not in model_text:  # refused before spending a compile on it
        raise CompileError("only single-output models (binary, regression) are supported")
    cache_dir = _private_dir(cache_dir)
    key = cache_key(model_text)
    obj, txt = cache_dir / f"{key}.o", cache_dir / f"{key}.txt"
    if not _trusted_file(obj):
        _build_in_child(model_text, obj, timeout_s)
        _trusted_file(obj)
    # lleaves reads the model header (feature count, classes) from a file: ours, private, same key.
    if not _trusted_file(txt) or txt.read_text() != model_text:
        fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".tmp-")  # 0600
        with os.fdopen(fd, "w") as f:
            f.write(model_text)
        os.replace(tmp, txt)
    import lleaves

    model = lleaves.Model(model_file=str(txt))
    model.compile(cache=str(obj), fblocksize=FBLOCKSIZE)  # the object exists: mapped, not compiled
    return Scorer(key, int(model.num_feature()), obj, model, model._c_entry_func)


# A child, so that LLVM's time, memory and any crash stay out of the server. sklearn blocked as in
# serving.model: this module imports LightGBM, which imports it (and SciPy) for wrappers never used.
_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); sys.modules['sklearn'] = None; "
    "from serving.compiled_model import _child_main; _child_main()"
)


def _build_in_child(model_text: str, obj: Path, timeout_s: float) -> None:
    root = str(Path(__file__).resolve().parents[1])
    try:
        why = run_python(_CHILD, root, str(obj), stdin=model_text.encode(), timeout_s=timeout_s)
    except subprocess.TimeoutExpired as e:
        raise CompileError(f"compile did not finish in {timeout_s:.0f} s") from e
    if why is not None:
        raise CompileError(f"compile failed: {why}")


def _child_main() -> None:
    """Child: model text on stdin -> object file at argv[2], published whole by a rename."""
    os.nice(10)  # the server's requests come first
    import lleaves

    target = Path(sys.argv[2])
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src, built = Path(tmp) / "model.txt", Path(tmp) / "model.o"
        src.write_text(sys.stdin.read())
        # lleaves writes the object to its cache path as it finalises the code.
        lleaves.Model(model_file=str(src)).compile(cache=str(built), fblocksize=FBLOCKSIZE)
        if not built.exists():
            raise CompileError("lleaves wrote no object file")
        os.chmod(built, 0o600)
        os.replace(built, target)
