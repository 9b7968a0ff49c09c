"""The semantic checker: one known-bad snippet per diagnostic code (code, line, column), all
errors of a file in one run, fail-fast, the symbol table, and well-typed programs that pass."""

from __future__ import annotations

import pytest

from grape_dsl import ast
from grape_dsl.api import check_source
from grape_dsl.builtins import BUILTINS
from grape_dsl.checker import OVER_ON_SUBGOAL, check
from grape_dsl.llm import builtin_schema
from grape_dsl.parser import parse

# Nine lines; every snippet below starts on line 10.
PRELUDE = """task demo
param lift = 0.1
keypoints {
    ee = gripper.tip
    obj = object.center
}
signals {
    grasped = grasped
}
"""

LAST_STAGE = """stage last {
    subgoal near: dist(ee, obj) <= lift and grasped >= 0.5
}
"""

PICK_PLACE_SCHEMA = (
    ["gripper.tip", "object.center", "object.top", "object.bottom", "container.center", "container.top"],
    list(builtin_schema("pick_place").signals),
)


def _stage(*lines: str) -> str:
    return "stage s {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


# (code, snippet after PRELUDE, line, column, text the message must contain)
BAD_SNIPPETS = [
    ("GRC201", _stage("subgoal reach: dist(ee, ojb) <= 0.02"), 11, 29, "unknown name 'ojb'; did you mean 'obj'?"),
    ("GRC202", "keypoints {\n    obj = object.top\n}\n" + LAST_STAGE, 11, 5, "'obj' is already declared as a keypoint"),
    (
        "GRC203",
        "stage last until grasped >= 0.5 {\n    subgoal a: grasped >= 0.5\n}\n" + LAST_STAGE,
        13,
        1,
        "stage 'last' is already declared at line 10",
    ),
    (
        "GRC204",
        _stage("subgoal a: dist(ee, obj) <= lift", "path a: grasped >= 0.5"),
        12,
        5,
        "already has a constraint 'a'",
    ),
    ("GRC205", "let t = 1\n" + LAST_STAGE, 10, 1, "cannot declare 't'"),
    ("GRC205", "let norm = lift\n" + LAST_STAGE, 10, 1, "it is a builtin function: norm(vec3) -> scalar"),
    ("GRC206", _stage("subgoal a: distt(ee, obj) <= lift"), 11, 16, "unknown function 'distt'; did you mean 'dist'?"),
    ("GRC206", _stage("subgoal a: obj(ee) <= lift"), 11, 16, "'obj' is a keypoint, not a function"),
    (
        "GRC207",
        _stage("subgoal a: dist(ee) <= lift"),
        11,
        16,
        "'dist' takes 2 argument(s), got 1: dist(vec3, vec3) -> scalar",
    ),
    ("GRC207", _stage("subgoal a: min(lift) <= lift"), 11, 16, "'min' takes 2 or more argument(s), got 1"),
    (
        "GRC208",
        _stage("subgoal a: dist(ee, lift) <= lift"),
        11,
        25,
        "wrong argument types: dist(vec3, scalar); the signature is dist(vec3, vec3) -> scalar",
    ),
    (
        "GRC208",
        _stage("subgoal a: norm(mean(ee, lift)) <= lift"),
        11,
        30,
        "mean(vec3, scalar); the signature is mean(vec3, vec3, ...) -> vec3 | mean(scalar, scalar, ...) -> scalar",
    ),
    ("GRC209", _stage("subgoal a: norm(ee + 1) <= lift"), 11, 21, "cannot apply '+' to a vec3 and a scalar"),
    ("GRC209", _stage("subgoal a: norm(ee * obj) <= lift"), 11, 21, "cannot apply '*' to a vec3 and a vec3"),
    ("GRC209", _stage("subgoal a: -(grasped > 0) or grasped > 0"), 11, 16, "unary '-'"),
    ("GRC210", _stage("subgoal a: ee <= lift"), 11, 16, "'<=' compares two scalars, not a vec3 and a scalar"),
    ("GRC211", _stage("subgoal a: grasped and dist(ee, obj) <= lift"), 11, 16, "'and' takes bools"),
    ("GRC211", _stage("subgoal a: not grasped"), 11, 20, "'not' takes a bool, but this is a scalar"),
    ("GRC212", _stage("subgoal a: lift.z <= 1"), 11, 16, "'.z' takes a vec3, but this is a scalar"),
    (
        "GRC213",
        "stage s until grasped {\n    subgoal a: grasped >= 0.5\n}\n" + LAST_STAGE,
        10,
        15,
        "'until' of stage 's' must be a bool, but this is a scalar",
    ),
    ("GRC214", _stage("subgoal a: dist(ee, obj)"), 11, 16, "must be a comparison or a bool, but this is a scalar"),
    ("GRC216", _stage("path a: grasped >= 0.5 tol dist(ee, obj)"), 11, 32, "the tol of 'a' must be a constant"),
    ("GRC216", _stage("path a: grasped >= 0.5 weight t"), 11, 35, "the weight of 'a' must be a constant"),
    ("GRC216", _stage("path a: grasped >= 0.5 weight 1 / 0"), 11, 35, "the weight of 'a' is not finite"),
    ("GRC217", _stage("path a: grasped >= 0.5 weight -2"), 11, 35, "the weight of 'a' is negative (-2)"),
    ("GRC217", _stage("path a: grasped >= 0.5 tol lift - 1"), 11, 32, "the tol of 'a' is negative (-0.9)"),
    (
        "GRC218",
        "keypoints {\n    up = object.center + vec(0, 0, grasped)\n}\n" + _stage("subgoal a: up.z <= 1"),
        11,
        26,
        "the offset of keypoint 'up' must be a constant vec3",
    ),
    (
        "GRC218",
        "keypoints {\n    up = object.center + lift\n}\n" + _stage("subgoal a: up.z <= 1"),
        11,
        26,
        "must be a constant vec3",
    ),
    ("GRC219", "let a = b\nlet b = a + 1\n" + _stage("subgoal a: a <= 1"), 10, 1, "let cycle: a -> b -> a"),
    ("GRC219", "let a = a + 1\n" + _stage("subgoal a: a <= 1"), 10, 1, "let cycle: a -> a"),
    ("GRC220", _stage("subgoal a: grasped >= 0.5") + LAST_STAGE, 10, 1, "stage 's' needs 'until'"),
    (
        "GRC221",
        "stage s until grasped >= 0.5 {\n    subgoal a: grasped >= 0.5\n}\n",
        10,
        15,
        "the last stage 's' must not have 'until'",
    ),
    ("GRC222", "", 1, 1, "task 'demo' has no stage"),
    ("GRC223", "unreached 1\nunreached 2\n" + LAST_STAGE, 11, 1, "'unreached' is already set at line 10"),
    ("GRC224", "unreached -0.5\n" + LAST_STAGE, 10, 1, "the unreached-stage penalty is negative (-0.5)"),
    (
        "GRC225",
        "keypoints {\n    goal = container.topp\n}\n" + _stage("subgoal a: dist(ee, goal) <= lift"),
        11,
        12,
        "the environment reports no keypoint 'container.topp'; did you mean 'container.top'?",
    ),
    (
        "GRC226",
        "signals {\n    hit = contact.obstacel\n}\n" + _stage("path a: hit <= 0"),
        11,
        11,
        "the environment reports no signal 'contact.obstacel'; did you mean 'contact.obstacle'?",
    ),
    ("GRC227", _stage("subgoal a: norm(dist) <= lift"), 11, 21, "'dist' is a builtin function, not a value"),
    # warnings
    ("GRC901", "keypoints {\n    spare = object.top\n}\n" + LAST_STAGE, 11, 5, "keypoint 'spare' is never used"),
    ("GRC902", "signals {\n    opening = gripper.opening\n}\n" + LAST_STAGE, 11, 5, "signal 'opening' is never used"),
    ("GRC903", "param spare = 1\n" + LAST_STAGE, 10, 1, "param 'spare' is never used"),
    ("GRC904", "let spare = dist(ee, obj)\n" + LAST_STAGE, 10, 1, "let 'spare' is never used"),
    (
        "GRC905",
        "let small = lift < 1\n" + _stage("subgoal a: small and lift <= 2"),
        12,
        16,
        "does not depend on any keypoint, signal or t",
    ),
    ("GRC906", "stage s until grasped >= 0.5 {\n}\n" + LAST_STAGE, 10, 1, "stage 's' has no constraints"),
    (
        "GRC907",
        "stage s until lift > 0 {\n    subgoal a: grasped >= 0.5\n}\n" + LAST_STAGE,
        10,
        15,
        "does not depend on the trajectory",
    ),
]

