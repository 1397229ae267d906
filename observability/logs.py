"""Structured logs: one JSON object per line, each carrying the current trace_id and span_id."""

from __future__ import annotations

import logging
import re
import sys
import warnings

from opentelemetry import trace
from pythonjsonlogger.orjson import OrjsonFormatter

from observability.lean_tracer import current_span
from observability.settings import TelemetrySettings

# uvicorn installs its own handlers on these; they get ours so every line has one shape.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Libraries that say at INFO what they do on every registry read ("Registry cache expired, so
# refreshing", 15 lines per model check): WARNING and up only, unless asked for DEBUG.
_CHATTY_LOGGERS = ("feast",)
# Deprecations inside dependencies, raised on every run and not ours to act on: MLflow's
# SQLAlchemy store configures a loader strategy SQLAlchemy 2.1 deprecates; ibis (under Feast's
# DuckDB offline store) calls a DuckDB method DuckDB deprecates. Any other warning is logged (as
# JSON, on the ``py.warnings`` logger, in the API).
_DEPENDENCY_DEPRECATIONS = (
    "The ``noload`` loader strategy is deprecated",
    "fetch_arrow_table() is deprecated",
)


def ignore_dependency_deprecations() -> None:
    """Drop the dependency deprecations above: the API's JSON logs and the CLIs' consoles alike."""
    for message in _DEPENDENCY_DEPRECATIONS:
        warnings.filterwarnings("ignore", message=re.escape(message))


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as Jaeger shows them) from the active span.

    The active span is the request's current stage when one is (``lean_tracer.current_span``:
    stages are made current there, not in an OpenTelemetry context), else OpenTelemetry's.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate, never drop; an explicit ``extra={"trace_id": ...}`` wins."""
        stage = current_span.get()
        ctx = stage.context if stage is not None else trace.get_current_span().get_span_context()
        if not hasattr(record, "trace_id"):
            record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        if not hasattr(record, "span_id"):
            record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


def _formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return OrjsonFormatter(
            ["levelname", "name", "message", "trace_id", "span_id"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
        )
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s] %(message)s")


def setup_logging(settings: TelemetrySettings) -> None:
    """Route the root logger (and uvicorn's) through one stderr handler; safe to call again."""
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name("skewless")
    handler.setFormatter(_formatter(settings.log_format))
    handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != "skewless"] + [handler]
    root.setLevel(settings.log_level)
    # Python's warnings print raw text to stderr, which a log shipper reading JSON lines cannot parse.
    # Off, then on: a warnings.catch_warnings() block that ended since the last call (pytest wraps
    # every test in one) puts the original hook back while logging still believes it captures.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    ignore_dependency_deprecations()
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING)
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if logger.handlers:
            logger.handlers = [handler]
