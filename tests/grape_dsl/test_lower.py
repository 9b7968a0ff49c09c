"""Lowering (AST -> IR) and the sympy pass (IR -> per-stage CSE'd blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy as sp

from grape_dsl import ast
from grape_dsl.api import load_task
from grape_dsl.diagnostics import GrcError
from grape_dsl.ir import lower as ir
from grape_dsl.ir.sym import NanToInf, dump, to_sympy
from grape_dsl.parser import parse

STOCK = Path(__file__).resolve().parents[2] / "constraints"

TASK = """
task demo
param lift = 0.1
keypoints {
    ee = gripper.tip
    obj = object.center
    goal = container.top + vec(0, 0, lift)
}
signals {
    grasped = grasped
    hit = contact.obstacle
}
let speed = norm(delta(ee))
let near = dist(ee, obj) <= 0.05
stage grasp until grasped >= 0.5 {
    subgoal reach: dist(ee, obj) <= 0.02 tag grasp
    path bump: hit <= 0 over sum tol 2 weight 3 tag collision
    path slow: speed <= 0.01 or near
}
stage place {
    subgoal inside: dist(obj, goal) <= 0.03 weight 2
}
unreached 4
"""


def _program(text: str = TASK) -> ir.Program:
    module = parse(text, "demo.grc")
    assert isinstance(module, ast.TaskFile)
    return ir.lower_task(module, "hash123")


def test_inputs_get_slots_in_declaration_order() -> None:
    program = _program()
    assert program.keypoint_sources == ("gripper.tip", "object.center", "container.top")
    assert program.signal_sources == ("grasped", "contact.obstacle")
    assert program.source_hash == "hash123"


def test_names_resolve_to_inputs_constants_and_lets() -> None:
    program = _program()
    reach, bump, slow = program.stages[0].constraints
    assert reach.expr == ir.Compare(
        "<=",
        ir.Call("dist", (ir.KeypointInput(0, "gripper.tip"), ir.KeypointInput(1, "object.center")), "scalar"),
        ir.Const(0.02),
    )
    assert bump.expr.left == ir.SignalInput(1, "contact.obstacle")
    speed, near = slow.expr.left.left, slow.expr.right
    assert isinstance(speed, ir.LetRef) and speed.name == "speed" and speed.type == "scalar"
    assert isinstance(speed.value.args[0], ir.Delta)
    assert isinstance(near, ir.LetRef) and near.type == "bool"
    # keypoint offsets become vector arithmetic with params folded to constants
    inside = program.stages[1].constraints[0].expr.left
    goal = inside.args[1]
    assert goal == ir.Arith(
        "+", ir.KeypointInput(2, "container.top"),
        ir.Call("vec", (ir.Const(0.0), ir.Const(0.0), ir.Const(0.1)), "vec3"), "vec3",
    )


def test_attributes_and_defaults() -> None:
    program = _program()
    reach, bump, slow = program.stages[0].constraints
    assert (reach.tol, reach.weight, reach.over, reach.tag) == (0.0, 1.0, None, "grasp")
    assert (bump.tol, bump.weight, bump.over, bump.tag) == (2.0, 3.0, "sum", "collision")
    assert (slow.over, slow.tag) == ("mean", "task")
    assert program.unreached == 4.0
    assert program.constraint_names == ("grasp.reach", "grasp.bump", "grasp.slow", "place.inside")
    assert program.constraint_tags == ("grasp", "collision", "task", "task")
    assert slow.text == "path slow: speed <= 0.01 or near"


def test_unreached_defaults_to_one() -> None:
    assert _program(TASK.replace("unreached 4", "")).unreached == 1.0


def test_type_errors_the_checker_missed_are_reported_not_crashed() -> None:
    task = ast.TaskFile("bad", None, (
        ast.Stage("only", None, (ast.Constraint("subgoal", "s", ast.Number(1.0)),)),
    ))
    with pytest.raises(GrcError, match="expected a bool"):
        ir.lower_task(task)


def test_lowering_a_checked_stock_task() -> None:
    checked = load_task(str(STOCK / "tasks" / "pick_place_obstacle.grc"), [str(STOCK / "safety.grc")])
    program = ir.lower(checked)
    assert program.source_hash == checked.source_hash
    bump = program.stages[0].constraints[1]
    assert (bump.name, bump.tol, bump.weight) == ("bump", 0.0, 2.0)  # safety: tol 0 weight 2
    assert "obstacle.top" in program.keypoint_sources
    assert "program pick_place_obstacle" in ir.dump(program)


def test_violation_forms() -> None:
    sym = to_sympy(_program())
    grasp = sym.stages[0]
    reach, bump, slow = grasp.raw_violations
    # graded comparison, NaN-guarded
    assert reach.func is sp.Max and any(isinstance(a, NanToInf) for a in reach.args)
    # `or` is the min of both sides; a bool let is scored 0/1, not graded
    assert slow.func is sp.Min
    piecewise = [a for a in slow.args if isinstance(a, sp.Piecewise)]
    assert len(piecewise) == 1 and {piecewise[0].args[0][0], piecewise[0].args[1][0]} == {0, 1}
    # delta reads the previous step through shifted symbols
    names = {s.name for s in slow.free_symbols}
    assert "kp0_gripper_tip_x_p1" in names
    assert sym.inputs["kp0_gripper_tip_x_p1"].shift == 1


def test_cse_shares_subexpressions_across_a_stage() -> None:
    sym = to_sympy(_program())
    point = sym.stages[0].point
    # dist(ee, obj) appears in `reach` and in the `near` let used by `slow`: computed once
    temps = [value for _, value in point.temporaries]
    assert any(isinstance(v, sp.Pow) or v.func is sp.sqrt or "sqrt" in str(v) for v in temps)
    outputs = dict(point.outputs)
    assert set(outputs) == {"v_reach", "v_bump", "v_slow"}
    step = dict(sym.stages[0].step.outputs)
    assert set(step) == {"until", "v_bump", "v_slow"}  # subgoals are not evaluated every step
    assert "stage grasp" in dump(sym)


def test_step_index_and_nested_delta_use_clamped_shifts() -> None:
    text = """
task d
signals { g = grasped }
stage only {
    path p: delta(delta(g)) + t <= 1
}
"""
    sym = to_sympy(_program(text))
    (v,) = sym.stages[0].raw_violations
    names = {s.name for s in v.free_symbols}
    assert {"sig0_grasped", "sig0_grasped_p1", "sig0_grasped_p2", "t"} <= names
