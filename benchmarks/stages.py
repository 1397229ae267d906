"""Per-stage breakdown of one `GET /v1/predict/{id}`, in-process, one request at a time.

The app is driven through its ASGI interface (no sockets), so the total is what the
framework and our code cost per request. The stages are timed by calling the same
functions the route calls, on the same state:

- validation: the entity-ID check;
- feature read: ``state.online.fetch`` (Redis round trip included);
- inference: the matrix and ``model.predict``;
- serialization: orjson of the response dict;
- metrics, spans, response dict: the rest of ``serving.predict.predict``;
- framework: the rest (routing, parameters, middleware, ASGI messages).

Run: ``python -m benchmarks.stages --users N`` with the harness's environment.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import typer

from benchmarks.inprocess import InProcess

app = typer.Typer(add_completion=False, help=__doc__)


def _median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


async def _timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        out.append(time.perf_counter() - t0)
    return out


async def _run(users: int, n: int) -> dict[str, Any]:
    from serving.app import create_app
    from serving.deps import check_entity_ids
    from serving.predict import predict

    fastapi_app = create_app()
    client = InProcess(fastapi_app)
    rng = random.Random(7)
    ids = [f"u{rng.randrange(users):07d}" for _ in range(n)]

    async with fastapi_app.router.lifespan_context(fastapi_app):
        state = fastapi_app.state.skewless
        model = state.holder.current
        assert model is not None, "no model is serving"

        async def whole(i: int) -> None:
            status = await client.get(f"/v1/predict/{ids[i]}")
            assert status in (200, 404), client.sent

        async def validation(i: int) -> None:
            check_entity_ids([ids[i]], state)

        async def features(i: int) -> None:
            await state.online.fetch(model.plan, [ids[i]], state.clock())

        rows = await state.online.fetch(model.plan, ids[:1], state.clock())
        row = np.array([[np.nan if x is None else float(x) for x in rows[0].values]], dtype=np.float64)

        async def inference(i: int) -> None:
            model.predict(np.array([[np.nan if x is None else float(x) for x in rows[0].values]], dtype=np.float64))

        pred = (await predict(state, model, ids[:1], False))[0]

        async def whole_predict(i: int) -> None:
            await predict(state, model, [ids[i]], False)

        async def serialization(i: int) -> None:
            orjson.dumps(pred, option=orjson.OPT_SERIALIZE_NUMPY)

        del row
        for call in (whole, features):  # warm up connections and caches
            await _timed(200, call)
        stages = {
            "total (ASGI, in-process)": await _timed(n, whole),
            "validation": await _timed(n, validation),
            "feature read": await _timed(n, features),
            "inference": await _timed(n, inference),
            "serialization": await _timed(n, serialization),
            "predict()": await _timed(n, whole_predict),
        }
        path = state.online.path(model.plan)
    med = {k: _median_us(v) for k, v in stages.items()}
    in_predict = med.pop("predict()")
    # predict() is the feature read + inference + the rest of our request code (metrics, spans, dicts).
    med["metrics, spans, response dict"] = max(in_predict - med["feature read"] - med["inference"], 0.0)
    ours = in_predict + med["validation"] + med["serialization"]
    med["framework (routing, params, middleware)"] = max(med["total (ASGI, in-process)"] - ours, 0.0)
    p99_total = float(np.percentile(stages["total (ASGI, in-process)"], 99) * 1e6)
    return {"reader": path, "requests": n, "median_us": med, "total_p99_us": p99_total}


@app.command()
def main(
    users: int = typer.Option(100_000, help="Users that exist in Redis."),
    n: int = typer.Option(3000, help="Requests per stage."),
) -> None:
    """Print one JSON line: the median microseconds of each stage and which reader served."""
    print(json.dumps(asyncio.run(_run(users, n))))


if __name__ == "__main__":
    app()
