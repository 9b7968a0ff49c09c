"""Semantic checks of a parsed .grc file: names, types, arities, stages, constants.

`check(module)` walks one task or objective file and returns every diagnostic it finds
(GRC2xx errors, GRC9xx warnings; the table is in docs/language.md), plus, for a task file,
the type and kind of every declared name so that later passes never re-infer them.

Unknown types are `None` inside the checker: an expression whose part is already wrong is
not reported again at every enclosing node, so one mistake gives one diagnostic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from grape_dsl import ast
from grape_dsl.builtins import BOOL, BUILTINS, SCALAR, STEP_INDEX_NAME, VEC3, Type, describe, resolve_call
from grape_dsl.diagnostics import Diagnostic
from grape_dsl.util.nearname import did_you_mean

# The grammar's reserved words (tests/grape_dsl/test_checker.py keeps the two lists equal).
KEYWORDS = frozenset(
    "task objective param keypoints signals let stage until subgoal path tol weight over tag "
    "import unreached and or not true false sum mean max".split()
)
# Names the user may not declare: the step index, builtin functions and keywords.
RESERVED_NAMES = frozenset({STEP_INDEX_NAME}) | frozenset(BUILTINS) | KEYWORDS

DEFAULT_TOL = 0.0
DEFAULT_WEIGHT = 1.0
DEFAULT_OVER = "mean"
DEFAULT_TAG = "task"
DEFAULT_UNREACHED = 1.0

# Error codes. Stable: tests, docs and the LLM repair loop refer to them.
UNKNOWN_NAME = "GRC201"
DUPLICATE_NAME = "GRC202"
DUPLICATE_STAGE = "GRC203"
DUPLICATE_CONSTRAINT = "GRC204"
RESERVED_NAME = "GRC205"
UNKNOWN_FUNCTION = "GRC206"
WRONG_ARITY = "GRC207"
WRONG_ARGUMENT_TYPE = "GRC208"
ARITHMETIC_TYPE = "GRC209"
COMPARISON_TYPE = "GRC210"
LOGIC_TYPE = "GRC211"
COMPONENT_TYPE = "GRC212"
UNTIL_NOT_BOOL = "GRC213"
CONSTRAINT_NOT_BOOL = "GRC214"
OVER_ON_SUBGOAL = "GRC215"
NOT_CONSTANT = "GRC216"
NEGATIVE_CONSTANT = "GRC217"
BAD_OFFSET = "GRC218"
LET_CYCLE = "GRC219"
MISSING_UNTIL = "GRC220"
UNTIL_ON_LAST_STAGE = "GRC221"
NO_STAGES = "GRC222"
DUPLICATE_UNREACHED = "GRC223"
NEGATIVE_UNREACHED = "GRC224"
UNKNOWN_KEYPOINT_SOURCE = "GRC225"
UNKNOWN_SIGNAL_SOURCE = "GRC226"
FUNCTION_AS_VALUE = "GRC227"

# Warning codes.
UNUSED_KEYPOINT = "GRC901"
UNUSED_SIGNAL = "GRC902"
UNUSED_PARAM = "GRC903"
UNUSED_LET = "GRC904"
CONSTANT_CONSTRAINT = "GRC905"
EMPTY_STAGE = "GRC906"
CONSTANT_UNTIL = "GRC907"
REPEATED_OVERRIDE = "GRC908"
EMPTY_TAG_OVERRIDE = "GRC909"

Kind = str  # "keypoint" | "signal" | "param" | "let"


@dataclass(frozen=True)
class CheckResult:
    """What `check` found. `types`/`kinds` cover every keypoint, signal, param and let of a
    task file whose type could be inferred (empty for objective files)."""

    module: ast.Module
    diagnostics: tuple[Diagnostic, ...]
    types: dict[str, Type] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors


Schema = tuple[Sequence[str], Sequence[str]]  # (keypoint names, signal names) of an environment


def check(module: ast.Module, *, schema: Schema | None = None, fail_fast: bool = False) -> CheckResult:
    """Check one parsed file. With `schema`, also report keypoint/signal sources the
    environment does not provide. With `fail_fast`, stop at the first error."""
    sink = _Sink(module.path, fail_fast)
    types: dict[str, Type] = {}
    kinds: dict[str, Kind] = {}
    try:
        if isinstance(module, ast.TaskFile):
            checker = _TaskChecker(module, sink, schema)
            checker.run()
            types, kinds = checker.types, checker.kinds
        elif isinstance(module, ast.ObjectiveFile):
            _check_objective(module, sink)
        else:
            raise TypeError(f"check() takes a TaskFile or ObjectiveFile, not {type(module).__name__}")
    except _StopChecking:
        pass
    ordered = sorted(sink.diagnostics, key=_position)
    return CheckResult(module, tuple(ordered), types, kinds)


class Suggester:
    """`did_you_mean` with a memo and a work budget for one run over one file.

    A near-name search compares the name with every candidate (~25 us each). A generated
    file with thousands of names and thousands of typos would spend minutes on suggestions;
    past `budget` comparisons the diagnostics keep coming, without suggestions. `pool` labels
    the candidate set (the same label must always mean the same candidates) for the memo.
    """

    def __init__(self, budget: int = 100_000):
        self.budget = budget
        self._memo: dict[tuple[str, str], str] = {}

    def __call__(self, name: str, candidates: Iterable[str], pool: str) -> str:
        key = (pool, name)
        if key in self._memo:
            return self._memo[key]
        # difflib's ratio is 2*M/(len(a)+len(b)) with M <= the shorter length, so a candidate
        # whose length is outside [0.43, 2.34] times the name's can never reach the 0.6 cutoff
        # (case-insensitive equality, near_name's other rule, needs equal lengths anyway).
        low, high = 0.42 * len(name), len(name) / 0.42
        near = [c for c in candidates if low <= len(c) <= high]
        if len(near) > self.budget:
            return ""
        self.budget -= len(near)
        found = did_you_mean(name, near)
        self._memo[key] = found
        return found


def constant_value(expr: ast.Expr, params: dict[str, float]) -> float | None:
    """Value of a constant scalar expression (numbers, params, + - * / and unary -), or None
    when it is not one. Division by zero gives an infinity or NaN, which callers reject."""
    if isinstance(expr, ast.Number):
        return float(expr.value)
    if isinstance(expr, ast.Name):
        return params.get(expr.ident)
    if isinstance(expr, ast.Neg):
        inner = constant_value(expr.operand, params)
        return None if inner is None else -inner
    if isinstance(expr, ast.Binary):
        left = constant_value(expr.left, params)
        right = constant_value(expr.right, params)
        if left is None or right is None:
            return None
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        if right == 0.0:
            return math.copysign(math.inf, left) if left else math.nan
        return left / right
    return None


def names_in(expr: ast.Expr) -> Iterator[ast.Name]:
    """Every name an expression refers to (not function names), outermost first."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            yield node
        elif isinstance(node, ast.Component):
            stack.append(node.base)
        elif isinstance(node, ast.Call):
            stack.extend(reversed(node.args))
        elif isinstance(node, (ast.Neg, ast.Not)):
            stack.append(node.operand)
        elif isinstance(node, (ast.Binary, ast.Compare, ast.BoolOp)):
            stack.extend((node.right, node.left))


