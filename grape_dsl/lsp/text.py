"""Document text as an editor addresses it: LSP positions (line, UTF-16 unit) <-> offsets.

The Language Server Protocol counts lines at `\\n`, `\\r\\n` and `\\r` (nothing else) and
columns in code units of the encoding agreed at start-up: UTF-16 unless the client offers
UTF-8 or UTF-32. Python strings index code points, and the .grc parser counts
lines at `\\n` only, so every position crossing the boundary goes through `LineIndex`.
Positions past a line's or the document's end are clamped rather than rejected: a client's
stale or wrong position must never bring the server down.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Position:
    line: int  # 0-based
    character: int  # 0-based, UTF-16 code units


def _utf16_units(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _utf8_units(ch: str) -> int:
    code = ord(ch)
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _utf32_units(ch: str) -> int:
    return 1


_UNITS = {"utf-16": _utf16_units, "utf-8": _utf8_units, "utf-32": _utf32_units}


def units_of(text: str, encoding: str = "utf-16") -> int:
    """Length of `text` in code units of `encoding` (utf-8, utf-16 or utf-32)."""
    if encoding == "utf-32" or text.isascii():
        return len(text)
    unit = _UNITS[encoding]
    return sum(unit(ch) for ch in text)


class LineIndex:
    """Line starts of one text, for offset <-> (line, UTF-16 column) conversions."""

    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.encoding = encoding if encoding in _UNITS else "utf-16"
        self.starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]

    def _line_end(self, line: int) -> int:
        """Offset of the end of `line`'s content (before its line break)."""
        if line + 1 < len(self.starts):
            end = self.starts[line + 1]
            if self.text[end - 2 : end] == "\r\n":
                return end - 2
            return end - 1
        return len(self.text)

    def offset(self, line: int, character: int) -> int:
        """The code-point offset of an LSP position, clamped into the text."""
        if line < 0:
            return 0
        if line >= len(self.starts):
            return len(self.text)
        start, end = self.starts[line], self._line_end(line)
        if character <= 0:
            return start
        unit = _UNITS[self.encoding]
        units = 0
        for i in range(start, end):
            units += unit(self.text[i])
            if units > character:  # inside one character's units: stay before it
                return i
            if units == character:
                return i + 1
        return end

    def position(self, offset: int) -> Position:
        """The LSP position of a code-point offset (clamped into the text)."""
        offset = min(max(offset, 0), len(self.text))
        line = bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        # An offset between the \r and \n of one line break belongs to the line it ends.
        return Position(line, units_of(self.text[start:offset], self.encoding))


def apply_change(text: str, start: Position, end: Position, new_text: str, encoding: str = "utf-16") -> str:
    """`text` with the range [start, end) replaced by `new_text`; a reversed range is
    taken in order and positions past the end are clamped."""
    index = LineIndex(text, encoding)
    a, b = index.offset(start.line, start.character), index.offset(end.line, end.character)
    if b < a:
        a, b = b, a
    return text[:a] + new_text + text[b:]
