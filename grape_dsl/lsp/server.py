"""The .grc language server: pygls wiring of grape_dsl.lsp.features over stdio.

Documents are kept here, not in pygls' workspace: edits are applied with the protocol's own
line and column rules (grape_dsl.lsp.text), and a bad edit or position is clamped instead of
raising. Checking runs `check_source` (the same function as `grapec check`) on one worker
thread, debounced after each change, so requests are answered while a large file is being
checked and the event loop never parses. Nothing here compiles kernels.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method
from pygls.uris import to_fs_path

from grape_dsl.lsp import features
from grape_dsl.lsp.features import DocumentState, RequestRejected
from grape_dsl.lsp.schema import SchemaSource
from grape_dsl.lsp.text import Position, apply_change

DEFAULT_DEBOUNCE_MS = 30
log = logging.getLogger("grapec.lsp")


class _Protocol(LanguageServerProtocol):
    """pygls' protocol without its own text bookkeeping for open/change/close: the server's
    handlers keep the text (pygls' copy splits lines differently and raises on bad ranges)."""

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


@dataclass
class _Document:
    uri: str
    path: str
    text: str
    version: int | None
    state: DocumentState | None = None  # for `version`, built on first use
    types: dict[str, str] | None = None  # the checker's types for `version`
    pending: asyncio.Task | None = field(default=None, repr=False)


def _path_of(uri: str) -> str:
    try:
        return to_fs_path(uri) or uri
    except Exception:  # an unparsable URI still names a document
        return uri


class GrcServer(LanguageServer):
    def __init__(self, scene: str | None = None, debounce_ms: int = DEFAULT_DEBOUNCE_MS):
        super().__init__(
            "grapec-lsp",
            "0.1.0",
            protocol_cls=_Protocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.documents: dict[str, _Document] = {}
        self.schemas = SchemaSource()
        self.scene_argument = scene
        self.debounce_s = max(debounce_ms, 0) / 1000
        self.checker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grc-check")
        self.encoding = "utf-16"

    # ------------------------------------------------------------------ documents

    def state(self, doc: _Document) -> DocumentState:
        if doc.state is None or doc.state.version != doc.version or doc.state.text is not doc.text:
            doc.state = features.make_state(doc.uri, doc.path, doc.text, doc.version, self.encoding, self._schema_for)
        return doc.state

    def _schema_for(self, task_name: str | None):
        choice = self.schemas.for_task(task_name)
        return choice.schema, choice.origin

    def read(self, path: str) -> str | None:
        """A file's text: the open buffer when the file is open, else the disk's."""
        wanted = os.path.abspath(path)
        for doc in self.documents.values():
            if os.path.abspath(doc.path) == wanted:
                return doc.text
        try:
            with open(path, "rb") as handle:
                data = handle.read(features.MAX_SCANNED_CHARS * 4 + 1)
            return data.decode("utf-8", errors="replace")
        except OSError:
            return None

    def schedule_check(self, doc: _Document, delay_s: float) -> None:
        if doc.pending is not None and not doc.pending.done():
            doc.pending.cancel()
        doc.pending = asyncio.get_running_loop().create_task(self._check(doc.uri, delay_s))

    async def _check(self, uri: str, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        doc = self.documents.get(uri)
        if doc is None:
            return
        state = self.state(doc)
        text, version = doc.text, doc.version
        names = state.schema.names if state.schema is not None else None
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(self.checker, _check_text, text, doc.path, names)
        except Exception:  # a bug in the checker must not end the session
            self.log(f"checking {doc.path} failed:\n{traceback.format_exc()}")
            return
        current = self.documents.get(uri)
        if current is None or current.version != version or current.text is not text:
            return  # edited meanwhile: the newer check publishes
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(
                uri=uri, diagnostics=features.to_lsp_diagnostics(found, state), version=version
            )
        )

    def recheck_all(self) -> None:
        for doc in self.documents.values():
            doc.state = None
            self.schedule_check(doc, 0)

    async def types_of(self, doc: _Document) -> dict[str, str]:
        if doc.types is None or (doc.state is not None and doc.state.version != doc.version):
            state = self.state(doc)
            names = state.schema.names if state.schema is not None else None
            text = doc.text
            found = await asyncio.get_running_loop().run_in_executor(self.checker, _types_of, text, doc.path, names)
            if doc.text is text:
                doc.types = found
            return found
        return doc.types

    def set_scene(self, path: str | None) -> None:
        if path and not os.path.isabs(path) and self.workspace.root_path:
            path = os.path.join(self.workspace.root_path, path)
        problem = self.schemas.set_scene(path)
        if problem:
            self.window_show_message(types.ShowMessageParams(types.MessageType.Error, f"grapec lsp: {problem}"))
            self.log(problem)

    def log(self, message: str) -> None:
        print(f"grapec lsp: {message}", file=sys.stderr, flush=True)
        try:
            self.window_log_message(types.LogMessageParams(types.MessageType.Error, message))
        except Exception:
            pass


def _check_text(text: str, path: str, names) -> list:
    from grape_dsl.api import check_source

    return check_source(text, path, schema=names)


def _types_of(text: str, path: str, names) -> dict[str, str]:
    """The checker's type of every name of a task file that parses ({} otherwise)."""
    from grape_dsl import ast
    from grape_dsl.checker import check
    from grape_dsl.objective import parse_source

    module, _ = parse_source(text, path)
    if not isinstance(module, ast.TaskFile):
        return {}
    return dict(check(module, schema=names).types)


def _shielded(default: Any) -> Callable:
    """A handler that logs its own failure and answers `default` instead of failing the
    request or the session; refusals (RequestRejected) go back to the client as errors."""

    def wrap(handler: Callable) -> Callable:
        if asyncio.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def run_async(server: GrcServer, params):
                try:
                    return await handler(server, params)
                except RequestRejected as refusal:
                    raise JsonRpcInvalidParams(str(refusal)) from None
                except Exception:
                    server.log(f"{handler.__name__} failed:\n{traceback.format_exc()}")
                    return default

            return run_async

        @functools.wraps(handler)
        def run(server: GrcServer, params):
            try:
                return handler(server, params)
            except RequestRejected as refusal:
                raise JsonRpcInvalidParams(str(refusal)) from None
            except Exception:
                server.log(f"{handler.__name__} failed:\n{traceback.format_exc()}")
                return default

        return run

    return wrap


def _location(place: features.Place, encoding: str) -> types.Location:
    from grape_dsl.lsp.text import LineIndex

    return types.Location(place.uri, features.lsp_range(LineIndex(place.text, encoding), place.start, place.end))


def build_server(scene: str | None = None, debounce_ms: int = DEFAULT_DEBOUNCE_MS) -> GrcServer:
    server = GrcServer(scene, debounce_ms)

    def document(params) -> _Document | None:
        return server.documents.get(params.text_document.uri)

    @server.feature(types.INITIALIZE)
    @_shielded(None)
    def initialize(ls: GrcServer, params: types.InitializeParams):
        ls.encoding = str(ls.workspace.position_encoding or "utf-16")
        options = params.initialization_options if isinstance(params.initialization_options, dict) else {}
        if isinstance(options.get("debounceMs"), (int, float)):
            ls.debounce_s = max(float(options["debounceMs"]), 0.0) / 1000
        scene = options.get("scene") if isinstance(options.get("scene"), str) else ls.scene_argument
        if scene:
            ls.set_scene(scene)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    @_shielded(None)
    def configuration(ls: GrcServer, params: types.DidChangeConfigurationParams):
        settings = params.settings if isinstance(params.settings, dict) else {}
        section = settings.get("grapec", settings)
        if isinstance(section, dict) and "scene" in section:
            scene = section["scene"] if isinstance(section["scene"], str) else None
            ls.set_scene(scene or ls.scene_argument)
            ls.recheck_all()

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    @_shielded(None)
    def did_open(ls: GrcServer, params: types.DidOpenTextDocumentParams):
        item = params.text_document
        doc = _Document(item.uri, _path_of(item.uri), item.text, item.version)
        ls.documents[item.uri] = doc
        ls.schedule_check(doc, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    @_shielded(None)
    def did_change(ls: GrcServer, params: types.DidChangeTextDocumentParams):
        doc = document(params)
        if doc is None:
            return
        text = doc.text
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                text = apply_change(
                    text,
                    Position(r.start.line, r.start.character),
                    Position(r.end.line, r.end.character),
                    change.text,
                    ls.encoding,
                )
            else:
                text = change.text
        doc.text, doc.version, doc.types = text, params.text_document.version, None
        ls.schedule_check(doc, ls.debounce_s)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    @_shielded(None)
    def did_save(ls: GrcServer, params: types.DidSaveTextDocumentParams):
        for doc in ls.documents.values():  # an objective's imports are read from disk
            if doc.uri != params.text_document.uri and ls.state(doc).index.file_kind == "objective":
                ls.schedule_check(doc, 0)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    @_shielded(None)
    def did_close(ls: GrcServer, params: types.DidCloseTextDocumentParams):
        doc = ls.documents.pop(params.text_document.uri, None)
        if doc is not None and doc.pending is not None:
            doc.pending.cancel()
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(params.text_document.uri, []))

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", '"']))
    @_shielded(None)
    def completion(ls: GrcServer, params: types.CompletionParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        items = features.completion(state, features.offset_of(state, params.position), ls.read)
        return types.CompletionList(is_incomplete=False, items=items)

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    @_shielded(None)
    async def hover(ls: GrcServer, params: types.HoverParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        offset = features.offset_of(state, params.position)
        tok = state.index.token_at(offset)
        known: dict[str, str] = {}
        if tok is not None and state.index.binding(tok.text) is not None and state.index.file_kind == "task":
            known = await ls.types_of(doc)
            state = ls.state(doc)  # the text may have changed while the types were computed
            offset = features.offset_of(state, params.position)
        return features.hover(state, offset, lambda: known)

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    @_shielded(None)
    def definition(ls: GrcServer, params: types.DefinitionParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        places = features.definitions(state, features.offset_of(state, params.position), ls.read)
        return [_location(p, ls.encoding) for p in places] or None

    @server.feature(types.TEXT_DOCUMENT_REFERENCES)
    @_shielded(None)
    def references(ls: GrcServer, params: types.ReferenceParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        places = features.references(
            state,
            features.offset_of(state, params.position),
            ls.read,
            include_declaration=params.context.include_declaration,
        )
        return [_location(p, ls.encoding) for p in places] or None

    @server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
    @_shielded(None)
    def prepare_rename(ls: GrcServer, params: types.PrepareRenameParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        return features.prepare_rename(state, features.offset_of(state, params.position))

    @server.feature(types.TEXT_DOCUMENT_RENAME, types.RenameOptions(prepare_provider=True))
    @_shielded(None)
    def rename(ls: GrcServer, params: types.RenameParams):
        doc = document(params)
        if doc is None:
            return None
        state = ls.state(doc)
        places = features.rename(state, features.offset_of(state, params.position), params.new_name, ls.read)
        changes: dict[str, list[types.TextEdit]] = {}
        for place in places:
            location = _location(place, ls.encoding)
            changes.setdefault(place.uri, []).append(types.TextEdit(location.range, params.new_name))
        return types.WorkspaceEdit(changes=changes) if changes else None

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    @_shielded(None)
    async def formatting(ls: GrcServer, params: types.DocumentFormattingParams):
        doc = document(params)
        if doc is None:
            return None
        text = doc.text
        formatted = await asyncio.get_running_loop().run_in_executor(ls.checker, _format, text, doc.path)
        if formatted is None or formatted == text or doc.text is not text:
            return []  # syntax errors (shown as diagnostics), already canonical, or edited meanwhile
        state = ls.state(doc)
        return [types.TextEdit(features.lsp_range(state.lines, 0, len(text)), formatted)]

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    @_shielded(None)
    def symbols(ls: GrcServer, params: types.DocumentSymbolParams):
        doc = document(params)
        if doc is None:
            return None
        return features.document_symbols(ls.state(doc))

    return server


def _format(text: str, path: str) -> str | None:
    from grape_dsl.diagnostics import GrcError
    from grape_dsl.fmt import format_source

    try:
        return format_source(text, path)
    except GrcError:
        return None


def serve(scene: str | None = None, debounce_ms: int = DEFAULT_DEBOUNCE_MS) -> None:
    """Run the server on stdin/stdout until the client says exit."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="grapec lsp: %(message)s")
    protocol_out = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol stream
    build_server(scene, debounce_ms).start_io(sys.stdin.buffer, protocol_out)
