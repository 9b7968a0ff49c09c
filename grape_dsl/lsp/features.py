"""What the language server answers, as plain functions of one document's state.

Each function takes a `DocumentState` (text, layout index, line index, the schema chosen
for it) and offsets, and returns lsprotocol values; the server module only wires them to
requests. Nothing here parses with the grammar or runs the checker: diagnostics and types
are computed by the server from `check_source` / `check` and passed in.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types

from grape_dsl.builtins import BUILTINS, STEP_INDEX_NAME, describe
from grape_dsl.checker import KEYWORDS, RESERVED_NAMES
from grape_dsl.diagnostics import Diagnostic
from grape_dsl.llm import Schema
from grape_dsl.lsp.symbols import OBJECTIVE_ITEM_WORDS, TASK_ITEM_WORDS, Decl, Index, Token, build_index
from grape_dsl.lsp.text import LineIndex

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
BINDING_KINDS = ("keypoint", "signal", "param", "let")
MAX_IMPORTED_FILES = 64  # an import closure larger than this is not followed further
MAX_SCANNED_FILES = 200  # task files looked at for an objective's param and tag names
MAX_SCANNED_CHARS = 200_000  # the parser's own limit: larger files are not .grc files


class RequestRejected(Exception):
    """A request the server must refuse with a message (e.g. renaming to a keyword)."""


@dataclass
class DocumentState:
    uri: str
    path: str  # file system path, or the URI for unsaved documents
    text: str
    version: int | None
    index: Index
    lines: LineIndex
    schema: Schema | None = None
    schema_origin: str = "none"


def make_state(
    uri: str,
    path: str,
    text: str,
    version: int | None,
    encoding: str,
    schema_for: Callable[[str | None], tuple[Schema | None, str]],
) -> DocumentState:
    index = build_index(text if len(text) <= MAX_SCANNED_CHARS else "")
    schema, origin = schema_for(index.file_name) if index.file_kind == "task" else (None, "none")
    return DocumentState(uri, path, text, version, index, LineIndex(text, encoding), schema, origin)


# ---------------------------------------------------------------------------- ranges


def lsp_range(lines: LineIndex, start: int, end: int) -> types.Range:
    a, b = lines.position(start), lines.position(max(end, start))
    return types.Range(types.Position(a.line, a.character), types.Position(b.line, b.character))


def offset_of(state: DocumentState, position: types.Position) -> int:
    return state.lines.offset(position.line, position.character)


def _span_offsets(text: str, newline_starts: list[int], line: int, column: int) -> int:
    """The offset of a checker (line, column): lines counted at `\\n` as the parser does."""
    if line < 1:
        return 0
    if line > len(newline_starts):
        return len(text)
    start = newline_starts[line - 1]
    following = newline_starts[line] - 1 if line < len(newline_starts) else len(text)
    return min(start + max(column - 1, 0), max(following, start))


def message_of(diagnostic: Diagnostic) -> str:
    """A diagnostic's text as `grapec check` shows it: message, then expected and hint."""
    parts = [diagnostic.message]
    if diagnostic.expected:
        parts.append(f"expected: {diagnostic.expected}")
    if diagnostic.hint:
        parts.append(f"hint: {diagnostic.hint}")
    return "\n".join(parts)


