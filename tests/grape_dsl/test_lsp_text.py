"""grape_dsl.lsp.text: LSP positions (line breaks \\n, \\r\\n, \\r; UTF-16/8/32 columns) and edits."""

from __future__ import annotations

from grape_dsl.lsp.text import LineIndex, Position, apply_change, units_of


def test_line_breaks_are_the_protocols_three():
    text = "a\r\nbc\rd\ne\u2028f"  # U+2028 is not a line break for LSP
    index = LineIndex(text)
    assert [index.position(text.index(ch)) for ch in "abde"] == [
        Position(0, 0),
        Position(1, 0),
        Position(2, 0),
        Position(3, 0),
    ]
    assert index.position(text.index("f")) == Position(3, 2)
    assert index.offset(1, 99) == text.index("\r", 3)  # past a line's end: its end, before the break


def test_columns_count_code_units_of_the_agreed_encoding():
    text = "x😀é = 1"
    assert units_of(text, "utf-16") == 8 and units_of(text, "utf-8") == 11 and units_of(text, "utf-32") == 7
    assert LineIndex(text).offset(0, 3) == 2  # after the emoji's two UTF-16 units
    assert LineIndex(text).offset(0, 2) == 1  # inside the pair: before the emoji
    assert LineIndex(text, "utf-8").offset(0, 7) == 3
    assert LineIndex(text, "utf-8").position(3) == Position(0, 7)


def test_edits_clamp_instead_of_failing():
    text = "task a\nstage s {}\n"
    assert apply_change(text, Position(99, 0), Position(99, 5), "# end\n") == text + "# end\n"
    assert apply_change(text, Position(1, 9), Position(0, 5), "X") == "task X}\n"  # reversed range
    assert apply_change(text, Position(-3, -1), Position(0, 0), "# top\n") == "# top\n" + text
