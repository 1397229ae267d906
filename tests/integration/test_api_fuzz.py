"""Schemathesis against the live OpenAPI spec of a real uvicorn API process.

Generated requests, valid and invalid, must never get a server error nor an answer the spec
does not describe (status code, content type, body schema). At least 1,000 cases run.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.conftest import FeatureEnv
from tests.fault.conftest import register_model
from tests.fault.harness import api_environment, running_api
from tests.support import ApiServer

pytestmark = pytest.mark.integration

MAX_BATCH = 50
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_api(feature_env: FeatureEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    model = register_model(feature_env, f"sqlite:///{tmp / 'mlflow.db'}")
    env = api_environment(
        feature_env, model.tracking_uri, model.name, feature_env.redis.connection, max_batch_size=str(MAX_BATCH)
    )
    with running_api(env, tmp / "api") as api:
        yield api


@pytest.fixture(scope="module")
def api_schema(fuzz_api: ApiServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_api.url("/openapi.json"))


def _fuzz(operation: schemathesis.APIOperation, examples: int, mode: GenerationMode) -> int:
    """Run ``examples`` generated cases of one operation; returns how many ran."""
    ran = 0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(case: schemathesis.Case) -> None:
        nonlocal ran
        ran += 1
        case.call_and_validate(checks=CHECKS)

    run()
    return ran


def test_generated_requests_get_no_server_error_and_only_documented_answers(
    api_schema: schemathesis.BaseSchema,
) -> None:
    # schemathesis' pytest plugin does not load under this pytest, so hypothesis drives it directly.
    counts: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        takes_input = bool(operation.path_parameters or operation.body or operation.query)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if not takes_input and mode is GenerationMode.NEGATIVE:
                continue
            n = _fuzz(operation, 300 if takes_input else 5, mode)
            counts[f"{operation.label} {mode.value}"] = n
    total = sum(counts.values())
    print(f"\nschemathesis cases: {total} {counts}")
    assert total >= 1000, counts


KNOWN = st.integers(0, 599).map(lambda i: f"u{i:07d}")  # the session's users
UNKNOWN = st.integers(900_000, 999_999).map(lambda i: f"u{i:07d}")


def test_a_batch_answers_each_requested_id_once_in_order(fuzz_api: ApiServer) -> None:
    singles: dict[str, tuple[str, float | None]] = {}

    with httpx.Client(base_url=fuzz_api.url(""), timeout=10) as client:

        def single(eid: str) -> tuple[str, float | None]:
            if eid not in singles:
                r = client.get(f"/v1/predict/{eid}")
                body = r.json()
                singles[eid] = ("not_found", None) if r.status_code == 404 else (body["status"], body["score"])
            return singles[eid]

        @given(ids=st.lists(st.one_of(KNOWN, UNKNOWN), min_size=1, max_size=MAX_BATCH))
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(ids: list[str]) -> None:
            r = client.post("/v1/predict", json={"entity_ids": ids})
            assert r.status_code == 200, r.text
            predictions = r.json()["predictions"]
            assert [p["entity_id"] for p in predictions] == ids  # one each, in order, duplicates kept
            for p in predictions:
                assert (p["status"], p["score"]) == single(p["entity_id"]), p["entity_id"]

        check()
