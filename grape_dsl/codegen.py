"""sympy blocks -> the source text of a Numba module that scores a whole batch.

The generated module is meant to be read: one function, `score_kernel`, makes one pass over
each trajectory's steps. A stage cursor walks t forward; each stage evaluates its `step` block
(the `until` truth and every path violation) at each of its steps, accumulating, until `until`
holds; then its `point` block (every violation at the stage's last step, or at L-1 when the
stage is unreached) gives the subgoal costs. Every constraint appears under a comment quoting
it, and its violation is the local `v_<name>`. One function rather than one per stage keeps
cold compiles short (numba's cost is mostly per function).

Parallelism: the kernel scores a range of trajectories with the GIL released (`nogil=True`)
and the runtime runs disjoint ranges on a thread pool. `parallel=True` with `prange` would do
the same, but measured here it adds 5-8 s to every cold compile (the parfor passes and gufunc
wrapper), against ~3 s for the whole serial kernel.

Output is deterministic for a given program, so the cache key can be the program's content.
"""

from __future__ import annotations

import sys

import numba
import numpy as np
import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from grape_dsl.ir import COMPILER_VERSION
from grape_dsl.ir import lower as ir
from grape_dsl.ir.sym import Block, InputSymbol, NanToInf, StageSym, SymProgram


# No fast-math: even without `nnan`/`ninf`, the flag set {arcp, contract, nsz, reassoc} lets
# LLVM fold `math.isfinite(a + b)` to True for a NaN input (numba 0.68.1), which would break
# the non-finite rules of grape_dsl/score.py; and this scalar, branchy per-step code does not
# vectorize, so fast-math bought nothing measurable here.

KERNEL_ARGS = (
    "kp, sig, lengths, ki, si, bounds, reached, constraint_costs, stage_costs, r_ext, first_bad, "
    "lo, hi"
)

HELPERS = {
    "_nan_to_inf": (
        "@njit(cache=True, error_model='numpy')\n"
        "def _nan_to_inf(x):\n"
        '    """x, or +inf where x is NaN: a NaN comparison counts as infinitely violated."""\n'
        "    return math.inf if math.isnan(x) else x\n"
    ),
}


class KernelPrinter(PythonCodePrinter):
    """Prints sympy as Numba-friendly Python and records which helpers the code used."""

    def __init__(self) -> None:
        super().__init__({"fully_qualified_modules": True, "standard": "python3"})
        self.helpers_used: set[str] = set()

    def _print_NanToInf(self, expr: NanToInf) -> str:
        self.helpers_used.add("_nan_to_inf")
        return f"_nan_to_inf({self._print(expr.args[0])})"

    def _print_Quotient(self, expr: sp.Basic) -> str:
        a, b = (self.parenthesize(arg, 1000) for arg in expr.args)
        return f"({a} / {b})"

    def _print_Float(self, expr: sp.Float) -> str:
        return repr(float(expr))

    def _print_Integer(self, expr: sp.Integer) -> str:
        return repr(float(int(expr)))

    def _print_Rational(self, expr: sp.Rational) -> str:
        return repr(float(expr))

    def _print_Half(self, expr: sp.Rational) -> str:
        return "0.5"

    def _print_Infinity(self, expr: sp.Basic) -> str:
        return "math.inf"

    def _print_NegativeInfinity(self, expr: sp.Basic) -> str:
        return "(-math.inf)"

    def _print_ComplexInfinity(self, expr: sp.Basic) -> str:
        return "math.inf"

    def _print_NaN(self, expr: sp.Basic) -> str:
        return "math.nan"

    def _print_Pow(self, expr: sp.Pow, rational: bool = False) -> str:
        base, exponent = expr.args
        # Small integer powers as products: exact, and cheaper than a pow() call.
        if exponent in (2, 3) and (base.is_Symbol or base.is_Atom):
            name = self._print(base)
            return "(" + "*".join([name] * int(exponent)) + ")"
        if exponent == -1:
            return f"(1.0/{self.parenthesize(base, 1000)})"
        if exponent.is_Integer:
            return f"{self.parenthesize(base, 1000)}**{int(exponent)}"
        return super()._print_Pow(expr, rational=rational)

    def _print_min_max(self, expr: sp.Basic, func: str) -> str:
        # Nested pairs: Numba's builtin min/max are fastest and best supported with two args.
        args = [self._print(a) for a in expr.args]
        text = args[0]
        for arg in args[1:]:
            text = f"{func}({text}, {arg})"
        return text

    def _print_Max(self, expr: sp.Basic) -> str:
        return self._print_min_max(expr, "max")

    def _print_Min(self, expr: sp.Basic) -> str:
        return self._print_min_max(expr, "min")


