"""Code generation: deterministic, readable, valid Python; the printer's Numba-friendly forms."""

from __future__ import annotations

import ast as pyast
import re

import numba

from grape_dsl import ast
from grape_dsl.codegen import generate, generate_program
from grape_dsl.ir import COMPILER_VERSION
from grape_dsl.ir import lower as ir
from grape_dsl.ir.blocks import to_blocks
from grape_dsl.parser import parse

TASK = """
task demo
keypoints {
    ee = gripper.tip
    obj = object.center
}
signals { grasped = grasped
    hit = contact.obstacle }
stage grasp until grasped >= 0.5 {
    subgoal reach: dist(ee, obj) <= 0.02 weight 10 tag grasp
    path bump: hit <= 0 over sum tol 3 tag collision
    path off: hit <= 0 over max weight 0
}
stage place {
    subgoal down: obj.z <= 0.1
    path slow: norm(delta(obj)) <= 0.01 over mean
}
"""


def _program() -> ir.Program:
    module = parse(TASK, "tasks/demo.grc")
    assert isinstance(module, ast.TaskFile)
    return ir.lower_task(module, "cafe0123")


def test_output_is_deterministic() -> None:
    assert generate_program(_program()) == generate_program(_program())


def test_header_names_file_hash_and_versions() -> None:
    source = generate_program(_program(), "tasks/demo.grc")
    head = source[:800]
    assert "source: tasks/demo.grc" in head
    assert "source hash: cafe0123" in head
    assert f"grape_dsl.codegen {COMPILER_VERSION}" in head
    assert f"numba {numba.__version__}" in head


def test_generated_module_is_valid_python_with_one_kernel() -> None:
    source = generate_program(_program())
    tree = pyast.parse(source)
    functions = [n.name for n in tree.body if isinstance(n, pyast.FunctionDef)]
    assert "score_kernel" in functions
    assert "CONSTRAINT_NAMES = ('grasp.reach', 'grasp.bump', 'grasp.off', 'place.down', 'place.slow')" in source


def test_a_reader_finds_each_constraint_by_name() -> None:
    source = generate_program(_program())
    for text in (
        "# subgoal reach: dist(ee, obj) <= 0.02 weight 10 tag grasp",
        "# path bump: hit <= 0 tol 3 over sum tag collision",
        "# path slow: norm(delta(obj)) <= 0.01 over mean",
        "# until grasped >= 0.5",
    ):
        assert text in source
    assert "v_reach = " in source and "v_slow = " in source
    assert "cost = 10.0 * max(0.0, v_reach)" in source
    assert "cost = max(0.0, (acc_bump if stage_reached else v_bump) - 3.0)" in source
    assert "acc_slow / (end - start + 1)" in source


def test_weight_zero_constraint_costs_nothing() -> None:
    source = generate_program(_program())
    costs = source[source.index("stage_cost = 0.0 if stage_reached") :]
    block = costs[costs.index("# path off:") :]
    assert block.splitlines()[1].strip() == "cost = 0.0"


def test_path_constraints_run_every_step_subgoals_once() -> None:
    source = generate_program(_program())
    loop = source[source.index("while t < L:") : source.index("end = t if ended")]
    assert "v_bump = " in loop and "v_reach = " not in loop


def test_operations_are_printed_as_plain_ieee_float_code() -> None:
    text = """
task forms
signals { g = grasped }
stage only {
    subgoal a: min(g, 1, 2) <= max(g / g, exp(log(g)))
    subgoal b: not (sqrt(g) <= 1)
}
"""
    source = generate(to_blocks(ir.lower_task(parse(text, "forms.grc"))))
    # min/max keep Python's two-argument semantics (the first unless the second is strictly
    # smaller/larger), nothing is simplified: g / g and exp(log(g)) are computed as written.
    code = "\n".join(
        line for line in source.split("def score_kernel")[1].splitlines() if not line.strip().startswith("#")
    )
    assert not re.search(r"(?<![\w])min\(", code) and "_min(" in code and "_max(" in code
    assert "def _min(a, b):\n" in source and "return b if b < a else a" in source
    assert "math.exp(" in source and "math.log(" in source and " / " in source
    assert "_nan_inf(" in code and "return math.inf if math.isnan(x) else x" in source