# ---------------------------------------------------------------------------- internals


class _StopChecking(Exception):
    """Raised by the sink after the first error when fail_fast is set."""


class _Sink:
    def __init__(self, path: str, fail_fast: bool):
        self.path = path
        self.fail_fast = fail_fast
        self.diagnostics: list[Diagnostic] = []

    def error(self, code: str, message: str, span: ast.Span | None, **extra: str | None) -> None:
        self.diagnostics.append(Diagnostic(code, "error", message, self.path, _real(span), **extra))
        if self.fail_fast:
            raise _StopChecking

    def warning(self, code: str, message: str, span: ast.Span | None, **extra: str | None) -> None:
        self.diagnostics.append(Diagnostic(code, "warning", message, self.path, _real(span), **extra))


def _real(span: ast.Span | None) -> ast.Span | None:
    return None if span is None or span == ast.NO_SPAN else span


def _position(diagnostic: Diagnostic) -> tuple[int, int]:
    span = diagnostic.span
    return (span.line, span.column) if span else (0, 0)


def _article(type_name: str | None) -> str:
    return {"scalar": "a scalar", "vec3": "a vec3", "bool": "a bool"}.get(type_name or "", "a value")


@dataclass
class _Symbol:
    name: str
    kind: Kind
    span: ast.Span
    decl: object


