"""Lowering (AST -> IR) and the block pass (IR -> per-stage value-numbered blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grape_dsl import ast
from grape_dsl.api import load_task
from grape_dsl.diagnostics import GrcError
from grape_dsl.ir import lower as ir
from grape_dsl.ir.blocks import dump, to_blocks
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
        "+",
        ir.KeypointInput(2, "container.top"),
        ir.Call("vec", (ir.Const(0.0), ir.Const(0.0), ir.Const(0.1)), "vec3"),
        "vec3",
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
    task = ast.TaskFile("bad", None, (ast.Stage("only", None, (ast.Constraint("subgoal", "s", ast.Number(1.0)),)),))
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
    blocks = to_blocks(_program())
    point = blocks.stages[0].point
    ops = [v.op for v in point.values]
    # graded comparisons, NaN-guarded; `or` is a min; a bool let is scored 0/1 by a select
    assert {"pos", "nan_inf", "min", "select"} <= set(ops)
    # delta reads the previous step through shifted inputs, and is 0 at the first step
    shifted = [v.source for v in point.values if v.op == "load" and v.source.shift == 1]
    assert any(s.array == "kp" and s.slot == 0 for s in shifted)
    assert any(v.op == "started" and v.shift == 0 for v in point.values)


def test_value_numbering_shares_subexpressions_across_a_stage() -> None:
    blocks = to_blocks(_program())
    point = blocks.stages[0].point
    # dist(ee, obj) appears in `reach` and in the `near` let used by `slow`: computed once,
    # so the block has two square roots (that one and norm's), not three
    assert sum(1 for v in point.values if v.op == "sqrt") == 2
    keys = [(v.op, v.args, repr(v.number), v.flag, v.source, v.shift) for v in point.values]
    assert len(keys) == len(set(keys))
    assert {name for name, _ in point.outputs} == {"v_reach", "v_bump", "v_slow"}
    step = dict(blocks.stages[0].step.outputs)
    assert set(step) == {"until", "v_bump", "v_slow"}  # subgoals are not evaluated every step
    assert "stage grasp" in dump(blocks)


def test_step_index_and_nested_delta_use_clamped_shifts() -> None:
    text = """
task d
signals { g = grasped }
stage only {
    path p: delta(delta(g)) + t <= 1
}
"""
    step = to_blocks(_program(text)).stages[0].step
    loads = {(v.source.array, v.source.shift) for v in step.values if v.op == "load"}
    assert {("sig", 0), ("sig", 1), ("sig", 2), ("t", 0)} <= loads
    assert step.shifts() == [1, 2]