OBJECTIVE_SNIPPETS = [
    ("GRC217", "objective o\ntag path { tol -1 }\n", 2, 1, "the tol of tag 'path' is negative (-1)"),
    ("GRC223", "objective o\nunreached 1\nunreached 2\n", 3, 1, "'unreached' is already set at line 2"),
    ("GRC224", "objective o\nunreached -1\n", 2, 1, "the unreached-stage penalty is negative"),
    ("GRC908", "objective o\ntag path { tol 1 }\ntag path { weight 2 }\n", 3, 1, "the later setting wins"),
    ("GRC908", "objective o\nparam lift = 1\nparam lift = 2\n", 3, 1, "the later setting wins"),
    ("GRC909", "objective o\ntag path { }\n", 2, 1, "sets neither tol nor weight"),
]


@pytest.mark.parametrize(
    ("code", "snippet", "line", "column", "text"), BAD_SNIPPETS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_SNIPPETS)]
)
def test_each_task_code_is_reported_where_the_mistake_is(code, snippet, line, column, text):
    source = PRELUDE + snippet
    result = check(parse(source, "bad.grc"), schema=PICK_PLACE_SCHEMA)
    found = [d for d in result.diagnostics if d.code == code]
    assert found, f"no {code} in {[(d.code, d.message) for d in result.diagnostics]}"
    assert [(d.span.line, d.span.column) for d in found] == [(line, column)]
    assert text in found[0].message
    assert found[0].path == "bad.grc"
    assert found[0].severity == ("warning" if code.startswith("GRC9") else "error")