def to_lsp_diagnostics(diagnostics: Sequence[Diagnostic], state: DocumentState) -> list[types.Diagnostic]:
    """The checker's diagnostics on the editor's coordinates. Diagnostics of another file (an
    objective's import) sit on the import that brings that file in, pointing to the place."""
    text = state.text
    newline_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    imports = [d for d in state.index.decls if d.kind == "import"]
    out = []
    for diag in diagnostics:
        severity = types.DiagnosticSeverity.Error if diag.severity == "error" else types.DiagnosticSeverity.Warning
        related = None
        if _same_file(diag.path, state.path):
            if diag.span is not None and diag.span.line > 0:
                start = _span_offsets(text, newline_starts, diag.span.line, diag.span.column)
                end = _span_offsets(text, newline_starts, diag.span.end_line, diag.span.end_column)
                where = lsp_range(state.lines, start, end)
            else:
                where = lsp_range(state.lines, 0, 0)
        else:
            via = _import_leading_to(diag.path, imports, state.path) or (imports[0] if imports else None)
            where = lsp_range(state.lines, via.start, via.end) if via else lsp_range(state.lines, 0, 0)
            line = diag.span.line - 1 if diag.span and diag.span.line > 0 else 0
            column = diag.span.column - 1 if diag.span and diag.span.line > 0 else 0
            place = types.Position(line, column)
            related = [
                types.DiagnosticRelatedInformation(
                    types.Location(Path(os.path.abspath(diag.path)).as_uri(), types.Range(place, place)),
                    f"{diag.path}:{line + 1}:{column + 1}: {diag.message}",
                )
            ]
        out.append(
            types.Diagnostic(
                where, message_of(diag), severity=severity, code=diag.code, source="grapec", related_information=related
            )
        )
    return out


def _same_file(a: str, b: str) -> bool:
    return a == b or os.path.abspath(a) == os.path.abspath(b)


def _import_leading_to(path: str, imports: list[Decl], importer: str) -> Decl | None:
    base = os.path.dirname(importer)
    for decl in imports:
        if _same_file(os.path.join(base, decl.detail), path):
            return decl
    return None


# ---------------------------------------------------------------------------- other files


Reader = Callable[[str], "str | None"]  # path -> text (open buffer first, then disk)


@dataclass(frozen=True)
class OtherFile:
    path: str
    text: str
    index: Index


def import_closure(state: DocumentState, read: Reader) -> list[OtherFile]:
    """The files an objective imports, transitively (each once, cycles cut)."""
    seen = {os.path.abspath(state.path)}
    out: list[OtherFile] = []
    queue = [(state.path, state.index)]
    while queue and len(out) < MAX_IMPORTED_FILES:
        importer, index = queue.pop(0)
        for decl in index.declared("import"):
            path = os.path.normpath(os.path.join(os.path.dirname(importer), decl.detail))
            if os.path.abspath(path) in seen:
                continue
            seen.add(os.path.abspath(path))
            text = read(path)
            if text is None or len(text) > MAX_SCANNED_CHARS:
                continue
            other = OtherFile(path, text, build_index(text))
            out.append(other)
            queue.append((path, other.index))
    return out


def nearby_grc_files(state: DocumentState, read: Reader, kind: str) -> list[OtherFile]:
    """Files of `kind` (task or objective) in the document's directory tree: what an
    objective can name (imports) or retarget (params and tags of task files)."""
    root = os.path.dirname(os.path.abspath(state.path))
    if not os.path.isdir(root):
        return []
    found: list[OtherFile] = []
    scanned = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".grc") or scanned >= MAX_SCANNED_FILES:
                continue
            scanned += 1
            path = os.path.join(folder, name)
            if _same_file(path, state.path):
                continue
            text = read(path)
            if text is None or len(text) > MAX_SCANNED_CHARS:
                continue
            index = build_index(text)
            if index.file_kind == kind:
                found.append(OtherFile(path, text, index))
    return found


# ---------------------------------------------------------------------------- completion


@dataclass(frozen=True)
class _Context:
    replace_start: int  # where the word (or dotted chain) being typed begins
    chain: tuple[str, ...]  # `a.b.` parts before the word being typed
    previous: Token | None  # the last token before the chain
    block: str | None  # keypoints, signals, stage, tag, other, or None at the top level
    in_string: bool = False
    in_comment: bool = False


