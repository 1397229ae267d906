"""`make bench`: set up N users, then load our API, Feast's feature server and a no-op app
side by side in one run, and write a markdown table + JSON with the ratios.

Load generators: wrk (closed loop; Debian package) and benchmarks/openloop.py (open loop,
latency from the scheduled send time). Server and load generator are pinned to different
cores with taskset when there are two.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console
from rich.table import Table

from benchmarks.procs import PeakRSS, free_port, pinned, run_measured, start_redis, stop, wait_http_or_port

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
console = Console()
app = typer.Typer(add_completion=False, help=__doc__)


def _wrk(port: int, script: str, conns: int, seconds: int, users: int) -> dict[str, Any]:
    argv = pinned(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / script),
            f"http://127.0.0.1:{port}",
        ],
        core=1,
    )
    # wrk loads one script: concatenate the request generator with the JSON reporter.
    merged = HERE / f".{script}"
    merged.write_text((HERE / script).read_text() + "\n" + (HERE / "wrk_report.lua").read_text())
    argv[argv.index(str(HERE / script))] = str(merged)
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_USERS": str(users)},
        check=True,
        timeout=seconds + 60,
    ).stdout
    merged.unlink()
    m = re.search(r"^JSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    r = json.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    secs = r["duration_us"] / 1e6
    return {
        "rps": r["requests"] / secs,
        "p50": r["p50"] / 1e3,
        "p90": r["p90"] / 1e3,
        "p99": r["p99"] / 1e3,
        "errors": r["errors"] + (int(non2xx.group(1)) if non2xx else 0),
        "requests": r["requests"],
    }


OPEN_LOOP_RUNS = 3


def _openloop(port: int, rate: int, seconds: int, users: int, runs: int = OPEN_LOOP_RUNS) -> dict[str, Any]:
    """``runs`` open-loop runs at ``rate``; the one with the median p99, all runs' p99s with it.

    One run's p99 rests on its worst 1 %, which a single stall of this shared host decides
    (``benchmarks.jitter``): the median of three is what the server does, the list shows the spread.
    """
    argv = pinned([sys.executable, str(HERE / "openloop.py"), str(port), str(rate), str(seconds), str(users)], core=1)
    done = []
    for _ in range(runs):
        out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 120).stdout
        done.append(dict(json.loads(out.strip().splitlines()[-1])))
    done.sort(key=lambda run: run["p99"])
    return {**done[len(done) // 2], "p99_runs": [run["p99"] for run in done]}


def _jitter(seconds: float = 3.0) -> dict[str, Any]:
    """The host's own stalls on each core (``benchmarks.jitter``), measured before any load."""
    out: dict[str, Any] = {}
    for core in (0, 1) if (os.cpu_count() or 1) > 1 else (0,):
        argv = pinned([sys.executable, "-m", "benchmarks.jitter", str(seconds)], core=core)
        run = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT, timeout=seconds + 60)
        out[str(core)] = json.loads(run.stdout.strip().splitlines()[-1])
    return out


def _step(name: str, argv: list[str], env: dict[str, str]) -> dict[str, float]:
    console.print(f"[bold]{name}[/bold]: {' '.join(argv[-3:])}")
    secs, mb, out = run_measured(argv, env, cwd=ROOT)
    console.print(f"  {secs:.1f}s, peak RSS {mb:.0f} MB")
    step = {"seconds": secs, "peak_rss_mb": mb}
    # The pipeline CLIs print their own duration (without interpreter start and imports).
    inner = re.findall(r" in ([0-9.]+)s\s*$", out, re.M)
    if inner:
        step["in_process_seconds"] = float(inner[-1])
    return step


