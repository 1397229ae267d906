"""CLI: `python -m training train` and `python -m training rollback`, configured from env."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from observability.logs import ignore_dependency_deprecations
from observability.tracing import trace_id_hex, traced_run
from training.pipeline import BASELINES, CANDIDATE, TrainResult, run_training
from training.registry import RollbackError, rollback
from training.settings import TrainSettings

SERVICE_NAME = "skewless-train"
app = typer.Typer(add_completion=False, help=__doc__, no_args_is_help=True)
console = Console()


def _settings(**overrides: Any) -> TrainSettings:
    """Env settings with the CLI options that were given laid on top; exit 2 on bad values."""
    try:
        given = {k: v for k, v in overrides.items() if v is not None}
        return TrainSettings(**given)  # init arguments win over env
    except ValidationError as e:
        console.print(f"[red]invalid settings:[/red]\n{e}")
        raise typer.Exit(2) from e


def summary(result: TrainResult, settings: TrainSettings) -> Table:
    """Test-window metrics of the candidate, the baselines and the champion, side by side."""
    table = Table(title=f"{settings.model_name} v{result.version}: test window metrics")
    names = ("roc_auc", "pr_auc", "log_loss", "brier")
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for model in (CANDIDATE, *BASELINES, "champion"):
        if model in result.metrics:
            table.add_row(model, *(f"{result.metrics[model][n]:.4f}" for n in names))
    return table


@app.command()
def train(
    service: Annotated[
        str | None, typer.Option(help="Feast feature service the model is trained on (its contract).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed; same seed + data give the same metrics.")] = None,
    max_rounds: Annotated[int | None, typer.Option(help="Maximum LightGBM boosting rounds.", min=1)] = None,
    model_name: Annotated[str | None, typer.Option(help="Registered model name in MLflow.")] = None,
) -> None:
    """Train on point-in-time features, compare with baselines, register, and gate promotion.

    Exits 0 whenever a version was registered, promoted or not; the summary says why.
    """
    settings = _settings(feature_service=service, seed=seed, max_rounds=max_rounds, model_name=model_name)
    ignore_dependency_deprecations()
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console)
    with traced_run(SERVICE_NAME, "train") as span, progress as bar:
        task = bar.add_task("starting", total=None)
        result = run_training(settings, on_step=lambda s: bar.update(task, description=s))
        bar.update(task, description="done")
        span.set_attribute("skewless.model.version", result.version)
        trace_id = trace_id_hex()
    if trace_id:
        console.print(f"trace {trace_id} (Jaeger: search service {SERVICE_NAME})")
    console.print(summary(result, settings))
    verdict = "[green]promoted to champion[/green]" if result.promoted else "[yellow]not promoted[/yellow]"
    console.print(f"registered {settings.model_name} v{result.version} (alias challenger), run {result.run_id}")
    console.print(f"{verdict}: {result.reason}")
    console.print(f"champion is now: {('v' + result.champion_version) if result.champion_version else 'none'}")


@app.command("rollback")
def rollback_cmd(
    model_name: Annotated[str | None, typer.Option(help="Registered model name in MLflow.")] = None,
    force: Annotated[
        bool,
        typer.Option(help="Move the alias even if serving would refuse the earlier version (its service changed)."),
    ] = False,
) -> None:
    """Move the champion alias back to the version the current champion replaced."""
    settings = _settings(model_name=model_name)
    try:
        done = rollback(settings, force=force)
    except RollbackError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e
    console.print(f"{settings.model_name}: champion moved from v{done.from_version} back to v{done.to_version}")