def _header(program: ir.Program, source_name: str) -> list[str]:
    return [
        f'"""GRAPE-DSL cost kernels for task `{program.task_name}` (generated; do not edit).',
        "",
        f"source: {source_name}",
        f"source hash: {program.source_hash or '-'}",
        f"compiler: grape_dsl.codegen {COMPILER_VERSION}; numba {numba.__version__}; "
        f"numpy {np.__version__}; python {sys.version_info.major}.{sys.version_info.minor}",
        "",
        "score_kernel(...) fills, for each trajectory n: bounds[n, stage] = (first, last step) or",
        "(-1, -1) if unreached, reached[n, stage], constraint_costs[n, constraint],",
        "stage_costs[n, stage], r_ext[n] = exp(-sum of stage costs), and first_bad[n], a step at",
        "which a value read was NaN or inf (-1 if none).",
        '"""',
        "",
        "import math",
        "",
        "from numba import njit",
        "",
        f"KEYPOINT_SOURCES = {tuple(program.keypoint_sources)!r}",
        f"SIGNAL_SOURCES = {tuple(program.signal_sources)!r}",
        f"STAGE_NAMES = {program.stage_names!r}",
        f"CONSTRAINT_NAMES = {program.constraint_names!r}",
        f"CONSTRAINT_TAGS = {program.constraint_tags!r}",
        f"UNREACHED_PENALTY = {program.unreached!r}",
    ]


def _load_line(indent: str, name: str, source: InputSymbol, program: ir.Program, step: str) -> str:
    index = step if source.shift == 0 else f"{step}_p{source.shift}"
    if source.array == "kp":
        where = f"{program.keypoint_sources[source.slot]}.{'xyz'[source.axis]}"
        read = f"float(kp[n, {index}, ki[{source.slot}], {source.axis}])"
    else:
        where = program.signal_sources[source.slot]
        read = f"float(sig[n, {index}, si[{source.slot}]])"
    back = f" at {step}-{source.shift}" if source.shift else ""
    return f"{indent}{name} = {read}  # {where}{back}"


def _block_lines(
    indent: str, block: Block, temp_prefix: str, step: str, sym: SymProgram,
    printer: KernelPrinter, comments: dict[str, str],
) -> list[str]:
    """Straight-line code computing `block` at step `step` of trajectory n.

    Inputs are loaded into locals named after their source; CSE temporaries get a prefix per
    block, so each keeps one type across the kernel.
    """
    used = block.free_symbols()
    rename: dict[sp.Symbol, sp.Symbol] = {}
    for symbol in used:
        source = sym.inputs[symbol.name]
        if source.array == "t":
            rename[symbol] = sp.Symbol(step if source.shift == 0 else f"{step}_p{source.shift}")
    for temp, _ in block.temporaries:
        rename[temp] = sp.Symbol(f"{temp_prefix}{temp.name[1:]}")
    lines = []
    for shift in sorted({sym.inputs[s.name].shift for s in used if sym.inputs[s.name].shift > 0}):
        lines.append(f"{indent}{step}_p{shift} = max({step} - {shift}, 0)  # delta: 0 at step 0")
    loaded = [name for name in sorted(s.name for s in used) if sym.inputs[name].array != "t"]
    for name in loaded:
        lines.append(_load_line(indent, name, sym.inputs[name], sym.program, step))
    if loaded:
        # One test of a float64 sum flags any NaN/inf among the values read (float32 inputs
        # cannot overflow it; score.first_nonfinite_step confirms each flag exactly).
        total = " + ".join(loaded)
        lines += [
            f"{indent}if bad < 0 and not math.isfinite({total}):",
            f"{indent}    bad = {step}",
        ]
    for temp, value in block.temporaries:
        lines.append(f"{indent}{rename[temp]} = {printer.doprint(value.xreplace(rename))}")
    for out_name, value in block.outputs:
        if out_name in comments:
            lines.append(f"{indent}# {comments[out_name]}")
        lines.append(f"{indent}{out_name} = {printer.doprint(value.xreplace(rename))}")
    return lines


def _cost(c: ir.Constraint, value: str) -> str:
    if c.weight == 0:
        # weight 0 switches a constraint off, even where its violation is infinite.
        return "0.0"
    excess = f"max(0.0, {value} - {c.tol!r})" if c.tol else f"max(0.0, {value})"
    return excess if c.weight == 1 else f"{c.weight!r} * {excess}"


