"""Production entry point: ``python -O -m serving.server --port 8000 --workers 2``.

Runs uvicorn with uvloop and httptools, no reload and no access log, and keeps start-up short:

- LightGBM imports scikit-learn (and with it SciPy) only for its scikit-learn wrappers, which
  serving never uses; that import was about a third of the start-up time, so it is blocked here,
  in the server process and its workers only (tests and training import scikit-learn normally).
- ``-O`` turns off typeguard's ``@typechecked`` instrumentation of Feast's classes, which
  re-compiles their methods at import and type-checks every call. It also drops ``assert``
  statements; serving uses them only to narrow types, never to validate input.
- The cyclic garbage collector is off until the app's lifespan has loaded the model and frozen
  what start-up built: collections during start-up cost ~1 s of CPU, and the start-up cycles
  they would have freed (~0.4 MB of RSS) are kept instead.
"""

from __future__ import annotations

import gc
import sys

# Module level, so uvicorn's spawned workers (which re-import this module) block it too.
sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]  # None makes `import sklearn` fail fast
# No cyclic garbage collection during start-up: its imports and objects (~600k, nearly all kept for
# the life of the process) made the collector walk the growing heap again and again, ~1 s of CPU.
# The app's lifespan freezes what start-up built, then turns the collector back on.
gc.disable()

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
    if workers > 1:
        gc.enable()  # this process only supervises; each worker starts (and re-enables) on its own
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
