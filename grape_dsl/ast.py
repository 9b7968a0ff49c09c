"""The .grc syntax tree: small frozen dataclasses, each with the source span it came from.

Spans and comments are excluded from equality, so `parse(fmt(x)) == parse(x)` compares
meaning, not layout. Declarations keep their source order (`decls`), which the formatter
preserves; the typed views (`params`, `stages`, ...) are derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line and column, 0-based character offsets."""

    line: int
    column: int
    end_line: int
    end_column: int
    start_pos: int
    end_pos: int


NO_SPAN = Span(0, 0, 0, 0, 0, 0)


def _span() -> Span:
    return field(default=NO_SPAN, compare=False, repr=False)


# ---------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    """A reference to a keypoint, signal, param or let, or the step index `t`."""

    ident: str
    span: Span = _span()


@dataclass(frozen=True)
class Component:
    """`expr.x`, `expr.y` or `expr.z` on a vector."""

    base: Expr
    axis: Literal["x", "y", "z"]
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Not:
    operand: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Binary:
    """Arithmetic: `+ - * /`."""

    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class Compare:
    op: Literal["<=", "<", ">=", ">", "==", "!="]
    left: Expr
    right: Expr
    span: Span = _span()


@dataclass(frozen=True)
class BoolOp:
    """`a and b`, `a or b` (left-associative chains are nested pairs)."""

    op: Literal["and", "or"]
    left: Expr
    right: Expr
    span: Span = _span()


Expr = Union[Number, Bool, Name, Component, Call, Neg, Not, Binary, Compare, BoolOp]


# ---------------------------------------------------------------------------- task files


@dataclass(frozen=True)
class Source:
    """A name the environment reports, such as `gripper.tip` or `contact.obstacle`."""

    path: tuple[str, ...]
    span: Span = _span()

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class ParamDecl:
    """`param name = value`; overridable by objective files and `--set name=value`."""

    name: str
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class KeypointDecl:
    """`name = source [+|- offset]` inside `keypoints { ... }`."""

    name: str
    source: Source
    offset_op: Literal["+", "-"] | None = None
    offset: Expr | None = None
    span: Span = _span()


@dataclass(frozen=True)
class KeypointsBlock:
    keypoints: tuple[KeypointDecl, ...]
    span: Span = _span()


@dataclass(frozen=True)
class SignalDecl:
    """`name = source` inside `signals { ... }`."""

    name: str
    source: Source
    span: Span = _span()


@dataclass(frozen=True)
class SignalsBlock:
    signals: tuple[SignalDecl, ...]
    span: Span = _span()


@dataclass(frozen=True)
class LetDecl:
    """`let name = expr`: a named per-step quantity usable in every stage."""

    name: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True)
class UnreachedDecl:
    """`unreached value`: the fixed penalty added for each stage a trajectory never reaches."""

    value: float
    span: Span = _span()


@dataclass(frozen=True)
class Constraint:
    """`subgoal|path name: expr [tol e] [weight e] [over sum|mean|max] [tag name]`.

    tol (tau) and weight (beta) are constant expressions (numbers and params); None means
    the documented default (tol 0, weight 1, over mean, tag `task`).
    """

    kind: Literal["subgoal", "path"]
    name: str
    expr: Expr
    tol: Expr | None = None
    weight: Expr | None = None
    over: Literal["sum", "mean", "max"] | None = None
    tag: str | None = None
    span: Span = _span()


@dataclass(frozen=True)
class Stage:
    """`stage name [until expr] { constraint* }`; the last stage has no `until`."""

    name: str
    until: Expr | None
    constraints: tuple[Constraint, ...]
    span: Span = _span()


TaskDecl = Union[ParamDecl, KeypointsBlock, SignalsBlock, LetDecl, UnreachedDecl, Stage]


@dataclass(frozen=True)
class Comment:
    """`# text` to the end of a line (text excludes the `#`).

    `trailing` is true when code precedes the comment on its line; the formatter keeps such
    comments at the end of the line they annotate.
    """

    text: str
    span: Span = _span()
    trailing: bool = field(default=False, compare=False, repr=False)


@dataclass(frozen=True)
class TaskFile:
    """`task name ["instruction template"]` followed by declarations."""

    name: str
    instruction: str | None
    decls: tuple[TaskDecl, ...]
    span: Span = _span()
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
    path: str = field(default="<string>", compare=False, repr=False)

    def _of(self, kind: type) -> tuple:
        return tuple(d for d in self.decls if isinstance(d, kind))

    @property
    def params(self) -> tuple[ParamDecl, ...]:
        return self._of(ParamDecl)

    @property
    def keypoints(self) -> tuple[KeypointDecl, ...]:
        return tuple(k for block in self._of(KeypointsBlock) for k in block.keypoints)

    @property
    def signals(self) -> tuple[SignalDecl, ...]:
        return tuple(s for block in self._of(SignalsBlock) for s in block.signals)

    @property
    def lets(self) -> tuple[LetDecl, ...]:
        return self._of(LetDecl)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._of(Stage)

    @property
    def unreached(self) -> UnreachedDecl | None:
        found = self._of(UnreachedDecl)
        return found[-1] if found else None


# ---------------------------------------------------------------------------- objective files


@dataclass(frozen=True)
class ImportDecl:
    """`import "other.grc"`, resolved relative to the importing file."""

    target: str
    span: Span = _span()


@dataclass(frozen=True)
class TagOverride:
    """`tag name { [tol e] [weight e] }`: retarget every constraint with this tag."""

    tag: str
    tol: float | None = None
    weight: float | None = None
    span: Span = _span()


ObjectiveDecl = Union[ImportDecl, TagOverride, ParamDecl, UnreachedDecl]


@dataclass(frozen=True)
class ObjectiveFile:
    """`objective name ["description"]` followed by imports and overrides."""

    name: str
    description: str | None
    decls: tuple[ObjectiveDecl, ...]
    span: Span = _span()
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
    path: str = field(default="<string>", compare=False, repr=False)

    @property
    def imports(self) -> tuple[ImportDecl, ...]:
        return tuple(d for d in self.decls if isinstance(d, ImportDecl))

    @property
    def overrides(self) -> tuple[TagOverride, ...]:
        return tuple(d for d in self.decls if isinstance(d, TagOverride))

    @property
    def params(self) -> tuple[ParamDecl, ...]:
        return tuple(d for d in self.decls if isinstance(d, ParamDecl))

    @property
    def unreached(self) -> UnreachedDecl | None:
        found = [d for d in self.decls if isinstance(d, UnreachedDecl)]
        return found[-1] if found else None


Module = Union[TaskFile, ObjectiveFile]
