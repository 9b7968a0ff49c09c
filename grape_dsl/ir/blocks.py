"""IR -> straight-line blocks of IEEE float64 operations, per stage, shared by value numbering.

Each operation is one float64 (or bool) operation, in the order docs/language.md defines and
the reference evaluator (grape_dsl/oracle.py) performs it. Nothing is rewritten algebraically:
`x / x` is not 1, `exp(log(x))` is not x, `(u + 1e16) - 1e16` is not u and `0 * log(0)` is NaN,
exactly as the floats say. The only sharing is value numbering: the same operation on the same
operands is computed once per block, so a let is computed once per step wherever it is used,
and a chain of lets costs one operation per let rather than a tree.

`delta(x)` at step u is 0 when u = 0, else x(u) - x(u-1). Inputs read at an earlier step carry
a `shift`; a shifted read clamps its step at 0 (never out of bounds) and a `started` test
(u > 0) selects 0 at the first step, so `delta(log(s))` is 0 at step 0 even where log(s) is
infinite.

Non-finite computed values follow one rule (grape_dsl/score.py): where a comparison's
difference is NaN its violation is +inf (`nan_inf`), so NaN never reaches a sum, min or max,
and a NaN comparison is false as a truth value.

Each stage gets two blocks:
- `step`: the `until` truth (if any) and the violation of every path constraint, evaluated at
  every step of the stage;
- `point`: the violation of every constraint at one step (subgoals at the stage's last step;
  all constraints of an unreached stage at step L-1).

Translation is iterative (an explicit stack), so a chain of thousands of lets never reaches
Python's recursion limit, and it stops with a GRC402 diagnostic as soon as a block outgrows
MAX_BLOCK_VALUES.
"""

from __future__ import annotations

from dataclasses import dataclass

from grape_dsl import ast
from grape_dsl.diagnostics import Diagnostic, GrcError
from grape_dsl.ir import lower as ir

# Operations per block, and in all blocks of a program together. The stock tasks need at most
# 75 per block and 274 in all (under safety.grc); numba's compile time grows faster than
# linearly with the kernel's length (measured on the shared 2-core machine: ~2-3 s for 274
# operations, 62 s for 1,786), so these keep every accepted program's cold compile to seconds.
MAX_BLOCK_VALUES = 500
MAX_PROGRAM_VALUES = 1_000
BUDGET_CODE = "GRC402"


@dataclass(frozen=True)
class Input:
    """A value read from the batch: a keypoint axis, a signal, or the step index itself."""

    array: str  # "kp", "sig" or "t"
    slot: int  # program input slot (kp, sig); 0 for t
    axis: int  # 0..2 for kp; 0 otherwise
    shift: int  # reads step max(u - shift, 0) of the block's step u


@dataclass(frozen=True)
class Value:
    """One operation. `args` index earlier values of the same block.

    ops: const (number) | bool (flag) | load (source) | add sub mul div | neg abs sqrt exp log |
    min max (Python's two-argument semantics: the first unless the second is strictly
    smaller/larger) | lt le gt ge eq ne -> bool | and or not (bools) | nan_inf (x, or +inf
    for NaN) | pos (x if x > 0 else 0) | select (cond, a, b) | started (shift: step u > shift).
    """

    op: str
    args: tuple[int, ...] = ()
    number: float | None = None
    flag: bool | None = None
    source: Input | None = None
    shift: int = 0


@dataclass(frozen=True)
class Block:
    """Values in evaluation order, and the named outputs (indices into `values`)."""

    values: tuple[Value, ...]
    outputs: tuple[tuple[str, int], ...]

    def inputs(self) -> list[Input]:
        return sorted(
            {v.source for v in self.values if v.op == "load"},  # type: ignore[type-var]
            key=lambda s: (s.array, s.slot, s.axis, s.shift),
        )

    def shifts(self) -> list[int]:
        used = {v.source.shift for v in self.values if v.op == "load"}  # type: ignore[union-attr]
        used |= {v.shift for v in self.values if v.op == "started"}
        return sorted(s for s in used if s > 0)


