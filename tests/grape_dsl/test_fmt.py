"""Formatter: canonical layout, comments kept, idempotent, and parse(fmt(x)) == parse(x)."""

from __future__ import annotations

from pathlib import Path

import pytest
from grc_strategies import messy_sources, modules
from hypothesis import HealthCheck, given, settings

from grape_dsl import ast, format_module, format_source, parse
from grape_dsl.fmt import format_expr, format_number

ROOT = Path(__file__).resolve().parents[2]
STOCK = sorted((ROOT / "constraints").glob("**/*.grc"))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2"),
        (0.1, "0.1"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e-05, "1e-05"),
        (-0.5, "-0.5"),
        (1e16, "1e+16"),
        (123456.0, "123456"),
        (0.0, "0"),
    ],
)
def test_numbers_shortest_round_trip(value: float, text: str) -> None:
    assert format_number(value) == text
    assert float(text) == value


def test_number_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="inf"):
        format_number(float("inf"))


@pytest.mark.parametrize(
    ("source", "canonical"),
    [
        ("((a + b)) * c", "(a + b) * c"),
        ("a + (b * c)", "a + b * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("-(a.x)", "-a.x"),
        ("(-a).x", "(-a).x"),
        ("-(-a)", "- -a"),
        ("not (a <= b)", "not a <= b"),
        ("not (a and b)", "not (a and b)"),
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b and c)", "a or b and c"),
        ("(a < b) == (c < d)", "(a < b) == (c < d)"),
        ("max((a), mean(b,c))", "max(a, mean(b, c))"),
        ("(vec(1, 2, 3)).z", "vec(1, 2, 3).z"),
        ("2.50 * 1.0E-2", "2.5 * 0.01"),
    ],
)
def test_minimal_parentheses(source: str, canonical: str) -> None:
    expr = parse(f"task a let x = {source}").lets[0].value
    assert format_expr(expr) == canonical
    assert parse(f"task a let x = {canonical}").lets[0].value == expr


def test_canonical_layout_golden() -> None:
    source = """# file comment
task pick "pick up the {object}"   # the header
param lift=0.10;param k = 2
keypoints { ee = gripper.tip ; goal = container.top + vec(0, 0, 0.02) }
signals{hit=contact.obstacle}
let up = goal + vec(0,0,lift)
stage grasp until dist(ee, goal) <= 0.02 {
    # approach first
    path bump: hit <= 0 tag collision over sum weight 2 tol 1
}
stage place { subgoal inside: dist(ee, goal) <= 0.03 }
"""
    expected = """# file comment
task pick "pick up the {object}"  # the header

param lift = 0.1
param k = 2

keypoints {
    ee = gripper.tip
    goal = container.top + vec(0, 0, 0.02)
}

signals {
    hit = contact.obstacle
}

let up = goal + vec(0, 0, lift)

stage grasp until dist(ee, goal) <= 0.02 {
    # approach first
    path bump: hit <= 0 tol 1 weight 2 over sum tag collision
}

stage place {
    subgoal inside: dist(ee, goal) <= 0.03
}
"""
    assert format_source(source) == expected
    assert format_source(expected) == expected


def test_objective_layout() -> None:
    source = 'objective safety "safe"\nimport "a.grc" import "b.grc"\ntag collision{weight 5 tol 0}\ntag path {}'
    assert format_source(source) == (
        'objective safety "safe"\n\nimport "a.grc"\nimport "b.grc"\n\ntag collision { tol 0 weight 5 }\ntag path {}\n'
    )


def test_comments_inside_blocks_and_at_the_end() -> None:
    source = (
        "task a\nkeypoints {\n  ee = gripper.tip  # the tip\n  # last binding next\n}\n"
        "stage s {\n# nothing yet\n}\n# the end\n"
    )
    out = format_source(source)
    assert out == (
        "task a\n\nkeypoints {\n    ee = gripper.tip  # the tip\n    # last binding next\n}\n\n"
        "stage s {}\n# nothing yet\n# the end\n"
    )
    assert format_source(out) == out


def test_trailing_comments_of_a_multi_line_construct_join_on_its_line() -> None:
    source = "task a\nlet x = 1 +  # one\n  2  # two\n"
    assert format_source(source) == "task a\n\nlet x = 1 + 2  # one # two\n"


@pytest.mark.parametrize("path", STOCK, ids=lambda p: p.name)
def test_stock_files_round_trip(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    out = format_source(text)
    assert format_source(out) == out
    assert parse(out) == parse(text)
    for comment in parse(text).comments:
        assert comment.text.strip() in out


def test_formats_a_synthetic_ast_without_spans() -> None:
    module = ast.TaskFile(
        "t", None, (ast.LetDecl("x", ast.Binary("*", ast.Binary("+", ast.Name("a"), ast.Number(1)), ast.Name("b"))),)
    )
    assert format_module(module) == "task t\n\nlet x = (a + 1) * b\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modules)
def test_property_parse_of_fmt_is_the_ast(module: ast.Module) -> None:
    text = format_module(module)
    assert parse(text) == module
    assert format_source(text) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy_sources())
def test_property_messy_source_formats_idempotently(case: tuple[ast.Module, str, list[str]]) -> None:
    module, source, comments = case
    parsed = parse(source)
    assert parsed == module
    out = format_source(source)
    assert parse(out) == parsed
    assert format_source(out) == out
    for comment in comments:
        assert comment.strip() in out
