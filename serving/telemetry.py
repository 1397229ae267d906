"""Tracing hook. Tracing is a later issue: it will instrument FastAPI and Redis here, from OTEL_* env."""

from __future__ import annotations

from fastapi import FastAPI


def instrument(app: FastAPI) -> None:
    """Attach tracing to ``app``; a no-op until tracing lands, so create_app already calls it."""
    del app