@dataclass(frozen=True)
class StageBlocks:
    stage: ir.Stage
    step: Block  # outputs: ("until", truth)? then ("v_<name>", violation) per path constraint
    point: Block  # outputs: ("v_<name>", violation) per constraint, in declaration order


@dataclass(frozen=True)
class BlockProgram:
    program: ir.Program
    stages: tuple[StageBlocks, ...]

    @property
    def size(self) -> int:
        return sum(len(s.step.values) + len(s.point.values) for s in self.stages)


class _BudgetExceeded(Exception):
    pass


class _BlockBuilder:
    """Builds one block: value numbering plus an iterative walk of IR expressions."""

    def __init__(self, budget: int):
        self.values: list[Value] = []
        self.numbering: dict[tuple, int] = {}
        self.memo: dict[tuple[int, int, str], tuple[int, ...]] = {}
        self.budget = budget

    def emit(
        self,
        op: str,
        *args: int,
        number: float | None = None,
        flag: bool | None = None,
        source: Input | None = None,
        shift: int = 0,
    ) -> int:
        # repr keeps 0.0 and -0.0 apart (they compare equal but are different constants)
        key = (op, args, repr(number), flag, source, shift)
        found = self.numbering.get(key)
        if found is not None:
            return found
        if len(self.values) >= self.budget:
            raise _BudgetExceeded
        self.values.append(Value(op, args, number, flag, source, shift))
        self.numbering[key] = len(self.values) - 1
        return len(self.values) - 1

    def const(self, x: float) -> int:
        return self.emit("const", number=float(x))

    # -- the walk: values of (node, shift, mode); mode "v" (scalar/vec3/bool value)

    def value(self, root: ir.Expr, shift: int) -> tuple[int, ...]:
        """The value indices of `root` at `shift`: 1 for a scalar or bool, 3 for a vec3."""
        stack: list[tuple[ir.Expr, int, bool]] = [(root, shift, False)]
        while stack:
            node, s, ready = stack.pop()
            key = (id(node), s, "v")
            if key in self.memo:
                continue
            children = _children(node, s)
            if not ready:
                stack.append((node, s, True))
                stack.extend((c, cs, False) for c, cs in children if (id(c), cs, "v") not in self.memo)
                continue
            self.memo[key] = self._combine(node, s, [self.memo[(id(c), cs, "v")] for c, cs in children])
        return self.memo[(id(root), shift, "v")]

    def _combine(self, e: ir.Expr, s: int, kids: list[tuple[int, ...]]) -> tuple[int, ...]:
        if isinstance(e, ir.Const):
            return (self.const(e.value),)
        if isinstance(e, ir.BoolConst):
            return (self.emit("bool", flag=bool(e.value)),)
        if isinstance(e, ir.StepIndex):
            return (self.emit("load", source=Input("t", 0, 0, s)),)
        if isinstance(e, ir.SignalInput):
            return (self.emit("load", source=Input("sig", e.slot, 0, s)),)
        if isinstance(e, ir.KeypointInput):
            return tuple(self.emit("load", source=Input("kp", e.slot, a, s)) for a in range(3))
        if isinstance(e, ir.LetRef):
            return kids[0]
        if isinstance(e, ir.Component):
            return (kids[0][e.axis],)
        if isinstance(e, ir.Neg):
            return tuple(self.emit("neg", x) for x in kids[0])
        if isinstance(e, ir.Not):
            return (self.emit("not", kids[0][0]),)
        if isinstance(e, ir.Logic):
            return (self.emit(e.op, kids[0][0], kids[1][0]),)
        if isinstance(e, ir.Compare):
            op = {"<=": "le", "<": "lt", ">=": "ge", ">": "gt", "==": "eq", "!=": "ne"}[e.op]
            return (self.emit(op, kids[0][0], kids[1][0]),)
        if isinstance(e, ir.Delta):
            now, before = kids
            started = self.emit("started", shift=s)
            zero = self.const(0.0)
            return tuple(self.emit("select", started, self.emit("sub", a, b), zero) for a, b in zip(now, before))
        if isinstance(e, ir.Arith):
            op = {"+": "add", "-": "sub", "*": "mul", "/": "div"}[e.op]
            a, b = kids
            if len(a) == len(b):
                return tuple(self.emit(op, x, y) for x, y in zip(a, b))
            if len(a) == 3:  # vec3 * scalar, vec3 / scalar
                return tuple(self.emit(op, x, b[0]) for x in a)
            return tuple(self.emit(op, a[0], y) for y in b)  # scalar * vec3
        if isinstance(e, ir.Call):
            return self._call(e.func, kids)
        raise TypeError(f"blocks: cannot translate {type(e).__name__}")

    def _sum(self, terms: list[int]) -> int:
        total = terms[0]
        for term in terms[1:]:
            total = self.emit("add", total, term)
        return total

    def _fold(self, op: str, args: list[int]) -> int:
        result = args[0]
        for arg in args[1:]:
            result = self.emit(op, result, arg)
        return result

    def _call(self, f: str, kids: list[tuple[int, ...]]) -> tuple[int, ...]:
        if f in ("dist", "dist_xy"):
            a, b = kids
            axes = 3 if f == "dist" else 2
            diffs = [self.emit("sub", a[i], b[i]) for i in range(axes)]
            return (self.emit("sqrt", self._sum([self.emit("mul", d, d) for d in diffs])),)
        if f == "norm":
            (v,) = kids
            return (self.emit("sqrt", self._sum([self.emit("mul", x, x) for x in v])),)
        if f == "dot":
            a, b = kids
            return (self._sum([self.emit("mul", a[i], b[i]) for i in range(3)]),)
        if f == "cross":
            a, b = kids
            return tuple(
                self.emit("sub", self.emit("mul", a[i], b[j]), self.emit("mul", a[j], b[i]))
                for i, j in ((1, 2), (2, 0), (0, 1))
            )
        if f == "vec":
            return tuple(k[0] for k in kids)
        if f in ("abs", "sqrt", "exp", "log"):
            return (self.emit(f, kids[0][0]),)
        if f == "clamp":
            x, lo, hi = (k[0] for k in kids)
            return (self.emit("min", self.emit("max", x, lo), hi),)
        if f in ("min", "max"):
            return (self._fold(f, [k[0] for k in kids]),)
        if f == "mean":
            count = self.const(float(len(kids)))
            width = len(kids[0])
            return tuple(self.emit("div", self._sum([k[i] for k in kids]), count) for i in range(width))
        raise TypeError(f"blocks: unknown builtin {f}()")

    # -- violations (docs/language.md, "Violation"); recursion only through and/or/not, whose
    # depth the parser bounds (MAX_NESTING) unless it runs through a bool let, which is scored
    # 0/1 by its truth, not walked.

    def violation(self, root: ir.Expr, shift: int) -> int:
        stack: list[tuple[ir.Expr, bool]] = [(root, False)]
        done: dict[int, int] = {}
        while stack:
            e, ready = stack.pop()
            if id(e) in done:
                continue
            if isinstance(e, ir.Logic) and not ready:
                stack += [(e, True), (e.left, False), (e.right, False)]
                continue
            if isinstance(e, ir.Logic):
                a, b = done[id(e.left)], done[id(e.right)]
                done[id(e)] = self.emit("add", a, b) if e.op == "and" else self.emit("min", a, b)
            elif isinstance(e, ir.Compare):
                done[id(e)] = self._compare_violation(e, shift)
            else:  # `not p`, `true`, `false`, bool lets: 0 where it holds, else 1
                truth = self.value(e, shift)[0]
                done[id(e)] = self.emit("select", truth, self.const(0.0), self.const(1.0))
        return done[id(root)]

    def _compare_violation(self, e: ir.Compare, shift: int) -> int:
        a, b = self.value(e.left, shift)[0], self.value(e.right, shift)[0]
        if e.op == "!=":
            return self.emit("select", self.emit("eq", a, b), self.const(1.0), self.const(0.0))
        if e.op == "==":
            return self.emit("nan_inf", self.emit("abs", self.emit("sub", a, b)))
        diff = self.emit("sub", a, b) if e.op in ("<=", "<") else self.emit("sub", b, a)
        return self.emit("pos", self.emit("nan_inf", diff))


