"""Straight-line blocks (grape_dsl/ir/blocks.py) -> the source text of a Numba module that scores a whole batch.

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

import math
import sys

import numba
import numpy as np

from grape_dsl.diagnostics import Diagnostic, GrcError
from grape_dsl.ir import COMPILER_VERSION
from grape_dsl.ir import lower as ir
from grape_dsl.ir.blocks import BUDGET_CODE, Block, BlockProgram, StageBlocks, Value, to_blocks

# No fast-math: the kernels must do exactly what IEEE float64 does (docs/language.md,
# "Precision"); reassociation or `nnan`/`ninf` would change results, and this scalar, branchy
# per-step code does not vectorize, so fast-math bought nothing measurable here.

KERNEL_ARGS = "kp, sig, lengths, ki, si, first, bounds, reached, constraint_costs, stage_costs, r_ext, lo, hi"

# Generated source beyond this many characters is refused (GRC402) before numba sees it; the
# operation limits of grape_dsl/ir/blocks.py keep every program well below it.
MAX_KERNEL_SOURCE_CHARS = 2_000_000

_BINARY = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "eq": "==",
    "ne": "!=",
    "and": "and",
    "or": "or",
}


HELPERS = """\
@njit(cache=True, error_model='numpy')
def _min(a, b):
    \"\"\"Python's min(a, b): a unless b is strictly smaller (so a NaN `a` stays).\"\"\"
    return b if b < a else a


@njit(cache=True, error_model='numpy')
def _max(a, b):
    \"\"\"Python's max(a, b): a unless b is strictly larger.\"\"\"
    return b if b > a else a


@njit(cache=True, error_model='numpy')
def _nan_inf(x):
    \"\"\"x, or +inf where x is NaN: a NaN comparison counts as infinitely violated.\"\"\"
    return math.inf if math.isnan(x) else x


@njit(cache=True, error_model='numpy')
def _pos(x):
    \"\"\"max(0, x) as Python computes it.\"\"\"
    return x if x > 0.0 else 0.0


@njit(cache=True, error_model='numpy')
def _select(condition, a, b):
    return a if condition else b


@njit(cache=True, error_model='numpy')
def _all_finite(row, count):
    \"\"\"Whether row[:count] is all finite. A count, not a branch, per value, so LLVM can
    vectorize the loop (the order of integer adds does not matter, unlike float ones).\"\"\"
    bad = 0
    for i in range(count):
        bad += not (abs(row[i]) < math.inf)
    return bad == 0


@njit(cache=True, error_model='numpy')
def _first_nonfinite(kp, sig, n, L, ki, si):
    \"\"\"The first step t < L at which a bound value of trajectory n is NaN or +-inf, else -1.\"\"\"
    for t in range(L):
        for k in ki:
            for axis in range(3):
                if not math.isfinite(kp[n, t, k, axis]):
                    return t
        for c in si:
            if not math.isfinite(sig[n, t, c]):
                return t
    return -1
"""


def _number(x: float) -> str:
    if math.isnan(x):
        return "math.nan"
    if math.isinf(x):
        return "math.inf" if x > 0 else "(-math.inf)"
    return repr(float(x))


def _expression(value: Value, arg: list[str], step: str, program: ir.Program) -> str:
    """One operation as Python/Numba source; `arg` are the operands' local names."""
    op = value.op
    if op == "const":
        return _number(value.number)  # type: ignore[arg-type]
    if op == "bool":
        return repr(bool(value.flag))
    if op == "load":
        src = value.source
        assert src is not None
        index = step if src.shift == 0 else f"{step}_p{src.shift}"
        if src.array == "kp":
            # float64(...): float32 inputs are widened, so every operation is a float64 one
            # (numba's float() keeps a float32 a float32)
            return f"float64(kp[n, {index}, ki[{src.slot}], {src.axis}])"
        if src.array == "sig":
            return f"float64(sig[n, {index}, si[{src.slot}]])"
        return f"float64({index})"
    if op == "started":
        return f"{step} > {value.shift}"
    if op in _BINARY:
        return f"{arg[0]} {_BINARY[op]} {arg[1]}"
    if op == "neg":
        return f"-{arg[0]}"
    if op == "not":
        return f"not {arg[0]}"
    if op == "abs":
        return f"abs({arg[0]})"
    if op in ("sqrt", "exp", "log"):
        return f"math.{op}({arg[0]})"
    # Branching operations call small helpers: a conditional expression inline would give numba
    # basic blocks per operation, and its compile time grows faster than linearly in them
    # (a 1,800-operation kernel took minutes); LLVM inlines the helpers again.
    if op in ("min", "max", "nan_inf", "pos", "select"):
        return f"_{op}({', '.join(arg)})"
    raise ValueError(f"codegen: unknown operation {op}")


