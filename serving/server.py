"""Production entry point: ``python -O -m serving.server --port 8000 --workers 2``.

Runs uvicorn with uvloop and httptools, no reload and no access log, and keeps start-up short:

- LightGBM imports scikit-learn (and with it SciPy) only for its scikit-learn wrappers, which
  serving never uses; that import was about a third of the start-up time, so it is blocked here,
  in the server process and its workers only (tests and training import scikit-learn normally).
- ``-O`` turns off typeguard's ``@typechecked`` instrumentation of Feast's classes, which
  re-compiles their methods at import and type-checks every call. It also drops ``assert``
  statements; serving uses them only to narrow types, never to validate input.
"""

from __future__ import annotations

import sys

# Module level, so uvicorn's spawned workers (which re-import this module) block it too.
sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]  # None makes `import sklearn` fail fast

import typer  # noqa: E402  # after the block above, on purpose
import uvicorn  # noqa: E402

cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def main(
    host: str = typer.Option("0.0.0.0", help="Interface to listen on."),  # noqa: S104  # a container's port
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes (measured: see README, Performance)."),
    log_level: str = typer.Option("warning", help="uvicorn's own log level."),
) -> None:
    """Serve ``serving.app:create_app`` with production settings."""
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=log_level,
    )


if __name__ == "__main__":
    cli()