def _children(e: ir.Expr, s: int) -> list[tuple[ir.Expr, int]]:
    if isinstance(e, ir.LetRef):
        return [(e.value, s)]
    if isinstance(e, (ir.Component,)):
        return [(e.base, s)]
    if isinstance(e, (ir.Neg, ir.Not)):
        return [(e.operand, s)]
    if isinstance(e, ir.Delta):
        return [(e.operand, s), (e.operand, s + 1)]
    if isinstance(e, (ir.Arith, ir.Compare, ir.Logic)):
        return [(e.left, s), (e.right, s)]
    if isinstance(e, ir.Call):
        return [(a, s) for a in e.args]
    return []


def _budget_error(program: ir.Program, what: str, span: ast.Span | None) -> GrcError:
    return GrcError(
        [
            Diagnostic(
                BUDGET_CODE,
                "error",
                what,
                program.path,
                span,
                hint="share work through lets, or split the task into simpler constraints",
            )
        ]
    )


def _build(
    outputs: list[tuple[str, ir.Expr, str, ast.Span | None]], budget: int, program: ir.Program, label: str
) -> Block:
    builder = _BlockBuilder(budget)
    named: list[tuple[str, int]] = []
    for name, expr, mode, span in outputs:
        try:
            index = builder.value(expr, 0)[0] if mode == "truth" else builder.violation(expr, 0)
        except _BudgetExceeded:
            raise _budget_error(
                program,
                f"program too large to compile: the {label} needs more than {budget:,} "
                f"operations (the limit is {MAX_BLOCK_VALUES:,} per block and "
                f"{MAX_PROGRAM_VALUES:,} per program), reached at '{name}'",
                span,
            ) from None
        named.append((name, index))
    return Block(tuple(builder.values), tuple(named))


