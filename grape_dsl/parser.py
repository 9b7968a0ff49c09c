"""Text -> `ast.Module`, with syntax diagnostics (GRC1xx).

The grammar (grammar/grc.lark, shipped as `grape_dsl.grammar`) is LALR(1), so parsing is a
loop over a stack, never recursion. Three limits keep every input bounded in time and
memory, and keep the later recursive passes (checker, formatter, compiler) safe: the file
size, the expression nesting depth, and the number of errors reported per file.

On a syntax error the parser reports it in plain words, then resumes at the next
declaration (or the next constraint inside a stage) to find further errors.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import lark
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from grape_dsl import ast
from grape_dsl.diagnostics import Diagnostic, GrcError
from grape_dsl.util.nearname import near_name

MAX_SOURCE_CHARS = 200_000  # the stock files are ~2 kB; 200 kB parses in about 2 s (bench/parser.py)
MAX_NESTING = 100  # expression depth; keeps every recursive pass far from Python's limit
MAX_SYNTAX_ERRORS = 10
_LONE_CR = re.compile(r"\r(?!\n)")

# Every GRC1xx code with a one-line summary; docs/language.md lists the same table.
SYNTAX_CODES: dict[str, str] = {
    "GRC100": "file too large",
    "GRC101": "unexpected character",
    "GRC102": "unexpected token",
    "GRC103": "unexpected end of file",
    "GRC104": "unterminated string",
    "GRC105": "invalid UTF-8",
    "GRC106": "expression nested too deeply",
    "GRC107": "block not closed with `}`",
    "GRC108": "reserved keyword used as a name",
    "GRC109": "invalid component (only `.x`, `.y`, `.z`)",
    "GRC110": "number out of range",
    "GRC111": "missing `task` or `objective` header",
    "GRC112": "invalid escape in a string",
    "GRC113": "chained comparison",
    "GRC114": "`over` on a subgoal",
    "GRC115": "attribute given twice",
}

_START_RULES = ["start", "task_rest", "stage_rest", "objective_rest"]


# ---------------------------------------------------------------------------- the Lark parser


class _CommentSink(threading.local):
    """Where the lexer callback puts `#` comments; one list per parse, per thread."""

    def __init__(self) -> None:
        self.comments: list[Token] | None = None


_comment_sink = _CommentSink()


def _collect_comment(token: Token) -> Token:
    if _comment_sink.comments is not None:
        _comment_sink.comments.append(token)
    return token


def grammar_text() -> str:
    return resources.files("grape_dsl.grammar").joinpath("grc.lark").read_text(encoding="utf-8")


CACHE_ENV = "GRAPE_DSL_CACHE"  # the same cache root as the compiled kernels


def _table_cache_file(grammar: str) -> str | bool:
    """Where Lark keeps the analysed LALR tables: loading them is about ten times faster than
    building them with the strict collision check (bench/parser.py). `$GRAPE_DSL_CACHE/grammar/`, else
    `~/.cache/grape_dsl/grammar/`; the file name carries the grammar's hash and Lark checks its
    own hash of grammar and options inside. False (no cache) when the folder can't be made."""
    root = os.environ.get(CACHE_ENV)
    folder = (Path(root).expanduser() if root else Path.home() / ".cache" / "grape_dsl") / "grammar"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()[:16]
    return str(folder / f"grc-{digest}-lark-{lark.__version__}.cache")


@functools.cache
def _lark() -> Lark:
    grammar = grammar_text()
    return Lark(
        grammar,
        parser="lalr",
        lexer="basic",
        strict=True,
        propagate_positions=True,
        maybe_placeholders=False,
        start=_START_RULES,
        lexer_callbacks={"COMMENT": _collect_comment},
        cache=_table_cache_file(grammar),
    )


@functools.cache
def _terminal_patterns() -> dict[str, str]:
    """Terminal name -> its literal text for keywords and punctuation (e.g. 'RBRACE' -> '}')."""
    out = {}
    for term in _lark().terminals:
        if term.pattern.type == "str":
            out[term.name] = term.pattern.value
    return out


@functools.cache
def keywords() -> frozenset[str]:
    """The reserved words of the language, read from the grammar."""
    return frozenset(v for v in _terminal_patterns().values() if v.isidentifier())


# ---------------------------------------------------------------------------- public API