@pytest.mark.parametrize(
    ("code", "source", "line", "column", "text"),
    OBJECTIVE_SNIPPETS,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(OBJECTIVE_SNIPPETS)],
)
def test_each_objective_code_is_reported_where_the_mistake_is(code, source, line, column, text):
    found = [d for d in check_source(source, "o.grc") if d.code == code]
    assert [(d.span.line, d.span.column) for d in found] == [(line, column)]
    assert text in found[0].message


def test_over_on_a_subgoal_built_without_the_parser():
    # The parser already rejects this text (GRC114); ASTs built in code are checked too.
    span = ast.Span(4, 5, 4, 40, 60, 95)
    expr = ast.Compare(">=", ast.Name("grasped"), ast.Number(0.5))
    task = ast.TaskFile(
        "demo",
        None,
        (
            ast.SignalsBlock((ast.SignalDecl("grasped", ast.Source(("grasped",))),)),
            ast.Stage("s", None, (ast.Constraint("subgoal", "a", expr, over="sum", span=span),)),
        ),
    )
    found = [d for d in check(task).diagnostics if d.code == OVER_ON_SUBGOAL]
    assert [(d.span.line, d.span.column) for d in found] == [(4, 5)]


EVERYTHING_WRONG = (
    PRELUDE
    + """let loop = loop
stage grasp {
    subgoal reach: dist(ee, ojb) <= 0.02
    subgoal reach: normm(ee) <= 1
    path hold: grasped tol obj.z weight -1
}
stage grasp until ee {
    subgoal lifted: obj.w >= lift
}
"""
)


def test_all_errors_of_a_file_come_out_in_one_run_in_source_order():
    result = check(parse(EVERYTHING_WRONG.replace("obj.w", "obj.z"), "bad.grc"))
    errors = [(d.code, d.span.line) for d in result.errors]
    assert errors == [
        ("GRC219", 10),
        ("GRC220", 11),
        ("GRC201", 12),
        ("GRC204", 13),
        ("GRC206", 13),
        ("GRC214", 14),
        ("GRC216", 14),
        ("GRC217", 14),
        ("GRC203", 16),
        ("GRC221", 16),
        ("GRC213", 16),
    ]


