"""The reference evaluator: docs/language.md's semantics read off literally, one trajectory and
one step at a time, walking the checked AST with numpy. Slow and obviously correct; the
compiled kernels are tested against it.

It shares no code with the compiler past the AST (no lowering, no sympy), so a bug in either
pipeline shows up as a disagreement.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from grape_dsl import ast
from grape_dsl.batch import TrajectoryBatch
from grape_dsl.builtins import STEP_INDEX_NAME
from grape_dsl.score import ScoreTable

DEFAULT_UNREACHED = 1.0


class _Trajectory:
    """Evaluates expressions of one task on one trajectory; values are memoised per step."""

    def __init__(self, task: ast.TaskFile, keypoints: dict[str, np.ndarray], signals: dict[str, np.ndarray]):
        self.params = {p.name: float(p.value) for p in task.params}
        self.keypoint_decls = {k.name: k for k in task.keypoints}
        self.signal_decls = {s.name: s for s in task.signals}
        self.lets = {let.name: let.value for let in task.lets}
        self.keypoints = keypoints  # source -> float64 [L, 3]
        self.signals = signals  # source -> float64 [L]
        self.memo: dict[tuple[Any, int], Any] = {}

    # -- values

    def value(self, e: ast.Expr, t: int) -> Any:
        key = (e, t)
        if key not in self.memo:
            self.memo[key] = self._value(e, t)
        return self.memo[key]

    def _value(self, e: ast.Expr, t: int) -> Any:
        if isinstance(e, ast.Number):
            return np.float64(e.value)
        if isinstance(e, ast.Bool):
            return bool(e.value)
        if isinstance(e, ast.Name):
            return self.name(e.ident, t)
        if isinstance(e, ast.Component):
            return self.value(e.base, t)["xyz".index(e.axis)]
        if isinstance(e, ast.Neg):
            return -self.value(e.operand, t)
        if isinstance(e, ast.Not):
            return not self.value(e.operand, t)
        if isinstance(e, ast.Binary):
            a, b = self.value(e.left, t), self.value(e.right, t)
            with np.errstate(all="ignore"):
                return {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide}[e.op](a, b)
        if isinstance(e, ast.Compare):
            a, b = self.value(e.left, t), self.value(e.right, t)
            return {
                "<=": a <= b,
                "<": a < b,
                ">=": a >= b,
                ">": a > b,
                "==": a == b,
                "!=": a != b,
            }[e.op]
        if isinstance(e, ast.BoolOp):
            a, b = self.value(e.left, t), self.value(e.right, t)
            return (a and b) if e.op == "and" else (a or b)
        if isinstance(e, ast.Call):
            return self.call(e, t)
        raise TypeError(f"oracle: unknown node {type(e).__name__}")

    def name(self, ident: str, t: int) -> Any:
        if ident == STEP_INDEX_NAME:
            return np.float64(t)
        if ident in self.params:
            return np.float64(self.params[ident])
        if ident in self.signal_decls:
            return np.float64(self.signals[self.signal_decls[ident].source.dotted][t])
        if ident in self.keypoint_decls:
            decl = self.keypoint_decls[ident]
            point = self.keypoints[decl.source.dotted][t]
            if decl.offset is None:
                return point
            offset = self.value(decl.offset, t)
            return point + offset if (decl.offset_op or "+") == "+" else point - offset
        if ident in self.lets:
            return self.value(self.lets[ident], t)
        raise KeyError(f"oracle: unknown name {ident!r}")

    def call(self, e: ast.Call, t: int) -> Any:
        f = e.func
        if f == "delta":
            now = self.value(e.args[0], t)
            if t == 0:
                return np.zeros(3) if isinstance(now, np.ndarray) else np.float64(0.0)
            before = self.value(e.args[0], t - 1)
            with np.errstate(all="ignore"):
                return now - before
        args = [self.value(a, t) for a in e.args]
        with np.errstate(all="ignore"):
            if f == "vec":
                return np.array([float(a) for a in args])
            if f == "dist":
                return np.sqrt(np.sum((args[0] - args[1]) ** 2))
            if f == "dist_xy":
                return np.sqrt(np.sum((args[0][:2] - args[1][:2]) ** 2))
            if f == "norm":
                return np.sqrt(np.sum(args[0] ** 2))
            if f == "dot":  # left to right, as written (BLAS may reorder or fuse)
                a, b = args
                return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
            if f == "cross":
                return np.cross(args[0], args[1])
            if f == "abs":
                return np.abs(args[0])
            if f == "sqrt":
                return np.sqrt(args[0])
            if f == "exp":
                return np.exp(args[0])
            if f == "log":
                return np.log(args[0])
            if f == "clamp":
                x, lo, hi = args
                return min(max(x, lo), hi)
            if f == "min":
                return min(args)
            if f == "max":
                return max(args)
            if f == "mean":
                return sum(args[1:], args[0]) / len(args)
        raise KeyError(f"oracle: unknown builtin {f}()")

    # -- violations (docs/language.md, "Violation")

    def violation(self, e: ast.Expr, t: int) -> float:
        if isinstance(e, ast.Compare):
            a, b = self.value(e.left, t), self.value(e.right, t)
            if e.op == "!=":
                return 1.0 if a == b else 0.0
            with np.errstate(all="ignore"):
                if e.op == "==":
                    d = abs(a - b)
                elif e.op in ("<=", "<"):
                    d = a - b
                else:
                    d = b - a
            d = math.inf if math.isnan(d) else float(d)
            return d if e.op == "==" else max(0.0, d)
        if isinstance(e, ast.BoolOp):
            a, b = self.violation(e.left, t), self.violation(e.right, t)
            return a + b if e.op == "and" else min(a, b)
        return 0.0 if self.value(e, t) else 1.0


def _number(task_eval: _Trajectory, e: ast.Expr | None, default: float) -> float:
    return default if e is None else float(task_eval.value(e, 0))


def _constraint_cost(c: ast.Constraint, traj: _Trajectory, steps: list[int]) -> float:
    tol = _number(traj, c.tol, 0.0)
    weight = _number(traj, c.weight, 1.0)
    if weight == 0:
        return 0.0
    if c.kind == "subgoal":
        agg = traj.violation(c.expr, steps[-1])
    else:
        values = [traj.violation(c.expr, t) for t in steps]
        over = c.over or "mean"
        agg = sum(values) if over == "sum" else max(values) if over == "max" else sum(values) / len(values)
    return weight * max(0.0, agg - tol)


def score(task: ast.TaskFile, batch: TrajectoryBatch) -> ScoreTable:
    """Score `batch` under the concrete task `task` (objectives applied), slowly and plainly."""
    stages = task.stages
    constraint_names = tuple(f"{s.name}.{c.name}" for s in stages for c in s.constraints)
    tags = tuple(c.tag or "task" for s in stages for c in s.constraints)
    unreached = task.unreached.value if task.unreached is not None else DEFAULT_UNREACHED
    n = len(batch.lengths)
    bounds = np.full((n, len(stages), 2), -1, dtype=np.int64)
    reached = np.zeros((n, len(stages)), dtype=bool)
    constraint_costs = np.zeros((n, len(constraint_names)))
    stage_costs = np.zeros((n, len(stages)))
    r_ext = np.zeros(n)
    kp_col = {name: i for i, name in enumerate(batch.keypoint_names)}
    sig_col = {name: i for i, name in enumerate(batch.signal_names)}
    for i in range(n):
        length = int(batch.lengths[i])
        keypoints = {
            k.source.dotted: batch.keypoints[i, :length, kp_col[k.source.dotted]].astype(np.float64)
            for k in task.keypoints
        }
        signals = {
            s.source.dotted: batch.signals[i, :length, sig_col[s.source.dotted]].astype(np.float64)
            for s in task.signals
        }
        traj = _Trajectory(task, keypoints, signals)
        start = 0
        column = 0
        for s, stage in enumerate(stages):
            if start < length:  # reached: runs to the first step where `until` holds, else L-1
                end = length - 1
                if stage.until is not None:
                    end = next((t for t in range(start, length) if traj.value(stage.until, t)), None)
                steps = list(range(start, (end if end is not None else length - 1) + 1))
                bounds[i, s] = (start, steps[-1])
                reached[i, s] = True
                cost = 0.0
                # a stage whose `until` never holds leaves every later stage unreached
                start = steps[-1] + 1 if end is not None else length
            else:  # unreached: each constraint as if the stage were the single step L-1
                steps = [length - 1]
                cost = unreached
            for c in stage.constraints:
                c_cost = _constraint_cost(c, traj, steps)
                constraint_costs[i, column] = c_cost
                cost += c_cost
                column += 1
            stage_costs[i, s] = cost
        r_ext[i] = math.exp(-stage_costs[i].sum())
    return ScoreTable(
        task_name=task.name,
        stage_names=tuple(s.name for s in stages),
        constraint_names=constraint_names,
        tags=tags,
        stage_bounds=bounds,
        reached=reached,
        constraint_costs=constraint_costs,
        stage_costs=stage_costs,
        r_ext=r_ext,
    )
