"""Objective files: applying them to a task (defaults, tags, params, unreached, --set) and
loading them with their imports (order, dedupe, cycles, missing files, wrong file kind)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from grape_dsl import ast
from grape_dsl.api import load_task
from grape_dsl.checker import check
from grape_dsl.diagnostics import GrcError
from grape_dsl.objective import (
    IMPORT_CYCLE,
    INVALID_APPLIED_VALUE,
    MISSING_FILE,
    OBJECTIVE_PARAM_NOT_IN_TASK,
    OBJECTIVE_WHERE_TASK_EXPECTED,
    TAG_NOT_IN_TASK,
    TASK_WHERE_OBJECTIVE_EXPECTED,
    UNKNOWN_SET_PARAM,
    apply_objectives,
    load_objectives,
)


def _task(
    *constraints: ast.Constraint, params: dict[str, float] | None = None, unreached: tuple[float, ...] = ()
) -> ast.TaskFile:
    decls: list = [ast.ParamDecl(name, value) for name, value in (params or {}).items()]
    decls.append(ast.KeypointsBlock((ast.KeypointDecl("ee", ast.Source(("gripper", "tip"))),)))
    decls.extend(ast.UnreachedDecl(v) for v in unreached)
    decls.append(ast.Stage("only", None, constraints))
    return ast.TaskFile("demo", None, tuple(decls))


def _near(name: str, **attrs) -> ast.Constraint:
    expr = ast.Compare("<=", ast.Call("norm", (ast.Name("ee"),)), ast.Number(0.1))
    return ast.Constraint(attrs.pop("kind", "path"), name, expr, **attrs)


def _objective(*decls, name: str = "obj", path: str = "<string>") -> ast.ObjectiveFile:
    return ast.ObjectiveFile(name, None, tuple(decls), path=path)


def _constraints(task: ast.TaskFile) -> dict[str, ast.Constraint]:
    return {c.name: c for stage in task.stages for c in stage.constraints}


def test_defaults_are_filled_and_every_constant_is_a_number():
    task = _task(_near("a"), _near("b", kind="subgoal"))
    concrete, diagnostics = apply_objectives(task, [], {})
    assert diagnostics == []
    a, b = _constraints(concrete)["a"], _constraints(concrete)["b"]
    assert (a.tol, a.weight, a.over, a.tag) == (ast.Number(0.0), ast.Number(1.0), "mean", "task")
    assert (b.tol, b.weight, b.over, b.tag) == (ast.Number(0.0), ast.Number(1.0), None, "task")
    assert [d.value for d in concrete.decls if isinstance(d, ast.UnreachedDecl)] == [1.0]
    assert check(concrete).ok
    assert task.stages[0].constraints[0].tol is None  # the input AST is left as it was


def test_param_expressions_in_tol_and_weight_use_the_final_param_values():
    task = _task(
        _near("a", tol=ast.Binary("*", ast.Number(2), ast.Name("slack")), weight=ast.Name("w")),
        params={"slack": 0.1, "w": 3.0},
    )
    concrete, diagnostics = apply_objectives(task, [_objective(ast.ParamDecl("w", 4.0))], {"slack": 0.25})
    assert diagnostics == []
    a = _constraints(concrete)["a"]
    assert a.tol == ast.Number(0.5) and a.weight == ast.Number(4.0)
    assert {p.name: p.value for p in concrete.params} == {"slack": 0.25, "w": 4.0}


def test_tag_override_beats_the_constraint_own_value_and_later_settings_win():
    task = _task(_near("hit", tag="collision", tol=ast.Number(3), weight=ast.Number(0.5)), _near("go", tag="path"))
    first = _objective(ast.TagOverride("collision", tol=1.0, weight=2.0))
    second = _objective(ast.TagOverride("collision", tol=0.0))
    concrete, diagnostics = apply_objectives(task, [first, second], {})
    assert diagnostics == []
    hit, go = _constraints(concrete)["hit"], _constraints(concrete)["go"]
    assert (hit.tol.value, hit.weight.value) == (0.0, 2.0)
    assert (go.tol.value, go.weight.value) == (0.0, 1.0)


def test_exactly_one_unreached_with_the_last_setting():
    task = _task(_near("a"), unreached=(2.0,))
    concrete, _ = apply_objectives(task, [_objective(ast.UnreachedDecl(0.5)), _objective(ast.UnreachedDecl(3.0))])
    assert [d.value for d in concrete.decls if isinstance(d, ast.UnreachedDecl)] == [3.0]
    concrete, _ = apply_objectives(task, [])
    assert [d.value for d in concrete.decls if isinstance(d, ast.UnreachedDecl)] == [2.0]


def test_set_unknown_param_is_an_error_with_a_suggestion():
    task = _task(_near("a"), params={"lift": 0.1})
    _, diagnostics = apply_objectives(task, [], {"lfit": 0.2})
    assert [(d.code, d.severity) for d in diagnostics] == [(UNKNOWN_SET_PARAM, "error")]
    assert "did you mean 'lift'?" in diagnostics[0].message


def test_set_that_makes_a_weight_negative_is_an_error():
    task = _task(_near("a", weight=ast.Name("w")), params={"w": 1.0})
    _, diagnostics = apply_objectives(task, [], {"w": -2.0})
    assert [d.code for d in diagnostics] == [INVALID_APPLIED_VALUE]
    assert "weight of 'a'" in diagnostics[0].message


def test_objective_param_and_tag_the_task_lacks_are_warnings_at_the_objective_span():
    task = _task(_near("a", tag="path"), params={"lift": 0.1})
    span = ast.Span(3, 1, 3, 10, 20, 29)
    objective = _objective(
        ast.ParamDecl("lfit", 0.2, span), ast.TagOverride("colision", tol=0.0, span=span), path="safety.grc"
    )
    concrete, diagnostics = apply_objectives(task, [objective])
    assert [(d.code, d.severity, d.path, d.span.line) for d in diagnostics] == [
        (OBJECTIVE_PARAM_NOT_IN_TASK, "warning", "safety.grc", 3),
        (TAG_NOT_IN_TASK, "warning", "safety.grc", 3),
    ]
    assert "did you mean 'lift'?" in diagnostics[0].message
    assert {p.name: p.value for p in concrete.params} == {"lift": 0.1}


# ---------------------------------------------------------------------------- files and imports


def _write(directory: Path, name: str, text: str) -> str:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


TASK_TEXT = """task demo
param lift = 0.1
keypoints {
    ee = gripper.tip
}
stage only {
    path hit: norm(ee) <= lift tag collision
    path go: norm(delta(ee)) <= 0 over sum tol 1 tag path
}
"""


def test_imports_apply_depth_first_before_the_file_and_each_file_once(tmp_path):
    _write(tmp_path, "base.grc", "objective base\ntag collision { tol 3 weight 0.5 }\ntag path { tol 1 }\n")
    _write(tmp_path, "sub/safety.grc", 'objective safety\nimport "../base.grc"\ntag collision { tol 0 weight 2 }\n')
    _write(tmp_path, "efficiency.grc", 'objective efficiency\nimport "base.grc"\ntag path { tol 0.4 }\n')
    loaded = load_objectives([str(tmp_path / "sub/safety.grc"), str(tmp_path / "efficiency.grc")])
    assert loaded.errors == ()
    assert [f.name for f in loaded.files] == ["base", "safety", "efficiency"]

    task_path = _write(tmp_path, "task.grc", TASK_TEXT)
    checked = load_task(task_path, [str(tmp_path / "sub/safety.grc"), str(tmp_path / "efficiency.grc")])
    hit, go = _constraints(checked.task)["hit"], _constraints(checked.task)["go"]
    # efficiency's import of base does not undo what safety set for collision
    assert (hit.tol.value, hit.weight.value) == (0.0, 2.0)
    assert (go.tol.value, go.weight.value) == (0.4, 1.0)


def test_import_cycle_names_the_chain_at_the_import(tmp_path):
    _write(tmp_path, "a.grc", 'objective a\nimport "b.grc"\n')
    _write(tmp_path, "b.grc", 'objective b\ntag x { tol 1 }\nimport "a.grc"\n')
    loaded = load_objectives([str(tmp_path / "a.grc")])
    cycles = [d for d in loaded.diagnostics if d.code == IMPORT_CYCLE]
    assert len(cycles) == 1
    assert "a.grc -> b.grc -> a.grc" in cycles[0].message
    assert cycles[0].path.endswith("b.grc") and (cycles[0].span.line, cycles[0].span.column) == (3, 1)


def test_self_import_is_a_cycle(tmp_path):
    _write(tmp_path, "a.grc", 'objective a\nimport "a.grc"\n')
    loaded = load_objectives([str(tmp_path / "a.grc")])
    assert [d.code for d in loaded.errors] == [IMPORT_CYCLE]
    assert "a.grc -> a.grc" in loaded.errors[0].message


def test_missing_import_is_reported_at_the_import(tmp_path):
    _write(tmp_path, "a.grc", 'objective a\n\nimport "nope.grc"\n')
    loaded = load_objectives([str(tmp_path / "a.grc")])
    assert [(d.code, d.span.line, d.span.column) for d in loaded.errors] == [(MISSING_FILE, 3, 1)]
    assert "nope.grc" in loaded.errors[0].message


def test_importing_a_task_file_is_an_error(tmp_path):
    _write(tmp_path, "task.grc", TASK_TEXT)
    _write(tmp_path, "a.grc", 'objective a\nimport "task.grc"\n')
    loaded = load_objectives([str(tmp_path / "a.grc")])
    assert [(d.code, d.span.line) for d in loaded.errors] == [(TASK_WHERE_OBJECTIVE_EXPECTED, 2)]


def test_load_task_rejects_swapped_file_kinds(tmp_path):
    task_path = _write(tmp_path, "task.grc", TASK_TEXT)
    objective_path = _write(tmp_path, "o.grc", "objective o\ntag path { tol 0 }\n")
    with pytest.raises(GrcError) as caught:
        load_task(objective_path, [task_path])
    codes = sorted(d.code for d in caught.value.diagnostics)
    assert codes == sorted([OBJECTIVE_WHERE_TASK_EXPECTED, TASK_WHERE_OBJECTIVE_EXPECTED])


def test_load_task_collects_errors_from_every_file(tmp_path):
    task_path = _write(tmp_path, "task.grc", TASK_TEXT.replace("norm(ee)", "norm(ea)"))
    objective_path = _write(tmp_path, "o.grc", 'objective o\nimport "gone.grc"\n')
    with pytest.raises(GrcError) as caught:
        load_task(task_path, [objective_path], {"lfit": 1.0})
    codes = sorted(d.code for d in caught.value.diagnostics)
    assert codes == ["GRC201", MISSING_FILE, UNKNOWN_SET_PARAM]
    assert set(caught.value.sources) == {task_path, objective_path}


def test_set_unknown_param_through_load_task(tmp_path):
    task_path = _write(tmp_path, "task.grc", TASK_TEXT)
    with pytest.raises(GrcError) as caught:
        load_task(task_path, (), {"lfit": 0.2})
    assert [d.code for d in caught.value.diagnostics] == [UNKNOWN_SET_PARAM]
    assert "did you mean 'lift'?" in caught.value.diagnostics[0].message


def test_source_hash_covers_task_objectives_imports_and_overrides(tmp_path):
    task_path = _write(tmp_path, "task.grc", TASK_TEXT)
    base = _write(tmp_path, "base.grc", "objective base\ntag path { tol 1 }\n")
    top = _write(tmp_path, "top.grc", 'objective top\nimport "base.grc"\n')
    first = load_task(task_path, [top], {"lift": 0.2})
    assert first.source_hash == load_task(task_path, [top], {"lift": 0.2}).source_hash
    assert first.source_hash != load_task(task_path, [top], {"lift": 0.3}).source_hash
    assert first.source_hash != load_task(task_path, [top]).source_hash
    Path(base).write_text("objective base\ntag path { tol 2 }\n")  # an import changed
    changed = load_task(task_path, [top], {"lift": 0.2})
    assert changed.source_hash != first.source_hash
    assert len(changed.source_hash) == len(hashlib.sha256().hexdigest())
    assert (changed.types["ee"], changed.kinds["lift"]) == ("vec3", "param")


def test_objective_codes_point_at_the_line_and_column_of_the_cause(tmp_path):
    task_path = _write(
        tmp_path, "task.grc", TASK_TEXT.replace("<= lift tag collision", "<= lift weight lift tag collision")
    )
    objective_path = _write(tmp_path, "o.grc", "objective o\n\nparam lfit = 1\n  tag colision { tol 0 }\n")
    checked = load_task(task_path, [objective_path])
    assert sorted((d.code, d.span.line, d.span.column) for d in checked.warnings) == [
        (OBJECTIVE_PARAM_NOT_IN_TASK, 3, 1),
        (TAG_NOT_IN_TASK, 4, 3),
    ]

    with pytest.raises(GrcError) as caught:  # weight `lift` becomes negative through --set
        load_task(task_path, [], {"lift": -0.5})
    assert [(d.code, d.path, d.span.line, d.span.column) for d in caught.value.diagnostics] == [
        (INVALID_APPLIED_VALUE, task_path, 7, 39)
    ]

    with pytest.raises(GrcError) as caught:
        load_task(objective_path)
    assert [(d.code, d.span.line, d.span.column) for d in caught.value.diagnostics] == [
        (OBJECTIVE_WHERE_TASK_EXPECTED, 1, 1)
    ]

    importer = _write(tmp_path, "imp.grc", 'objective imp\n# the task is no objective\n    import "task.grc"\n')
    loaded = load_objectives([importer])
    assert [(d.code, d.span.line, d.span.column) for d in loaded.errors] == [(TASK_WHERE_OBJECTIVE_EXPECTED, 3, 5)]