def decode_source(data: bytes, path: str = "<string>") -> str:
    """UTF-8 bytes -> text; invalid bytes are a GRC105 diagnostic at the first bad byte."""
    body = data.removeprefix(b"\xef\xbb\xbf")  # a byte-order mark is not part of the program
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        good = body[: err.start].decode("utf-8")
        line = good.count("\n") + 1
        column = err.start - (body.rfind(b"\n", 0, err.start) + 1) + 1
        char_column = len(good) - (good.rfind("\n") + 1) + 1
        span = ast.Span(line, char_column, line, char_column + 1, len(good), len(good) + 1)
        offset = err.start + len(data) - len(body)
        diag = Diagnostic(
            "GRC105",
            "error",
            f"invalid UTF-8: byte 0x{body[err.start]:02x} at byte offset {offset} "
            f"(line {line}, byte column {column}) cannot be decoded",
            path,
            span,
            hint=".grc files are UTF-8 text; re-save the file as UTF-8",
        )
        raise GrcError([diag], {path: good}) from None


def read_source(path: str | Path) -> str:
    """Read a .grc file as text; undecodable bytes raise GrcError (OSError passes through,
    including grape_dsl.source_files.UnreadableSource for devices, pipes and oversized files)."""
    from grape_dsl.source_files import read_source_bytes

    return decode_source(read_source_bytes(path), str(path))


def parse(text: str | bytes, path: str = "<string>") -> ast.Module:
    """Parse one .grc file. Raises GrcError carrying every syntax diagnostic found."""
    if isinstance(text, bytes):
        text = decode_source(text, path)
    # A lone CR (old Mac line endings) ends a line like LF; replaced one for one, so every
    # offset stays the same. Without this a comment would run to the end of the file.
    text = _LONE_CR.sub("\n", text)
    if len(text) > MAX_SOURCE_CHARS:
        diag = Diagnostic(
            "GRC100",
            "error",
            f"file too large: {len(text):,} characters (the limit is {MAX_SOURCE_CHARS:,})",
            path,
            ast.Span(1, 1, 1, 2, 0, 1),
            hint="a .grc file describes one task; split generated or concatenated input",
        )
        raise GrcError([diag], {path: text[:10_000]})

    _comment_sink.comments = []
    try:
        with _gc_paused():
            tree = _lark().parse(text, start="start")
    except UnexpectedInput as err:
        raise GrcError(_syntax_errors(text, path, err), {path: text}) from None
    finally:
        comment_tokens, _comment_sink.comments = _comment_sink.comments or [], None

    too_deep = _first_too_deep(tree)
    if too_deep is not None:
        diag = Diagnostic(
            "GRC106",
            "error",
            f"expression nested too deeply (more than {MAX_NESTING} levels)",
            path,
            _meta_span(too_deep.meta),
            hint="name parts of the expression with `let`",
        )
        raise GrcError([diag], {path: text})

    builder = _AstBuilder(path)
    try:
        module = builder.transform(tree)
    except VisitError as err:  # an internal error: name the rule it happened in
        raise RuntimeError(f"parser: building the AST failed in rule '{err.rule}'") from err
    if builder.diagnostics:
        raise GrcError(builder.diagnostics, {path: text})
    comments = tuple(_comment(tok, text) for tok in comment_tokens)
    return type(module)(**{**_fields(module), "comments": comments, "path": path})


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Building a tree allocates many objects and no garbage cycles; the cyclic collector's
    passes over them made parse time grow faster than the file (bench/parser.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _fields(node: object) -> dict:
    return {name: getattr(node, name) for name in node.__dataclass_fields__}  # type: ignore[attr-defined]


def _comment(token: Token, text: str) -> ast.Comment:
    line_start = text.rfind("\n", 0, token.start_pos) + 1
    trailing = bool(text[line_start : token.start_pos].strip())
    return ast.Comment(str(token)[1:], _token_span(token), trailing=trailing)


# ---------------------------------------------------------------------------- spans


def _token_span(tok: Token) -> ast.Span:
    return ast.Span(tok.line, tok.column, tok.end_line, tok.end_column, tok.start_pos, tok.end_pos)


def _meta_span(meta) -> ast.Span:
    if getattr(meta, "empty", True):
        return ast.NO_SPAN
    return ast.Span(meta.line, meta.column, meta.end_line, meta.end_column, meta.start_pos, meta.end_pos)


_EXPR_RULES = frozenset("or_op and_op not_op le lt ge gt eq ne add sub mul div neg component call paren".split())


def _first_too_deep(tree: Tree) -> Tree | None:
    """The outermost expression node deeper than MAX_NESTING, without recursion."""
    height: dict[int, int] = {}
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        node, children_done = stack.pop()
        subtrees = [c for c in node.children if isinstance(c, Tree)]
        if children_done:
            height[id(node)] = 1 + max((height[id(c)] for c in subtrees), default=0)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in subtrees)
    if height[id(tree)] <= MAX_NESTING:
        return None
    order = [tree]
    while order:
        node = order.pop()
        if node.data in _EXPR_RULES and height[id(node)] > MAX_NESTING:
            return node
        order.extend(reversed([c for c in node.children if isinstance(c, Tree)]))
    return None


