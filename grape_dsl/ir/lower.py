"""Lowering: a checked task (concrete AST) -> a small typed IR.

The IR is what every later pass reads (sympy, codegen, oracle comparisons): names are resolved
(keypoints and signals to input slots, params to constants), every node carries its type, and
constraint attributes are plain floats. Lets are inlined but stay visible as `LetRef` nodes,
because a bool let is scored 0/1 rather than graded (docs/language.md, "Violation"). A let is
one node however often it is used, so the IR is a DAG: passes over it walk nodes by identity
and iteratively (`_postorder`), never as a tree or by Python recursion through lets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

from grape_dsl import ast
from grape_dsl.builtins import BOOL, SCALAR, STEP_INDEX_NAME, VEC3, Type, resolve_call
from grape_dsl.diagnostics import Diagnostic, GrcError
from grape_dsl.fmt import format_constraint, format_expr

# ---------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Const:
    value: float
    type: Type = SCALAR


@dataclass(frozen=True)
class BoolConst:
    value: bool
    type: Type = BOOL


@dataclass(frozen=True)
class StepIndex:
    """`t`, the 0-based step index."""

    type: Type = SCALAR


@dataclass(frozen=True)
class KeypointInput:
    """The raw keypoint the environment reports as `source`; `slot` indexes Program.keypoint_sources."""

    slot: int
    source: str
    type: Type = VEC3


@dataclass(frozen=True)
class SignalInput:
    """The raw signal `source`; `slot` indexes Program.signal_sources."""

    slot: int
    source: str
    type: Type = SCALAR


@dataclass(frozen=True)
class LetRef:
    """A use of `let name`; `value` is the let's lowered expression."""

    name: str
    value: Expr
    type: Type


@dataclass(frozen=True)
class Component:
    base: Expr
    axis: int  # 0, 1, 2 for .x .y .z
    type: Type = SCALAR


@dataclass(frozen=True)
class Arith:
    """`+ - * /` on scalars and vectors (the checker has validated the operand types)."""

    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr
    type: Type


@dataclass(frozen=True)
class Neg:
    operand: Expr
    type: Type


@dataclass(frozen=True)
class Call:
    """A builtin other than `delta` (see grape_dsl/builtins.py)."""

    func: str
    args: tuple[Expr, ...]
    type: Type


@dataclass(frozen=True)
class Delta:
    """x(t) - x(t-1), zero at t = 0."""

    operand: Expr
    type: Type


@dataclass(frozen=True)
class Compare:
    op: Literal["<=", "<", ">=", ">", "==", "!="]
    left: Expr
    right: Expr
    type: Type = BOOL


@dataclass(frozen=True)
class Logic:
    op: Literal["and", "or"]
    left: Expr
    right: Expr
    type: Type = BOOL


@dataclass(frozen=True)
class Not:
    operand: Expr
    type: Type = BOOL


Expr = Union[
    Const,
    BoolConst,
    StepIndex,
    KeypointInput,
    SignalInput,
    LetRef,
    Component,
    Arith,
    Neg,
    Call,
    Delta,
    Compare,
    Logic,
    Not,
]

# ---------------------------------------------------------------------------- program


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: Literal["subgoal", "path"]
    expr: Expr
    tol: float
    weight: float
    over: Literal["sum", "mean", "max"] | None  # None for subgoals
    tag: str
    text: str  # the constraint in canonical .grc form (grape_dsl.fmt), for comments
    span: ast.Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Stage:
    name: str
    until: Expr | None
    until_text: str | None
    constraints: tuple[Constraint, ...]
    span: ast.Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Program:
    task_name: str
    path: str
    source_hash: str
    keypoint_sources: tuple[str, ...]  # raw environment names, in order of first declaration
    signal_sources: tuple[str, ...]
    params: tuple[tuple[str, float], ...]
    stages: tuple[Stage, ...]
    unreached: float

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    @property
    def constraint_names(self) -> tuple[str, ...]:
        return tuple(f"{s.name}.{c.name}" for s in self.stages for c in s.constraints)

    @property
    def constraint_tags(self) -> tuple[str, ...]:
        return tuple(c.tag for s in self.stages for c in s.constraints)


DEFAULT_UNREACHED = 1.0
DEFAULT_OVER = "mean"
DEFAULT_TAG = "task"

# Compile budgets, checked here before any later pass sees the program (GRC402 at the first
# stage or constraint over the limit). The stock tasks have 3-5 stages and under 20 constraints;
# each stage adds a loop to the kernel, and numba's compile time grows with the kernel's length.
MAX_STAGES = 32
MAX_CONSTRAINTS = 128
BUDGET_CODE = "GRC402"

# ---------------------------------------------------------------------------- lowering