def _context(state: DocumentState, offset: int) -> _Context:
    index = state.index
    before = [t for t in index.tokens if t.start < offset]
    text = state.text
    line_start = text.rfind("\n", 0, offset) + 1
    comment = _comment_start(text[line_start:offset])
    if comment is not None:
        return _Context(offset, (), None, None, in_comment=True)
    current = before[-1] if before else None
    if (
        current is not None
        and current.kind == "string"
        and (offset < current.end or not current.text.endswith('"') or len(current.text) == 1)
    ):
        prev = before[-2] if len(before) > 1 else None
        return _Context(current.start + 1, (), prev, None, in_string=True)
    replace_start = offset
    if current is not None and current.kind == "name" and current.end == offset:
        before.pop()
        replace_start = current.start
    chain: list[str] = []
    while len(before) >= 2 and before[-1].text == "." and before[-2].kind == "name" and before[-1].end == replace_start:
        chain.insert(0, before[-2].text)
        replace_start = before[-2].start
        before = before[:-2]
    blocks: list[str] = []
    header: str | None = None
    for tok in before:
        if tok.kind == "name" and tok.text in ("keypoints", "signals", "stage") and not blocks:
            header = tok.text
        elif tok.kind == "name" and tok.text == "tag" and not blocks:
            header = "tag"
        elif tok.text == "{":
            blocks.append(header or "other")
            header = None
        elif tok.text == "}" and blocks:
            blocks.pop()
    return _Context(replace_start, tuple(chain), before[-1] if before else None, blocks[-1] if blocks else None)


def _comment_start(line_prefix: str) -> int | None:
    """Where a `#` comment starts in the line before the cursor (outside strings)."""
    in_string = False
    escaped = False
    for i, ch in enumerate(line_prefix):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "#":
            return i
    return None


_EXPRESSION_AFTER = frozenset("( , : = + - * / < <= > >= == != until tol weight and or not".split())
_CONSTRAINT_ATTRIBUTES = ("tol", "weight", "over", "tag")


def completion(state: DocumentState, offset: int, read: Reader) -> list[types.CompletionItem]:
    ctx = _context(state, offset)
    if ctx.in_comment:
        return []
    edit_range = lsp_range(state.lines, ctx.replace_start, offset)
    prev = ctx.previous.text if ctx.previous is not None else None
    index = state.index

    def item(
        label: str, kind: types.CompletionItemKind, detail: str = "", doc: str = "", sort: str = "5"
    ) -> types.CompletionItem:
        return types.CompletionItem(
            label=label,
            kind=kind,
            detail=detail or None,
            documentation=types.MarkupContent(types.MarkupKind.Markdown, doc) if doc else None,
            text_edit=types.TextEdit(edit_range, label),
            sort_text=f"{sort}{label}",
            filter_text=label,
        )

    def keywords(words: Sequence[str]) -> list[types.CompletionItem]:
        return [item(w, types.CompletionItemKind.Keyword, sort="3") for w in words]

    if ctx.in_string:
        if prev == "import":
            return _import_items(state, read, item)
        return []
    if prev is None and not ctx.chain:
        return keywords(("task", "objective"))
    if ctx.block in ("keypoints", "signals"):
        chain_owner = ctx.previous
        if chain_owner is not None and chain_owner.text == "=":
            return _source_items(state, ctx.block, item)
        if chain_owner is not None and chain_owner.text in _EXPRESSION_AFTER and chain_owner.text != "=":
            return _expression_items(state, ctx, item)
        return []
    if ctx.chain:
        base = index.binding(ctx.chain[0])
        if base is not None and len(ctx.chain) == 1 and base.kind in ("keypoint", "let"):
            return [
                item(
                    axis,
                    types.CompletionItemKind.Field,
                    f"{ctx.chain[0]}.{axis}: scalar",
                    f"the {axis} component of `{ctx.chain[0]}`",
                )
                for axis in "xyz"
            ]
        return []
    if prev == "tag":
        return _tag_items(state, read, item)
    if prev == "over":
        return keywords(("sum", "mean", "max"))
    if prev in ("let", "stage", "task", "objective", "keypoints", "signals", "unreached", "import") or (
        prev in ("subgoal", "path") and ctx.block == "stage"
    ):
        return []
    if prev == "param":
        if index.file_kind == "objective":
            return _objective_param_items(state, read, item)
        return []
    if ctx.block == "tag":
        return keywords(("tol", "weight"))
    if prev in _EXPRESSION_AFTER:
        if ctx.block is None and prev == "=" and _previous_word(index, ctx.previous) == "param":
            return []
        return _expression_items(state, ctx, item)
    items_words = OBJECTIVE_ITEM_WORDS if index.file_kind == "objective" else TASK_ITEM_WORDS
    if prev in ("{", ";", "}"):
        if ctx.block == "stage":
            return keywords(("subgoal", "path"))
        return keywords(items_words) if ctx.block is None else []
    # After a complete operand: what may follow it.
    if ctx.block == "stage":
        return keywords(_CONSTRAINT_ATTRIBUTES + ("and", "or", "subgoal", "path"))
    if ctx.block is None and index.file_kind == "task":
        if _previous_word(index, ctx.previous, skip_names=1) == "stage":
            return keywords(("until",))
        return keywords(("and", "or") + TASK_ITEM_WORDS)
    return keywords(items_words)