class _TaskChecker:
    def __init__(self, task: ast.TaskFile, sink: _Sink, schema: Schema | None):
        self.task = task
        self.sink = sink
        self.schema = schema
        self.symbols: dict[str, _Symbol] = {}
        self.types: dict[str, Type] = {}
        self.kinds: dict[str, Kind] = {}
        self.used: set[str] = set()
        self.suggest = Suggester()
        self._name_pool: tuple[str, ...] | None = None
        self.params: dict[str, float] = {}
        self._let_values: dict[str, ast.Expr] = {}
        self._trajectory_dependent: dict[str, bool] | None = None  # let -> depends on the trajectory
        self._order: list[str] = []
        self._cyclic: set[str] = set()

    def run(self) -> None:
        self._declare_all()
        self._check_sources()
        self._infer_lets()
        self._check_offsets()
        self._check_stages()
        self._check_unreached()
        self._report_unused()

    # ------------------------------------------------------------------ declarations

    def _declare_all(self) -> None:
        for decl in self.task.decls:
            if isinstance(decl, ast.ParamDecl):
                if self._declare(decl.name, "param", decl.span, decl):
                    self.types[decl.name] = SCALAR
                    self.params[decl.name] = float(decl.value)
            elif isinstance(decl, ast.KeypointsBlock):
                for keypoint in decl.keypoints:
                    if self._declare(keypoint.name, "keypoint", keypoint.span, keypoint):
                        self.types[keypoint.name] = VEC3
            elif isinstance(decl, ast.SignalsBlock):
                for signal in decl.signals:
                    if self._declare(signal.name, "signal", signal.span, signal):
                        self.types[signal.name] = SCALAR
            elif isinstance(decl, ast.LetDecl):
                if self._declare(decl.name, "let", decl.span, decl):
                    self._let_values[decl.name] = decl.value

    def _declare(self, name: str, kind: Kind, span: ast.Span, decl: object) -> bool:
        if name in RESERVED_NAMES:
            if name == STEP_INDEX_NAME:
                why = "it is the step index, available in every expression"
            elif name in BUILTINS:
                why = f"it is a builtin function: {describe(name)}"
            else:
                why = "it is a keyword"
            self.sink.error(
                RESERVED_NAME, f"cannot declare '{name}' as a {kind}: {why}", span, hint="choose another name"
            )
            return False
        earlier = self.symbols.get(name)
        if earlier is not None:
            where = f" at line {earlier.span.line}" if _real(earlier.span) else ""
            self.sink.error(
                DUPLICATE_NAME,
                f"'{name}' is already declared as a {earlier.kind}{where}",
                span,
                hint="keypoints, signals, params and lets share one namespace",
            )
            return False
        self.symbols[name] = _Symbol(name, kind, span, decl)
        self.kinds[name] = kind
        return True

    def _check_sources(self) -> None:
        if self.schema is None:
            return
        keypoint_names, signal_names = (list(names) for names in self.schema)
        for keypoint in self.task.keypoints:
            source = keypoint.source.dotted
            if source in keypoint_names:
                continue
            hint = "it is a signal: bind it in signals { }" if source in signal_names else None
            self.sink.error(
                UNKNOWN_KEYPOINT_SOURCE,
                f"the environment reports no keypoint '{source}'"
                + self.suggest(source, keypoint_names, "keypoint sources"),
                keypoint.source.span or keypoint.span,
                expected="one of " + ", ".join(keypoint_names),
                hint=hint,
            )
        for signal in self.task.signals:
            source = signal.source.dotted
            if source in signal_names:
                continue
            hint = "it is a keypoint: bind it in keypoints { }" if source in keypoint_names else None
            self.sink.error(
                UNKNOWN_SIGNAL_SOURCE,
                f"the environment reports no signal '{source}'" + self.suggest(source, signal_names, "signal sources"),
                signal.source.span or signal.span,
                expected="one of " + ", ".join(signal_names),
                hint=hint,
            )

    # ------------------------------------------------------------------ lets

    def _infer_lets(self) -> None:
        """Type every let, dependencies first (forward references are allowed); cycles are
        reported and left untyped. Iterative, so a chain of thousands of lets is fine."""
        self._order = self._let_order()
        for name in self._order:
            if name in self._cyclic:
                continue
            inferred = self._infer(self._let_values[name])
            if inferred is not None:
                self.types[name] = inferred
        for name in self._cyclic:
            self.used.update(ref.ident for ref in names_in(self._let_values[name]) if ref.ident != name)

    def _let_order(self) -> list[str]:
        """Lets in dependency order (post-order DFS); reports each cycle once, naming the chain."""
        deps = {
            name: list(dict.fromkeys(r.ident for r in names_in(value) if r.ident in self._let_values))
            for name, value in self._let_values.items()
        }
        state: dict[str, str] = {}  # name -> "active" | "done"
        reported: set[frozenset[str]] = set()
        order: list[str] = []
        for root in deps:
            if root in state:
                continue
            state[root] = "active"
            path, pending = [root], [iter(deps[root])]
            while pending:
                for ref in pending[-1]:
                    if state.get(ref) == "active":
                        cycle = path[path.index(ref) :]
                        self._cyclic.update(cycle)
                        if frozenset(cycle) not in reported:
                            reported.add(frozenset(cycle))
                            chain = " -> ".join([*cycle, ref])
                            self.sink.error(
                                LET_CYCLE,
                                f"let cycle: {chain}",
                                self.symbols[cycle[0]].span,
                                hint="a let may not depend on itself, directly or through other lets",
                            )
                    elif ref not in state:
                        state[ref] = "active"
                        path.append(ref)
                        pending.append(iter(deps[ref]))
                        break
                else:
                    done = path.pop()
                    pending.pop()
                    state[done] = "done"
                    order.append(done)
        return order

    # ------------------------------------------------------------------ expressions

    def _infer(self, expr: ast.Expr) -> Type | None:
        """Type of `expr`, reporting what is wrong inside it; None when unknown (already reported)."""
        if isinstance(expr, ast.Number):
            return SCALAR
        if isinstance(expr, ast.Bool):
            return BOOL
        if isinstance(expr, ast.Name):
            return self._infer_name(expr)
        if isinstance(expr, ast.Component):
            base = self._infer(expr.base)
            if base is None:
                return None
            if base != VEC3:
                self.sink.error(
                    COMPONENT_TYPE,
                    f"'.{expr.axis}' takes a vec3, but this is {_article(base)}",
                    expr.span,
                    expected="a keypoint or another vec3 before '.x', '.y' or '.z'",
                )
                return None
            return SCALAR
        if isinstance(expr, ast.Call):
            return self._infer_call(expr)
        if isinstance(expr, ast.Neg):
            operand = self._infer(expr.operand)
            if operand is None:
                return None
            if operand == BOOL:
                self.sink.error(
                    ARITHMETIC_TYPE,
                    "unary '-' takes a scalar or a vec3, but this is a bool",
                    expr.span,
                    hint="use 'not' to negate a condition",
                )
                return None
            return operand
        if isinstance(expr, ast.Not):
            operand = self._infer(expr.operand)
            if operand is None:
                return None
            if operand != BOOL:
                self.sink.error(
                    LOGIC_TYPE,
                    f"'not' takes a bool, but this is {_article(operand)}",
                    expr.operand.span,
                    hint=self._bool_hint(operand),
                )
                return None
            return BOOL
        if isinstance(expr, ast.Binary):
            return self._infer_binary(expr)
        if isinstance(expr, ast.Compare):
            return self._infer_compare(expr)
        if isinstance(expr, ast.BoolOp):
            left, right = self._infer(expr.left), self._infer(expr.right)
            for side, side_type in ((expr.left, left), (expr.right, right)):
                if side_type is not None and side_type != BOOL:
                    self.sink.error(
                        LOGIC_TYPE,
                        f"'{expr.op}' takes bools, but this operand is {_article(side_type)}",
                        side.span,
                        hint=self._bool_hint(side_type),
                    )
                    return None
            return BOOL if left is not None and right is not None else None
        raise TypeError(f"checker: unknown expression node {type(expr).__name__}")

    @staticmethod
    def _bool_hint(found: Type) -> str | None:
        if found == SCALAR:
            return "compare it, e.g. 'grasped >= 0.5' or 'dist(a, b) <= 0.02'"
        if found == VEC3:
            return "compare a distance, e.g. 'dist(a, b) <= 0.02'"
        return None

    def _infer_name(self, expr: ast.Name) -> Type | None:
        name = expr.ident
        if name == STEP_INDEX_NAME:
            return SCALAR
        symbol = self.symbols.get(name)
        if symbol is not None:
            self.used.add(name)
            return self.types.get(name)  # lets are typed first, in dependency order (see run())
        if name in BUILTINS:
            self.sink.error(
                FUNCTION_AS_VALUE,
                f"'{name}' is a builtin function, not a value",
                expr.span,
                expected=f"a call: {describe(name)}",
            )
            return None
        if self._name_pool is None:  # declarations are complete before any expression is typed
            self._name_pool = (*self.symbols, STEP_INDEX_NAME)
        candidates = self._name_pool
        self.sink.error(
            UNKNOWN_NAME,
            f"unknown name '{name}'" + self.suggest(name, candidates, "names"),
            expr.span,
            hint="declare it as a keypoint, signal, param or let",
        )
        return None

    def _infer_call(self, expr: ast.Call) -> Type | None:
        arg_types = [self._infer(arg) for arg in expr.args]
        if expr.func not in BUILTINS:
            symbol = self.symbols.get(expr.func)
            if symbol is not None:
                self.sink.error(
                    UNKNOWN_FUNCTION,
                    f"'{expr.func}' is a {symbol.kind}, not a function",
                    expr.span,
                    expected="a builtin: " + ", ".join(sorted(BUILTINS)),
                )
            else:
                self.sink.error(
                    UNKNOWN_FUNCTION,
                    f"unknown function '{expr.func}'" + self.suggest(expr.func, BUILTINS, "builtins"),
                    expr.span,
                    expected="a builtin: " + ", ".join(sorted(BUILTINS)),
                )
            return None
        if any(t is None for t in arg_types):
            return None
        known = tuple(t for t in arg_types if t is not None)
        signature = resolve_call(expr.func, known)
        if signature is not None:
            return signature.returns
        overloads = BUILTINS[expr.func]
        arities_ok = any((len(known) >= s.min_args) if s.variadic else (len(known) == len(s.params)) for s in overloads)
        got = f"{expr.func}({', '.join(known)})"
        if not arities_ok:
            counts = sorted({f"{s.min_args} or more" if s.variadic else str(len(s.params)) for s in overloads})
            self.sink.error(
                WRONG_ARITY,
                f"'{expr.func}' takes {' or '.join(counts)} argument(s), got {len(known)}: {describe(expr.func)}",
                expr.span,
            )
            return None
        # Point at the first argument that fits no overload of the right length.
        culprit = self._first_bad_argument(expr, known)
        self.sink.error(
            WRONG_ARGUMENT_TYPE,
            f"wrong argument types: {got}; the signature is {describe(expr.func)}",
            culprit.span if culprit is not None else expr.span,
        )
        return None

    @staticmethod
    def _first_bad_argument(expr: ast.Call, known: tuple[Type, ...]) -> ast.Expr | None:
        overloads = BUILTINS[expr.func]
        for index, arg_type in enumerate(known):
            fits = False
            for sig in overloads:
                if sig.variadic:
                    fits |= arg_type == sig.params[0] and all(k == sig.params[0] for k in known[:index])
                elif len(sig.params) == len(known):
                    fits |= all(k == p for k, p in zip(known[: index + 1], sig.params))
            if not fits:
                return expr.args[index]
        return None

    def _infer_binary(self, expr: ast.Binary) -> Type | None:
        left, right = self._infer(expr.left), self._infer(expr.right)
        if left is None or right is None:
            return None
        result = _arithmetic_result(expr.op, left, right)
        if result is not None:
            return result
        hint = None
        if BOOL in (left, right):
            hint = "bools do not take part in arithmetic; use 'and', 'or', 'not'"
        elif expr.op == "*" and left == right == VEC3:
            hint = "use dot(a, b) or cross(a, b) to multiply two vectors"
        elif expr.op in "+-":
            hint = "a vec3 and a scalar cannot be added; use vec(x, y, z) or a component like '.z'"
        elif expr.op == "/" and right == VEC3:
            hint = "a vec3 can only be divided by a scalar"
        self.sink.error(
            ARITHMETIC_TYPE, f"cannot apply '{expr.op}' to {_article(left)} and {_article(right)}", expr.span, hint=hint
        )
        return None

    def _infer_compare(self, expr: ast.Compare) -> Type | None:
        left, right = self._infer(expr.left), self._infer(expr.right)
        if left is None or right is None:
            return None
        if left == right == SCALAR:
            return BOOL
        hint = None
        if VEC3 in (left, right):
            hint = "compare distances or components: dist(a, b), norm(v), v.z"
        elif BOOL in (left, right):
            hint = "combine conditions with 'and', 'or', 'not'"
        self.sink.error(
            COMPARISON_TYPE,
            f"'{expr.op}' compares two scalars, not {_article(left)} and {_article(right)}",
            expr.span,
            hint=hint,
        )
        return None

    # ------------------------------------------------------------------ constants

    def _check_offsets(self) -> None:
        for keypoint in self.task.keypoints:
            if keypoint.offset is None:
                continue
            offset_type = self._infer(keypoint.offset)
            if offset_type is None:
                continue
            if not self._is_constant(keypoint.offset, allow_vec=True) or offset_type != VEC3:
                self.sink.error(
                    BAD_OFFSET,
                    f"the offset of keypoint '{keypoint.name}' must be a constant vec3",
                    keypoint.offset.span,
                    expected="vec(x, y, z) of numbers and params, e.g. vec(0, 0, 0.02)",
                )

    def _is_constant(self, expr: ast.Expr, *, allow_vec: bool = False) -> bool:
        """Numbers and params under + - * / and unary - (and `vec(...)` where allowed)."""
        if isinstance(expr, ast.Number):
            return True
        if isinstance(expr, ast.Name):
            symbol = self.symbols.get(expr.ident)
            return symbol is not None and symbol.kind == "param"
        if isinstance(expr, ast.Neg):
            return self._is_constant(expr.operand, allow_vec=allow_vec)
        if isinstance(expr, ast.Binary):
            return self._is_constant(expr.left, allow_vec=allow_vec) and self._is_constant(
                expr.right, allow_vec=allow_vec
            )
        if allow_vec and isinstance(expr, ast.Call) and expr.func == "vec":
            return all(self._is_constant(arg) for arg in expr.args)
        return False

    def _check_attribute(self, constraint: ast.Constraint, label: str, expr: ast.Expr | None) -> None:
        if expr is None:
            return
        expr_type = self._infer(expr)
        if expr_type is None:
            return
        if expr_type != SCALAR or not self._is_constant(expr):
            self.sink.error(
                NOT_CONSTANT,
                f"the {label} of '{constraint.name}' must be a constant scalar",
                expr.span,
                expected="a number, a param, or arithmetic on them (e.g. 2 * lift)",
            )
            return
        value = constant_value(expr, self.params)
        if value is None:
            return
        if not math.isfinite(value):
            self.sink.error(NOT_CONSTANT, f"the {label} of '{constraint.name}' is not finite ({value})", expr.span)
        elif value < 0:
            self.sink.error(
                NEGATIVE_CONSTANT,
                f"the {label} of '{constraint.name}' is negative ({value:g})",
                expr.span,
                expected=f"a {label} >= 0",
            )

    # ------------------------------------------------------------------ stages

    def _check_stages(self) -> None:
        stages = self.task.stages
        if not stages:
            self.sink.error(
                NO_STAGES,
                f"task '{self.task.name}' has no stage",
                self.task.span,
                expected="at least one 'stage NAME { ... }'",
            )
            return
        seen: dict[str, ast.Stage] = {}
        for index, stage in enumerate(stages):
            last = index == len(stages) - 1
            if stage.name in seen:
                self.sink.error(
                    DUPLICATE_STAGE,
                    f"stage '{stage.name}' is already declared at line {seen[stage.name].span.line}",
                    stage.span,
                )
            else:
                seen[stage.name] = stage
            if stage.until is None and not last:
                self.sink.error(
                    MISSING_UNTIL,
                    f"stage '{stage.name}' needs 'until': only the last stage runs to the end",
                    stage.span,
                    expected=f"stage {stage.name} until CONDITION {{ ... }}",
                )
            elif stage.until is not None and last:
                self.sink.error(
                    UNTIL_ON_LAST_STAGE,
                    f"the last stage '{stage.name}' must not have 'until': it runs to the end",
                    stage.until.span or stage.span,
                    hint="remove 'until ...', or add the stage that follows it",
                )
            if stage.until is not None:
                until_type = self._infer(stage.until)
                if until_type is not None and until_type != BOOL:
                    self.sink.error(
                        UNTIL_NOT_BOOL,
                        f"'until' of stage '{stage.name}' must be a bool, but this is {_article(until_type)}",
                        stage.until.span,
                        hint=self._bool_hint(until_type),
                    )
                elif until_type == BOOL and not self._depends_on_trajectory(stage.until):
                    self.sink.warning(
                        CONSTANT_UNTIL,
                        f"'until' of stage '{stage.name}' does not depend on the trajectory",
                        stage.until.span,
                        hint="it is decided before the robot moves; use keypoints, signals or t",
                    )
            if not stage.constraints:
                self.sink.warning(EMPTY_STAGE, f"stage '{stage.name}' has no constraints: it costs nothing", stage.span)
            self._check_constraints(stage)

    def _check_constraints(self, stage: ast.Stage) -> None:
        seen: dict[str, ast.Constraint] = {}
        for constraint in stage.constraints:
            if constraint.name in seen:
                self.sink.error(
                    DUPLICATE_CONSTRAINT,
                    f"stage '{stage.name}' already has a constraint '{constraint.name}'"
                    f" (line {seen[constraint.name].span.line})",
                    constraint.span,
                )
            else:
                seen[constraint.name] = constraint
            if constraint.kind == "subgoal" and constraint.over is not None:
                self.sink.error(
                    OVER_ON_SUBGOAL,
                    f"'over {constraint.over}' applies to path constraints; subgoal "
                    f"'{constraint.name}' is judged at the stage's last step only",
                    constraint.span,
                    hint="remove 'over', or make it a path constraint",
                )
            expr_type = self._infer(constraint.expr)
            if expr_type is not None and expr_type != BOOL:
                self.sink.error(
                    CONSTRAINT_NOT_BOOL,
                    f"constraint '{constraint.name}' must be a comparison or a bool, but this is {_article(expr_type)}",
                    constraint.expr.span,
                    hint=self._bool_hint(expr_type),
                )
            elif expr_type == BOOL and not self._depends_on_trajectory(constraint.expr):
                self.sink.warning(
                    CONSTANT_CONSTRAINT,
                    f"constraint '{constraint.name}' does not depend on any keypoint, signal or t:"
                    " its cost is the same for every trajectory",
                    constraint.expr.span,
                )
            self._check_attribute(constraint, "tol", constraint.tol)
            self._check_attribute(constraint, "weight", constraint.weight)

    def _depends_on_trajectory(self, expr: ast.Expr) -> bool:
        if self._trajectory_dependent is None:
            self._trajectory_dependent = {}
            for name in self._order:
                self._trajectory_dependent[name] = self._refers_to_trajectory(self._let_values[name])
        return self._refers_to_trajectory(expr)

    def _refers_to_trajectory(self, expr: ast.Expr) -> bool:
        for ref in names_in(expr):
            if ref.ident == STEP_INDEX_NAME:
                return True
            symbol = self.symbols.get(ref.ident)
            if symbol is None:
                continue
            if symbol.kind in ("keypoint", "signal"):
                return True
            if symbol.kind == "let" and (self._trajectory_dependent or {}).get(ref.ident, False):
                return True
        return False

    # ------------------------------------------------------------------ the rest

    def _check_unreached(self) -> None:
        found = [d for d in self.task.decls if isinstance(d, ast.UnreachedDecl)]
        for extra in found[1:]:
            self.sink.error(DUPLICATE_UNREACHED, f"'unreached' is already set at line {found[0].span.line}", extra.span)
        for decl in found:
            _check_unreached_value(decl, self.sink)

    def _report_unused(self) -> None:
        codes = {"keypoint": UNUSED_KEYPOINT, "signal": UNUSED_SIGNAL, "param": UNUSED_PARAM, "let": UNUSED_LET}
        for symbol in self.symbols.values():
            if symbol.name not in self.used:
                self.sink.warning(codes[symbol.kind], f"{symbol.kind} '{symbol.name}' is never used", symbol.span)