# ---------------------------------------------------------------------------- tree -> AST

_COMPARE_OPS = {"le": "<=", "lt": "<", "ge": ">=", "gt": ">", "eq": "==", "ne": "!="}
_ARITH_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
_ESCAPE = re.compile(r"\\(.)")


class _Attr:
    """A constraint attribute on its way into `ast.Constraint`."""

    def __init__(self, name: str, value: object, span: ast.Span):
        self.name, self.value, self.span = name, value, span


@v_args(meta=True)
class _AstBuilder(Transformer):
    """Lark tree -> ast dataclasses. Problems Lark cannot see (a `.w` component, a duplicate
    attribute, a number that overflows) go to `diagnostics` and building carries on."""

    def __init__(self, file_path: str):
        super().__init__()
        self.file_path = file_path  # not `path`: that is the rule callback for path constraints
        self.diagnostics: list[Diagnostic] = []

    def _error(self, code: str, message: str, span: ast.Span, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, "error", message, self.file_path, span, hint=hint))

    def _number(self, tok: Token) -> float:
        value = float(tok)
        if value == float("inf"):
            self._error("GRC110", f"number {tok} is too large to represent", _token_span(tok))
            return 0.0
        return value

    def _string(self, tok: Token) -> str:
        body = str(tok)[1:-1]
        for match in _ESCAPE.finditer(body):
            if match.group(1) not in '"\\':
                pos = tok.start_pos + 1 + match.start()
                col = tok.column + 1 + match.start()
                self._error(
                    "GRC112",
                    f"unknown escape '\\{match.group(1)}' in a string",
                    ast.Span(tok.line, col, tok.line, col + 2, pos, pos + 2),
                    hint='strings allow only \\" and \\\\',
                )
        return _ESCAPE.sub(lambda m: m.group(1), body)

    # ---------------------------------------------------------------- files

    def start(self, meta, children):
        return children[0]

    def task_file(self, meta, children):
        name, rest = str(children[0]), children[1:]
        instruction = None
        if rest and isinstance(rest[0], Token) and rest[0].type == "STRING":
            instruction, rest = self._string(rest[0]), rest[1:]
        return ast.TaskFile(name, instruction, tuple(rest), span=_meta_span(meta))

    def objective_file(self, meta, children):
        name, rest = str(children[0]), children[1:]
        description = None
        if rest and isinstance(rest[0], Token) and rest[0].type == "STRING":
            description, rest = self._string(rest[0]), rest[1:]
        return ast.ObjectiveFile(name, description, tuple(rest), span=_meta_span(meta))

    # The resume entry points are parsed only to find further errors; never built.
    def task_rest(self, meta, children):
        return children

    stage_rest = objective_rest = task_rest

    # ---------------------------------------------------------------- declarations

    def positive(self, meta, children):
        return self._number(children[0])

    def negative(self, meta, children):
        return -self._number(children[0])

    def param_decl(self, meta, children):
        return ast.ParamDecl(str(children[0]), children[1], span=_meta_span(meta))

    def unreached_decl(self, meta, children):
        return ast.UnreachedDecl(children[0], span=_meta_span(meta))

    def let_decl(self, meta, children):
        return ast.LetDecl(str(children[0]), children[1], span=_meta_span(meta))

    def source(self, meta, children):
        return ast.Source(tuple(str(c) for c in children), span=_meta_span(meta))

    def keypoint(self, meta, children):
        return ast.KeypointDecl(str(children[0]), children[1], span=_meta_span(meta))

    def keypoint_plus(self, meta, children):
        return ast.KeypointDecl(str(children[0]), children[1], "+", children[2], span=_meta_span(meta))

    def keypoint_minus(self, meta, children):
        return ast.KeypointDecl(str(children[0]), children[1], "-", children[2], span=_meta_span(meta))

    def keypoints_block(self, meta, children):
        return ast.KeypointsBlock(tuple(children), span=_meta_span(meta))

    def signal(self, meta, children):
        return ast.SignalDecl(str(children[0]), children[1], span=_meta_span(meta))

    def signals_block(self, meta, children):
        return ast.SignalsBlock(tuple(children), span=_meta_span(meta))

    def until(self, meta, children):
        return children[0]

    def stage(self, meta, children):
        name, rest = str(children[0]), children[1:]
        until = None
        if rest and not isinstance(rest[0], ast.Constraint):
            until, rest = rest[0], rest[1:]
        return ast.Stage(name, until, tuple(rest), span=_meta_span(meta))

    # ---------------------------------------------------------------- constraints

    def _constraint(self, kind: str, meta, children) -> ast.Constraint:
        name, expr, attrs = str(children[0]), children[1], children[2:]
        values: dict[str, object] = {}
        for attr in attrs:
            if attr.name in values:
                self._error(
                    "GRC115",
                    f"`{attr.name}` is given twice in {kind} '{name}'",
                    attr.span,
                    hint=f"keep one `{attr.name}`",
                )
            elif attr.name == "over" and kind == "subgoal":
                self._error(
                    "GRC114",
                    f"`over` applies to path constraints only; subgoal '{name}' is scored at its stage's last step",
                    attr.span,
                    hint=f"remove `over {attr.value}`, or make it `path {name}`",
                )
            values.setdefault(attr.name, attr.value)
        return ast.Constraint(kind, name, expr, span=_meta_span(meta), **values)  # type: ignore[arg-type]

    def subgoal(self, meta, children):
        return self._constraint("subgoal", meta, children)

    def path(self, meta, children):
        return self._constraint("path", meta, children)

    def tol(self, meta, children):
        return _Attr("tol", children[0], _meta_span(meta))

    def weight(self, meta, children):
        return _Attr("weight", children[0], _meta_span(meta))

    def over(self, meta, children):
        return _Attr("over", children[0], _meta_span(meta))

    def tag(self, meta, children):
        return _Attr("tag", children[0], _meta_span(meta))

    def aggregation(self, meta, children):
        return str(children[0])

    def tag_name(self, meta, children):
        return str(children[0])

    # ---------------------------------------------------------------- objective files

    def import_decl(self, meta, children):
        return ast.ImportDecl(self._string(children[0]), span=_meta_span(meta))

    def override_tol(self, meta, children):
        return _Attr("tol", children[0], _meta_span(meta))

    def override_weight(self, meta, children):
        return _Attr("weight", children[0], _meta_span(meta))

    def tag_override(self, meta, children):
        tag, attrs = children[0], children[1:]
        values: dict[str, float] = {}
        for attr in attrs:
            if attr.name in values:
                self._error(
                    "GRC115",
                    f"`{attr.name}` is given twice for tag '{tag}'",
                    attr.span,
                    hint=f"keep one `{attr.name}`",
                )
            values.setdefault(attr.name, attr.value)
        return ast.TagOverride(tag, span=_meta_span(meta), **values)

    # ---------------------------------------------------------------- expressions

    def number(self, meta, children):
        return ast.Number(self._number(children[0]), span=_meta_span(meta))

    def true(self, meta, children):
        return ast.Bool(True, span=_meta_span(meta))

    def false(self, meta, children):
        return ast.Bool(False, span=_meta_span(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), span=_meta_span(meta))

    def function(self, meta, children):
        return str(children[0])

    def call(self, meta, children):
        return ast.Call(children[0], tuple(children[1:]), span=_meta_span(meta))

    def paren(self, meta, children):
        return children[0]

    def component(self, meta, children):
        base, axis = children
        if str(axis) not in ("x", "y", "z"):
            hint = None
            suggestion = near_name(str(axis), ("x", "y", "z"))
            if suggestion:
                hint = f"did you mean '.{suggestion}'?"
            self._error(
                "GRC109",
                f"'.{axis}' is not a vector component; use .x, .y or .z",
                _token_span(axis),
                hint=hint,
            )
            return ast.Component(base, "x", span=_meta_span(meta))
        return ast.Component(base, str(axis), span=_meta_span(meta))

    def neg(self, meta, children):
        return ast.Neg(children[0], span=_meta_span(meta))

    def not_op(self, meta, children):
        return ast.Not(children[0], span=_meta_span(meta))

    def or_op(self, meta, children):
        return ast.BoolOp("or", children[0], children[1], span=_meta_span(meta))

    def and_op(self, meta, children):
        return ast.BoolOp("and", children[0], children[1], span=_meta_span(meta))

    def __default__(self, data, children, meta):
        if data in _COMPARE_OPS:
            return ast.Compare(_COMPARE_OPS[data], children[0], children[1], span=_meta_span(meta))
        if data in _ARITH_OPS:
            return ast.Binary(_ARITH_OPS[data], children[0], children[1], span=_meta_span(meta))
        raise NotImplementedError(f"no AST node for grammar rule '{data}'")