def test_fail_fast_stops_at_the_first_error():
    result = check(parse(EVERYTHING_WRONG.replace("obj.w", "obj.z")), fail_fast=True)
    assert len(result.errors) == 1


def test_one_mistake_gives_one_diagnostic():
    # `ojb` is unknown: the call, the comparison and the constraint around it stay silent.
    result = check(parse(PRELUDE + _stage("subgoal a: dist(ee, ojb) + 1 <= lift and grasped > 0")))
    assert [d.code for d in result.errors] == ["GRC201"]


def test_symbol_table_types_and_kinds():
    source = (
        PRELUDE
        + """let above = obj + vec(0, 0, lift)
let holding = grasped >= 0.5
let gap = dist(ee, above)
"""
        + _stage("subgoal a: gap <= lift and holding")
    )
    result = check(parse(source))
    assert result.ok
    assert result.types == {
        "lift": "scalar",
        "ee": "vec3",
        "obj": "vec3",
        "grasped": "scalar",
        "above": "vec3",
        "holding": "bool",
        "gap": "scalar",
    }
    assert result.kinds == {
        "lift": "param",
        "ee": "keypoint",
        "obj": "keypoint",
        "grasped": "signal",
        "above": "let",
        "holding": "let",
        "gap": "let",
    }


def test_lets_may_refer_forward():
    result = check(parse(PRELUDE + "let a = b * 2\nlet b = dist(ee, obj)\n" + _stage("subgoal a: a <= lift")))
    assert result.ok and result.types["a"] == "scalar"


def _well_typed_call(name: str) -> list[str]:
    samples = {"scalar": "lift", "vec3": "ee", "bool": "grasped > 0"}
    calls = []
    for sig in BUILTINS[name]:
        args = [samples[sig.params[0]]] * 3 if sig.variadic else [samples[p] for p in sig.params]
        call = f"{name}({', '.join(args)})"
        calls.append(f"norm({call}) <= 1" if sig.returns == "vec3" else f"{call} <= 1")
    return calls


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_overload_checks_clean(name):
    lines = [f"path c{i}: {expr}" for i, expr in enumerate(_well_typed_call(name))]
    result = check(parse(PRELUDE + _stage(*lines)))
    assert result.errors == ()


def test_vector_arithmetic_components_t_and_logic_check_clean():
    lines = [
        "path a: norm(2 * (ee - obj) / 2 + obj * 0.5 - -ee) <= lift",
        "path b: (ee + vec(0, 0, lift)).z >= obj.z or not (grasped > 0.5 and t < 10)",
        "subgoal c: dist_xy(mean(ee, obj, obj), obj) == 0 tol 0.01 weight 2 * lift",
        "path d: norm(delta(ee)) + abs(delta(lift)) <= clamp(lift, 0, 1) over max",
        "path e: true",
    ]
    result = check(parse(PRELUDE + _stage(*lines)))
    assert result.errors == ()
    assert [d.code for d in result.warnings] == ["GRC905"]  # `true` is the same for every trajectory


def test_schema_reports_a_source_bound_in_the_wrong_block():
    source = PRELUDE + "keypoints {\n    g = grasped\n}\n" + _stage("subgoal a: norm(g) <= lift")
    found = [d for d in check(parse(source), schema=PICK_PLACE_SCHEMA).errors]
    assert [d.code for d in found] == ["GRC225"]
    assert found[0].hint == "it is a signal: bind it in signals { }"


def test_check_source_turns_syntax_errors_into_diagnostics():
    diagnostics = check_source("task demo\nstage s {\n    subgoal a: dist(ee, <= 1\n}\n", "x.grc")
    assert diagnostics and all(d.code.startswith("GRC1") for d in diagnostics)


# ---------------------------------------------------------------------------- properties and scale

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from grape_dsl.fmt import format_module  # noqa: E402

_SCALAR_NAMES = ("lift", "grasped", "t")
_VEC_NAMES = ("ee", "obj")


