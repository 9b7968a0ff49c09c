"""grape_dsl.util.nearname: the one "did you mean" rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grape_dsl.util.nearname import did_you_mean, near_name, near_names


@pytest.mark.parametrize(
    ("name", "candidates", "expected"),
    [
        ("ojb", ["obj", "ee", "goal"], "obj"),
        ("stag", ["stage", "param", "let"], "stage"),
        ("Goal", ["goal", "obj"], "goal"),
        ("E", ["e", "obj"], "e"),  # difflib alone finds no match for a one-letter case slip
        ("xyz", ["obj", "ee"], None),
        ("obj", ["obj"], None),  # the name itself is no suggestion
        ("dist_yx", ["dist", "dist_xy", "dot"], "dist_xy"),
    ],
)
def test_near_name(name: str, candidates: list[str], expected: str | None) -> None:
    assert near_name(name, candidates) == expected


def test_near_names_best_first_up_to_the_limit() -> None:
    assert near_names("gripper.tip", ["gripper.tips", "gripper.top", "object.top"], limit=2) == [
        "gripper.tips",
        "gripper.top",
    ]
    assert near_names("zzz", ["gripper.tips"], limit=3) == []


def test_did_you_mean_is_the_tail_of_an_unknown_name_message() -> None:
    assert did_you_mean("pick_plac", ["pick_place", "stack"]) == "; did you mean 'pick_place'?"
    assert did_you_mean("qqq", ["pick_place", "stack"]) == ""


@given(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=8), st.integers(1, 4))
def test_suggestions_are_other_candidates(name: str, candidates: list[str], limit: int) -> None:
    found = near_names(name, candidates, limit)
    assert len(found) <= limit and len(set(found)) == len(found)
    assert all(c in candidates and c != name for c in found)