def _stage_lines(
    index: int, stage_sym: StageSym, first_constraint: int, sym: SymProgram,
    printer: KernelPrinter,
) -> list[str]:
    stage = stage_sym.stage
    path = [c for c in stage.constraints if c.kind == "path"]
    comments = {f"v_{c.name}": c.text for c in stage.constraints}
    if stage.until_text is not None:
        comments["until"] = f"until {stage.until_text}"
    i8, i12, i16, i20 = (" " * k for k in (8, 12, 16, 20))
    until = f" until {stage.until_text}" if stage.until_text else " (runs to the last step)"
    out = [
        f"{i8}# {'=' * 68}",
        f"{i8}# stage {index} '{stage.name}'{until}",
        f"{i8}stage_reached = alive",
        f"{i8}start = t",
        f"{i8}end = L - 1",
    ]
    if stage.until is not None:
        out.append(f"{i8}ended = False")
    out += [f"{i8}acc_{c.name} = 0.0  # over {c.over}" for c in path]
    out.append(f"{i8}if stage_reached:")
    if stage_sym.step.outputs:
        out.append(f"{i12}while t < L:")
        out += _block_lines(i16, stage_sym.step, f"s{index}_c", "t", sym, printer, comments)
        for c in path:
            if c.over == "max":
                out.append(f"{i16}acc_{c.name} = max(acc_{c.name}, v_{c.name})")
            else:
                out.append(f"{i16}acc_{c.name} += v_{c.name}")
        if stage.until is not None:
            out += [f"{i16}if until:", f"{i20}ended = True", f"{i20}break"]
        out.append(f"{i16}t += 1")
    if stage.until is not None:
        out.append(f"{i12}end = t if ended else L - 1")
    out += [
        f"{i12}t = end + 1",
        f"{i12}bounds[n, {index}, 0] = start",
        f"{i12}bounds[n, {index}, 1] = end",
        f"{i12}reached[n, {index}] = True",
        f"{i12}pt = end",
        f"{i8}else:",
        f"{i12}bounds[n, {index}, 0] = -1",
        f"{i12}bounds[n, {index}, 1] = -1",
        f"{i12}reached[n, {index}] = False",
        f"{i12}pt = L - 1  # unreached: every constraint as if the stage were the single step L-1",
    ]
    if stage_sym.point.outputs:
        out.append(f"{i8}# every constraint's violation at step pt")
        out += _block_lines(i8, stage_sym.point, f"s{index}_p", "pt", sym, printer, comments)
    out.append(f"{i8}stage_cost = 0.0 if stage_reached else UNREACHED_PENALTY")
    for j, c in enumerate(stage.constraints):
        if c.kind == "subgoal":
            value = f"v_{c.name}"
        elif c.over == "mean":
            value = f"(acc_{c.name} / (end - start + 1) if stage_reached else v_{c.name})"
        else:
            value = f"(acc_{c.name} if stage_reached else v_{c.name})"
        out += [
            f"{i8}# {c.text}",
            f"{i8}cost = {_cost(c, value)}",
            f"{i8}constraint_costs[n, {first_constraint + j}] = cost",
            f"{i8}stage_cost += cost",
        ]
    out += [f"{i8}stage_costs[n, {index}] = stage_cost", f"{i8}total += stage_cost"]
    if stage.until is not None:
        out.append(f"{i8}alive = stage_reached and ended and t < L")
    else:
        out.append(f"{i8}alive = False")
    return out + [""]


def generate(sym: SymProgram, source_name: str | None = None) -> str:
    """The full source of the kernel module for `sym` (deterministic)."""
    printer = KernelPrinter()
    kernel = [
        "@njit(nogil=True, cache=True, error_model='numpy')",
        f"def score_kernel({KERNEL_ARGS}):",
        '    """Score trajectories lo..hi-1 (threads run disjoint ranges; nogil releases the GIL)."""',
        "    for n in range(lo, hi):",
        "        L = lengths[n]",
        "        t = 0  # the stage cursor walks t forward once; each step belongs to one stage",
        "        alive = True  # whether the current stage is reached",
        "        bad = -1",
        "        total = 0.0",
        "",
    ]
    first = 0
    for index, stage_sym in enumerate(sym.stages):
        kernel += _stage_lines(index, stage_sym, first, sym, printer)
        first += len(stage_sym.stage.constraints)
    kernel += ["        r_ext[n] = math.exp(-total)", "        first_bad[n] = bad", ""]
    lines = _header(sym.program, source_name or sym.program.path) + ["", ""]
    for helper in sorted(printer.helpers_used):
        lines += [HELPERS[helper], ""]
    return "\n".join(lines + kernel)


def generate_program(program: ir.Program, source_name: str | None = None) -> str:
    """Lower-level convenience: IR program -> module source (runs the sympy pass)."""
    from grape_dsl.ir.sym import to_sympy

    return generate(to_sympy(program), source_name)
