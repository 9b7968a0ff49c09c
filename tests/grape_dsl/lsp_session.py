"""Helpers for driving `grapec lsp` over stdio with pytest-lsp, as an editor does.

The expected side is computed independently of the server's code: positions from
`str.split("\\n")` and UTF-16 lengths, diagnostics straight from `check_source`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from lsprotocol import types
from pygls.protocol import default_converter
from pytest_lsp import ClientServerConfig, LanguageClient
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features

from grape_dsl.api import check_source
from grape_dsl.llm import builtin_schema, builtin_task_names

ROOT = Path(__file__).resolve().parents[2]


def _client() -> LanguageClient:
    """The pytest-lsp client, also keeping every publishDiagnostics with its version."""
    client = LanguageClient(converter_factory=default_converter)

    def published(client: LanguageClient, params: types.PublishDiagnosticsParams) -> None:
        client.diagnostics[params.uri] = params.diagnostics
        client.published.append(params)

    client.published = []
    register_lsp_features(client, {**DEFAULT_CLIENT_FEATURES, types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: published})
    return client


def server_config(*extra: str) -> ClientServerConfig:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return ClientServerConfig(
        server_command=[sys.executable, "-m", "grape_dsl.cli", "lsp", *extra], client_factory=_client, server_env=env
    )


async def start(client: LanguageClient, root: Path, options: dict | None = None) -> None:
    await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=root.as_uri(), initialization_options=options
        )
    )


async def published(client: LanguageClient, uri: str, version: int, timeout: float = 20.0) -> list[types.Diagnostic]:
    """The diagnostics the server publishes for `uri` at `version`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for params in reversed(client.published):
            if params.uri == uri and params.version == version:
                return list(params.diagnostics)
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no diagnostics for {uri} version {version} within {timeout} s")
        await asyncio.sleep(0.002)


def open_document(client: LanguageClient, path: Path, text: str, version: int = 1) -> str:
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri, language_id="grc", version=version, text=text))
    )
    return uri


# ---------------------------------------------------------------------------- the expected side


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def position(text: str, offset: int) -> types.Position:
    before = text[:offset]
    line = before.count("\n")
    return types.Position(line, utf16(before[before.rfind("\n") + 1 :]))


def offset(text: str, pos: types.Position) -> int:
    lines = text.split("\n")
    if pos.line >= len(lines):
        return len(text)
    start = sum(len(line) + 1 for line in lines[: pos.line])
    line = lines[pos.line]
    units = 0
    for i, ch in enumerate(line):
        if units >= pos.character:
            return start + i
        units += utf16(ch)
    return start + len(line)


def apply_edits(text: str, edits: list[types.TextEdit]) -> str:
    spans = sorted(((offset(text, e.range.start), offset(text, e.range.end), e.new_text) for e in edits), reverse=True)
    for a, b, new in spans:
        text = text[:a] + new + text[b:]
    return text


_TASK = re.compile(r"(?:[ \t\f\r\n]|#[^\n]*)*task[ \t\f\r\n]+([A-Za-z_][A-Za-z0-9_]*)")


def expected_diagnostics(text: str, path: str) -> list[tuple]:
    """(code, severity, message, range) for each diagnostic `grapec check` gives this text,
    with the schema of the stock task the text declares (as the server chooses it)."""
    match = _TASK.match(text)
    names = builtin_schema(match.group(1)).names if match and match.group(1) in builtin_task_names() else None
    lines = text.split("\n")
    out = []
    for d in check_source(text, path, schema=names):
        parts = (
            [d.message] + ([f"expected: {d.expected}"] if d.expected else []) + ([f"hint: {d.hint}"] if d.hint else [])
        )

        def where(line: int, column: int) -> types.Position:
            if line < 1:
                return types.Position(0, 0)
            if line > len(lines):
                return types.Position(len(lines) - 1, utf16(lines[-1]))
            return types.Position(line - 1, utf16(lines[line - 1][: max(column - 1, 0)]))

        rng = (
            (where(d.span.line, d.span.column), where(d.span.end_line, d.span.end_column))
            if d.span is not None and d.span.line > 0
            else (types.Position(0, 0), types.Position(0, 0))
        )
        out.append((d.code, d.severity, "\n".join(parts), rng))
    return out


def as_tuples(diagnostics: list[types.Diagnostic]) -> list[tuple]:
    severity = {types.DiagnosticSeverity.Error: "error", types.DiagnosticSeverity.Warning: "warning"}
    return [(d.code, severity[d.severity], d.message, (d.range.start, d.range.end)) for d in diagnostics]