def _previous_word(index: Index, token: Token | None, skip_names: int = 0) -> str | None:
    """The token before `token` (or before `skip_names` further tokens), as text."""
    if token is None:
        return None
    position = next((i for i, t in enumerate(index.tokens) if t.start == token.start), None)
    if position is None or position - 1 - skip_names < 0:
        return None
    return index.tokens[position - 1 - skip_names].text


def _source_items(state: DocumentState, block: str, item) -> list[types.CompletionItem]:
    """Environment names for the right of `=` in a binding: the block's kind first, then the
    other kind (with the checker's own advice to move it), so a prefix like `gripper.`
    shows everything the environment reports under it."""
    if state.schema is None:
        return []
    own, other = (state.schema.keypoints, state.schema.signals)
    if block == "signals":
        own, other = other, own
    own_kind, other_kind = ("keypoint", "signal") if block == "keypoints" else ("signal", "keypoint")
    kind = types.CompletionItemKind.Constant
    items = [
        item(name, kind, f"{own_kind} ({state.schema_origin})", meaning, sort="1") for name, meaning in own.items()
    ]
    items += [
        item(name, kind, f"{other_kind}: bind it in {other_kind}s {{ }}", meaning, sort="8")
        for name, meaning in other.items()
    ]
    return items


def _binding_detail(decl: Decl) -> str:
    if decl.kind in ("keypoint", "signal"):
        return f"{decl.kind} = {decl.detail}"
    return f"{decl.kind} = {decl.detail}" if decl.detail else decl.kind


def _expression_items(state: DocumentState, ctx: _Context, item) -> list[types.CompletionItem]:
    kinds = {
        "keypoint": types.CompletionItemKind.Variable,
        "signal": types.CompletionItemKind.Variable,
        "param": types.CompletionItemKind.Constant,
        "let": types.CompletionItemKind.Variable,
    }
    items = []
    seen = set()
    for decl in state.index.declared(*BINDING_KINDS):
        if decl.name in seen or decl.start <= ctx.replace_start < decl.end:
            continue
        seen.add(decl.name)
        items.append(item(decl.name, kinds[decl.kind], _binding_detail(decl), sort="1"))
    items.append(
        item(
            STEP_INDEX_NAME,
            types.CompletionItemKind.Variable,
            "step index (scalar)",
            "the step index within the trajectory, 0-based",
            sort="2",
        )
    )
    for name in BUILTINS:
        items.append(item(name, types.CompletionItemKind.Function, describe(name), _builtin_doc(name), sort="4"))
    items += [item(w, types.CompletionItemKind.Keyword, sort="6") for w in ("not", "true", "false")]
    return items


def _tag_items(state: DocumentState, read: Reader, item) -> list[types.CompletionItem]:
    tags = {occ.name: "used in this file" for occ in state.index.tags}
    if state.index.file_kind == "objective":
        for other in nearby_grc_files(state, read, "task"):
            for occ in other.index.tags:
                tags.setdefault(occ.name, f"used in {os.path.basename(other.path)}")
    tags.setdefault("task", "the default tag")
    return [item(name, types.CompletionItemKind.EnumMember, where, sort="1") for name, where in sorted(tags.items())]


