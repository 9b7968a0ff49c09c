"""IR -> sympy: per-step violation of every constraint and truth of every `until`, with CSE.

Each vec3 becomes three scalar expressions. `delta(x)` is x evaluated with every input shifted
one step back, subtracted from x; a shifted input reads step max(t - k, 0), so at t = 0 both
terms read the same step and the difference is exactly 0, as the language requires, with no
branch in the generated code.

Non-finite intermediate values follow one rule (documented in grape_dsl/score.py): where a
comparison's difference is NaN, its violation is +inf (`NanToInf`), so NaN never reaches a sum,
min or max, and a NaN comparison is false as a truth value.

sympy applies algebraic identities exactly where floats would leave a last-bit residue
(`cross(k, k / 2)` is exactly 0 here), so a comparison whose two sides are equal up to
rounding may be decided differently than by naive float evaluation. That is inherent in
simplifying and is the only way kernels and oracle may differ beyond rtol 1e-5.

Each stage becomes two straight-line blocks, each CSE'd across all its outputs:
- `step`: the `until` truth (if any) and the violation of every path constraint, evaluated at
  every step of the stage;
- `point`: the violation of every constraint at one step (subgoals at the stage's last step;
  all constraints of an unreached stage at step L-1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from grape_dsl.ir import lower as ir


class NanToInf(sp.Function):
    """x, or +inf where x is NaN (printed as a helper call in generated code)."""

    nargs = 1

    @classmethod
    def eval(cls, x):  # noqa: ANN001, ANN206 - sympy's hook signature
        if x is sp.nan:
            return sp.oo
        if x.is_Number:
            return x
        return None


class Quotient(sp.Function):
    """a / b kept unevaluated where b is a literal zero: sympy would raise or give `zoo`, while
    the kernel must do what IEEE floats do (+-inf, or NaN for 0/0), as the oracle does."""

    nargs = 2


def _divide(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    if b.is_Number and b.is_zero:
        return Quotient(a, b)
    return a / b


@dataclass(frozen=True)
class InputSymbol:
    """Where a free symbol of a block comes from."""

    array: str  # "kp" (keypoints), "sig" (signals) or "t" (the step index)
    slot: int  # input slot (kp, sig); unused for t
    axis: int  # 0..2 for kp; unused otherwise
    shift: int  # reads step max(t - shift, 0)


@dataclass(frozen=True)
class Block:
    """A straight-line computation: `temporaries` in order, then `outputs` (named)."""

    temporaries: tuple[tuple[sp.Symbol, sp.Expr], ...]
    outputs: tuple[tuple[str, sp.Basic], ...]

    def free_symbols(self) -> set[sp.Symbol]:
        defined = {sym for sym, _ in self.temporaries}
        found: set[sp.Symbol] = set()
        for _, value in self.temporaries:
            found |= value.free_symbols
        for _, value in self.outputs:
            found |= value.free_symbols
        return found - defined


@dataclass(frozen=True)
class StageSym:
    stage: ir.Stage
    step: Block  # outputs: ("until", truth)? then ("v_<name>", violation) per path constraint
    point: Block  # outputs: ("v_<name>", violation) per constraint, in declaration order
    raw_until: sp.Basic | None  # before CSE (for --emit sympy)
    raw_violations: tuple[sp.Expr, ...]


@dataclass(frozen=True)
class SymProgram:
    program: ir.Program
    stages: tuple[StageSym, ...]
    inputs: dict[str, InputSymbol]  # symbol name -> source


def _ident(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return re.sub(r"_+", "_", cleaned).strip("_") or "x"


class _Translator:
    def __init__(self, program: ir.Program):
        self.program = program
        self.inputs: dict[str, InputSymbol] = {}
        self.cache: dict[tuple[str, object, int], object] = {}

    def symbol(self, name: str, source: InputSymbol, **assumptions: bool) -> sp.Symbol:
        self.inputs[name] = source
        return sp.Symbol(name, **assumptions)

    def step_index(self, shift: int) -> sp.Symbol:
        name = "t" if shift == 0 else f"t_p{shift}"
        return self.symbol(name, InputSymbol("t", 0, 0, shift), integer=True, nonnegative=True)

    def keypoint(self, node: ir.KeypointInput, shift: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        base = f"kp{node.slot}_{_ident(node.source)}"
        suffix = f"_p{shift}" if shift else ""
        return tuple(  # type: ignore[return-value]
            self.symbol(f"{base}_{axis}{suffix}", InputSymbol("kp", node.slot, i, shift), real=True)
            for i, axis in enumerate("xyz")
        )

    def signal(self, node: ir.SignalInput, shift: int) -> sp.Symbol:
        suffix = f"_p{shift}" if shift else ""
        name = f"sig{node.slot}_{_ident(node.source)}{suffix}"
        return self.symbol(name, InputSymbol("sig", node.slot, 0, shift), real=True)

    # -- values

    def scalar(self, e: ir.Expr, shift: int) -> sp.Expr:
        key = ("s", e, shift)
        if key not in self.cache:
            self.cache[key] = self._scalar(e, shift)
        return self.cache[key]  # type: ignore[return-value]

    def vec(self, e: ir.Expr, shift: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        key = ("v", e, shift)
        if key not in self.cache:
            self.cache[key] = self._vec(e, shift)
        return self.cache[key]  # type: ignore[return-value]

    def _scalar(self, e: ir.Expr, shift: int) -> sp.Expr:
        if isinstance(e, ir.Const):
            return sp.Float(e.value)
        if isinstance(e, ir.StepIndex):
            return self.step_index(shift)
        if isinstance(e, ir.SignalInput):
            return self.signal(e, shift)
        if isinstance(e, ir.LetRef):
            return self.scalar(e.value, shift)
        if isinstance(e, ir.Component):
            return self.vec(e.base, shift)[e.axis]
        if isinstance(e, ir.Neg):
            return -self.scalar(e.operand, shift)
        if isinstance(e, ir.Delta):
            return self.scalar(e.operand, shift) - self.scalar(e.operand, shift + 1)
        if isinstance(e, ir.Arith):
            a, b = self.scalar(e.left, shift), self.scalar(e.right, shift)
            if e.op == "/":
                return _divide(a, b)
            return {"+": sp.Add, "-": lambda x, y: x - y, "*": sp.Mul}[e.op](a, b)
        if isinstance(e, ir.Call):
            return self.call(e, shift)
        raise TypeError(f"sym: {type(e).__name__} is not a scalar expression")

    def call(self, e: ir.Call, shift: int) -> sp.Expr:
        f = e.func
        if f in ("dist", "dist_xy", "dot"):
            a, b = (self.vec(arg, shift) for arg in e.args)
            if f == "dot":
                return sum((x * y for x, y in zip(a, b)), sp.Integer(0))
            axes = 3 if f == "dist" else 2
            return sp.sqrt(sum(((a[i] - b[i]) ** 2 for i in range(axes)), sp.Integer(0)))
        if f == "norm":
            v = self.vec(e.args[0], shift)
            return sp.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2)
        args = [self.scalar(a, shift) for a in e.args]
        if f == "abs":
            return sp.Abs(args[0])
        if f == "sqrt":
            return sp.sqrt(args[0])
        if f == "exp":
            return sp.exp(args[0])
        if f == "log":
            return sp.log(args[0])
        if f == "clamp":
            return sp.Min(sp.Max(args[0], args[1]), args[2])
        if f == "min":
            return sp.Min(*args)
        if f == "max":
            return sp.Max(*args)
        if f == "mean":
            return sp.Add(*args) / len(args)
        raise TypeError(f"sym: builtin {f}() does not return a scalar")

    def _vec(self, e: ir.Expr, shift: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
        if isinstance(e, ir.KeypointInput):
            return self.keypoint(e, shift)
        if isinstance(e, ir.LetRef):
            return self.vec(e.value, shift)
        if isinstance(e, ir.Neg):
            return tuple(-x for x in self.vec(e.operand, shift))  # type: ignore[return-value]
        if isinstance(e, ir.Delta):
            now, before = self.vec(e.operand, shift), self.vec(e.operand, shift + 1)
            return tuple(a - b for a, b in zip(now, before))  # type: ignore[return-value]
        if isinstance(e, ir.Arith):
            if e.op in "+-":
                a, b = self.vec(e.left, shift), self.vec(e.right, shift)
                sign = 1 if e.op == "+" else -1
                return tuple(x + sign * y for x, y in zip(a, b))  # type: ignore[return-value]
            if e.left.type == ir.VEC3:
                v, k = self.vec(e.left, shift), self.scalar(e.right, shift)
            else:
                v, k = self.vec(e.right, shift), self.scalar(e.left, shift)
            if e.op == "/":
                return tuple(_divide(x, k) for x in v)  # type: ignore[return-value]
            return tuple(x * k for x in v)  # type: ignore[return-value]
        if isinstance(e, ir.Call):
            if e.func == "vec":
                return tuple(self.scalar(a, shift) for a in e.args)  # type: ignore[return-value]
            if e.func == "cross":
                a, b = (self.vec(arg, shift) for arg in e.args)
                return (
                    a[1] * b[2] - a[2] * b[1],
                    a[2] * b[0] - a[0] * b[2],
                    a[0] * b[1] - a[1] * b[0],
                )
            if e.func == "mean":
                points = [self.vec(a, shift) for a in e.args]
                return tuple(  # type: ignore[return-value]
                    sp.Add(*(p[i] for p in points)) / len(points) for i in range(3)
                )
        raise TypeError(f"sym: {type(e).__name__} is not a vec3 expression")

    # -- booleans

    def truth(self, e: ir.Expr, shift: int) -> sp.Basic:
        if isinstance(e, ir.BoolConst):
            return sp.true if e.value else sp.false
        if isinstance(e, ir.LetRef):
            return self.truth(e.value, shift)
        if isinstance(e, ir.Not):
            return sp.Not(self.truth(e.operand, shift))
        if isinstance(e, ir.Logic):
            a, b = self.truth(e.left, shift), self.truth(e.right, shift)
            return sp.And(a, b) if e.op == "and" else sp.Or(a, b)
        if isinstance(e, ir.Compare):
            a, b = self.scalar(e.left, shift), self.scalar(e.right, shift)
            relation = {"<=": sp.Le, "<": sp.Lt, ">=": sp.Ge, ">": sp.Gt, "==": sp.Eq, "!=": sp.Ne}
            return relation[e.op](a, b)
        raise TypeError(f"sym: {type(e).__name__} is not a bool expression")

    def violation(self, e: ir.Expr, shift: int = 0) -> sp.Expr:
        if isinstance(e, ir.Compare):
            a, b = self.scalar(e.left, shift), self.scalar(e.right, shift)
            if e.op in ("<=", "<"):
                return sp.Max(sp.Integer(0), NanToInf(a - b))
            if e.op in (">=", ">"):
                return sp.Max(sp.Integer(0), NanToInf(b - a))
            if e.op == "==":
                return NanToInf(sp.Abs(a - b))
            return sp.Piecewise((sp.Integer(1), sp.Eq(a, b)), (sp.Integer(0), True))
        if isinstance(e, ir.Logic):
            a, b = self.violation(e.left, shift), self.violation(e.right, shift)
            return a + b if e.op == "and" else sp.Min(a, b)
        # `not p`, `true`, `false` and bool lets: 0 where it holds, else 1.
        return sp.Piecewise((sp.Integer(0), self.truth(e, shift)), (sp.Integer(1), True))


def _block(outputs: list[tuple[str, sp.Basic]], prefix: str) -> Block:
    if not outputs:
        return Block((), ())
    temporaries, reduced = sp.cse(
        [value for _, value in outputs], symbols=sp.numbered_symbols(prefix)
    )
    return Block(
        tuple((sym, value) for sym, value in temporaries),
        tuple((name, value) for (name, _), value in zip(outputs, reduced)),
    )


def to_sympy(program: ir.Program) -> SymProgram:
    """Translate every stage of `program` into CSE'd sympy blocks."""
    translator = _Translator(program)
    stages = []
    for stage in program.stages:
        until = translator.truth(stage.until, 0) if stage.until is not None else None
        violations = [translator.violation(c.expr) for c in stage.constraints]
        step_outputs: list[tuple[str, sp.Basic]] = []
        if until is not None:
            step_outputs.append(("until", until))
        step_outputs += [
            (f"v_{c.name}", v) for c, v in zip(stage.constraints, violations) if c.kind == "path"
        ]
        point_outputs = [(f"v_{c.name}", v) for c, v in zip(stage.constraints, violations)]
        stages.append(
            StageSym(
                stage=stage,
                step=_block(step_outputs, "c"),
                point=_block(point_outputs, "c"),
                raw_until=until,
                raw_violations=tuple(violations),
            )
        )
    return SymProgram(program, tuple(stages), dict(sorted(translator.inputs.items())))


def dump(sym_program: SymProgram) -> str:
    """The per-stage sympy expressions, before and after CSE (for `grapec compile --emit sympy`)."""
    lines = []
    for stage in sym_program.stages:
        lines.append(f"stage {stage.stage.name}")
        if stage.raw_until is not None:
            lines.append(f"  until: {stage.raw_until}")
        for c, v in zip(stage.stage.constraints, stage.raw_violations):
            lines.append(f"  {c.kind} {c.name}: v = {v}")
        for label, block in (("step", stage.step), ("point", stage.point)):
            lines.append(f"  -- {label} block after CSE")
            for sym, value in block.temporaries:
                lines.append(f"    {sym} = {value}")
            for name, value in block.outputs:
                lines.append(f"    {name} = {value}")
    return "\n".join(lines)