def to_blocks(program: ir.Program) -> BlockProgram:
    """Translate every stage of `program` into value-numbered blocks (GrcError GRC402 when a
    block or the whole program needs more operations than the limits allow)."""
    stages = []
    used = 0
    for stage in program.stages:
        step_outputs: list[tuple[str, ir.Expr, str, ast.Span | None]] = []
        if stage.until is not None:
            step_outputs.append(("until", stage.until, "truth", stage.span))
        step_outputs += [(f"v_{c.name}", c.expr, "violation", c.span) for c in stage.constraints if c.kind == "path"]
        point_outputs = [(f"v_{c.name}", c.expr, "violation", c.span) for c in stage.constraints]
        blocks = []
        for label, outputs in (("per-step block", step_outputs), ("end-of-stage block", point_outputs)):
            budget = min(MAX_BLOCK_VALUES, MAX_PROGRAM_VALUES - used)
            block = _build(outputs, budget, program, f"{label} of stage '{stage.name}'")
            used += len(block.values)
            blocks.append(block)
        stages.append(StageBlocks(stage, blocks[0], blocks[1]))
    return BlockProgram(program, tuple(stages))


def describe(value: Value, name: callable) -> str:  # type: ignore[valid-type]
    """One value as readable text; `name(i)` names value i (for `grapec compile --emit blocks`)."""
    args = ", ".join(name(a) for a in value.args)
    if value.op == "const":
        return repr(value.number)
    if value.op == "bool":
        return repr(value.flag)
    if value.op == "load":
        src = value.source
        assert src is not None
        at = f"[u-{src.shift}]" if src.shift else "[u]"
        return {"kp": f"kp{src.slot}.{'xyz'[src.axis]}{at}", "sig": f"sig{src.slot}{at}", "t": f"t{at}"}[src.array]
    if value.op == "started":
        return f"u > {value.shift}"
    return f"{value.op}({args})"


def dump(blocks: BlockProgram) -> str:
    """Every stage's blocks, one operation a line (for `grapec compile --emit blocks`)."""
    lines = []
    for stage in blocks.stages:
        lines.append(f"stage {stage.stage.name}")
        for label, block in (("step", stage.step), ("point", stage.point)):
            lines.append(f"  -- {label} block ({len(block.values)} operations; u is the step)")
            for i, value in enumerate(block.values):
                lines.append(f"    %{i} = {describe(value, lambda a: f'%{a}')}")
            for out, index in block.outputs:
                lines.append(f"    {out} = %{index}")
    return "\n".join(lines)