def _load_comment(value: Value, program: ir.Program, step: str) -> str:
    src = value.source
    assert src is not None
    back = f" at {step}-{src.shift}" if src.shift else ""
    if src.array == "kp":
        return f"  # {program.keypoint_sources[src.slot]}.{'xyz'[src.axis]}{back}"
    if src.array == "sig":
        return f"  # {program.signal_sources[src.slot]}{back}"
    return ""


def _header(program: ir.Program, source_name: str) -> list[str]:
    return [
        f'"""GRAPE-DSL cost kernels for task `{program.task_name}` (generated; do not edit).',
        "",
        f"source: {source_name}",
        f"source hash: {program.source_hash or '-'}",
        f"compiler: grape_dsl.codegen {COMPILER_VERSION}; numba {numba.__version__}; "
        f"numpy {np.__version__}; python {sys.version_info.major}.{sys.version_info.minor}",
        "",
        "score_kernel(...) fills, for each trajectory n: first[n] = the first step at which a bound",
        "input is NaN or +-inf (-1 if none; such a trajectory is not scored, the runtime reports it",
        "or scores it as worst), and otherwise bounds[n, stage] = (first, last step) or (-1, -1) if",
        "unreached, reached[n, stage], constraint_costs[n, constraint], stage_costs[n, stage] and",
        "r_ext[n] = exp(-sum of stage costs). Every operation is one IEEE float64 operation, as the",
        "language reference defines it (no algebraic rewriting).",
        '"""',
        "",
        "import math",
        "",
        "from numba import njit",
        "from numpy import float64",
        "",
        f"KEYPOINT_SOURCES = {tuple(program.keypoint_sources)!r}",
        f"SIGNAL_SOURCES = {tuple(program.signal_sources)!r}",
        f"STAGE_NAMES = {program.stage_names!r}",
        f"CONSTRAINT_NAMES = {program.constraint_names!r}",
        f"CONSTRAINT_TAGS = {program.constraint_tags!r}",
        f"UNREACHED_PENALTY = {program.unreached!r}",
    ]


def _block_lines(
    indent: str,
    block: Block,
    prefix: str,
    step: str,
    program: ir.Program,
    comments: dict[str, str],
) -> list[str]:
    """Straight-line code computing `block` at step `step` of trajectory n: one local per
    operation (named with a per-block prefix, so each keeps one type across the kernel)."""
    lines = [
        f"{indent}{step}_p{shift} = max({step} - {shift}, 0)  # an earlier step, clamped at 0"
        for shift in block.shifts()
    ]
    names = [f"{prefix}{i}" for i in range(len(block.values))]
    for i, value in enumerate(block.values):
        code = _expression(value, [names[a] for a in value.args], step, program)
        note = _load_comment(value, program, step) if value.op == "load" else ""
        lines.append(f"{indent}{names[i]} = {code}{note}")
    for out_name, index in block.outputs:
        if out_name in comments:
            lines.append(f"{indent}# {comments[out_name]}")
        lines.append(f"{indent}{out_name} = {names[index]}")
    return lines


