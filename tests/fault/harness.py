"""Fault-test tools: the API as a real uvicorn process, a latency-adding TCP proxy, a fixed-rate client.

Everything here measures from the outside, over HTTP, so the tests hold whatever reads Redis
inside the service (Feast's SDK or a direct reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from feature_repo.store import feast_env
from tests.conftest import FeatureEnv
from tests.support import ApiServer, RedisProcess, free_port


def copy_redis(src: redis.Redis, dst: redis.Redis) -> int:
    """Copy every key (DUMP/RESTORE), so a fault test owns a Redis with the session's features."""
    n = 0
    keys = list(src.scan_iter(count=1000))
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        dumps = src.pipeline(transaction=False)
        for k in chunk:
            dumps.dump(k)
        pipe = dst.pipeline(transaction=False)
        for k, blob in zip(chunk, dumps.execute(), strict=True):
            if blob is not None:
                pipe.restore(k, 0, blob, replace=True)
                n += 1
        pipe.execute()
    return n


def start_feature_redis(env: FeatureEnv, workdir: Path, *extra_args: str) -> RedisProcess:
    """A private redis-server holding a copy of the session's online features."""
    proc = RedisProcess(port=free_port(), workdir=workdir, extra_args=extra_args).start()
    copy_redis(env.redis.client(), proc.client())
    return proc


