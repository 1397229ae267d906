"""Start-up pieces of the model loader: the parse check's child and compiles deferred until start-up ends."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import lightgbm
import pytest

from serving import model as m
from serving.model import ModelHolder, ModelRefusedError, ServedModel
from tests.unit.test_serving_features import churn_plan, tiny_model

pytestmark = pytest.mark.unit


def _with_text(version: str) -> ServedModel:
    model = tiny_model(churn_plan(), version=version)
    return dataclasses.replace(model, text=model.booster.model_to_string())


def test_parse_check_accepts_a_model_the_booster_loads() -> None:
    text = _with_text("1").text
    m._parse_in_child("model.lgb", text)  # no exception: the child parsed it
    assert lightgbm.Booster(model_str=text).num_trees() == 5


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tree\nthis is not a LightGBM model", "number of classes"),  # LightGBM's own error, passed on
        ("", "number of classes"),
    ],
)
def test_parse_check_refuses_what_lightgbm_rejects_with_its_reason(text: str, words: str) -> None:
    with pytest.raises(ModelRefusedError, match=f"corrupt model file model.lgb: .*{words}"):
        m._parse_in_child("model.lgb", text)
    with pytest.raises(lightgbm.basic.LightGBMError, match=words):  # the same verdict in this process
        lightgbm.Booster(model_str=text)


def test_parse_check_refuses_a_model_that_crashes_the_parser() -> None:
    # Cut inside a tree: LightGBM's parser reads past what is there and the process dies (SIGSEGV
    # or abort), which is why the check runs in a child. Here the child dies, not the test.
    text = _with_text("1").text
    cut = text[: text.index("Tree=3") + 40]
    with pytest.raises(ModelRefusedError, match=r"corrupt model file model.lgb: the child process died \(SIG"):
        m._parse_in_child("model.lgb", cut)


def test_parse_check_uses_the_library_this_process_loaded() -> None:
    path = Path(m._lightgbm_library())
    assert path.is_file() and path.name.startswith("lib_lightgbm")
    assert Path(lightgbm.__file__).parent in path.parents


def _recording_compiles(monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], threading.Semaphore]:
    """Replace the compile with a recorder; each compile thread releases the semaphore once it ran."""
    seen: list[str] = []
    ran = threading.Semaphore(0)

    def fake(booster: lightgbm.Booster, text: str, cache_dir: Path | None) -> None:
        seen.append(str(booster.num_trees()) + ":" + text[:4])
        ran.release()
        return None  # as compile_scorer does when it cannot build: LightGBM keeps scoring

    monkeypatch.setattr(m, "compile_scorer", fake)
    return seen, ran


def test_deferred_compiles_start_with_the_serving_model_once_start_up_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, ran = _recording_compiles(monkeypatch)
    holder = ModelHolder(compile_model=True, defer_compiles=True)
    first, second, third = _with_text("1"), _with_text("2"), _with_text("3")
    holder.swap(first)
    holder.swap(second)
    assert not ran.acquire(timeout=0.3) and seen == [], "a compile started during start-up"
    holder.start_compiles()
    assert ran.acquire(timeout=10)
    assert not ran.acquire(timeout=0.3), "more than one compile for the one serving model"
    holder.start_compiles()  # idempotent
    assert not ran.acquire(timeout=0.3)
    holder.swap(third)  # after start-up, each installed version compiles at once
    assert ran.acquire(timeout=10)
    assert len(seen) == 2


def test_compiles_are_not_deferred_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, ran = _recording_compiles(monkeypatch)
    holder = ModelHolder(compile_model=True)
    holder.swap(_with_text("1"))
    assert ran.acquire(timeout=10) and len(seen) == 1
    off = ModelHolder(compile_model=False, defer_compiles=True)
    off.swap(_with_text("2"))
    off.start_compiles()
    assert not ran.acquire(timeout=0.3), "compiled although compile_model is off"
