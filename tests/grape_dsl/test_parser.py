"""Parser: the AST for valid input, and a diagnostic with code, line and column for bad input."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grape_dsl import ast
from grape_dsl.diagnostics import GrcError
from grape_dsl.parser import MAX_NESTING, MAX_SYNTAX_ERRORS, SYNTAX_CODES, decode_source, keywords, parse

ROOT = Path(__file__).resolve().parents[2]


def doc_examples() -> list[str]:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    return re.findall(r"```grc\n(.*?)```", text, re.S)


def errors_of(source: str | bytes) -> list[tuple[str, int, int]]:
    with pytest.raises(GrcError) as info:
        parse(source, "bad.grc")
    return [(d.code, d.span.line, d.span.column) for d in info.value.diagnostics]


# ---------------------------------------------------------------------------- valid input


def test_doc_examples_parse() -> None:
    examples = doc_examples()
    assert len(examples) >= 2
    task = parse(examples[0])
    assert isinstance(task, ast.TaskFile)
    assert task.name == "pick_place"
    assert [s.name for s in task.stages] == ["grasp", "transport", "place"]
    objective = parse(examples[1])
    assert isinstance(objective, ast.ObjectiveFile)
    assert objective.imports[0].target == "task_completion.grc"
    assert objective.overrides[0] == ast.TagOverride("collision", tol=0.0, weight=5.0)


def test_task_file_structure() -> None:
    src = """
    task push "push the {object}"   # header
    param lift = -0.5; param k = 2
    unreached 3
    keypoints { ee = gripper.tip; goal = target.center - 0.5 * vec(0, 0, 1) }
    signals { hit = contact.obstacle }
    let near = dist(ee, goal) <= 0.1
    stage reach until near {
        subgoal touch: dist(ee, goal) <= 0.02 tag task weight k tol 0.01
        path calm: norm(delta(ee)) <= 0.01 over max tag path
    }
    stage hold { path still: not (hit > 0) or t < 3 }
    """
    task = parse(src)
    assert isinstance(task, ast.TaskFile)
    assert task.instruction == "push the {object}"
    assert task.params == (ast.ParamDecl("lift", -0.5), ast.ParamDecl("k", 2.0))
    assert task.unreached == ast.UnreachedDecl(3.0)
    goal = task.keypoints[1]
    assert goal.source.dotted == "target.center"
    assert goal.offset_op == "-"
    assert goal.offset == ast.Binary(
        "*", ast.Number(0.5), ast.Call("vec", (ast.Number(0), ast.Number(0), ast.Number(1)))
    )
    touch, calm = task.stages[0].constraints
    assert (touch.tol, touch.weight, touch.tag, touch.over) == (ast.Number(0.01), ast.Name("k"), "task", None)
    assert (calm.over, calm.tag) == ("max", "path")
    still = task.stages[1].constraints[0]
    assert still.expr == ast.BoolOp(
        "or",
        ast.Not(ast.Compare(">", ast.Name("hit"), ast.Number(0))),
        ast.Compare("<", ast.Name("t"), ast.Number(3)),
    )
    assert [c.text for c in task.comments] == [" header"]
    assert task.comments[0].trailing


def test_precedence_and_associativity() -> None:
    let = parse("task a let x = a - b - c * d / e + -f.x").lets[0].value
    a, b, c, d, e, f = (ast.Name(n) for n in "abcdef")
    expected = ast.Binary(
        "+",
        ast.Binary("-", ast.Binary("-", a, b), ast.Binary("/", ast.Binary("*", c, d), e)),
        ast.Neg(ast.Component(f, "x")),
    )
    assert let == expected
    logic = parse("task a let p = not a < b and c == d or true").lets[0].value
    assert logic == ast.BoolOp(
        "or",
        ast.BoolOp("and", ast.Not(ast.Compare("<", a, b)), ast.Compare("==", c, d)),
        ast.Bool(True),
    )


def test_aggregation_keywords_are_function_names() -> None:
    let = parse("task a let m = max(mean(a, b), min(c, d))").lets[0].value
    assert let == ast.Call(
        "max",
        (ast.Call("mean", (ast.Name("a"), ast.Name("b"))), ast.Call("min", (ast.Name("c"), ast.Name("d")))),
    )


def test_keyword_prefix_is_a_name() -> None:
    task = parse("task a let taskforce = stage_x + pathway")
    assert task.lets[0].name == "taskforce"


def test_spans_point_at_source() -> None:
    src = "task a\nstage s {\n  subgoal reach: dist(ee, obj) <= 0.02\n}\n"
    constraint = parse(src).stages[0].constraints[0]
    assert (constraint.span.line, constraint.span.column) == (3, 3)
    assert src[constraint.span.start_pos : constraint.span.end_pos] == "subgoal reach: dist(ee, obj) <= 0.02"
    call = constraint.expr.left
    assert src[call.span.start_pos : call.span.end_pos] == "dist(ee, obj)"


def test_spans_are_ignored_by_equality() -> None:
    assert parse("task a let x = 1 + 2") == parse("task   a\n\n let x=(1)+2 ;")


def test_string_escapes() -> None:
    task = parse(r'task a "say \"hi\" \\ bye"')
    assert task.instruction == 'say "hi" \\ bye'


def test_bytes_input_and_bom() -> None:
    assert parse("\ufefftask a".encode()) == parse("task a")


def test_nesting_at_the_limit_parses() -> None:
    depth = MAX_NESTING - 2
    parse("task a let x = " + "(" * depth + "1" + ")" * depth)


def test_keywords_read_from_grammar() -> None:
    assert {"task", "stage", "subgoal", "path", "over", "mean", "max", "not"} <= keywords()
    assert "min" not in keywords()


# ---------------------------------------------------------------------------- every GRC1xx code

# (code, source, line, column): one bad snippet per syntax code, asserting where it points.
BAD_SNIPPETS = [
    ("GRC100", "task a\n" + "let x = 1\n" * 30_000, 1, 1),
    ("GRC101", "task a\nlet x = 1 @ 2", 2, 11),
    ("GRC102", "task a\nstage s {\n  foo\n}", 3, 3),
    ("GRC103", "task a\nlet x = 1 +", 2, 12),
    ("GRC104", 'task a "pick up\nlet x = 1', 1, 8),
    ("GRC105", b"task a\nlet \xff = 1", 2, 5),
    ("GRC106", "task a\nlet x = " + "(" * (MAX_NESTING + 5) + "1" + ")" * (MAX_NESTING + 5), 2, 9),
    ("GRC107", "task a\nstage s {\n  subgoal x: a <= 1\nstage t { subgoal y: b <= 1 }", 4, 1),
    ("GRC108", "task a\nlet path = 1", 2, 5),
    ("GRC109", "task a\nlet x = obj.w", 2, 13),
    ("GRC110", "task a\nparam big = 1e400", 2, 13),
    ("GRC111", "stage s { }", 1, 1),
    ("GRC112", 'task a "line\\nbreak"', 1, 13),
    ("GRC113", "task a\nlet x = 0 < a < 1", 2, 15),
    ("GRC114", "task a\nstage s { subgoal x: a <= 1 over sum }", 2, 29),
    ("GRC115", "task a\nstage s { path x: a <= 1 tol 1 tol 2 }", 2, 32),
]


def test_table_covers_every_code() -> None:
    assert sorted({code for code, *_ in BAD_SNIPPETS}) == sorted(SYNTAX_CODES)


@pytest.mark.parametrize(("code", "source", "line", "column"), BAD_SNIPPETS, ids=[c for c, *_ in BAD_SNIPPETS])
def test_bad_snippet(code: str, source: str | bytes, line: int, column: int) -> None:
    assert errors_of(source)[0] == (code, line, column)


def test_unclosed_stage_at_end_of_file() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nstage grasp {\n  subgoal x: a <= 1\n")
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.span.line, diag.span.column) == ("GRC107", 3, 20)
    assert "stage 'grasp' opened at line 2" in diag.message


def test_expected_is_plain_words() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nstage s {\n  foo\n}")
    diag = info.value.diagnostics[0]
    assert diag.expected == "a constraint (`subgoal` or `path`) or `}`"
    assert not re.search(r"\b[A-Z]{3,}\b|__ANON", diag.expected + diag.message)


def test_unknown_keyword_suggests_the_near_one() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nstag s { }")
    assert info.value.diagnostics[0].hint == "did you mean `stage`?"


def test_single_equals_in_a_comparison_hints_double() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nstage s { subgoal x: a = 1 }")
    assert "==" in info.value.diagnostics[0].hint


def test_several_errors_in_one_file() -> None:
    src = "task a\nlet x = 1 @ 2\nlet y = 3 +\nstage s {\n  subgoal ok: a <= 1\n  subgoal bad: a <=\n}\n"
    found = errors_of(src)
    assert found == [("GRC101", 2, 11), ("GRC102", 4, 1), ("GRC102", 7, 1)]


def test_error_after_tag_path_resumes_at_the_next_constraint() -> None:
    # `tag path` must not be mistaken for the start of a constraint when resuming.
    src = "task a\nstage s {\n  path p: a <= 1 tag path @\n  subgoal q: b <=\n}"
    assert errors_of(src) == [("GRC101", 3, 27), ("GRC102", 5, 1)]


def test_invalid_utf8_reports_the_bad_byte() -> None:
    with pytest.raises(GrcError) as info:
        decode_source("task a\nlet é = ".encode() + b"\xc3\x28", "f.grc")
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.span.line, diag.span.column) == ("GRC105", 2, 9)
    assert "0xc3" in diag.message


def test_docs_list_every_syntax_code() -> None:
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| (GRC1\d\d) \|", doc, re.M))
    assert listed == set(SYNTAX_CODES)


def test_docs_keyword_list_matches_the_grammar() -> None:
    doc = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    section = doc.split("## Lexical rules", 1)[1].split("## Syntax", 1)[0]
    listed = re.search(r"Keywords are reserved.*?:\s*`([^`]*)`", section, re.S).group(1).split()
    assert set(listed) == keywords()


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("task a\nstage s { }\n}\n", "this `}` closes no open block"),
        ('task a\nimport "x.grc"', "`import` belongs in objective files (`objective NAME`)"),
        ("objective o\nstage s {}", "stages belong in task files (`task NAME`)"),
        ("task a\ntask b", "a file has one `task` header"),
        ("task a 'x'", 'strings use double quotes: "..."'),
        ("task a\nstage s { subgoal x: a <= 1 && b <= 2 }", "write `and`"),
        ("task a\nlet x = a ≤ b", "write `<=`"),
        ("task a\nlet y = 3 +\nstage s { }", "the declaration before it is incomplete"),
        ("tsak a", "did you mean `task`?"),
    ],
)
def test_hints(source: str, hint: str) -> None:
    with pytest.raises(GrcError) as info:
        parse(source)
    assert info.value.diagnostics[0].hint == hint


def test_unclosed_blocks_name_what_they_open() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nkeypoints {\n  ee = gripper.tip\nstage s { subgoal x: a <= 1 }")
    diag = info.value.diagnostics[0]
    assert (diag.code, diag.span.line, diag.span.column) == ("GRC107", 4, 1)
    assert diag.message.startswith("the `keypoints` block opened at line 2 is not closed")
    with pytest.raises(GrcError) as info:
        parse('objective o\ntag collision { tol 0\nimport "x.grc"')
    assert info.value.diagnostics[0].message.startswith("`tag collision` opened at line 2")


def test_several_errors_in_an_objective_file() -> None:
    src = "objective o\nimport x.grc\ntag a { tol }\nparam = 3\nunreached 1\n"
    assert errors_of(src) == [("GRC102", 2, 8), ("GRC102", 3, 13), ("GRC102", 4, 7)]


def test_error_count_is_bounded() -> None:
    src = "task a\n" + "let x = 1 @ 2\n" * 50
    assert len(errors_of(src)) == MAX_SYNTAX_ERRORS


@pytest.mark.parametrize(
    ("source", "start"), [("", "empty file"), ("  \n# just a note\n", "the file holds only comments")]
)
def test_file_without_header(source: str, start: str) -> None:
    with pytest.raises(GrcError) as info:
        parse(source)
    diag = info.value.diagnostics[0]
    assert diag.code == "GRC111" and diag.message.startswith(start)


def test_several_errors_in_one_stage() -> None:
    src = "task a\nstage s {\n  subgoal p: a <= @\n  subgoal q: b <= }\n  path r: c <= 1 1\n}\nstage t { path u: @ }\n"
    assert errors_of(src) == [("GRC101", 3, 19), ("GRC102", 4, 19), ("GRC102", 5, 18), ("GRC101", 7, 19)]


def test_keyword_as_name_is_not_a_resume_point() -> None:
    src = 'objective tag "description"\ntag collision { tol 0 }\n'
    assert errors_of(src) == [("GRC108", 1, 11)]


def test_tag_name_expected_in_words() -> None:
    with pytest.raises(GrcError) as info:
        parse("task a\nstage s { subgoal x: a <= 1 tag { }")
    assert info.value.diagnostics[0].expected == "a tag name"


def test_invalid_utf8_after_a_byte_order_mark() -> None:
    with pytest.raises(GrcError) as info:
        decode_source(b"\xef\xbb\xbftask a \xff", "f.grc")
    diag = info.value.diagnostics[0]
    assert (diag.span.line, diag.span.column) == (1, 8)
    assert "byte offset 10" in diag.message


def _parse_in_fresh_process(cache_root: Path) -> str:
    code = "from grape_dsl.parser import parse; m = parse('task a  # c\\nlet x = 1'); print(len(m.comments), m.lets)"
    env = {**os.environ, "GRAPE_DSL_CACHE": str(cache_root)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lalr_tables_are_cached_between_processes(tmp_path: Path) -> None:
    first = _parse_in_fresh_process(tmp_path)
    cached = list((tmp_path / "grammar").glob("grc-*.cache"))
    assert len(cached) == 1
    assert _parse_in_fresh_process(tmp_path) == first  # loaded from the cache, comments included
    assert first.startswith("1 (LetDecl(name='x'")


def test_unusable_cache_folder_still_parses(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert _parse_in_fresh_process(blocker).startswith("1 ")