def _objective_param_items(state: DocumentState, read: Reader, item) -> list[types.CompletionItem]:
    params: dict[str, str] = {}
    for other in nearby_grc_files(state, read, "task"):
        for decl in other.index.declared("param"):
            params.setdefault(decl.name, f"param of task {other.index.file_name} = {decl.detail}")
    return [item(name, types.CompletionItemKind.Constant, detail, sort="1") for name, detail in sorted(params.items())]


def _import_items(state: DocumentState, read: Reader, item) -> list[types.CompletionItem]:
    base = os.path.dirname(os.path.abspath(state.path))
    items = []
    for other in nearby_grc_files(state, read, "objective"):
        relative = os.path.relpath(other.path, base).replace(os.sep, "/")
        items.append(item(relative, types.CompletionItemKind.File, f"objective {other.index.file_name}", sort="1"))
    return items


def _builtin_doc(name: str) -> str:
    lines = [f"`{sig}`" for sig in describe(name).split(" | ")]
    docs = [sig.doc for sig in BUILTINS[name] if sig.doc]
    return "\n\n".join(f"{line} — {doc}" if doc else line for line, doc in zip(lines, docs + [""] * len(lines)))


# ---------------------------------------------------------------------------- hover


def hover(state: DocumentState, offset: int, types_of: Callable[[], dict[str, str]]) -> types.Hover | None:
    """What the word under the cursor is. `types_of` gives the checker's types of the
    file's names (computed only when a binding is hovered)."""
    index = state.index
    tok = index.token_at(offset)
    if tok is None or tok.kind != "name":
        return None
    text = None
    for block, dotted, start, end in index.sources:
        if start <= tok.start and tok.end <= end:
            text = _source_hover(state, block, dotted)
            tok_range = (start, end)
            break
    else:
        tok_range = (tok.start, tok.end)
        is_call = any(c.start == tok.start for c in index.calls)
        is_ref = any(r.start == tok.start for r in index.refs)
        decl = next((d for d in index.decls if d.start == tok.start), None)
        if is_call and tok.text in BUILTINS:
            text = _builtin_doc(tok.text)
        elif is_ref and tok.text == STEP_INDEX_NAME and index.binding(tok.text) is None:
            text = "`t: scalar` — the step index within the trajectory, 0-based"
        elif is_ref or (decl is not None and decl.kind in BINDING_KINDS):
            binding = index.binding(tok.text)
            if binding is not None:
                text = _binding_hover(state, binding, types_of)
    if text is None:
        return None
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, text), lsp_range(state.lines, *tok_range))


def _source_hover(state: DocumentState, block: str, dotted: str) -> str:
    kind = "keypoint" if block == "keypoints" else "signal"
    if state.schema is None:
        return f"`{dotted}`: {kind} source (no environment schema for this task)"
    table = state.schema.keypoints if kind == "keypoint" else state.schema.signals
    if dotted in table:
        return f"`{dotted}` ({kind}, {state.schema_origin}): {table[dotted]}"
    return f"`{dotted}`: the environment ({state.schema_origin}) reports no {kind} of this name"


def _binding_hover(state: DocumentState, decl: Decl, types_of: Callable[[], dict[str, str]]) -> str:
    found = types_of().get(decl.name)
    type_text = f": {found}" if found else ""
    if decl.kind in ("keypoint", "signal"):
        line = f"`{decl.kind} {decl.name}{type_text} = {decl.detail}`"
        table = {}
        if state.schema is not None:
            table = state.schema.keypoints if decl.kind == "keypoint" else state.schema.signals
        meaning = table.get(decl.detail)
        return f"{line}\n\n{meaning}" if meaning else line
    value = f" = {decl.detail}" if decl.detail else ""
    note = "" if found else ("\n\n(type known once the file checks)" if state.index.file_kind == "task" else "")
    return f"`{decl.kind} {decl.name}{type_text}{value}`{note}"


# ---------------------------------------------------------------------------- names


@dataclass(frozen=True)
class Place:
    path: str
    uri: str
    text: str
    start: int
    end: int


