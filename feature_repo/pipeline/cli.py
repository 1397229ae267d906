"""CLI for the feature pipeline: validate, apply, materialize.

Each command imports only what it uses: importing Feast costs seconds (typeguard instruments
its classes at import), and ``validate`` never needs it.
"""

from __future__ import annotations

import os
import subprocess  # nosec B404: runs the feast CLI with a fixed argument list
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from feature_repo.settings import get_feast_settings
from observability.tracing import traced_run

if TYPE_CHECKING:
    from feature_repo.pipeline.validate import Report

SERVICE_NAME = "skewless-pipeline"
app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
console = Console(stderr=True)


def print_report(report: Report) -> None:
    """Render the validation report as a table."""
    table = Table(title="validation failures" if report.failures else "validation passed")
    for col in ("table", "column", "rule", "rows", "examples"):
        table.add_column(col)
    for f in report.failures:
        table.add_row(f.table, f.column, f.rule, f"{f.rows:,}", "; ".join(f.examples)[:160])
    if not report.failures:
        for name, n in report.rows.items():
            table.add_row(name, "*", "all rules", f"{n:,}", "")
    console.print(table)


@app.command()
def validate() -> None:
    """Check the source tables: schema, types, nulls, ranges, timestamps, duplicate keys."""
    from feature_repo.pipeline.validate import clear_mark, mark_valid, validate_dir

    settings = get_feast_settings()
    with traced_run(SERVICE_NAME, "validate") as span:
        report = validate_dir(settings.data_dir)
        span.set_attributes({"skewless.rows": sum(report.rows.values()), "skewless.failures": len(report.failures)})
    print_report(report)
    if not report.ok:
        clear_mark(settings.data_dir)
        console.print("[red]validation failed: nothing will be materialized until it passes[/red]")
        raise typer.Exit(1)
    mark_valid(settings.data_dir)


@app.command()
def apply() -> None:
    """Run `feast apply` on the feature repo with the configured registry and Redis."""
    from feature_repo.store import feast_env

    settings = get_feast_settings()
    env = {**os.environ, **feast_env(settings)}
    feast = os.path.join(os.path.dirname(sys.executable), "feast")
    with traced_run(SERVICE_NAME, "apply") as span:
        rc = subprocess.call([feast, "apply"], cwd=settings.repo_path, env=env)  # noqa: S603  # nosec B603 - fixed argv
        span.set_attribute("skewless.exit_code", rc)
    raise typer.Exit(rc)


@app.command("materialize")
def materialize_cmd(
    end: Annotated[str | None, typer.Option(help="Materialize up to this ISO time (UTC). Default: now.")] = None,
) -> None:
    """Incrementally materialize every feature view into Redis (validated data only)."""
    from feature_repo.pipeline.materialize import NotValidatedError, materialize

    t0 = time.perf_counter()
    settings = get_feast_settings()
    end_dt = parse_end(end) if end else None
    try:
        with traced_run(SERVICE_NAME, "materialize"):
            done = materialize(None, settings, end_dt)  # no store: Feast is imported only if needed
    except NotValidatedError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    console.print(f"materialized up to {done.isoformat()} in {time.perf_counter() - t0:.1f}s")


def parse_end(text: str) -> datetime:
    """``--end`` as UTC: an ISO time with an offset is converted, one without is taken as UTC
    (as the writer takes a naive end), never as this machine's local time."""
    try:
        end = datetime.fromisoformat(text)
    except ValueError as e:
        raise typer.BadParameter(f"not an ISO 8601 time: {text!r} (e.g. 2026-05-01T00:00:00+00:00)") from e
    return end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)


if __name__ == "__main__":
    app()