class _Lowerer:
    def __init__(self, task: ast.TaskFile):
        self.task = task
        self.params = {p.name: float(p.value) for p in task.params}
        self.keypoint_decls = {k.name: k for k in task.keypoints}
        self.signal_decls = {s.name: s for s in task.signals}
        self.let_decls = {let.name: let for let in task.lets}
        self.keypoint_sources: list[str] = []
        self.signal_sources: list[str] = []
        self.let_cache: dict[str, LetRef] = {}
        self.keypoint_cache: dict[str, Expr] = {}
        self.lowering_lets: list[str] = []
        # Inputs get slots in declaration order, used or not, so a program's slots do not
        # depend on which stage happens to mention a name first.
        for k in task.keypoints:
            if k.source.dotted not in self.keypoint_sources:
                self.keypoint_sources.append(k.source.dotted)
        for s in task.signals:
            if s.source.dotted not in self.signal_sources:
                self.signal_sources.append(s.source.dotted)

    def lower_lets(self) -> None:
        """Lower every let before anything uses it, dependencies first, so that lowering an
        expression never recurses into a chain of lets (only into one let's own syntax, whose
        depth the parser bounds)."""
        from grape_dsl.checker import names_in

        deps = {let.name: [n.ident for n in names_in(let.value) if n.ident in self.let_decls] for let in self.task.lets}
        entered: set[str] = set()
        for root in deps:
            stack = [(root, False)]
            while stack:
                name, ready = stack.pop()
                if name in self.let_cache:
                    continue
                if ready:
                    self.let(name, self.let_decls[name].span)
                    continue
                if name in entered:
                    continue  # a cycle (the checker reports it): self.let names it if lowered
                entered.add(name)
                stack.append((name, True))
                stack.extend((d, False) for d in deps[name] if d not in self.let_cache)

    def fail(self, message: str, span: ast.Span | None) -> GrcError:
        return GrcError([Diagnostic("GRC401", "error", message, self.task.path, span)])

    def name(self, node: ast.Name) -> Expr:
        ident = node.ident
        if ident == STEP_INDEX_NAME:
            return StepIndex()
        if ident in self.params:
            return Const(self.params[ident])
        if ident in self.signal_decls:
            src = self.signal_decls[ident].source.dotted
            return SignalInput(self.signal_sources.index(src), src)
        if ident in self.keypoint_decls:
            return self.keypoint(ident)
        if ident in self.let_decls:
            return self.let(ident, node.span)
        raise self.fail(f"unknown name '{ident}' (the checker should have reported it)", node.span)

    def keypoint(self, ident: str) -> Expr:
        if ident not in self.keypoint_cache:
            decl = self.keypoint_decls[ident]
            src = decl.source.dotted
            base: Expr = KeypointInput(self.keypoint_sources.index(src), src)
            if decl.offset is not None:
                offset = self.expr(decl.offset)
                if offset.type != VEC3:
                    raise self.fail(f"keypoint '{ident}': offset must be a vec3", decl.span)
                base = Arith(decl.offset_op or "+", base, offset, VEC3)
            self.keypoint_cache[ident] = base
        return self.keypoint_cache[ident]

    def let(self, ident: str, span: ast.Span) -> LetRef:
        if ident not in self.let_cache:
            if ident in self.lowering_lets:
                chain = " -> ".join([*self.lowering_lets, ident])
                raise self.fail(f"let cycle: {chain}", span)
            self.lowering_lets.append(ident)
            value = self.expr(self.let_decls[ident].value)
            self.lowering_lets.pop()
            self.let_cache[ident] = LetRef(ident, value, value.type)
        return self.let_cache[ident]

    def expr(self, e: ast.Expr) -> Expr:
        if isinstance(e, ast.Number):
            return Const(float(e.value))
        if isinstance(e, ast.Bool):
            return BoolConst(bool(e.value))
        if isinstance(e, ast.Name):
            return self.name(e)
        if isinstance(e, ast.Component):
            base = self.expr(e.base)
            self.expect(base, VEC3, e)
            return Component(base, "xyz".index(e.axis))
        if isinstance(e, ast.Neg):
            operand = self.expr(e.operand)
            if operand.type == BOOL:
                raise self.fail("unary '-' needs a scalar or vec3", e.span)
            return Neg(operand, operand.type)
        if isinstance(e, ast.Not):
            operand = self.expr(e.operand)
            self.expect(operand, BOOL, e)
            return Not(operand)
        if isinstance(e, ast.Binary):
            return self.binary(e)
        if isinstance(e, ast.Compare):
            left, right = self.expr(e.left), self.expr(e.right)
            self.expect(left, SCALAR, e)
            self.expect(right, SCALAR, e)
            return Compare(e.op, left, right)
        if isinstance(e, ast.BoolOp):
            left, right = self.expr(e.left), self.expr(e.right)
            self.expect(left, BOOL, e)
            self.expect(right, BOOL, e)
            return Logic(e.op, left, right)
        if isinstance(e, ast.Call):
            args = tuple(self.expr(a) for a in e.args)
            sig = resolve_call(e.func, tuple(a.type for a in args))
            if sig is None:
                raise self.fail(f"no overload of {e.func} takes these arguments", e.span)
            if e.func == "delta":
                return Delta(args[0], sig.returns)
            return Call(e.func, args, sig.returns)
        raise self.fail(f"cannot lower {type(e).__name__}", getattr(e, "span", None))

    def binary(self, e: ast.Binary) -> Expr:
        left, right = self.expr(e.left), self.expr(e.right)
        types = (left.type, right.type)
        if e.op in "+-" and types in ((SCALAR, SCALAR), (VEC3, VEC3)):
            return Arith(e.op, left, right, left.type)
        if e.op == "*" and types in ((SCALAR, SCALAR), (SCALAR, VEC3), (VEC3, SCALAR)):
            return Arith("*", left, right, VEC3 if VEC3 in types else SCALAR)
        if e.op == "/" and types in ((SCALAR, SCALAR), (VEC3, SCALAR)):
            return Arith("/", left, right, left.type)
        raise self.fail(f"'{e.op}' does not take {types[0]} and {types[1]}", e.span)

    def expect(self, node: Expr, wanted: Type, where: Any) -> None:
        if node.type != wanted:
            raise self.fail(f"expected a {wanted}, found a {node.type}", getattr(where, "span", None))

    def constant(self, e: ast.Expr | None, default: float, what: str) -> float:
        if e is None:
            return default
        value = self.expr(e)
        if not isinstance(value, Const):
            raise self.fail(f"{what} must be a constant number", getattr(e, "span", None))
        return value.value

    def constraint(self, c: ast.Constraint) -> Constraint:
        expr = self.expr(c.expr)
        self.expect(expr, BOOL, c.expr)
        over = (c.over or DEFAULT_OVER) if c.kind == "path" else None
        return Constraint(
            name=c.name,
            kind=c.kind,
            expr=expr,
            tol=self.constant(c.tol, 0.0, "tol"),
            weight=self.constant(c.weight, 1.0, "weight"),
            over=over,
            tag=c.tag or DEFAULT_TAG,
            text=format_constraint(c),
            span=c.span,
        )

    def stage(self, s: ast.Stage) -> Stage:
        until = None
        if s.until is not None:
            until = self.expr(s.until)
            self.expect(until, BOOL, s.until)
        return Stage(
            name=s.name,
            until=until,
            until_text=format_expr(s.until) if s.until is not None else None,
            constraints=tuple(self.constraint(c) for c in s.constraints),
            span=s.span,
        )