def _cost(c: ir.Constraint, value: str) -> str:
    if c.weight == 0:
        # weight 0 switches a constraint off, even where its violation is infinite.
        return "0.0"
    excess = f"max(0.0, {value} - {c.tol!r})" if c.tol else f"max(0.0, {value})"
    return excess if c.weight == 1 else f"{c.weight!r} * {excess}"


def _stage_lines(index: int, stage_blocks: StageBlocks, first_constraint: int, program: ir.Program) -> list[str]:
    stage = stage_blocks.stage
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
    if stage_blocks.step.outputs:
        out.append(f"{i12}while t < L:")
        out += _block_lines(i16, stage_blocks.step, f"s{index}_c", "t", program, comments)
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
    if stage_blocks.point.outputs:
        out.append(f"{i8}# every constraint's violation at step pt")
        out += _block_lines(i8, stage_blocks.point, f"s{index}_p", "pt", program, comments)
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


def generate(blocks: BlockProgram, source_name: str | None = None) -> str:
    """The full source of the kernel module for `blocks` (deterministic); GrcError GRC402 if it
    would exceed MAX_KERNEL_SOURCE_CHARS, naming the stage where it does."""
    program = blocks.program
    kernel = [
        "@njit(nogil=True, cache=True, error_model='numpy')",
        f"def score_kernel({KERNEL_ARGS}):",
        '    """Score trajectories lo..hi-1 (threads run disjoint ranges; nogil releases the GIL)."""',
        "    # Bound inputs must be finite at every valid step, read or not (docs/language.md).",
        "    # Each trajectory's steps are checked just before it is scored, so the scoring reads",
        "    # them from cache. When the bound columns are at least half the batch's, a whole",
        "    # trajectory is checked as one contiguous run (vectorized); only a trajectory with a",
        "    # non-finite value somewhere (or a batch of mostly unbound columns) is checked column",
        "    # by column.",
        "    kp_width = kp.shape[2] * 3",
        "    sig_width = sig.shape[2]",
        "    kp_rows = kp.reshape((kp.shape[0], kp.shape[1] * kp_width))",
        "    sig_rows = sig.reshape((sig.shape[0], sig.shape[1] * sig_width))",
        "    whole_rows = 2 * (3 * ki.shape[0] + si.shape[0]) >= kp_width + sig_width",
        "    for n in range(lo, hi):",
        "        L = lengths[n]",
        "        first[n] = -1",
        "        if not (whole_rows and _all_finite(kp_rows[n], L * kp_width)",
        "                and _all_finite(sig_rows[n], L * sig_width)):",
        "            first[n] = _first_nonfinite(kp, sig, n, L, ki, si)",
        "            if first[n] >= 0:",
        "                continue",
        "        t = 0  # the stage cursor walks t forward once; each step belongs to one stage",
        "        alive = True  # whether the current stage is reached",
        "        total = 0.0",
        "",
    ]
    first = 0
    size = 0
    for index, stage_blocks in enumerate(blocks.stages):
        lines = _stage_lines(index, stage_blocks, first, program)
        size += sum(len(line) + 1 for line in lines)
        if size > MAX_KERNEL_SOURCE_CHARS:
            raise GrcError(
                [
                    Diagnostic(
                        BUDGET_CODE,
                        "error",
                        f"program too large to compile: its kernel source passes the limit of "
                        f"{MAX_KERNEL_SOURCE_CHARS:,} characters at stage '{stage_blocks.stage.name}'",
                        program.path,
                        stage_blocks.stage.span,
                        hint="share work through lets, or split the task into simpler constraints",
                    )
                ]
            )
        kernel += lines
        first += len(stage_blocks.stage.constraints)
    kernel += ["        r_ext[n] = math.exp(-total)", ""]
    lines = _header(program, source_name or program.path) + ["", "", HELPERS, ""]
    return "\n".join(lines + kernel)


def generate_program(program: ir.Program, source_name: str | None = None) -> str:
    """IR program -> module source (runs the block pass; GrcError GRC402 over a budget)."""
    return generate(to_blocks(program), source_name)
