"""Typed dependencies: routes ask for what they need by type."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Path, Request

from serving.errors import ApiError
from serving.model import ServedModel
from serving.state import AppState


def get_state(request: Request) -> AppState:
    """The per-process state the lifespan built."""
    state: AppState = request.app.state.skewless
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_model(state: StateDep) -> ServedModel:
    """The serving model, read once so the whole request uses one version; 503 when none."""
    model = state.holder.current
    if model is None:
        reason = state.holder.refused or "the model is still loading"
        raise ApiError(503, "model_not_loaded", f"no model is serving: {reason}")
    return model


ModelDep = Annotated[ServedModel, Depends(get_model)]


def check_entity_ids(ids: list[str], state: AppState) -> None:
    """422 naming the first offending IDs, in words, when an ID has the wrong shape or length."""
    s = state.settings
    pattern = re.compile(s.entity_id_pattern)
    # fullmatch: with match, `$` also matches before a trailing newline, so 'u0000042\n' passed.
    bad = [i for i in ids if len(i) > s.entity_id_max_length or not pattern.fullmatch(i)]
    if bad:
        shown = ", ".join(repr(b[:80]) for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ApiError(
            422,
            "invalid_entity_id",
            f"entity IDs must match {s.entity_id_pattern} (at most {s.entity_id_max_length} characters); got {shown}",
        )


def get_entity_id(
    state: StateDep, entity_id: Annotated[str, Path(description="Entity ID, e.g. u0000042.", examples=["u0000042"])]
) -> str:
    """The path's entity ID, validated against the configured pattern."""
    check_entity_ids([entity_id], state)
    return entity_id


EntityIdDep = Annotated[str, Depends(get_entity_id)]
