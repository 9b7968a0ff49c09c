"""Diagnostics: what the front end and compiler say about a user's input.

A Diagnostic is plain data (code, severity, message, where); it is rendered with the source
line and a caret only when shown to a person, and as a dict for `--json` and the LLM loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
