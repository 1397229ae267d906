"""Ten times the nominal load: the concurrency limit sheds with 503 + Retry-After, never 500; the
service stays up and answers correctly again within 10 s of the load dropping.

Redis sits behind a 100 ms proxy so each request holds a slot long enough for the limit to
bind on a 2-core machine: nominal is 40 requests/s (about 4 in flight), overload 400/s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FeatureEnv
from tests.fault.conftest import FaultModel, baseline
from tests.fault.harness import LatencyProxy, Run, api_environment, drive, record, running_api, start_feature_redis

pytestmark = pytest.mark.fault

NOMINAL_RPS = 40.0
MAX_IN_FLIGHT = 12
RECOVERY_S = 10.0


def test_ten_times_nominal_load_is_shed_and_recovers(
    feature_env: FeatureEnv, fault_model: FaultModel, tmp_path_factory: pytest.TempPathFactory, fault_out: Path
) -> None:
    tmp = tmp_path_factory.mktemp("fault-overload")
    redis_proc = start_feature_redis(feature_env, tmp / "redis")
    try:
        with LatencyProxy(redis_proc.port) as proxy:
            env = api_environment(
                feature_env,
                fault_model.tracking_uri,
                fault_model.name,
                proxy.connection,
                max_in_flight=str(MAX_IN_FLIGHT),
            )
            with running_api(env, tmp / "api") as api:
                expected = baseline(api.url(""), [f"u{i:07d}" for i in range(60)])
                proxy.delay_s = 0.1

                async def fault(run: Run, now: Callable[[], float]) -> None:
                    await asyncio.sleep(2)
                    run.marks["fault"] = now()
                    run.rate = NOMINAL_RPS * 10
                    await asyncio.sleep(4)
                    run.rate = NOMINAL_RPS
                    run.marks["back"] = now()
                    await asyncio.sleep(8)

                run = asyncio.run(
                    drive(api.url(""), list(expected), expected, fault_model.prior, fault, rate=NOMINAL_RPS)
                )
                assert api.proc is not None and api.proc.poll() is None, "the API died under load"
                logs = api.logs()
    finally:
        redis_proc.kill()
    summary = run.summary("10x nominal load (400 req/s, limit 12 in flight)", "back")
    during = [s for s in run.predictions if run.marks["fault"] <= s.sent < run.marks["back"]]
    summary["achieved_rps_during_overload"] = round(len(during) / (run.marks["back"] - run.marks["fault"]), 1)
    record(summary, fault_out)
    counts = run.counts()
    assert not run.bad(), f"answers that are neither a score, a 503 nor shed: {run.bad()[:5]}"
    assert counts.get("shed", 0) > 0, f"the concurrency limit never shed: {counts}"
    assert "Traceback" not in logs
    recovery = run.recovery_s("back")
    assert recovery is not None and recovery <= RECOVERY_S, f"no recovery within {RECOVERY_S} s: {counts}"
