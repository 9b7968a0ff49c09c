"""Rendering diagnostics for people (caret under the span)."""

from __future__ import annotations

import pytest

from grape_dsl.ast import Span
from grape_dsl.diagnostics import Diagnostic, GrcError, render
from grape_dsl.parser import parse

SOURCE = "task demo\nstage s {\n    subgoal reach: dist(ee, ojb) <= 0.02\n}\n"


def test_render_layout() -> None:
    span = Span(3, 29, 3, 32, 48, 51)
    diag = Diagnostic(
        "GRC201", "error", "unknown name 'ojb'", "t.grc", span, expected="a keypoint", hint="did you mean 'obj'?"
    )
    assert render(diag, SOURCE) == (
        "t.grc:3:29: error[GRC201]: unknown name 'ojb'\n"
        "3 |     subgoal reach: dist(ee, ojb) <= 0.02\n"
        "                                ^^^\n"
        "  expected: a keypoint\n"
        "  hint: did you mean 'obj'?"
    )


def test_render_span_running_past_the_line_underlines_to_its_end() -> None:
    diag = Diagnostic("GRC107", "error", "not closed", "t.grc", Span(2, 7, 4, 2, 0, 0))
    lines = render(diag, SOURCE).splitlines()
    assert lines[1] == "2 | stage s {"
    assert lines[2] == "          ^^^"


def test_render_without_source_or_span() -> None:
    diag = Diagnostic("GRC302", "warning", "no such file: x.grc", "x.grc")
    assert render(diag) == "x.grc: warning[GRC302]: no such file: x.grc"
    with_span = Diagnostic("GRC101", "error", "bad", "x.grc", Span(1, 2, 1, 3, 1, 2))
    assert render(with_span) == "x.grc:1:2: error[GRC101]: bad"


def test_render_at_end_of_file_after_newline() -> None:
    diag = Diagnostic("GRC103", "error", "unexpected end of file", "t.grc", Span(5, 1, 5, 2, 60, 61))
    assert render(diag, SOURCE).splitlines()[1:] == ["5 | ", "    ^"]


def test_render_tabs_keep_the_caret_aligned() -> None:
    source = "task a\n\tlet x = @\n"
    with pytest.raises(GrcError) as info:
        parse(source, "t.grc")
    text = render(info.value.diagnostics[0], source)
    source_line, caret = text.splitlines()[1:3]
    assert source_line.index("@") == caret.index("^")


def test_render_parser_diagnostic_caret_width() -> None:
    source = "task a\nlet path = 1\n"
    with pytest.raises(GrcError) as info:
        parse(source, "t.grc")
    lines = render(info.value.diagnostics[0], source).splitlines()
    assert lines[0] == "t.grc:2:5: error[GRC108]: `path` is a reserved keyword and cannot be used as a name"
    assert lines[2] == "        ^^^^"


def test_to_dict_for_json() -> None:
    diag = Diagnostic("GRC101", "error", "bad", "x.grc", Span(1, 2, 1, 3, 1, 2), expected="a name")
    assert diag.to_dict() == {
        "code": "GRC101",
        "severity": "error",
        "message": "bad",
        "path": "x.grc",
        "line": 1,
        "column": 2,
        "end_line": 1,
        "end_column": 3,
        "expected": "a name",
    }


def test_render_replaces_lone_surrogates() -> None:
    source = "task a\nlet x = \udcff\n"
    with pytest.raises(GrcError) as info:
        parse(source, "t.grc")
    text = render(info.value.diagnostics[0], source)
    text.encode("utf-8")  # printable to a UTF-8 terminal
    assert "U+DCFF" in text
    source_line, caret = text.splitlines()[1:3]
    assert source_line.index("\ufffd") == caret.index("^")
