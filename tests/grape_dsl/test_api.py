"""The front end's entry points: check_source, check_file, load_task."""

from __future__ import annotations

import pytest

import grape_dsl
from grape_dsl import ast
from grape_dsl.api import check_file, check_source, load_task
from grape_dsl.diagnostics import GrcError

TASK = """task demo
param lift = 0.1
keypoints {
    ee = gripper.tip
}
let high = ee.z >= lift
stage only {
    subgoal up: high
    path go: norm(delta(ee)) <= 0 over sum tag path
}
"""


def test_package_exports_the_api():
    assert grape_dsl.check_source is check_source and grape_dsl.load_task is load_task


def test_check_source_of_an_objective_reads_its_imports_relative_to_its_path(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "base.grc").write_text("objective base\ntag path { tol -1 }\n")
    text = 'objective top\nimport "lib/base.grc"\nimport "lib/none.grc"\n'
    diagnostics = check_source(text, str(tmp_path / "top.grc"))
    found = sorted((d.code, d.path.rsplit("/", 1)[-1], d.span.line) for d in diagnostics)
    assert found == [("GRC217", "base.grc", 2), ("GRC302", "top.grc", 3)]


def test_check_file_reports_missing_and_undecodable_files(tmp_path):
    missing = check_file(str(tmp_path / "nope.grc"))
    assert [d.code for d in missing] == ["GRC302"]
    bad = tmp_path / "bad.grc"
    bad.write_bytes(b"task demo\nstage s { subgoal a: \xff <= 1 }\n")
    assert [d.code for d in check_file(str(bad))] == ["GRC105"]


def test_load_task_returns_a_concrete_task_with_its_symbol_table(tmp_path):
    path = tmp_path / "t.grc"
    path.write_text(TASK)
    checked = load_task(str(path), overrides={"lift": 0.2})
    assert checked.types == {"lift": "scalar", "ee": "vec3", "high": "bool"}
    assert checked.kinds == {"lift": "param", "ee": "keypoint", "high": "let"}
    up, go = checked.task.stages[0].constraints
    assert (up.tol, up.weight, up.over, up.tag) == (ast.Number(0.0), ast.Number(1.0), None, "task")
    assert (go.tol, go.weight, go.over, go.tag) == (ast.Number(0.0), ast.Number(1.0), "sum", "path")
    assert checked.task.params == (ast.ParamDecl("lift", 0.2),)
    assert checked.warnings == () and checked.sources == {str(path): TASK}


def test_load_task_keeps_warnings_and_raises_on_errors(tmp_path):
    path = tmp_path / "t.grc"
    path.write_text(TASK.replace("param lift = 0.1", "param lift = 0.1\nparam spare = 2"))
    assert [d.code for d in load_task(str(path)).warnings] == ["GRC903"]
    path.write_text(TASK.replace("ee.z >= lift", "ee.z >= lfit"))
    with pytest.raises(GrcError) as caught:
        load_task(str(path))
    assert [(d.code, d.span.line, d.span.column) for d in caught.value.diagnostics] == [("GRC201", 6, 20)]
    assert "did you mean 'lift'?" in caught.value.diagnostics[0].message