def lower_task(task: ast.TaskFile, source_hash: str = "") -> Program:
    """Lower a concrete, checked task file to a Program."""
    _check_counts(task)
    lowerer = _Lowerer(task)
    lowerer.lower_lets()
    stages = tuple(lowerer.stage(s) for s in task.stages)
    if not stages:
        raise lowerer.fail(f"task '{task.name}' declares no stage", task.span)
    unreached = task.unreached.value if task.unreached is not None else DEFAULT_UNREACHED
    return Program(
        task_name=task.name,
        path=task.path,
        source_hash=source_hash,
        keypoint_sources=tuple(lowerer.keypoint_sources),
        signal_sources=tuple(lowerer.signal_sources),
        params=tuple(sorted(lowerer.params.items())),
        stages=stages,
        unreached=float(unreached),
    )


def _check_counts(task: ast.TaskFile) -> None:
    def too_many(what: str, limit: int, span: ast.Span) -> GrcError:
        return GrcError(
            [
                Diagnostic(
                    BUDGET_CODE,
                    "error",
                    f"too many {what}: the limit is {limit:,} per task",
                    task.path,
                    span,
                    hint="split the task, or merge constraints that say the same thing",
                )
            ]
        )

    if len(task.stages) > MAX_STAGES:
        raise too_many("stages", MAX_STAGES, task.stages[MAX_STAGES].span)
    constraints = [c for s in task.stages for c in s.constraints]
    if len(constraints) > MAX_CONSTRAINTS:
        raise too_many("constraints", MAX_CONSTRAINTS, constraints[MAX_CONSTRAINTS].span)


def lower(checked: Any) -> Program:
    """Lower a `CheckedTask` (grape_dsl.api.load_task) to a Program."""
    return lower_task(checked.task, getattr(checked, "source_hash", ""))


_CHILD_FIELDS = ("value", "base", "operand", "left", "right")


