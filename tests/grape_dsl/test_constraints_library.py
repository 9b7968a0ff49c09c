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


def _horizon(loaded) -> float:
    return next(p.value for p in loaded.task.params if p.name == "horizon")


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

    # completion grades: every contact step and metre of travel costs a little (tol 0)
    assert _by_tag(completion.task)["collision"] == {(0.0, 0.1)}
    assert _by_tag(completion.task)["path"] == {(0.0, 0.1)}
    # safety lowers the collision tolerance and raises its weight; paths stay as in completion
    assert _by_tag(safety.task)["collision"] == {(0.0, 2.0)}
    assert _by_tag(safety.task)["path"] == _by_tag(completion.task)["path"]
    # efficiency raises the path weight and sets a 30-step time budget, so that the time term
    # grades every success (the tasks' own horizons, 60-70, pass most of them for free);
    # collisions stay as in completion
    assert _by_tag(efficiency.task)["path"] == {(0.0, 1.0)}
    assert _horizon(efficiency) == _horizon(both) == 30.0
    assert _horizon(safety) == _horizon(plain) >= 60.0
    assert _by_tag(efficiency.task)["collision"] == _by_tag(completion.task)["collision"]
    # both at once: each keeps what it set (the shared import is applied once)
    assert _by_tag(both.task)["collision"] == {(0.0, 2.0)} and _by_tag(both.task)["path"] == {(0.0, 1.0)}
    # the task's own (completion-like) defaults match the completion objective for these tags
    assert _by_tag(plain.task)["collision"] == _by_tag(completion.task)["collision"]
    assert _by_tag(plain.task)["path"] == _by_tag(completion.task)["path"]


@pytest.mark.parametrize("path", TASK_FILES + OBJECTIVE_FILES, ids=lambda p: p.name)
def test_stock_files_are_in_canonical_format(path):
    fmt = pytest.importorskip("grape_dsl.fmt")
    text = path.read_text()
    assert fmt.format_source(text, str(path)) == text


# ---------------------------------------------------------------------------- reward scale

POLICY_KINDS = ("expert", "noisy", "stall", "brush", "random")
OBJECTIVES = {
    "task": [],
    "completion": ["task_completion.grc"],
    "safety": ["safety.grc"],
    "efficiency": ["efficiency.grc"],
}


def _rollouts(task: str, kind: str, seeds: range) -> list:
    """Episodes of the scripted expert and its degraded variants, or of uniform random actions:
    noisy (noise 0.5 of the step limit), stall (freezes in place after 30 steps), brush (carries
    the object 3 cm below the obstacle's top), random."""
    import numpy as np

    from trainer.sim.env import make_env
    from trainer.sim.expert import Expert

    env = make_env(task, seed=seeds[0])
    episodes = []
    try:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            expert = Expert(
                task, noise=0.5 if kind == "noisy" else 0.0, brush=0.03 if kind == "brush" else 0.0, seed=seed
            )
            obs, _ = env.reset(seed=seed)
            for step in range(env.max_steps):
                if kind == "random":
                    action = np.concatenate(
                        [rng.uniform(-0.02, 0.02, 3), rng.uniform(-0.1, 0.1, 3), [rng.choice([-1.0, 1.0])]]
                    ).astype(np.float32)
                else:
                    action = expert.act(obs["state"])
                    if kind == "stall" and step >= 30:
                        action[:6] = 0.0
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            episodes.append(env.episode())
    finally:
        env.close()
    return episodes


@pytest.mark.slow
@pytest.mark.parametrize("task", STOCK_TASKS)
def test_r_ext_separates_expert_from_random_rollouts(task):
    """R_ext = exp(-sum C) of the stock files on real simulator rollouts: the expert scores
    high under every objective (well above zero under efficiency, which charges every step),
    random actions near zero; safety punishes brushing the obstacle
    harder than completion does, efficiency punishes slow noisy runs harder."""
    oracle = pytest.importorskip("grape_dsl.oracle")
    from trainer.store import episodes_to_batch

    path = str(CONSTRAINTS / "tasks" / f"{task}.grc")
    loaded = {name: load_task(path, [str(CONSTRAINTS / f) for f in files]) for name, files in OBJECTIVES.items()}
    scores = {}
    for kind in POLICY_KINDS:
        if kind == "brush" and task != "pick_place_obstacle":
            continue
        batch = episodes_to_batch(_rollouts(task, kind, range(100, 104)))
        scores[kind] = {name: oracle.score(checked.task, batch).r_ext for name, checked in loaded.items()}
        print(
            f"{task:20s} {kind:7s} success {batch.success.mean():.2f}  "
            + "  ".join(f"{name} {r.mean():.3f} [{r.min():.3f}, {r.max():.3f}]" for name, r in scores[kind].items())
        )

    for name in OBJECTIVES:
        # efficiency's 30-step time budget is shorter than any expert episode (40-60 steps), so
        # every expert step beyond it costs: its R_ext grades, it is not near 1
        assert scores["expert"][name].mean() >= (0.1 if name == "efficiency" else 0.5), name
        assert scores["random"][name].max() <= 0.2, name
        assert scores["random"][name].mean() <= 0.1, name
        assert (scores["random"][name] < scores["expert"][name].min()).all(), name
    # an objective only tightens: never more lenient than task completion
    for kind, by_objective in scores.items():
        assert (by_objective["safety"] <= by_objective["completion"] + 1e-12).all(), kind
        assert (by_objective["efficiency"] <= by_objective["completion"] + 1e-12).all(), kind
    if "brush" in scores:
        assert scores["brush"]["safety"].max() < 0.05
        assert (scores["brush"]["safety"] < scores["brush"]["completion"]).all()
    assert scores["noisy"]["efficiency"].mean() < scores["noisy"]["completion"].mean()