def _typed(kind: str, depth: int) -> st.SearchStrategy:
    """Expressions of a known type, built from the typing rules of docs/language.md."""
    if kind == "scalar":
        leaves = st.one_of(
            st.floats(0, 100, allow_nan=False).map(ast.Number), st.sampled_from(_SCALAR_NAMES).map(ast.Name)
        )
    elif kind == "vec3":
        leaves = st.sampled_from(_VEC_NAMES).map(ast.Name)
    else:
        leaves = st.booleans().map(ast.Bool)
    if depth == 0:
        return leaves
    s, v, b = (st.deferred(lambda k=k: _typed(k, depth - 1)) for k in ("scalar", "vec3", "bool"))
    if kind == "scalar":
        options = [
            st.builds(ast.Binary, st.sampled_from("+-*/"), s, s),
            st.builds(ast.Component, v, st.sampled_from("xyz")),
            st.builds(ast.Neg, s),
            st.builds(lambda a, c: ast.Call("dist", (a, c)), v, v),
            st.builds(lambda a: ast.Call("norm", (a,)), v),
            st.builds(lambda a: ast.Call("delta", (a,)), s),
            st.builds(lambda xs: ast.Call("min", tuple(xs)), st.lists(s, min_size=2, max_size=3)),
            st.builds(lambda a, c, d: ast.Call("clamp", (a, c, d)), s, s, s),
        ]
    elif kind == "vec3":
        options = [
            st.builds(ast.Binary, st.sampled_from("+-"), v, v),
            st.builds(lambda a, c: ast.Binary("*", a, c), s, v),
            st.builds(lambda a, c: ast.Binary("/", a, c), v, s),
            st.builds(ast.Neg, v),
            st.builds(lambda a, c, d: ast.Call("vec", (a, c, d)), s, s, s),
            st.builds(lambda a, c: ast.Call("cross", (a, c)), v, v),
            st.builds(lambda xs: ast.Call("mean", tuple(xs)), st.lists(v, min_size=2, max_size=3)),
            st.builds(lambda a: ast.Call("delta", (a,)), v),
        ]
    else:
        options = [
            st.builds(ast.Compare, st.sampled_from(["<=", "<", ">=", ">", "==", "!="]), s, s),
            st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), b, b),
            st.builds(ast.Not, b),
        ]
    return st.one_of(leaves, *options)


def _task_with_let(value: ast.Expr) -> ast.TaskFile:
    base = parse(PRELUDE + LAST_STAGE)
    return ast.TaskFile(base.name, None, (*base.decls[:-1], ast.LetDecl("probe", value), base.decls[-1]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["scalar", "vec3", "bool"]).flatmap(lambda k: st.tuples(st.just(k), _typed(k, 3))))
def test_well_typed_expressions_get_their_type_in_memory_and_through_text(kind_and_expr):
    kind, expr = kind_and_expr
    task = _task_with_let(expr)
    result = check(task)
    assert result.errors == ()
    assert result.types["probe"] == kind
    reparsed = check(parse(format_module(task)))
    assert reparsed.errors == () and reparsed.types["probe"] == kind


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["scalar", "bool"]).flatmap(lambda k: _typed(k, 3)), st.sampled_from(_VEC_NAMES))
def test_a_vector_where_a_scalar_or_bool_belongs_is_always_an_error(expr, vector_name):
    # Replace the first scalar or bool leaf with a vec3 name: the result can never type-check.
    def swap(node):
        if isinstance(node, (ast.Number, ast.Bool)) or (isinstance(node, ast.Name) and node.ident in _SCALAR_NAMES):
            return ast.Name(vector_name), True
        for field_name in ("operand", "left", "right", "base"):
            child = getattr(node, field_name, None)
            if child is not None and not isinstance(child, str):
                new, done = swap(child)
                if done:
                    return type(node)(**{**node.__dict__, field_name: new}), True
        if isinstance(node, ast.Call):
            for i, arg in enumerate(node.args):
                new, done = swap(arg)
                if done:
                    return ast.Call(node.func, (*node.args[:i], new, *node.args[i + 1 :])), True
        return node, False

    broken, changed = swap(expr)
    if not changed:
        return
    stage = ast.Stage("s", None, (ast.Constraint("path", "c", broken),))
    task = ast.TaskFile("demo", None, (*parse(PRELUDE + LAST_STAGE).decls[:-1], stage))
    assert check(task).errors