# ---------------------------------------------------------------------------- syntax errors

# Terminal sets that read better as one phrase in "expected: ...".
_EXPR_START = frozenset({"NUMBER", "NAME", "LPAR", "MINUS", "NOT", "TRUE", "FALSE", "MEAN", "MAX"})
_PHRASES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"NAME", "TASK", "PATH", "SUBGOAL", "STAGE", "PARAM", "LET", "SUM", "MEAN", "MAX"}), "a tag name"),
    (
        frozenset({"PARAM", "KEYPOINTS", "SIGNALS", "LET", "UNREACHED", "STAGE"}),
        "a declaration (`param`, `keypoints`, `signals`, `let`, `unreached` or `stage`)",
    ),
    (frozenset({"IMPORT", "TAG", "PARAM", "UNREACHED"}), "a declaration (`import`, `tag`, `param` or `unreached`)"),
    (frozenset({"SUBGOAL", "PATH"}), "a constraint (`subgoal` or `path`)"),
    (frozenset({"TOL", "WEIGHT", "OVER", "TAG"}), "an attribute (`tol`, `weight`, `over` or `tag`)"),
    (_EXPR_START, "an expression"),
    (frozenset({"PLUS", "MINUS", "STAR", "SLASH", "DOT"}), "an operator"),
    (frozenset({"SUM", "MEAN", "MAX"}), "`sum`, `mean` or `max`"),
)
# A phrase applies when these are all acceptable (e.g. `not` cannot follow a comparison, yet
# what follows `<=` is still "an expression").
_PHRASE_CORE = {
    "an expression": frozenset({"NUMBER", "NAME", "LPAR", "MINUS"}),
    "an operator": frozenset({"PLUS", "MINUS"}),
}
_COMPARISON_TEXT = frozenset({"<=", "<", ">=", ">", "==", "!="})
_DECL_KEYWORDS = frozenset(
    {"PARAM", "KEYPOINTS", "SIGNALS", "LET", "UNREACHED", "STAGE", "IMPORT", "TASK", "OBJECTIVE"}
)
_CHAR_HINTS = {
    "&": "write `and`",
    "|": "write `or`",
    "!": "write `not`, or `!=` for 'not equal'",
    "'": 'strings use double quotes: "..."',
    "≤": "write `<=`",
    "≥": "write `>=`",
    "≠": "write `!=`",
    "−": "write `-` (ASCII minus)",
}