def _binding_at(state: DocumentState, offset: int) -> str | None:
    tok = state.index.token_at(offset)
    if tok is None or tok.kind != "name":
        return None
    index = state.index
    if any(o.start == tok.start for o in index.occurrences(tok.text)):
        return tok.text
    return None


def _files_for(state: DocumentState, read: Reader) -> list[tuple[str, str, str, Index]]:
    """(path, uri, text, index) of this document and, for an objective, its imports."""
    files = [(state.path, state.uri, state.text, state.index)]
    if state.index.file_kind == "objective":
        files += [
            (o.path, Path(os.path.abspath(o.path)).as_uri(), o.text, o.index) for o in import_closure(state, read)
        ]
    return files


def definitions(state: DocumentState, offset: int, read: Reader) -> list[Place]:
    name = _binding_at(state, offset)
    if name is None:
        return []
    places = []
    for path, uri, text, index in _files_for(state, read):
        places += [
            Place(path, uri, text, d.start, d.end) for d in index.decls if d.name == name and d.kind in BINDING_KINDS
        ]
    return places


def references(state: DocumentState, offset: int, read: Reader, include_declaration: bool = True) -> list[Place]:
    name = _binding_at(state, offset)
    if name is None:
        return []
    places = []
    for path, uri, text, index in _files_for(state, read):
        declared = {(d.start, d.end) for d in index.decls if d.name == name}
        places += [
            Place(path, uri, text, o.start, o.end)
            for o in index.occurrences(name)
            if include_declaration or (o.start, o.end) not in declared
        ]
    return places


def prepare_rename(state: DocumentState, offset: int) -> types.Range | None:
    name = _binding_at(state, offset)
    if name is None:
        return None
    tok = state.index.token_at(offset)
    return lsp_range(state.lines, tok.start, tok.end)


def rename(state: DocumentState, offset: int, new_name: str, read: Reader) -> list[Place]:
    """The places to rewrite; RequestRejected when `new_name` cannot be a binding's name."""
    name = _binding_at(state, offset)
    if name is None:
        raise RequestRejected("only a keypoint, signal, param or let can be renamed here")
    if not _IDENT.match(new_name):
        raise RequestRejected(f"'{new_name}' is not a name (letters, digits and _, not starting with a digit)")
    if new_name in RESERVED_NAMES or new_name in KEYWORDS:
        raise RequestRejected(f"'{new_name}' is reserved (a keyword, a builtin function or the step index t)")
    for path, _uri, _text, index in _files_for(state, read):
        clash = index.binding(new_name)
        if clash is not None and new_name != name:
            raise RequestRejected(f"'{new_name}' is already declared as a {clash.kind} in {os.path.basename(path)}")
    return references(state, offset, read, include_declaration=True)


# ---------------------------------------------------------------------------- outline


_SYMBOL_KINDS = {
    "param": types.SymbolKind.Constant,
    "keypoint": types.SymbolKind.Variable,
    "signal": types.SymbolKind.Variable,
    "let": types.SymbolKind.Variable,
    "stage": types.SymbolKind.Class,
    "constraint": types.SymbolKind.Property,
    "tag_override": types.SymbolKind.Struct,
    "import": types.SymbolKind.File,
}


def document_symbols(state: DocumentState) -> list[types.DocumentSymbol]:
    """Declarations in source order; constraints nested under their stage."""
    lines = state.lines
    out: list[types.DocumentSymbol] = []
    current_stage: types.DocumentSymbol | None = None
    for decl in state.index.decls:
        full_end = max(decl.full_end, decl.end)
        symbol = types.DocumentSymbol(
            name=decl.name or "?",
            kind=_SYMBOL_KINDS[decl.kind],
            range=lsp_range(lines, min(decl.full_start, decl.start), full_end),
            selection_range=lsp_range(lines, decl.start, decl.end),
            detail=(decl.detail if decl.kind != "stage" else "stage") or decl.kind,
            children=[],
        )
        if decl.kind == "constraint" and current_stage is not None and decl.parent == current_stage.name:
            current_stage.children.append(symbol)
            continue
        out.append(symbol)
        current_stage = symbol if decl.kind == "stage" else None
    return out