@app.command()
def main(
    users: Annotated[int, typer.Option(help="Users to generate and materialize.")] = 100_000,
    seconds: Annotated[int, typer.Option(help="Seconds per load case.")] = 10,
    workers: Annotated[int, typer.Option(help="uvicorn workers for our API.")] = 1,
    out: Annotated[Path, typer.Option(help="Where the table and JSON go.")] = ROOT / "bench-results",
    reuse: Annotated[bool, typer.Option(help="Reuse generated data and model if present.")] = True,
) -> None:
    """Run every benchmark case in one go and print ratios to the references."""
    if not shutil.which("wrk"):
        raise typer.BadParameter("wrk is not installed: apt-get install wrk")
    work = out / f"work-{users}"
    data = work / "data"
    redis_proc, redis_port = start_redis(work / "redis")
    env = {
        **os.environ,
        "SKEWLESS_DATA_DIR": str(data),
        "SKEWLESS_FEAST_REGISTRY": str(data / "registry.db"),
        "SKEWLESS_REDIS_CONNECTION": f"127.0.0.1:{redis_port}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db",
        "MLFLOW_ARTIFACTS_DESTINATION": str(work / "mlartifacts"),
        # Tracing as embedded by default: trace ids on every request, nothing exported.
        "SKEWLESS_TRACE_EXPORT": "false",
        # Bytecode caches written once, as a built image has them; else every start recompiles.
        "PYTHONDONTWRITEBYTECODE": "",
    }
    py = sys.executable
    results: dict[str, Any] = {"machine": _machine(), "users": users, "workers": workers, "steps": {}, "cases": {}}
    try:
        steps = results["steps"]
        if not (reuse and (data / "labels.parquet").exists()):
            steps["generate"] = _step(
                "generate", [py, "-m", "feature_repo.datagen.generate", "--out", str(data), "--users", str(users)], env
            )
        steps["validate"] = _step("validate", [py, "-m", "feature_repo.pipeline.cli", "validate"], env)
        # Redis is new on every run, so the registry must not remember earlier materializations:
        # a reused one would make the incremental run write nothing.
        (data / "registry.db").unlink(missing_ok=True)
        steps["apply"] = _step("apply", [py, "-m", "feature_repo.pipeline.cli", "apply"], env)
        # -O as `make materialize` and `make train` run them (typeguard off in Feast's classes).
        steps["materialize"] = _step("materialize", [py, "-O", "-m", "feature_repo.pipeline.cli", "materialize"], env)

        def redis_int(*command: str) -> int:
            done = subprocess.run(
                ["redis-cli", "-p", str(redis_port), *command], capture_output=True, text=True, check=True
            )
            return int(done.stdout.strip())

        # Entity keys: every key but the writer's mark of a finished run.
        from feature_repo.pipeline.materialize import mark_key

        rows = redis_int("dbsize") - redis_int("exists", mark_key("skewless"))
        steps["materialize"]["entity_rows"] = rows
        steps["materialize"]["rows_per_s"] = rows / steps["materialize"]["seconds"]
        inner = steps["materialize"].get("in_process_seconds")
        steps["materialize"]["rows_per_s_in_process"] = rows / inner if inner else 0.0
        pit = subprocess.run(
            [py, "-m", "benchmarks.pit"], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        )
        steps["pit_retrieval"] = json.loads(pit.stdout.strip().splitlines()[-1])
        steps["train"] = _step("train", [py, "-O", "-m", "training", "train"], env)
        steps["pipeline_total_s"] = sum(
            s["seconds"] for k, s in steps.items() if k in ("generate", "validate", "apply", "materialize", "train")
        )
        results["host_jitter"] = _jitter()
        results["cases"] = _load_cases(env, users, seconds, workers, results)
    finally:
        stop(redis_proc)
    _write(results, out)


def _serve(argv: list[str], env: dict[str, str], port: int, ready: str) -> tuple[subprocess.Popen[bytes], float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(pinned(argv, core=0), env=env, cwd=ROOT)
    wait_http_or_port(port, ready, 180)
    return proc, time.perf_counter() - t0


def _wait_compiled(port: int, workers: int, timeout: float = 180) -> str:
    """Wait until GET /v1/model reports the compiled scorer (from every worker); the scorer serving then."""
    t0, seen, scorer = time.perf_counter(), 0, "?"
    while time.perf_counter() - t0 < timeout and seen < 4 * workers:  # answers come from any worker
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=5) as r:
            scorer = json.load(r)["scorer"]
        seen = seen + 1 if scorer == "compiled" else 0
        if not seen and int(time.perf_counter() - t0) % 10 == 0:
            console.print(f"  waiting for the compiled scorer ({time.perf_counter() - t0:.0f} s)")
        time.sleep(0.5 if not seen else 0.05)
    console.print(f"  scorer: {scorer} after {time.perf_counter() - t0:.1f} s")
    return scorer


