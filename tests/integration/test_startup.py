"""Start-up as serving.server runs it: the collector is off until the lifespan is done, then back on."""

from __future__ import annotations

import gc
import logging

import pytest

from tests.integration.conftest import AppFactory

pytestmark = pytest.mark.integration


def test_start_up_turns_the_collector_back_on_with_its_objects_frozen(
    make_client: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gc.disable()  # as serving.server does before anything is imported
    try:
        with caplog.at_level(logging.INFO, logger="serving.app"):
            client = make_client()
        assert client.get("/ready").status_code == 200
        # Left off, the server would never collect a reference cycle again.
        assert gc.isenabled(), "start-up left the garbage collector off"
        assert gc.get_freeze_count() > 0, "start-up objects were not frozen"
        done = [r.getMessage() for r in caplog.records if r.getMessage().startswith("start-up done")]
        assert len(done) == 1 and "s of CPU since the process started" in done[0], done
    finally:
        gc.enable()
        gc.unfreeze()
