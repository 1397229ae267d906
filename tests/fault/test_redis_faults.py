"""Redis dies, stalls or slows while a client sends at a fixed rate to a real uvicorn API process.

Every answer must be a correct score, a 503 with the JSON error, or (degraded mode) the prior
flagged degraded; none may take longer than the deadline + 100 ms; /health stays under 50 ms;
/ready is 503 during the fault and 200 after; correct answers resume within 5 s of Redis
answering again, with the same API process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FeatureEnv
from tests.fault.conftest import FaultModel, baseline
from tests.fault.harness import (
    Fault,
    LatencyProxy,
    Run,
    api_environment,
    drive,
    record,
    running_api,
    start_feature_redis,
)
from tests.support import ApiServer, RedisProcess

pytestmark = pytest.mark.fault

DEADLINE_S = 0.25
MAX_RESPONSE_S = DEADLINE_S + 0.1
MAX_HEALTH_S = 0.05
HEALTH_HARD_MAX_S = 0.2
RECOVERY_S = 5.0
CANDIDATES = [f"u{i:07d}" for i in range(60)]


@dataclass
class Target:
    """A running API, the Redis it reads, and what healthy answers look like."""

    api: ApiServer
    redis: RedisProcess
    expected: dict[str, float]
    prior: float


@pytest.fixture(scope="module")
def direct(
    feature_env: FeatureEnv, fault_model: FaultModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """API (degraded mode off) reading a private Redis directly; the Redis can be killed and paused."""
    tmp = tmp_path_factory.mktemp("fault-direct")
    redis_proc = start_feature_redis(feature_env, tmp / "redis")
    env = api_environment(feature_env, fault_model.tracking_uri, fault_model.name, redis_proc.connection)
    try:
        with running_api(env, tmp / "api") as api:
            yield Target(api, redis_proc, baseline(api.url(""), CANDIDATES), fault_model.prior)
    finally:
        redis_proc.resume()
        redis_proc.kill()


def check(run: Run, name: str, since: str, out: Path, degraded: bool = False) -> dict[str, object]:
    """The promises every scenario keeps; returns the figures it recorded."""
    summary = run.summary(name, since)
    record(summary, out)
    counts = run.counts()
    assert not run.bad(), f"{name}: answers that are neither a score, a 503 nor degraded: {run.bad()[:5]}"
    assert counts.get("ok", 0) > 0
    assert counts.get("degraded" if degraded else "503", 0) > 0, f"{name}: the fault never showed: {counts}"
    slow = [s for s in run.predictions if s.seconds > MAX_RESPONSE_S]
    assert not slow, f"{name}: {len(slow)} answers slower than {MAX_RESPONSE_S * 1000:.0f} ms, e.g. {slow[:3]}"
    health = sorted(seconds for _, seconds in run.health)
    slowest = sorted(run.health, key=lambda h: -h[1])[:5]
    # p99 holds the 50 ms promise; the max bound is looser only because this 2-core machine is
    # shared (a lone 95 ms sample was seen under load average 5); a loop blocked on Redis would
    # show the whole 250 ms deadline or the 10 s pause.
    assert health[int(len(health) * 0.99)] < MAX_HEALTH_S, f"{name}: /health p99; slowest (sent, s) {slowest}"
    assert health[-1] < HEALTH_HARD_MAX_S, f"{name}: /health slowest (sent, s) {slowest}; marks {run.marks}"
    assert 503 in run.ready_between("fault", since), f"{name}: /ready never said 503 during the fault"
    assert run.ready[-1][1] == 200, f"{name}: /ready not back to 200"
    recovery = run.recovery_s(since)
    assert recovery is not None, f"{name}: never recovered: {counts}"
    assert recovery <= RECOVERY_S
    return summary


def scenario(target: Target, fault: Fault, rate: float = 40.0) -> Run:
    """Drive the target at ``rate`` requests/s while ``fault`` plays out."""
    return asyncio.run(drive(target.api.url(""), list(target.expected), target.expected, target.prior, fault, rate))


def test_redis_killed_then_restarted(direct: Target, fault_out: Path) -> None:
    direct.redis.client().save()  # the restarted server loads this snapshot, as a persistent Redis would

    async def fault(run: Run, now: Callable[[], float]) -> None:
        await asyncio.sleep(1.5)
        run.marks["fault"] = now()
        await asyncio.to_thread(direct.redis.kill)  # SIGKILL
        await asyncio.sleep(3)
        await asyncio.to_thread(direct.redis.start)  # returns once it answers PING
        run.marks["back"] = now()
        await asyncio.sleep(6)

    check(scenario(direct, fault), "kill -9, restart after 3 s", "back", fault_out)


def test_redis_paused_ten_seconds(direct: Target, fault_out: Path) -> None:
    async def fault(run: Run, now: Callable[[], float]) -> None:
        await asyncio.sleep(1.5)
        run.marks["fault"] = now()
        direct.redis.pause()  # SIGSTOP: connections open, nothing answers
        await asyncio.sleep(10)
        direct.redis.resume()
        run.marks["back"] = now()
        await asyncio.sleep(6)

    check(scenario(direct, fault), "SIGSTOP 10 s, SIGCONT", "back", fault_out)


def test_redis_slowed_by_a_proxy_in_degraded_mode(
    feature_env: FeatureEnv, fault_model: FaultModel, tmp_path_factory: pytest.TempPathFactory, fault_out: Path
) -> None:
    """Latency under the deadline still scores; over it, degraded mode answers the prior, flagged."""
    tmp = tmp_path_factory.mktemp("fault-proxy")
    redis_proc = start_feature_redis(feature_env, tmp / "redis")
    try:
        with LatencyProxy(redis_proc.port) as proxy:
            env = api_environment(
                feature_env, fault_model.tracking_uri, fault_model.name, proxy.connection, degraded_mode="true"
            )
            with running_api(env, tmp / "api") as api:
                target = Target(api, redis_proc, baseline(api.url(""), CANDIDATES), fault_model.prior)

                async def fault(run: Run, now: Callable[[], float]) -> None:
                    await asyncio.sleep(1)
                    proxy.delay_s = 0.1  # slow but inside the deadline: still correct scores
                    run.marks["slow"] = now()
                    await asyncio.sleep(2)
                    run.marks["fault"] = now()
                    proxy.delay_s = 0.6  # past the deadline
                    await asyncio.sleep(3)
                    proxy.delay_s = 0.0
                    run.marks["back"] = now()
                    await asyncio.sleep(5)

                run = scenario(target, fault)
    finally:
        redis_proc.kill()
    # Latency under the deadline still scores: nearly always, not always, because a request that
    # opens a new pooled connection pays the handshake round trip too (2 x 100 ms + work) and may
    # reach the deadline; it then answers degraded, which the contract allows (check() below).
    slowed = [s for s in run.predictions if run.marks["slow"] + 0.2 < s.sent < run.marks["fault"] - 0.2]
    assert slowed, "no requests during the 100 ms phase"
    wrong = [(round(s.sent, 2), round(s.seconds, 3), s.kind) for s in slowed if s.kind != "ok"]
    assert len(wrong) <= 0.1 * len(slowed), f"latency under the deadline must still give correct scores: {wrong}"
    assert min(s.seconds for s in slowed) >= 0.1, "the proxy did not slow Redis"
    check(run, "proxy +100 ms then +600 ms (degraded mode)", "back", fault_out, degraded=True)