def _api(port: int, workers: int) -> list[str]:
    """Our API with production settings: serving.server (uvloop, httptools, no access log, -O)."""
    argv = [sys.executable, "-O", "-m", "serving.server", "--host", "127.0.0.1", "--port", str(port)]
    return [*argv, "--workers", str(workers)]


def _tracing_env(env: dict[str, str], endpoint: str, ratio: str) -> dict[str, str]:
    """Tracing exported over OTLP/HTTP to the local receiver, head-sampling ``ratio`` of requests."""
    return {
        **env,
        "SKEWLESS_TRACE_EXPORT": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": ratio,
    }


def _load_cases(env: dict[str, str], users: int, seconds: int, workers: int, results: dict[str, Any]) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        # The harness, and the OTLP receiver thread it starts below, stay off the server's core 0.
        os.sched_setaffinity(0, {1})
    # A throwaway start first, so Python's bytecode caches exist, as they do in a built image.
    port = free_port()
    proc, results["first_start_s"] = _serve(_api(port, workers), env, port, "/ready")
    _wait_compiled(port, workers)  # the compile (~20 s of CPU) fills the cache; later starts map it
    stop(proc)
    # Ours, production settings, tracing off.
    port = free_port()
    proc, cold = _serve(_api(port, workers), env, port, "/ready")
    results["cold_start_s"] = cold
    results["scorer"] = _wait_compiled(port, workers)
    rss = PeakRSS(proc.pid)
    try:
        console.print("[bold]load[/bold]: ours")
        _wrk(port, "wrk_single.lua", 8, 2, users)  # warm-up
        cases["a. single, 8 conns"] = _wrk(port, "wrk_single.lua", 8, seconds, users)
        cases["a. single, 32 conns"] = _wrk(port, "wrk_single.lua", 32, seconds, users)
        # One batch in flight: its own latency. Four: throughput, each batch queued behind three on one core.
        cases["b. batch of 100, 1 conn"] = _wrk(port, "wrk_batch.lua", 1, seconds, users)
        cases["b. batch of 100, 4 conns"] = _wrk(port, "wrk_batch.lua", 4, seconds, users)
    finally:
        results["serving_peak_rss_mb"] = rss.stop()
        results["serving_rss_per_worker_mb"] = results["serving_peak_rss_mb"] / max(workers, 1)
        stop(proc)
    results["stages"] = _stages(env, users)
    # Ours with tracing exported to a local OTLP receiver: every request sampled (the ratio issue 5
    # asks for), then the shipped production default (k8s base: 10 %, slow traces always kept).
    from observability.otlp_receiver import OtlpReceiver

    receiver = OtlpReceiver(keep=False).start()
    try:
        for ratio, label in (("1.0", "sampling 1.0"), ("0.1", "sampling 0.1 + slow kept")):
            port = free_port()
            proc, _ = _serve(_api(port, workers), _tracing_env(env, receiver.endpoint, ratio), port, "/ready")
            try:
                _wait_compiled(port, workers)
                console.print(f"[bold]load[/bold]: ours, tracing on, {label}")
                _wrk(port, "wrk_single.lua", 8, 2, users)
                cases[f"a. single, 8 conns, tracing {label}"] = _wrk(port, "wrk_single.lua", 8, seconds, users)
                if ratio == "0.1":
                    for rate in (500, 1000, 2000):
                        cases[f"c. open loop {rate} req/s, tracing {label}"] = _openloop(port, rate, seconds, users)
            finally:
                stop(proc)
        results["tracing_ratio"] = _tracing_ratio(env, receiver.endpoint, users, workers)
        time.sleep(1)  # the exporter's last batch
        results["spans_received"] = receiver.span_count()
    finally:
        receiver.stop()
    # Feast's own feature server, default settings, same repo and Redis.
    port = free_port()
    feast_env = {**env}
    from feature_repo.settings import FeastSettings
    from feature_repo.store import feast_env as fenv

    feast_env.update(
        fenv(
            FeastSettings.model_validate(
                {
                    "data_dir": env["SKEWLESS_DATA_DIR"],
                    "feast_registry": env["SKEWLESS_FEAST_REGISTRY"],
                    "redis_connection": env["SKEWLESS_REDIS_CONNECTION"],
                }
            )
        )
    )
    feast = str(Path(sys.executable).parent / "feast")
    proc = subprocess.Popen(
        pinned([feast, "serve", "-h", "127.0.0.1", "-p", str(port)], core=0),
        env=feast_env,
        cwd=ROOT / "feature_repo",
    )
    try:
        wait_http_or_port(port, "/health", 180)
        console.print("[bold]load[/bold]: feast serve")
        _wrk(port, "wrk_feast.lua", 8, 2, users)
        cases["d. feast serve, features only, 8 conns"] = _wrk(port, "wrk_feast.lua", 8, seconds, users)
    finally:
        stop(proc)
    port = free_port()
    proc, _ = _serve(_noop(workers)(port), env, port, "/docs")
    try:
        console.print("[bold]load[/bold]: no-op")
        _wrk(port, "wrk_single.lua", 8, 2, users)
        cases["e. no-op FastAPI, 8 conns"] = _wrk(port, "wrk_single.lua", 8, seconds, users)
        # The open-loop client checked against the no-op: a rate counts only if it delivers it here.
        for rate in (1000, 2000):
            cases[f"client check: open loop {rate} req/s vs no-op"] = _openloop(port, rate, seconds, users)
    finally:
        stop(proc)
    results["noop_ratio"] = _noop_ratio(env, users, workers)
    feast_rps = cases["d. feast serve, features only, 8 conns"]["rps"]
    noop_rps = cases["e. no-op FastAPI, 8 conns"]["rps"]
    for c in cases.values():
        c["x_feast"] = c["rps"] / feast_rps
        c["x_noop"] = c["rps"] / noop_rps
    return cases