# (objective file?, token) -> why a declaration keyword is out of place.
_MISPLACED_HINTS = {
    (False, "IMPORT"): "`import` belongs in objective files (`objective NAME`)",
    (False, "TAG"): "in a task file `tag NAME` follows a constraint; `tag NAME { ... }` belongs in objective files",
    (False, "TASK"): "a file has one `task` header",
    (False, "OBJECTIVE"): "a file is either a task or an objective",
    (True, "STAGE"): "stages belong in task files (`task NAME`)",
    (True, "KEYPOINTS"): "keypoints belong in task files (`task NAME`)",
    (True, "SIGNALS"): "signals belong in task files (`task NAME`)",
    (True, "LET"): "`let` belongs in task files (`task NAME`)",
    (True, "OBJECTIVE"): "a file has one `objective` header",
    (True, "TASK"): "a file is either a task or an objective",
}


def _is_objective(text: str) -> bool:
    return re.match(r"(?:\s|#[^\n]*)*objective\b", text) is not None


def _terminal_words(name: str) -> str:
    if name == "NAME":
        return "a name"
    if name == "NUMBER":
        return "a number"
    if name == "STRING":
        return 'a string ("...")'
    if name == "$END":
        return "end of file"
    return f"`{_terminal_patterns().get(name, name)}`"


