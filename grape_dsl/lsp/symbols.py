"""A layout-level index of one .grc text: tokens, declarations, references, tags, imports.

Editors ask about files that do not parse most of the time (the user is typing), so this
index never needs the parser to succeed: it lexes with the grammar's lexical rules and
follows the declaration forms (`let x =`, `param x =`, bindings inside `keypoints { }` and
`signals { }`, `stage x`, `subgoal|path x:`, `tag x`) with a brace stack. Meaning (types,
errors) stays with the checker; this only says where names are declared and used.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from grape_dsl.builtins import BUILTINS
from grape_dsl.checker import KEYWORDS

_TOKEN = re.compile(
    r"(?P<ws>[ \t\f\r\n]+)"
    r"|(?P<comment>#[^\n]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<string>\"(?:\\[^\n]|[^\"\\\n])*(?:\"|(?=\n)|\Z))"  # an unclosed string ends at the line's end
    r"|(?P<op><=|>=|==|!=|[<>+\-*/(){},;:=.])"
    r"|(?P<other>.)",
    re.S,
)

# Words that begin a declaration at the top level of a task or objective file.
TASK_ITEM_WORDS = ("param", "keypoints", "signals", "let", "stage", "unreached")
OBJECTIVE_ITEM_WORDS = ("import", "tag", "param", "unreached")
_ITEM_START = frozenset(TASK_ITEM_WORDS) | frozenset(OBJECTIVE_ITEM_WORDS)


@dataclass(frozen=True)
class Token:
    kind: str  # name, number, string, op, other
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Decl:
    """A declared name. kind: param, let, keypoint, signal, stage, constraint, tag_override,
    import; `detail` is the source (bindings), the value text (param, let) or the target."""

    kind: str
    name: str
    start: int  # the name's own characters
    end: int
    full_start: int  # the whole declaration
    full_end: int
    detail: str = ""
    parent: str | None = None  # a constraint's stage


@dataclass(frozen=True)
class Occurrence:
    name: str
    start: int
    end: int


@dataclass
class Index:
    text: str
    tokens: list[Token]
    file_kind: str | None = None  # "task" | "objective"
    file_name: str | None = None
    decls: list[Decl] = field(default_factory=list)
    refs: list[Occurrence] = field(default_factory=list)  # names used in expressions
    sources: list[tuple[str, str, int, int]] = field(default_factory=list)  # (block, dotted, start, end)
    tags: list[Occurrence] = field(default_factory=list)  # `tag x` on constraints and overrides
    calls: list[Occurrence] = field(default_factory=list)  # function names before `(`

    def declared(self, *kinds: str) -> list[Decl]:
        return [d for d in self.decls if not kinds or d.kind in kinds]

    def binding(self, name: str) -> Decl | None:
        """The first keypoint, signal, param or let called `name` (they share one namespace)."""
        for decl in self.decls:
            if decl.name == name and decl.kind in ("keypoint", "signal", "param", "let"):
                return decl
        return None

    def token_at(self, offset: int) -> Token | None:
        """The token covering `offset`, preferring a name ending exactly there (a cursor
        just after a word is on that word)."""
        best = None
        for tok in self.tokens:
            if tok.start <= offset <= tok.end:
                if tok.kind == "name" or best is None:
                    best = tok
            elif tok.start > offset:
                break
        return best

    def occurrences(self, name: str) -> list[Occurrence]:
        """Every place `name` appears as a binding: its declarations and its uses."""
        found = [
            Occurrence(d.name, d.start, d.end)
            for d in self.decls
            if d.name == name and d.kind in ("keypoint", "signal", "param", "let")
        ]
        found += [r for r in self.refs if r.name == name]
        return sorted(found, key=lambda o: o.start)


def tokenize(text: str) -> list[Token]:
    """Every token but whitespace and comments."""
    tokens = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind in ("ws", "comment"):
            continue
        tokens.append(Token(kind, match.group(), match.start(), match.end()))
    return tokens


def build_index(text: str) -> Index:
    tokens = tokenize(text)
    index = Index(text, tokens)
    _Walker(index).run()
    return index


class _Walker:
    def __init__(self, index: Index):
        self.index = index
        self.toks = index.tokens
        self.blocks: list[str] = []  # for each open `{`: keypoints, signals, stage, tag, other
        self.item_starts: list[int] = []  # offsets where top-level items begin

    def peek(self, i: int) -> Token | None:
        return self.toks[i] if 0 <= i < len(self.toks) else None

    def is_op(self, i: int, text: str) -> bool:
        tok = self.peek(i)
        return tok is not None and tok.kind == "op" and tok.text == text

    def run(self) -> None:
        toks, index = self.toks, self.index
        if toks and toks[0].text in ("task", "objective"):
            index.file_kind = toks[0].text
            if len(toks) > 1 and toks[1].kind == "name":
                index.file_name = toks[1].text
        pending_lets: list[tuple[int, Token]] = []  # (decl position in index.decls, `=` token)
        current_stage: str | None = None
        stage_decl: int | None = None
        header: str | None = None  # the block word waiting for its `{`
        i = 1 if index.file_kind else 0
        if index.file_kind and self.peek(1) is not None and self.peek(1).kind == "name":
            i = 2
        while i < len(toks):
            tok = toks[i]
            block = self.blocks[-1] if self.blocks else None
            if tok.kind == "op" and tok.text == "{":
                self.blocks.append(header or "other")
                header = None
                i += 1
                continue
            if tok.kind == "op" and tok.text == "}":
                if self.blocks:
                    closed = self.blocks.pop()
                    if closed == "stage" and stage_decl is not None:
                        self._extend(stage_decl, tok.end)
                        current_stage, stage_decl = None, None
                i += 1
                continue
            if tok.kind != "name":
                i += 1
                continue
            word = tok.text
            if block is None and word in _ITEM_START and not self.is_op(i - 1, "."):
                self.item_starts.append(tok.start)
            if block in ("keypoints", "signals"):
                i = self.binding_or_expr(i, block)
                continue
            if word == "tag":
                name = self.peek(i + 1)
                if name is not None and name.kind == "name":
                    index.tags.append(Occurrence(name.text, name.start, name.end))
                    if block is None and self.is_op(i + 2, "{"):
                        index.decls.append(Decl("tag_override", name.text, name.start, name.end, tok.start, name.end))
                        header = "tag"
                    i += 2
                else:
                    i += 1
                continue
            if word in ("let", "param") and block is None:
                name = self.peek(i + 1)
                if name is not None and name.kind == "name" and name.text not in KEYWORDS:
                    index.decls.append(Decl(word, name.text, name.start, name.end, tok.start, name.end))
                    if self.is_op(i + 2, "="):
                        if word == "let":
                            pending_lets.append((len(index.decls) - 1, toks[i + 2]))
                            i += 3
                            continue
                        value = self.peek(i + 3)
                        sign = ""
                        if value is not None and value.text == "-":
                            sign, value = "-", self.peek(i + 4)
                        if value is not None and value.kind == "number":
                            self._set(len(index.decls) - 1, detail=sign + value.text, full_end=value.end)
                    i += 2
                    continue
                i += 1
                continue
            if word in ("keypoints", "signals") and block is None:
                header = word
                i += 1
                continue
            if word == "stage" and block is None:
                name = self.peek(i + 1)
                header = "stage"
                if name is not None and name.kind == "name" and name.text not in KEYWORDS:
                    index.decls.append(Decl("stage", name.text, name.start, name.end, tok.start, name.end))
                    current_stage, stage_decl = name.text, len(index.decls) - 1
                    i += 2
                    continue
                i += 1
                continue
            if word in ("subgoal", "path") and block == "stage":
                name = self.peek(i + 1)
                if name is not None and name.kind == "name" and name.text not in KEYWORDS:
                    index.decls.append(
                        Decl(
                            "constraint",
                            name.text,
                            name.start,
                            name.end,
                            tok.start,
                            name.end,
                            detail=word,
                            parent=current_stage,
                        )
                    )
                    i += 2
                    continue
                i += 1
                continue
            if word == "import" and block is None:
                target = self.peek(i + 1)
                if target is not None and target.kind == "string":
                    inner = target.text[1:-1] if target.text.endswith('"') and len(target.text) > 1 else target.text[1:]
                    index.decls.append(
                        Decl("import", inner, target.start, target.end, tok.start, target.end, detail=inner)
                    )
                    i += 2
                    continue
            self.expression_name(i)
            i += 1
        self._close_lets(pending_lets)
        self._close_constraints()

    def expression_name(self, i: int) -> None:
        tok = self.toks[i]
        if self.is_op(i - 1, "."):
            return  # a component axis
        if self.is_op(i + 1, "("):
            self.index.calls.append(Occurrence(tok.text, tok.start, tok.end))
            return
        if tok.text in KEYWORDS:
            return
        self.index.refs.append(Occurrence(tok.text, tok.start, tok.end))

    def binding_or_expr(self, i: int, block: str) -> int:
        """Inside `keypoints { }` or `signals { }`: `name = a.b.c [+|- offset]`."""
        tok = self.toks[i]
        if self.is_op(i + 1, "=") and not self.is_op(i - 1, "."):
            kind = "keypoint" if block == "keypoints" else "signal"
            j = i + 2
            parts: list[Token] = []
            while True:
                part = self.peek(j)
                if part is None or part.kind != "name":
                    break
                parts.append(part)
                if (
                    self.is_op(j + 1, ".")
                    and self.peek(j + 2) is not None
                    and self.peek(j + 2).kind == "name"
                    and not self.is_op(j + 3, "=")
                ):
                    j += 2
                    continue
                j += 1
                break
            dotted = ".".join(p.text for p in parts)
            end = parts[-1].end if parts else self.toks[i + 1].end
            self.index.decls.append(Decl(kind, tok.text, tok.start, tok.end, tok.start, end, detail=dotted))
            if parts:
                self.index.sources.append((block, dotted, parts[0].start, parts[-1].end))
            return j
        self.expression_name(i)
        return i + 1

    def _set(self, position: int, **changes) -> None:
        decl = self.index.decls[position]
        self.index.decls[position] = Decl(**{**decl.__dict__, **changes})

    def _extend(self, position: int, end: int) -> None:
        self._set(position, full_end=end)

    def _tokens_between(self, start: int, limit: int) -> list[Token]:
        """Tokens lying wholly within [start, limit)."""
        first = bisect_left(self.starts, start)
        last = bisect_left(self.starts, limit)
        return [t for t in self.toks[first:last] if t.end <= limit]

    def _close_lets(self, pending: list[tuple[int, Token]]) -> None:
        """A let's value runs from its `=` to the next top-level item (or the end)."""
        self.starts = [t.start for t in self.toks]
        for position, equals in pending:
            following = bisect_right(self.item_starts, equals.end)
            limit = self.item_starts[following] if following < len(self.item_starts) else len(self.index.text)
            inside = self._tokens_between(equals.end, limit)
            if inside:
                value = self.index.text[inside[0].start : inside[-1].end]
                self._set(position, detail=" ".join(value.split()), full_end=inside[-1].end)

    def _close_constraints(self) -> None:
        """A constraint runs to the next constraint of its stage or the stage's end."""
        decls = self.index.decls
        self.starts = [t.start for t in self.toks]
        next_start = [len(self.index.text)] * len(decls)  # full_start of the next constraint or stage
        upcoming = len(self.index.text)
        for n in range(len(decls) - 1, -1, -1):
            next_start[n] = upcoming
            if decls[n].kind in ("constraint", "stage"):
                upcoming = decls[n].full_start
        stage: Decl | None = None
        for n, decl in enumerate(decls):
            if decl.kind == "stage":
                stage = decl
            if decl.kind != "constraint":
                continue
            end = next_start[n]
            if stage is not None and stage.name == decl.parent and stage.full_end > decl.start:
                end = min(end, stage.full_end)
            inside = [t for t in self._tokens_between(decl.end, end) if t.text != "}"]
            self._set(n, full_end=inside[-1].end if inside else decl.end)


def is_builtin(name: str) -> bool:
    return name in BUILTINS