# One server to interleave: its command line for a port, its environment, its readiness path.
Server = tuple[Callable[[int], list[str]], dict[str, str], str]


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) of a server process and its workers so far."""
    proc = psutil.Process(pid)
    total = 0.0
    for p in (proc, *proc.children(recursive=True)):
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _interleaved(servers: dict[str, Server], users: int, workers: int, rounds: int = 3) -> dict[str, list[float]]:
    """Throughput and server CPU per request of each server, 8 connections, 5 s runs interleaved between them.

    All servers run at once (an idle one costs nothing) and the load alternates: a, b, a, b, ...
    On a shared host, runs minutes apart differed by up to 2×, more than what these ratios
    compare, so a ratio comes from the medians of runs taken side by side. The server's own CPU
    time per request is kept too (``<name>_cpu_us``): time the host takes the core away is
    nobody's CPU time, though on this project's host the figure still moved nearly as much as
    throughput (caches and clock speed are shared too).
    """
    running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for name, (argv, server_env, ready) in servers.items():
            port = free_port()
            running[name] = (_serve(argv(port), server_env, port, ready)[0], port)
            if ready == "/ready":  # ours: measured with the scorer it serves with
                _wait_compiled(port, workers)
            _wrk(port, "wrk_single.lua", 8, 2, users)  # warm-up
        out: dict[str, list[float]] = {key: [] for name in servers for key in (name, f"{name}_cpu_us")}
        console.print(f"[bold]load[/bold]: {' and '.join(servers)}, interleaved, {rounds} rounds")
        for _ in range(rounds):
            for name, (proc, port) in running.items():
                cpu = _cpu_s(proc.pid)
                run = _wrk(port, "wrk_single.lua", 8, 5, users)
                out[name].append(run["rps"])
                out[f"{name}_cpu_us"].append((_cpu_s(proc.pid) - cpu) / max(run["requests"], 1) * 1e6)
    finally:
        for proc, _ in running.values():
            stop(proc)
    return out


def _ratio(runs: dict[str, list[float]], top: str, bottom: str) -> dict[str, Any]:
    """The ratio of two servers' median throughputs, and of their median CPU per request (inverted,
    so both read as throughput ratios), with every run's figures."""
    cpu_top, cpu_bottom = runs[f"{top}_cpu_us"], runs[f"{bottom}_cpu_us"]
    return {
        f"{top}_rps": runs[top],
        f"{bottom}_rps": runs[bottom],
        "ratio": statistics.median(runs[top]) / statistics.median(runs[bottom]),
        f"{top}_cpu_us": cpu_top,
        f"{bottom}_cpu_us": cpu_bottom,
        "cpu_ratio": statistics.median(cpu_bottom) / statistics.median(cpu_top),
    }