def test_long_let_chains_in_any_order_check_without_recursion_trouble():
    count = 3000
    lets = [f"let l{i} = l{i + 1} + 1\n" for i in range(count)] + [f"let l{count} = dist(ee, obj)\n"]
    result = check(parse(PRELUDE + "".join(lets) + _stage("subgoal a: l0 <= lift")))
    assert result.errors == () and result.types["l0"] == "scalar"
    cyclic = lets[:-1] + [f"let l{count} = l0\n"]
    result = check(parse(PRELUDE + "".join(cyclic) + _stage("subgoal a: l0 <= lift")))
    assert [d.code for d in result.errors] == ["GRC219"]
    assert result.errors[0].message.startswith("let cycle: l0 -> l1 -> l2")


def test_many_mistakes_in_a_large_file_are_all_reported():
    lines = [f"path c{i}: dist(ee, ob{i % 7}) <= lift" for i in range(4000)]
    result = check(parse(PRELUDE + _stage(*lines)))
    assert len(result.errors) == 4000
    assert {d.code for d in result.errors} == {"GRC201"}


def test_near_name_search_is_budgeted_on_huge_generated_files():
    # 1000 similar names and 1000 typos: every typo is reported, the first ones with a
    # suggestion, and the search stops before it costs minutes.
    lets = "".join(f"let value_{i} = ee.z + {i}\n" for i in range(1000))
    lines = [f"path c{i}: valu_{i} <= 1" for i in range(1000)]
    result = check(parse(PRELUDE + lets + _stage(*lines)))
    messages = [d.message for d in result.errors]
    assert len(messages) == 1000
    assert messages[0] == "unknown name 'valu_0'; did you mean 'value_0'?"
    assert messages[-1] == "unknown name 'valu_999'"


def test_mutated_stock_files_end_in_diagnostics_never_in_an_exception(tmp_path):
    import random
    import re
    from pathlib import Path

    from grape_dsl.api import load_task
    from grape_dsl.diagnostics import GrcError

    root = Path(__file__).resolve().parents[2] / "constraints"
    texts = [p.read_text() for p in sorted(root.glob("tasks/*.grc"))]
    objectives = [[], [str(root / "safety.grc")], [str(root / "efficiency.grc"), str(root / "safety.grc")]]
    rng = random.Random(20261125)
    loaded = 0
    for _ in range(150):
        tokens = re.findall(r"\s+|\w+|[^\w\s]", rng.choice(texts))
        for _ in range(rng.randint(1, 3)):  # delete, duplicate, swap or copy a token
            i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
            action = rng.randrange(4)
            if action == 0:
                del tokens[i]
            elif action == 1:
                tokens.insert(i, tokens[i])
            elif action == 2:
                tokens[i], tokens[j] = tokens[j], tokens[i]
            else:
                tokens[i] = tokens[j]
        path = tmp_path / "mutant.grc"
        path.write_text("".join(tokens))
        assert all(d.code.startswith("GRC") for d in check_source(path.read_text(), str(path)))
        try:
            load_task(str(path), rng.choice(objectives), rng.choice([{}, {"near": -1.0}, {"horizon": 2.0}]))
            loaded += 1
        except GrcError as caught:
            assert caught.diagnostics
    assert 0 < loaded < 150  # both outcomes were exercised


def _codes_defined_in(module) -> set[str]:
    return {
        value
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value.startswith("GRC")
    }


def test_every_semantic_code_is_documented_and_has_a_snippet_test():
    import re
    from pathlib import Path

    from grape_dsl import checker, objective

    defined = _codes_defined_in(checker) | _codes_defined_in(objective)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "language.md").read_text()
    table = docs.split("### Semantic diagnostic codes", 1)[1]
    documented = set(re.findall(r"^\| (GRC[239]\d\d) \|", table, flags=re.M))
    assert defined == documented
    snippet_tested = {code for code, *_ in BAD_SNIPPETS + OBJECTIVE_SNIPPETS} | {OVER_ON_SUBGOAL}
    assert _codes_defined_in(checker) == snippet_tested  # GRC3xx: tests/grape_dsl/test_objective.py


def test_reserved_keywords_are_the_grammar_keywords():
    from grape_dsl.checker import KEYWORDS
    from grape_dsl.parser import keywords

    assert KEYWORDS == keywords()
