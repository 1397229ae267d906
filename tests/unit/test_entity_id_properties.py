"""Property tests of entity-ID validation: exactly `u` + 7 ASCII digits pass by default, and every
rejection is a bounded 422, whatever the input."""

from __future__ import annotations

import string
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.deps import check_entity_ids
from serving.errors import ApiError
from serving.settings import ServingSettings

pytestmark = pytest.mark.unit

STATE: Any = SimpleNamespace(settings=ServingSettings())
VALID = st.from_regex(r"u[0-9]{7}", fullmatch=True)


def _is_valid(eid: str) -> bool:
    return len(eid) == 8 and eid[0] == "u" and all(c in string.digits for c in eid[1:])


@given(st.lists(VALID, min_size=1, max_size=50))
def test_well_formed_ids_pass(ids: list[str]) -> None:
    check_entity_ids(ids, STATE)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=80), VALID.map(lambda v: v + "\n"), st.from_regex(r"u\d{7}", fullmatch=True)))
def test_an_id_passes_exactly_when_it_is_u_and_seven_ascii_digits(eid: str) -> None:
    if _is_valid(eid):
        check_entity_ids([eid], STATE)
        return
    with pytest.raises(ApiError) as info:
        check_entity_ids([eid], STATE)
    assert info.value.status_code == 422
    assert info.value.code == "invalid_entity_id"


@given(st.lists(VALID, max_size=20), st.lists(st.text(min_size=1, max_size=5000), min_size=1, max_size=40))
def test_a_bad_id_anywhere_rejects_the_batch_with_a_bounded_message(good: list[str], bad: list[str]) -> None:
    bad = [b + "!" for b in bad]  # "!" is never valid
    with pytest.raises(ApiError) as info:
        check_entity_ids(good + bad, STATE)
    assert info.value.status_code == 422
    assert len(info.value.message) < 1000, "a huge ID must not be echoed whole"
    assert repr(bad[0][:80]) in info.value.message