def _children(node: Any) -> list[Any]:
    if isinstance(node, Call):
        return list(node.args)
    if isinstance(node, LetRef):
        return [node.value]
    return [getattr(node, f) for f in _CHILD_FIELDS[1:] if hasattr(node, f)]


def _roots(program: Program) -> list[Any]:
    return [e for s in program.stages for e in (s.until, *(c.expr for c in s.constraints)) if e is not None]


def _postorder(roots: list[Any]) -> list[Any]:
    """Every node reachable from `roots`, each once (by identity), children first; iterative."""
    seen: set[int] = set()
    order: list[Any] = []
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if ready:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(_children(node)) if id(c) not in seen)
    return order


def fingerprint(program: Program) -> str:
    """The program's content as text, each shared node (a let used many times) written once:
    linear in the program's size, unlike repr(), which writes a chain of lets as a tree."""
    number: dict[int, int] = {}
    lines = [
        f"task {program.task_name!r} unreached {program.unreached!r}",
        f"keypoints {program.keypoint_sources!r} signals {program.signal_sources!r}",
        f"params {program.params!r}",
    ]
    for node in _postorder(_roots(program)):
        number[id(node)] = len(number)
        skip = {"args", *(f for f in _CHILD_FIELDS if f != "value" or isinstance(node, LetRef))}
        fields = {k: v for k, v in vars(node).items() if k not in skip}
        kids = " ".join(f"#{number[id(c)]}" for c in _children(node))
        lines.append(f"#{number[id(node)]} {type(node).__name__} {fields!r} {kids}")
    for stage in program.stages:
        until = f"#{number[id(stage.until)]}" if stage.until is not None else "-"
        lines.append(f"stage {stage.name!r} until {until}")
        for c in stage.constraints:
            lines.append(
                f"  {c.kind} {c.name!r} #{number[id(c.expr)]} tol {c.tol!r} weight {c.weight!r} "
                f"over {c.over!r} tag {c.tag!r}"
            )
    return "\n".join(lines)


def dump(node: Any, indent: int = 0) -> str:
    """A readable tree listing of an IR node or Program (for `grapec compile --emit ir`).

    A let is listed once, under `lets`, and shown as `LetRef name` where it is used."""
    if isinstance(node, Program):
        lets = [n for n in _postorder(_roots(node)) if isinstance(n, LetRef)]
        lines = [
            f"program {node.task_name}  (unreached {node.unreached:g})",
            f"  keypoints: {', '.join(f'[{i}] {s}' for i, s in enumerate(node.keypoint_sources))}",
            f"  signals: {', '.join(f'[{i}] {s}' for i, s in enumerate(node.signal_sources))}",
        ]
        if lets:
            lines.append("  lets")
            for let in lets:
                lines.append(f"    let {let.name}: {let.type}\n{_dump_expr(let.value, 3)}")
        for stage in node.stages:
            lines.append(f"  stage {stage.name}")
            if stage.until is not None:
                lines.append(f"    until\n{_dump_expr(stage.until, 3)}")
            for c in stage.constraints:
                over = f" over {c.over}" if c.over else ""
                lines.append(f"    {c.kind} {c.name}{over} tol {c.tol:g} weight {c.weight:g} tag {c.tag}")
                lines.append(_dump_expr(c.expr, 3))
        return "\n".join(lines)
    return _dump_expr(node, indent)


def _dump_expr(root: Any, indent: int) -> str:
    lines: list[str] = []
    stack = [(root, indent)]
    while stack:
        node, level = stack.pop()
        lines.append("  " * level + _head(node))
        if not isinstance(node, LetRef):
            stack.extend((c, level + 1) for c in reversed(_children(node)))
    return "\n".join(lines)


def _head(node: Any) -> str:
    if isinstance(node, (Const, BoolConst)):
        return f"{type(node).__name__} {node.value!r}"
    if isinstance(node, StepIndex):
        return "StepIndex t"
    if isinstance(node, KeypointInput):
        return f"KeypointInput [{node.slot}] {node.source}"
    if isinstance(node, SignalInput):
        return f"SignalInput [{node.slot}] {node.source}"
    if isinstance(node, LetRef):
        return f"LetRef {node.name}: {node.type}"
    return {
        Component: lambda n: f"Component .{'xyz'[n.axis]}",
        Arith: lambda n: f"Arith {n.op}: {n.type}",
        Neg: lambda n: f"Neg: {n.type}",
        Call: lambda n: f"Call {n.func}: {n.type}",
        Delta: lambda n: f"Delta: {n.type}",
        Compare: lambda n: f"Compare {n.op}",
        Logic: lambda n: f"Logic {n.op}",
        Not: lambda n: "Not",
    }[type(node)](node)
