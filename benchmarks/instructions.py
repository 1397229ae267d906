"""CPU, or instructions, per `GET /v1/predict/{id}` in-process, for whatever tracing the environment sets.

On a shared host, throughput runs minutes apart can differ by more than the change being
measured. Two figures that do not depend on what the rest of the machine does:

- CPU time per request (``time.process_time``, every thread of this process): run it twice,
  with and without the change, and compare;
- instructions per request, under valgrind: the same total for the same code and inputs.
  With ``--callgrind``, instrumentation is switched on (``callgrind_control -i on``) only for
  the measured requests, after start-up and the warm-up::

    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.%p \\
        .venv/bin/python -O -m benchmarks.instructions --callgrind --requests 1000
    callgrind_annotate cg.<pid>          # total / requests = instructions per request

With ``--calls``, a profile hook also counts Python calls per request and lists the most called
places (the requests run slower under the hook, so take CPU figures from a run without it).

Run it with the harness's environment (``SKEWLESS_*``, ``MLFLOW_*``; ``SKEWLESS_TRACE_EXPORT``
and ``OTEL_*`` for tracing), as ``benchmarks.stages`` is. Prints one JSON line.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess  # nosec B404: runs callgrind_control with a fixed argument list
import sys
import time
import types
from typing import Any

import typer

from benchmarks.inprocess import InProcess

app = typer.Typer(add_completion=False, help=__doc__)

WARM_UP = 500


def _instrument(on: bool) -> None:
    """Switch valgrind's instrumentation of this process on or off."""
    tool = shutil.which("callgrind_control")
    if tool is None:
        raise typer.BadParameter("--callgrind needs valgrind's callgrind_control on PATH")
    done = subprocess.run(  # nosec B603
        [tool, "-i", "on" if on else "off", str(os.getpid())], capture_output=True, text=True, check=False
    )
    if done.returncode or "not detected" in done.stdout + done.stderr:  # it exits 0 when it finds no callgrind
        raise typer.BadParameter("--callgrind: this process is not running under valgrind --tool=callgrind")


class _CallCounter:
    """Python function calls per place, counted by a profile hook (``sys.setprofile``).

    A coroutine's every resumption counts as a call, as the hook sees it, so an ``await`` that
    suspends counts twice: compare counts with each other, not with a number of functions.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.root = os.getcwd() + os.sep  # the project's own files shown relative to it

    def __call__(self, frame: types.FrameType, event: str, arg: object) -> None:
        if event == "call":
            code = frame.f_code
            where = code.co_filename.rsplit("site-packages/", 1)[-1].removeprefix(self.root)
            self.counts[f"{where}:{code.co_name}"] += 1

    def per_request(self, requests: int, top: int = 40) -> dict[str, float]:
        """The ``top`` most called places, calls per request."""
        return {place: n / requests for place, n in self.counts.most_common(top)}


async def _run(users: int, requests: int, callgrind: bool, calls: bool = False) -> dict[str, Any]:
    from serving.app import create_app

    fastapi_app = create_app()
    client = InProcess(fastapi_app)
    rng = random.Random(7)
    paths = [f"/v1/predict/u{rng.randrange(users):07d}" for _ in range(WARM_UP + requests)]
    async with fastapi_app.router.lifespan_context(fastapi_app):
        for path in paths[:WARM_UP]:
            await client.get(path)
        if callgrind:
            _instrument(True)
        counter = _CallCounter() if calls else None
        if counter is not None:
            sys.setprofile(counter)
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            statuses = [await client.get(path) for path in paths[WARM_UP:]]
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            sys.setprofile(None)
        if callgrind:
            _instrument(False)
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"{sum(s != 200 for s in statuses)} of {requests} requests failed: are the users in Redis?")
    return {
        "requests": requests,
        "cpu_us_per_request": cpu / requests * 1e6,
        "wall_us_per_request": wall / requests * 1e6,
        "trace_export": os.environ.get("SKEWLESS_TRACE_EXPORT", "false"),
        "sampler": os.environ.get("OTEL_TRACES_SAMPLER", "(default)"),
        **(
            {
                "python_calls_per_request": sum(counter.counts.values()) / requests,
                "most_called": counter.per_request(requests),
            }
            if counter is not None
            else {}
        ),
    }


@app.command()
def main(
    users: int = typer.Option(100_000, help="Users that exist in Redis."),
    requests: int = typer.Option(3000, min=1, help="Requests measured, after a warm-up of 500."),
    callgrind: bool = typer.Option(False, help="Running under callgrind: instrument only the measured requests."),
    calls: bool = typer.Option(False, help="Also count Python calls per request (slows the requests: no timing)."),
) -> None:
    """Print one JSON line: CPU and wall microseconds per request (and with --calls, the most called places)."""
    import uvloop  # the server's event loop (uvicorn[standard]), so the count is the served one's

    if calls and callgrind:
        raise typer.BadParameter("--calls with --callgrind would count the profile hook's own instructions")

    print(json.dumps(uvloop.run(_run(users, requests, callgrind, calls))))


if __name__ == "__main__":
    app()
