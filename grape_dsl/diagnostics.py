"""Diagnostics: what the front end and compiler say about a user's input.

A Diagnostic is plain data (code, severity, message, where); it is rendered with the source
line and a caret only when shown to a person, and as a dict for `--json` and the LLM loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grape_dsl.ast import Span

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Diagnostic:
    code: str  # stable, e.g. "GRC101"; listed in docs/language.md
    severity: Severity
    message: str
    path: str = "<string>"
    span: Span | None = None
    expected: str | None = None  # what would have been accepted, in plain words
    hint: str | None = None  # e.g. "did you mean 'obj'?"

    def to_dict(self) -> dict:
        out = {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "path": self.path,
            "line": self.span.line if self.span else None,
            "column": self.span.column if self.span else None,
            "end_line": self.span.end_line if self.span else None,
            "end_column": self.span.end_column if self.span else None,
        }
        if self.expected:
            out["expected"] = self.expected
        if self.hint:
            out["hint"] = self.hint
        return out


class GrcError(Exception):
    """Raised by API entry points when input has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], sources: dict[str, str] | None = None):
        self.diagnostics = list(diagnostics)
        self.sources = dict(sources or {})
        super().__init__("\n".join(f"{d.path}: {d.code}: {d.message}" for d in self.diagnostics))


def _display_width(text: str) -> int:
    return len(text.expandtabs(4))


def render(diag: Diagnostic, source: str | None = None) -> str:
    """A diagnostic as a person reads it: location, message, source line, caret, expected, hint.

    `file:line:col: error[GRC101]: message`, then the offending line and a caret line under
    the span (`^` repeated over the span's width on that line), then `expected:` and `hint:`.
    """
    span = diag.span
    where = diag.path
    if span is not None and span.line > 0:
        where = f"{diag.path}:{span.line}:{span.column}"
    lines = [f"{where}: {diag.severity}[{diag.code}]: {diag.message}"]
    if span is not None and span.line > 0 and source is not None:
        source_lines = source.splitlines()
        if span.line <= len(source_lines):
            text = source_lines[span.line - 1]
        else:
            text = ""  # the end of a file that ends with a newline
        # A lone surrogate (from a lenient decode upstream) cannot be printed; show U+FFFD,
        # one character for one, so the caret stays aligned.
        text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
        gutter = f"{span.line} | "
        lines.append(gutter + text.expandtabs(4))
        start = _display_width(text[: max(span.column - 1, 0)])
        if span.end_line == span.line and span.end_column > span.column:
            end = _display_width(text[: span.end_column - 1])
        else:  # a span running past this line: underline to the line's end
            end = max(_display_width(text), start + 1)
        lines.append(" " * len(gutter) + " " * start + "^" * max(end - start, 1))
    if diag.expected:
        lines.append(f"  expected: {diag.expected}")
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)