def _arithmetic_result(op: str, left: Type, right: Type) -> Type | None:
    if BOOL in (left, right):
        return None
    if left == right == SCALAR:
        return SCALAR
    if op in "+-":
        return VEC3 if left == right == VEC3 else None
    if op == "*":
        return VEC3 if {left, right} == {SCALAR, VEC3} else None
    return VEC3 if (left, right) == (VEC3, SCALAR) else None


def _check_unreached_value(decl: ast.UnreachedDecl, sink: _Sink) -> None:
    if not math.isfinite(decl.value):
        sink.error(
            NEGATIVE_UNREACHED, f"the unreached-stage penalty must be a finite number, not {decl.value}", decl.span
        )
    elif decl.value < 0:
        sink.error(
            NEGATIVE_UNREACHED,
            f"the unreached-stage penalty is negative ({decl.value:g})",
            decl.span,
            expected="a penalty >= 0 (it is added to the cost of each stage never reached)",
        )


def _check_objective(objective: ast.ObjectiveFile, sink: _Sink) -> None:
    """Checks one objective file can make on its own; imports and task fit are objective.py's."""
    tags: dict[str, ast.TagOverride] = {}
    params: dict[str, ast.ParamDecl] = {}
    for decl in objective.decls:
        if isinstance(decl, ast.TagOverride):
            if decl.tol is None and decl.weight is None:
                sink.warning(EMPTY_TAG_OVERRIDE, f"'tag {decl.tag}' sets neither tol nor weight", decl.span)
            for label, value in (("tol", decl.tol), ("weight", decl.weight)):
                if value is None:
                    continue
                if not math.isfinite(value):
                    sink.error(NOT_CONSTANT, f"the {label} of tag '{decl.tag}' is not finite ({value})", decl.span)
                elif value < 0:
                    sink.error(
                        NEGATIVE_CONSTANT,
                        f"the {label} of tag '{decl.tag}' is negative ({value:g})",
                        decl.span,
                        expected=f"a {label} >= 0",
                    )
            if decl.tag in tags:
                sink.warning(
                    REPEATED_OVERRIDE,
                    f"tag '{decl.tag}' is already set at line {tags[decl.tag].span.line}; the later setting wins",
                    decl.span,
                )
            tags[decl.tag] = decl
        elif isinstance(decl, ast.ParamDecl):
            if decl.name in params:
                sink.warning(
                    REPEATED_OVERRIDE,
                    f"param '{decl.name}' is already set at line {params[decl.name].span.line}; the later setting wins",
                    decl.span,
                )
            if not math.isfinite(decl.value):
                sink.error(NOT_CONSTANT, f"param '{decl.name}' must be a finite number, not {decl.value}", decl.span)
            params[decl.name] = decl
    found = [d for d in objective.decls if isinstance(d, ast.UnreachedDecl)]
    for extra in found[1:]:
        sink.error(DUPLICATE_UNREACHED, f"'unreached' is already set at line {found[0].span.line}", extra.span)
    for decl in found:
        _check_unreached_value(decl, sink)
