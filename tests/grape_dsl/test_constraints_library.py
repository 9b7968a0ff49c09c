"""The stock library in constraints/: every file checks clean, every task file binds only
what its environment reports (the schema in docs/architecture.md), and every task loads under
every stock objective with the objective's settings in force."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grape_dsl.api import check_file, load_task

ROOT = Path(__file__).resolve().parents[2]
CONSTRAINTS = ROOT / "constraints"
TASK_FILES = sorted((CONSTRAINTS / "tasks").glob("*.grc"))
OBJECTIVE_FILES = sorted(CONSTRAINTS.glob("*.grc"))
STOCK_TASKS = ["pick_place", "pick_place_obstacle", "push_to_target", "stack"]


def _schema_from_docs() -> dict[str, tuple[list[str], list[str]]]:
    """Parse the 'Environment schema' tables of docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Environment schema", 1)[1].split("\n## ", 1)[0]
    keypoints: dict[str, list[str]] = {}
    signals: list[str] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        name = cells[0].strip("`")
        names = re.findall(r"`([^`]+)`", cells[1])
        if name in STOCK_TASKS:
            based_on = re.match(r"as `([^`]+)`, plus", cells[1])
            keypoints[name] = (keypoints[based_on.group(1)] + names[1:]) if based_on else names
        else:
            signals.append(name)
    return {task: (names, signals) for task, names in keypoints.items()}


DOC_SCHEMA = _schema_from_docs()


def test_the_library_has_every_stock_task_and_objective():
    assert [p.stem for p in TASK_FILES] == STOCK_TASKS
    assert {p.stem for p in OBJECTIVE_FILES} == {"task_completion", "safety", "efficiency"}
    assert set(DOC_SCHEMA) == set(STOCK_TASKS)
    assert "contact.obstacle" in DOC_SCHEMA["stack"][1]
    assert "obstacle.top" in DOC_SCHEMA["pick_place_obstacle"][0]


@pytest.mark.parametrize("path", TASK_FILES + OBJECTIVE_FILES, ids=lambda p: p.name)
def test_every_stock_file_checks_without_errors_or_warnings(path):
    assert check_file(str(path)) == []


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.name)
def test_task_files_bind_only_what_the_environment_reports(path):
    assert check_file(str(path), schema=DOC_SCHEMA[path.stem]) == []


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.name)
def test_task_files_match_the_simulator_schema(path):
    tasks = pytest.importorskip("trainer.sim.tasks")
    spec = tasks.TASKS[path.stem]
    assert (list(spec.keypoint_names), list(spec.signal_names)) == DOC_SCHEMA[path.stem]
    assert check_file(str(path), schema=(spec.keypoint_names, spec.signal_names)) == []


def _by_tag(task) -> dict[str, set[tuple[float, float]]]:
    found: dict[str, set[tuple[float, float]]] = {}
    for stage in task.stages:
        for c in stage.constraints:
            found.setdefault(c.tag, set()).add((c.tol.value, c.weight.value))
    return found


@pytest.mark.parametrize("path", TASK_FILES, ids=lambda p: p.name)
def test_each_task_loads_under_each_objective_with_its_settings(path):
    plain = load_task(str(path), schema=DOC_SCHEMA[path.stem])
    completion = load_task(str(path), [str(CONSTRAINTS / "task_completion.grc")])
    safety = load_task(str(path), [str(CONSTRAINTS / "safety.grc")])
    efficiency = load_task(str(path), [str(CONSTRAINTS / "efficiency.grc")])
    both = load_task(str(path), [str(CONSTRAINTS / "safety.grc"), str(CONSTRAINTS / "efficiency.grc")])
    for loaded in (plain, completion, safety, efficiency, both):
        assert loaded.warnings == ()
        assert {"collision", "path", "task"} <= set(_by_tag(loaded.task))
    assert len({x.source_hash for x in (plain, completion, safety, efficiency, both)}) == 5

    assert _by_tag(completion.task)["collision"] == {(3.0, 0.5)}
    assert _by_tag(completion.task)["path"] == {(1.0, 0.5)}
    # safety lowers the collision tolerance and raises its weight; paths stay as in completion
    assert _by_tag(safety.task)["collision"] == {(0.0, 2.0)}
    assert _by_tag(safety.task)["path"] == _by_tag(completion.task)["path"]
    # efficiency lowers the path tolerance; collisions stay as in completion
    assert _by_tag(efficiency.task)["path"] == {(0.4, 2.0)}
    assert _by_tag(efficiency.task)["collision"] == _by_tag(completion.task)["collision"]
    # both at once: each keeps what it set (the shared import is applied once)
    assert _by_tag(both.task)["collision"] == {(0.0, 2.0)} and _by_tag(both.task)["path"] == {(0.4, 2.0)}
    # the task's own (completion-like) defaults match the completion objective for these tags
    assert _by_tag(plain.task)["collision"] == _by_tag(completion.task)["collision"]
    assert _by_tag(plain.task)["path"] == _by_tag(completion.task)["path"]


@pytest.mark.parametrize("path", TASK_FILES + OBJECTIVE_FILES, ids=lambda p: p.name)
def test_stock_files_are_in_canonical_format(path):
    fmt = pytest.importorskip("grape_dsl.fmt")
    text = path.read_text()
    assert fmt.format_source(text, str(path)) == text