def api_environment(
    env: FeatureEnv, tracking_uri: str, model: str, redis_connection: str, **settings: str
) -> dict[str, str]:
    """The environment an operator would give the API: Feast, MLflow and SKEWLESS_* overrides, nothing else."""
    feast = env.settings.model_copy(update={"redis_connection": redis_connection})
    out = {k: v for k, v in os.environ.items() if not k.startswith(("SKEWLESS_", "MLFLOW_", "OTEL_", "FEAST_"))}
    out.update(feast_env(feast))
    out.update(
        {
            "SKEWLESS_REDIS_CONNECTION": redis_connection,
            "SKEWLESS_MLFLOW_TRACKING_URI": tracking_uri,
            "SKEWLESS_MODEL_NAME": model,
            "SKEWLESS_RELOAD_INTERVAL_S": "3600",
            # No background compile competing for the CPU while latencies are measured; the
            # compiled scorer has its own tests (test_compiled_model, the skew test).
            "SKEWLESS_COMPILE_MODEL": "false",
            "OTEL_SDK_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    out.update({f"SKEWLESS_{k.upper()}": v for k, v in settings.items()})
    return out


@contextlib.contextmanager
def running_api(env: dict[str, str], workdir: Path, wait_path: str = "/ready") -> Iterator[ApiServer]:
    """A started API process, stopped afterwards."""
    server = ApiServer(env, workdir).start(wait_path=wait_path)
    try:
        yield server
    finally:
        server.stop()


class LatencyProxy:
    """A TCP proxy that delays every chunk Redis sends back by ``delay_s`` (changeable while running)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.delay_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            try:
                while data := await src.read(65536):
                    if delayed and self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(client_r, up_w, False), pump(up_r, client_w, True))


@dataclass
class Sample:
    """One request: when it was sent (s since the run began), how long it took, what came back."""

    sent: float
    seconds: float
    kind: str  # ok / degraded / 503 / bad:<why>
    status: int


def classify(r: httpx.Response, expected: dict[str, float], prior: float | None) -> str:
    """ok: the right score. degraded: the prior, flagged. 503: the JSON error shape. shed: 503 "overloaded"
    with Retry-After. Anything else is bad."""
    try:
        body = r.json()
    except ValueError:
        return f"bad:{r.status_code}:not-json"
    if r.status_code == 200:
        if body.get("degraded") is True and body.get("status") == "degraded":
            return "degraded" if prior is not None and body.get("score") == prior else "bad:wrong-prior"
        if body.get("degraded") is False and body.get("score") == expected.get(body.get("entity_id")):
            return "ok"
        return f"bad:wrong-score:{body.get('status')}"
    if r.status_code in (429, 503):
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if not (isinstance(err.get("code"), str) and isinstance(err.get("message"), str) and err["message"]):
            return f"bad:{r.status_code}-shape"
        if err["code"] == "overloaded":
            return "shed" if r.headers.get("retry-after", "").isdigit() else "bad:shed-without-retry-after"
        return "503" if r.status_code == 503 else "bad:429-not-overloaded"
    return f"bad:{r.status_code}"


@dataclass
class Run:
    """Everything a scenario observed; ``rate`` (requests/s) may be changed by the fault while it runs."""

    rate: float = 40.0
    predictions: list[Sample] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)  # (sent, seconds)
    ready: list[tuple[float, int]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)  # fault timeline, s since the run began

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.kind for s in self.predictions).items()))

    def max_health(self) -> float:
        return max(seconds for _, seconds in self.health)

    def bad(self) -> list[Sample]:
        return [s for s in self.predictions if s.kind.startswith("bad")]

    def recovery_s(self, since: str) -> float | None:
        """From ``marks[since]`` (Redis answers again, or the load drops) to the send time of the first
        request of the unbroken run of correct answers that ends the scenario; None if none."""
        t0 = self.marks[since]
        after = [s for s in sorted(self.predictions, key=lambda s: s.sent) if s.sent >= t0]
        if not after or after[-1].kind != "ok":
            return None
        first_ok = after[-1].sent
        for s in reversed(after):
            if s.kind != "ok":
                break
            first_ok = s.sent
        return round(max(0.0, first_ok - t0), 3)

    def ready_between(self, start: str, end: str) -> set[int]:
        return {code for t, code in self.ready if self.marks[start] <= t <= self.marks[end]}

    def summary(self, name: str, since: str) -> dict[str, object]:
        return {
            "scenario": name,
            "requests": len(self.predictions),
            "by_kind": self.counts(),
            "max_response_ms": round(max(s.seconds for s in self.predictions) * 1000, 1),
            "max_health_ms": round(self.max_health() * 1000, 1),
            "ready_503_seen": any(code == 503 for _, code in self.ready),
            "ready_at_end": self.ready[-1][1] if self.ready else None,
            "recovery_s": self.recovery_s(since),
        }


Fault = Callable[["Run", Callable[[], float]], Awaitable[None]]


async def drive(
    base_url: str,
    ids: list[str],
    expected: dict[str, float],
    prior: float | None,
    fault: Fault,
    rate: float = 40.0,
    client_timeout: float = 5.0,
) -> Run:
    """Send predictions at a fixed rate, probe /health every 50 ms and /ready every 100 ms, while ``fault`` runs."""
    run = Run(rate=rate)
    # This process measures and, in a thread, proxies Redis: a full garbage collection over its
    # large heap (Feast, MLflow, pandas) would stall both for 100+ ms and be blamed on the API.
    gc.collect()
    gc.disable()
    t_start = time.monotonic()

    def now() -> float:
        return time.monotonic() - t_start

    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=client_timeout, limits=limits) as api,
        httpx.AsyncClient(base_url=base_url, timeout=client_timeout) as health_client,
        httpx.AsyncClient(base_url=base_url, timeout=client_timeout) as ready_client,
    ):

        async def one(eid: str) -> None:
            sent = now()
            t0 = time.perf_counter()
            try:
                r = await api.get(f"/v1/predict/{eid}")
                kind, status = classify(r, expected, prior), r.status_code
            except httpx.HTTPError as e:
                kind, status = f"bad:{type(e).__name__}", 0
            run.predictions.append(Sample(sent, time.perf_counter() - t0, kind, status))

        async def load() -> None:
            tasks: set[asyncio.Task[None]] = set()
            i = 0
            due = time.monotonic()
            while not stop.is_set():
                # Open loop: the next request goes out on schedule however slow the answers are.
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                task = asyncio.create_task(one(ids[i % len(ids)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                due += 1 / run.rate
            await asyncio.gather(*tasks)

        async def health() -> None:
            while not stop.is_set():
                sent, t0 = now(), time.perf_counter()
                r = await health_client.get("/health")
                assert r.status_code == 200, r.text
                run.health.append((sent, time.perf_counter() - t0))
                await asyncio.sleep(0.05)

        async def ready() -> None:
            while not stop.is_set():
                r = await ready_client.get("/ready")
                run.ready.append((now(), r.status_code))
                await asyncio.sleep(0.1)

        workers = [asyncio.create_task(c()) for c in (load, health, ready)]
        try:
            await fault(run, now)
        finally:
            stop.set()
            await asyncio.gather(*workers)
            gc.enable()
    return run


def record(summary: dict[str, object], out_dir: Path) -> None:
    """Print the scenario's figures (visible with -s) and append them to a JSON-lines file."""
    line = json.dumps(summary)
    print(f"\nFAULT {line}")
    with (out_dir / "fault_table.jsonl").open("a") as f:
        f.write(line + "\n")