def expected_words(terminals: set[str]) -> str:
    """A set of acceptable terminals in plain words, e.g. "a constraint (`subgoal` or `path`) or `}`"."""
    left = set(terminals)
    parts: list[str] = []
    if len(left) > 1:
        left.discard("SEMICOLON")  # an optional separator is never the helpful suggestion
    for group, phrase in _PHRASES:
        if _PHRASE_CORE.get(phrase, group) <= left:
            parts.append(phrase)
            left -= group
    comparisons = {t for t in left if _terminal_patterns().get(t) in _COMPARISON_TEXT}
    if len(comparisons) == len(_COMPARISON_TEXT):
        parts.append("a comparison (`<=`, `<`, `>=`, `>`, `==`, `!=`)")
        left -= comparisons
    if {"AND", "OR"} <= left:
        parts.append("`and`, `or`")
        left -= {"AND", "OR"}
    parts.extend(_terminal_words(t) for t in sorted(left, key=lambda t: (t == "$END", t)))
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _token_words(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name '{tok}'"
    if tok.type == "NUMBER":
        return f"number {tok}"
    if tok.type == "STRING":
        return f"string {tok}"
    text = str(tok)
    if text.isidentifier():
        return f"keyword `{text}`"
    return f"`{text}`"


def _open_block(value_stack: list) -> tuple[str, Token] | None:
    """The innermost `{` still open on the parser stack: (what it opens, the `{` token)."""
    for i in range(len(value_stack) - 1, -1, -1):
        item = value_stack[i]
        if isinstance(item, Token) and item.type == "LBRACE":
            opener = [v for v in value_stack[max(0, i - 4) : i] if isinstance(v, Token)]
            kinds = [t for t in opener if t.type in ("STAGE", "KEYPOINTS", "SIGNALS", "TAG")]
            if not kinds:
                return ("block", item)
            kind = kinds[-1]
            names = [t for t in opener if t.type == "NAME" and t.start_pos > kind.start_pos]
            if kind.type == "TAG":
                tag_trees = [v for v in value_stack[max(0, i - 4) : i] if isinstance(v, Tree)]
                label = str(tag_trees[-1].children[0]) if tag_trees else "?"
                return (f"`tag {label}`", item)
            if kind.type == "STAGE":
                return (f"stage '{names[0]}'" if names else "stage", item)
            return (f"the `{kind}` block", item)
    return None


def _end_of_tokens_span(tok: Token, text: str) -> ast.Span:
    """Where the end of file is reported: just after the last token (or 1:1 in an empty file)."""
    if tok.end_line is None:
        return ast.Span(1, 1, 1, 1, 0, 0)
    return ast.Span(tok.end_line, tok.end_column, tok.end_line, tok.end_column + 1, tok.end_pos, tok.end_pos)


def _describe(err: UnexpectedInput, text: str, path: str, resumed: bool = False) -> Diagnostic:
    """One Lark error as a Diagnostic in plain words (`resumed`: found after the first error,
    by parsing from a synchronising keyword). One function per kind of Lark error."""
    parser = getattr(err, "interactive_parser", None)
    if isinstance(err, UnexpectedCharacters):
        return _unexpected_character(err, text, path, parser.accepts() if parser is not None else None)
    assert isinstance(err, UnexpectedToken)
    value_stack = list(parser.parser_state.value_stack) if parser is not None else []
    at_start = not value_stack and not resumed
    if err.token.type == "$END":
        return _unexpected_end(err, text, path, value_stack, at_start)
    return _unexpected_token(err, text, path, value_stack, at_start)


def _unexpected_character(err: UnexpectedCharacters, text: str, path: str, accepts: set[str] | None) -> Diagnostic:
    """The lexer met a character no token starts with (GRC104 an unterminated string, else GRC101);
    `accepts`: the terminals the parser would take here, when known."""
    pos = err.pos_in_stream
    char = text[pos]
    line_end = text.find("\n", pos)
    line_end = len(text) if line_end < 0 else line_end
    if char == '"':
        span = ast.Span(err.line, err.column, err.line, err.column + (line_end - pos), pos, line_end)
        return Diagnostic(
            "GRC104",
            "error",
            'unterminated string: no closing `"` on this line',
            path,
            span,
            hint='close the string with `"` (strings are one line)',
        )
    if not char.isprintable() or char.isspace():
        shown = f"U+{ord(char):04X}"
    else:
        shown = f'"{char}"' if char == "'" else f"'{char}'"
    span = ast.Span(err.line, err.column, err.line, err.column + 1, pos, pos + 1)
    expected = expected_words(accepts) if accepts is not None else None
    return Diagnostic(
        "GRC101",
        "error",
        f"unexpected character {shown}",
        path,
        span,
        expected=expected or None,
        hint=_CHAR_HINTS.get(char),
    )


def _unexpected_end(err: UnexpectedToken, text: str, path: str, value_stack: list, at_start: bool) -> Diagnostic:
    """The file ended too early: empty (GRC111), an open block (GRC107), or mid-declaration (GRC103)."""
    accepts = set(err.accepts or err.expected)
    expected = expected_words(accepts)
    span = _end_of_tokens_span(err.token, text)
    if at_start:
        what = "empty file" if not text.strip() else "the file holds only comments"
        return Diagnostic(
            "GRC111",
            "error",
            f"{what}: a .grc file starts with `task NAME` or `objective NAME`",
            path,
            span,
            expected="`task` or `objective`",
        )
    block = _open_block(value_stack) if "RBRACE" in accepts else None
    if block is not None:
        what, brace = block
        return Diagnostic(
            "GRC107",
            "error",
            f"{what} opened at line {brace.line} is not closed: the file ends before its `}}`",
            path,
            span,
            expected=expected,
            hint=f"add `}}` to close {what}",
        )
    return Diagnostic("GRC103", "error", "unexpected end of file", path, span, expected=expected)


def _unexpected_token(err: UnexpectedToken, text: str, path: str, value_stack: list, at_start: bool) -> Diagnostic:
    """A token the grammar does not allow here: the first rule that recognises the mistake
    names it (GRC111, GRC107, GRC113, GRC102, GRC108), else a plain GRC102 with a hint."""
    tok = err.token
    span = _token_span(tok)
    if at_start:
        hint = None
        if tok.type == "NAME":
            close = near_name(str(tok), ("task", "objective"))
            hint = f"did you mean `{close}`?" if close else None
        return Diagnostic(
            "GRC111",
            "error",
            f"a .grc file starts with `task NAME` or `objective NAME`, not {_token_words(tok)}",
            path,
            span,
            expected="`task` or `objective`",
            hint=hint,
        )
    accepts = set(err.accepts or err.expected)
    expected = expected_words(accepts)
    known = _recognised_token_mistake(tok, text, path, span, value_stack, accepts, expected)
    if known is not None:
        return known
    return Diagnostic(
        "GRC102",
        "error",
        f"unexpected {_token_words(tok)}",
        path,
        span,
        expected=expected,
        hint=_unexpected_token_hint(tok, text, accepts),
    )


def _recognised_token_mistake(
    tok: Token, text: str, path: str, span: ast.Span, value_stack: list, accepts: set[str], expected: str
) -> Diagnostic | None:
    """An unclosed block, a chained comparison, an incomplete declaration or a keyword used as
    a name; None when the token is none of these."""
    if "RBRACE" in accepts and tok.type in _DECL_KEYWORDS:
        block = _open_block(value_stack)
        if block is not None:
            what, brace = block
            return Diagnostic(
                "GRC107",
                "error",
                f"{what} opened at line {brace.line} is not closed before `{tok}`",
                path,
                span,
                expected=expected,
                hint=f"add `}}` to close {what} before line {tok.line}",
            )

    if str(tok) in _COMPARISON_TEXT and len(value_stack) >= 2:
        before = value_stack[-2]
        if isinstance(before, Token) and str(before) in _COMPARISON_TEXT:
            return Diagnostic(
                "GRC113",
                "error",
                "comparisons do not chain",
                path,
                span,
                expected=expected,
                hint="write `a < b and b < c` instead of `a < b < c`",
            )

    starts_declaration = tok.type in _DECL_KEYWORDS | {"SUBGOAL", "PATH"} and re.match(
        r"\s*[A-Za-z_]", text[tok.end_pos :]
    )
    if starts_declaration and "NAME" in accepts:
        return Diagnostic(
            "GRC102",
            "error",
            f"unexpected {_token_words(tok)}",
            path,
            span,
            expected=expected,
            hint="the declaration before it is incomplete",
        )
    if str(tok) in keywords() and "NAME" in accepts:
        return Diagnostic(
            "GRC108",
            "error",
            f"`{tok}` is a reserved keyword and cannot be used as a name",
            path,
            span,
            expected=expected,
            hint=f"choose another name, e.g. '{tok}_'",
        )
    return None


def _unexpected_token_hint(tok: Token, text: str, accepts: set[str]) -> str | None:
    """A stray `}`, a misspelt keyword, `=` for `==`, or a declaration in the wrong kind of file."""
    hint = _MISPLACED_HINTS.get((_is_objective(text), tok.type))
    if tok.type == "RBRACE":
        hint = "this `}` closes no open block"
    elif tok.type == "NAME":
        words = [
            _terminal_patterns()[t]
            for t in accepts
            if t in _terminal_patterns() and _terminal_patterns()[t].isidentifier()
        ]
        close = near_name(str(tok), words)
        if close:
            hint = f"did you mean `{close}`?"
    elif str(tok) == "=" and any(_terminal_patterns().get(t) == "==" for t in accepts):
        hint = "to compare, write `==`"
    return hint


_SYNC_TASK = re.compile(r"\b(?:param|keypoints|signals|let|unreached|stage)\b")
_SYNC_OBJECTIVE = re.compile(r"\b(?:import|tag|param|unreached)\b")
_SYNC_STAGE = re.compile(r"\b(?:subgoal|path|param|keypoints|signals|let|unreached|stage)\b")
_SKIP = re.compile(r'#[^\n]*|"(?:\\[^\n]|[^"\\\n])*"')


def _resume_point(text: str, after: int, pattern: re.Pattern[str]) -> re.Match[str] | None:
    """The next synchronising keyword at or after `after`, outside comments and strings, and
    not a tag name (`tag path` is not the start of a constraint)."""
    pos = after
    while True:
        match = pattern.search(text, pos)
        if match is None:
            return None
        skipped = _SKIP.search(text, pos, match.start() + 1)
        if skipped is not None and skipped.start() <= match.start():
            pos = skipped.end()
            continue
        before = text[max(0, match.start() - 16) : match.start()].split()
        if before and before[-1] in ("tag", "over") or match.start() > 0 and text[match.start() - 1] == ".":
            pos = match.end()
            continue
        return match


def _error_position(err: UnexpectedInput, diagnostic: Diagnostic) -> int:
    """Where to look for a resume point: the bad token itself may start the next declaration,
    unless it was a keyword standing where a name belongs."""
    if isinstance(err, UnexpectedToken):
        if err.token.type == "$END":
            return -1
        return err.token.end_pos if diagnostic.code == "GRC108" else err.token.start_pos
    return err.pos_in_stream + 1


def _syntax_errors(text: str, path: str, first: UnexpectedInput) -> list[Diagnostic]:
    """The first error, then further errors found by resuming at synchronising keywords.

    Resuming blanks out everything before the resume point (keeping newlines, so positions
    stay right) and parses the rest as a list of declarations, or as the rest of a stage.
    """
    is_objective = _is_objective(text)
    diagnostics = [_describe(first, text, path)]
    err: UnexpectedInput | None = first
    err_diagnostic = diagnostics[0]
    start = "start"
    last_resume = -1
    while err is not None and len(diagnostics) < MAX_SYNTAX_ERRORS:
        if diagnostics[0].code == "GRC111":
            break
        after = max(_error_position(err, err_diagnostic), last_resume + 1)
        if after <= 0:
            break
        parser = getattr(err, "interactive_parser", None)
        stack = list(parser.parser_state.value_stack) if parser is not None else []
        block = _open_block(stack)
        in_stage = block is not None and block[0].startswith("stage")
        if start == "stage_rest":  # resumed inside a stage whose `{` was blanked out
            in_stage = in_stage or not any(isinstance(v, Token) and v.type == "RBRACE" for v in stack)
        pattern = _SYNC_STAGE if in_stage else _SYNC_OBJECTIVE if is_objective else _SYNC_TASK
        match = _resume_point(text, after, pattern)
        if match is None:
            break
        last_resume = match.start()
        word = match.group(0)
        if word in ("subgoal", "path"):
            start = "stage_rest"
        else:
            start = "objective_rest" if is_objective else "task_rest"
        blanked = re.sub(r"[^\n]", " ", text[: match.start()]) + text[match.start() :]
        try:
            _lark().parse(blanked, start=start)
            err = None
        except UnexpectedInput as again:
            err = again
            err_diagnostic = _describe(again, text, path, resumed=True)
            if all(d.span != err_diagnostic.span for d in diagnostics):
                diagnostics.append(err_diagnostic)
    return diagnostics