def _tracing_ratio(env: dict[str, str], endpoint: str, users: int, workers: int) -> dict[str, Any]:
    """Throughput traced (sampling 1.0, exported) over untraced, interleaved."""
    ours = functools.partial(_api, workers=workers)
    servers: dict[str, Server] = {
        "off": (ours, env, "/ready"),
        "on": (ours, _tracing_env(env, endpoint, "1.0"), "/ready"),
    }
    return _ratio(_interleaved(servers, users, workers), "on", "off")


def _noop_ratio(env: dict[str, str], users: int, workers: int) -> dict[str, Any]:
    """Our single-entity throughput (production settings, tracing off) over the no-op endpoint's, interleaved."""
    servers: dict[str, Server] = {
        "ours": (functools.partial(_api, workers=workers), env, "/ready"),
        "noop": (_noop(workers), env, "/docs"),
    }
    return _ratio(_interleaved(servers, users, workers), "ours", "noop")


def _noop(workers: int) -> Callable[[int], list[str]]:
    """The no-op FastAPI endpoint's command line, on the same server settings as ours."""

    def argv(port: int) -> list[str]:
        noop = [sys.executable, "-O", "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
        noop += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools", "--workers", str(workers)]
        return [*noop, "--factory", "benchmarks.noop_app:create_app"]

    return argv


def _stages(env: dict[str, str], users: int) -> dict[str, Any]:
    """Per-stage breakdown of one request (benchmarks/stages.py), in its own process."""
    out = subprocess.run(
        pinned([sys.executable, "-O", "-m", "benchmarks.stages", "--users", str(users)], core=0),
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _median(xs: list[float] | None) -> str:
    return f"{statistics.median(xs):,.0f}" if xs else "?"


def _listed(xs: list[float] | None) -> str:
    return ", ".join(f"{x:,.0f}" for x in xs or [])


def _machine() -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    lines = [
        f"Measured {results['machine']['date']} on {results['machine']['cpus']} cores "
        f"({results['machine']['platform']}), {results['users']:,} users, {results['workers']} worker(s), "
        "server pinned to core 0 and load generator to core 1. Closed loop: wrk; open loop: "
        "benchmarks/openloop.py (uvloop, latency from the scheduled send time, checked against the no-op).",
        "",
        "| case | req/s | p50 ms | p90 ms | p99 ms | errors | × feast serve | × no-op |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in results["cases"].items():
        lines.append(
            f"| {name} | {c['rps']:,.0f} | {c['p50']:.2f} | {c['p90']:.2f} | {c['p99']:.2f} | "
            f"{c['errors']} | {c['x_feast']:.2f} | {c['x_noop']:.2f} |"
        )
    runs = {name: c["p99_runs"] for name, c in results["cases"].items() if "p99_runs" in c}
    if runs:
        lines += ["", "Open-loop rows are the run with the median p99 of those listed; every run's p99 (ms):", ""]
        lines += [f"- {name}: {', '.join(f'{p:.2f}' for p in p99s)}" for name, p99s in runs.items()]
    s = results["steps"]
    ratio = results.get("tracing_ratio", {})
    noop = results.get("noop_ratio", {})
    jitter = results.get("host_jitter", {})
    lines += [
        "",
        "| other | figure |",
        "|---|---|",
        f"| serving peak RSS per worker | {results.get('serving_rss_per_worker_mb', 0):.0f} MB |",
        f"| cold start (process start → /ready 200) | {results.get('cold_start_s', 0):.2f} s |",
        f"| materialization | {s['materialize']['entity_rows']:,} entity keys in {s['materialize']['seconds']:.1f} s "
        f"({s['materialize']['rows_per_s']:,.0f} rows/s), peak RSS {s['materialize']['peak_rss_mb']:.0f} MB; "
        f"without interpreter start and imports: {s['materialize'].get('in_process_seconds', 0):.1f} s "
        f"({s['materialize'].get('rows_per_s_in_process', 0):,.0f} rows/s) |",
        f"| point-in-time retrieval | {s['pit_retrieval']['rows']:,} label rows "
        f"in {s['pit_retrieval']['seconds']:.1f} s |",
        f"| pipeline (generate → train) | {s['pipeline_total_s']:.0f} s |",
        f"| throughput with tracing on / off (8 conns, sampling 1.0, interleaved 5 s runs) | "
        f"{ratio.get('ratio', 0):.2f}: median {_median(ratio.get('on_rps'))} / {_median(ratio.get('off_rps'))} req/s "
        f"(on {_listed(ratio.get('on_rps'))}; off {_listed(ratio.get('off_rps'))}; "
        f"{results.get('spans_received', 0):,} spans received) |",
        f"| the same from server CPU per request (µs, on / off) | "
        f"{ratio.get('cpu_ratio', 0):.2f}: median {_median(ratio.get('on_cpu_us'))} / "
        f"{_median(ratio.get('off_cpu_us'))} "
        f"(on {_listed(ratio.get('on_cpu_us'))}; off {_listed(ratio.get('off_cpu_us'))}) |",
        f"| throughput ours / no-op (8 conns, tracing off, interleaved 5 s runs) | "
        f"{noop.get('ratio', 0):.2f}: median {_median(noop.get('ours_rps'))} / {_median(noop.get('noop_rps'))} req/s "
        f"(ours {_listed(noop.get('ours_rps'))}; no-op {_listed(noop.get('noop_rps'))}) |",
        f"| the same from server CPU per request (µs, ours / no-op) | "
        f"{noop.get('cpu_ratio', 0):.2f}: median {_median(noop.get('ours_cpu_us'))} / "
        f"{_median(noop.get('noop_cpu_us'))} "
        f"(ours {_listed(noop.get('ours_cpu_us'))}; no-op {_listed(noop.get('noop_cpu_us'))}) |",
    ]
    if jitter:
        stalls = "; ".join(
            f"core {core}: {j['stalls_per_s']:.1f}/s more than 1 ms late, worst {j['max_late_ms']:.1f} ms"
            for core, j in jitter.items()
        )
        lines.append(f"| host stalls before the load (0.5 ms sleeps, benchmarks/jitter.py) | {stalls} |")
    st = results.get("stages")
    if st:
        lines += [
            "",
            f"One `GET /v1/predict/{{id}}` in-process, one at a time, median of {st['requests']:,} "
            f"(feature reader: {st['reader']}; total p99 {st['total_p99_us']:.0f} µs):",
            "",
            "| stage | µs |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.0f} |" for k, v in st["median_us"].items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    table = Table(title="skewless benchmark")
    for col in ("case", "req/s", "p50", "p99", "err", "×feast", "×noop"):
        table.add_column(col)
    for name, c in results["cases"].items():
        table.add_row(
            name,
            f"{c['rps']:,.0f}",
            f"{c['p50']:.2f}",
            f"{c['p99']:.2f}",
            str(c["errors"]),
            f"{c['x_feast']:.2f}",
            f"{c['x_noop']:.2f}",
        )
    console.print(table)
    console.print("\n".join(lines[lines.index("| other | figure |") :]))
    console.print(f"wrote {out / 'results.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    app()
