"""Compiled kernels against the oracle and against hand-computed semantics; the compile cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grape_dsl import ast, oracle
from grape_dsl.api import load_task
from grape_dsl.batch import TrajectoryBatch
from grape_dsl.compiler import compile_checked, compile_task
from grape_dsl.ir.lower import lower_task
from grape_dsl.llm import builtin_schema
from grape_dsl.parser import parse
from grape_dsl.runtime.kernels import CompiledProgram, load_program
from grape_dsl.score import BatchError, ScoreTable, first_nonfinite_steps, prepare_batch

ROOT = Path(__file__).resolve().parents[2]
STOCK = ROOT / "constraints"
KEYPOINTS = [
    "gripper.tip",
    "object.center",
    "object.top",
    "object.bottom",
    "container.center",
    "container.top",
    "obstacle.center",
    "obstacle.top",
    "target.center",
    "base.center",
    "base.top",
]
SIGNALS = list(builtin_schema("pick_place").signals)  # every built-in task reports the same signals


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-cache")


def assert_tables_match(got: ScoreTable, want: ScoreTable) -> None:
    assert got.constraint_names == want.constraint_names
    assert got.stage_names == want.stage_names
    assert got.tags == want.tags
    np.testing.assert_array_equal(got.stage_bounds, want.stage_bounds)
    np.testing.assert_array_equal(got.reached, want.reached)
    np.testing.assert_allclose(got.constraint_costs, want.constraint_costs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got.stage_costs, want.stage_costs, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got.r_ext, want.r_ext, rtol=1e-5, atol=1e-12)


def random_batch(rng: np.random.Generator, n: int, t_max: int, scale: float = 0.1) -> TrajectoryBatch:
    """Scene-like values, ragged lengths (1 included), NaN padding that must never be read."""
    keypoints = (rng.normal(size=(n, t_max, len(KEYPOINTS), 3)) * scale).astype(np.float32)
    signals = rng.random((n, t_max, len(SIGNALS))).astype(np.float32)
    signals[:, :, 1:5] = signals[:, :, 1:5] > 0.6  # grasped and contacts are 0/1
    lengths = rng.integers(1, t_max + 1, size=n)
    lengths[0] = 1
    lengths[-1] = t_max
    for i, length in enumerate(lengths):
        keypoints[i, length:] = np.nan
        signals[i, length:] = np.nan
    return TrajectoryBatch(keypoints, list(KEYPOINTS), signals, list(SIGNALS), lengths)


# ---------------------------------------------------------------------------- stock files

STOCK_CASES = [
    ("pick_place.grc", "task_completion.grc"),
    ("pick_place_obstacle.grc", "safety.grc"),
    ("push_to_target.grc", "efficiency.grc"),
    ("stack.grc", None),
]
ALL_STOCK = [
    (task.name, objective)
    for task in sorted((STOCK / "tasks").glob("*.grc"))
    for objective in (None, "task_completion.grc", "safety.grc", "efficiency.grc")
]


def _check_stock(task: str, objective: str | None, cache_dir: Path) -> None:
    objectives = [str(STOCK / objective)] if objective else []
    checked = load_task(str(STOCK / "tasks" / task), objectives)
    compiled = compile_checked(checked, cache_dir)
    batch = random_batch(np.random.default_rng(7), n=24, t_max=40)
    assert_tables_match(compiled.score(batch), oracle.score(checked.task, batch))


@pytest.mark.parametrize("task,objective", STOCK_CASES)
def test_stock_files_match_oracle(task: str, objective: str | None, cache_dir: Path) -> None:
    """Every stock task file, and every stock objective, at least once."""
    _check_stock(task, objective, cache_dir)


@pytest.mark.slow
@pytest.mark.parametrize("task,objective", ALL_STOCK)
def test_every_stock_file_under_every_objective_matches_oracle(
    task: str, objective: str | None, cache_dir: Path
) -> None:
    _check_stock(task, objective, cache_dir)


def test_stock_files_on_a_realistic_pick_and_place(cache_dir: Path) -> None:
    """A hand-made successful episode: every stage reached, zero-ish costs, R_ext near 1."""
    compiled = compile_task(STOCK / "tasks" / "pick_place.grc", cache_dir=cache_dir)
    t_max = 30
    kp = np.zeros((1, t_max, len(KEYPOINTS), 3), dtype=np.float32)
    sig = np.zeros((1, t_max, len(SIGNALS)), dtype=np.float32)
    obj, tip, bottom, top = (
        KEYPOINTS.index(k) for k in ("object.center", "gripper.tip", "object.bottom", "container.top")
    )
    kp[0, :, KEYPOINTS.index("container.top")] = (0.3, 0.0, 0.05)
    for t in range(t_max):
        kp[0, t, obj] = (0.3 * t / (t_max - 1), 0.0, 0.02 + 0.1 * math.sin(math.pi * t / (t_max - 1)))
    kp[0, :, obj, 2] = np.maximum(kp[0, :, obj, 2], 0.07)
    kp[0, -3:, obj] = (0.3, 0.0, 0.07)
    kp[0, :, tip] = kp[0, :, obj]
    kp[0, :, bottom] = kp[0, :, obj] - (0, 0, 0.02)
    kp[0, :, KEYPOINTS.index("object.top")] = kp[0, :, obj] + (0, 0, 0.02)
    sig[0, 1:-2, SIGNALS.index("grasped")] = 1
    batch = TrajectoryBatch(kp, list(KEYPOINTS), sig, list(SIGNALS), np.array([t_max]))
    table = compiled.score(batch)
    checked = load_task(str(STOCK / "tasks" / "pick_place.grc"))
    assert_tables_match(table, oracle.score(checked.task, batch))
    assert table.reached.all()
    assert table.stage_bounds[0, 0, 0] == 0 and table.stage_bounds[0, -1, 1] == t_max - 1


# ---------------------------------------------------------------------------- semantics by hand

SEMANTICS = """
task sem
keypoints { ee = gripper.tip }
signals { g = grasped
    hit = contact.obstacle }
stage first until g >= 0.5 {
    subgoal at_x: ee.x >= 1 tol 0.25 weight 2
    path hits: hit <= 0 over sum tol 1
    path moved: delta(ee).x == 0 over max
}
stage second until t >= 5 {
    path mean_hit: hit <= 0
}
stage third {
    subgoal done: ee.x >= 3
}
unreached 10
"""


@pytest.fixture(scope="module")
def semantics_program(cache_dir: Path) -> CompiledProgram:
    module = parse(SEMANTICS, "sem.grc")
    return load_program(lower_task(module), cache_dir)


def _one(x: list[float], g: list[float], hit: list[float], t_max: int | None = None) -> TrajectoryBatch:
    length = len(x)
    t_max = t_max or length
    kp = np.full((1, t_max, 1, 3), np.nan, dtype=np.float32)
    kp[0, :length, 0, 0] = x
    kp[0, :length, 0, 1:] = 0
    sig = np.full((1, t_max, 2), np.nan, dtype=np.float32)
    sig[0, :length, 0] = g
    sig[0, :length, 1] = hit
    return TrajectoryBatch(kp, ["gripper.tip"], sig, ["grasped", "contact.obstacle"], np.array([length]))


def test_segmentation_costs_and_unreached_penalty_by_hand(semantics_program: CompiledProgram) -> None:
    # steps:      0    1    2    3    4    5    6    (padding)
    x = [0.0, 0.5, 1.0, 1.0, 2.0, 2.0, 2.5]
    g = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    hit = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    table = semantics_program.score(_one(x, g, hit, t_max=9))
    # first: until g >= 0.5 holds at step 2 -> steps 0..2; second: t >= 5 at step 5 -> 3..5; third: 6..6
    assert table.stage_bounds[0].tolist() == [[0, 2], [3, 5], [6, 6]]
    assert table.reached[0].tolist() == [True, True, True]
    at_x = 2 * max(0.0, max(0.0, 1 - 1.0) - 0.25)  # subgoal at the stage's last step
    hits = max(0.0, 3 - 1)  # three contact steps, one tolerated
    moved = 0.5  # max |delta x| over steps 0..2 (0 at t = 0)
    mean_hit = (0 + 1 + 1) / 3
    done = max(0.0, 3 - 2.5)
    np.testing.assert_allclose(table.constraint_costs[0], [at_x, hits, moved, mean_hit, done])
    np.testing.assert_allclose(table.r_ext[0], math.exp(-(at_x + hits + moved + mean_hit + done)))


def test_unreached_stages_cost_their_constraints_at_the_last_step(semantics_program: CompiledProgram) -> None:
    x = [0.0, 0.2, 0.9]
    g = [0.0, 0.0, 0.0]  # `until` of the first stage never holds
    hit = [0.0, 1.0, 1.0]
    table = semantics_program.score(_one(x, g, hit))
    assert table.stage_bounds[0].tolist() == [[0, 2], [-1, -1], [-1, -1]]
    assert table.reached[0].tolist() == [True, False, False]
    mean_hit_at_last = 1.0  # hit(L-1) = 1 as a one-step stage
    done_at_last = 3 - 0.9
    np.testing.assert_allclose(table.stage_costs[0, 1], mean_hit_at_last + 10)
    np.testing.assert_allclose(table.stage_costs[0, 2], done_at_last + 10)


def test_until_on_the_last_step_leaves_later_stages_unreached(semantics_program: CompiledProgram) -> None:
    table = semantics_program.score(_one([0.0, 1.0], [0.0, 1.0], [0.0, 0.0]))
    assert table.stage_bounds[0].tolist() == [[0, 1], [-1, -1], [-1, -1]]


def test_length_one_trajectory(semantics_program: CompiledProgram) -> None:
    table = semantics_program.score(_one([2.0], [0.0], [1.0], t_max=4))
    assert table.stage_bounds[0].tolist() == [[0, 0], [-1, -1], [-1, -1]]
    # delta at t = 0 is 0; the subgoal reads step 0
    np.testing.assert_allclose(table.constraint_costs[0, :3], [2 * max(0.0, 0 - 0.25), 0.0, 0.0])


# ---------------------------------------------------------------------------- non-finite values


def test_nonfinite_input_is_an_error_naming_array_trajectory_and_step(semantics_program: CompiledProgram) -> None:
    batch = _one([0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    batch.keypoints[0, 1, 0, 0] = np.nan
    with pytest.raises(BatchError, match=r"keypoints\[0, 1, 0, 0\] \('gripper.tip'.x\) is nan"):
        semantics_program.score(batch)
    batch = _one([0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    batch.signals[0, 2, 1] = np.inf
    with pytest.raises(BatchError, match=r"signals\[0, 2, 1\] \('contact.obstacle'\) is inf"):
        semantics_program.score(batch)


def test_nonfinite_input_scored_as_worst_on_request(semantics_program: CompiledProgram) -> None:
    good = _one([0.0, 1.0, 2.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0])
    kp = np.concatenate([good.keypoints, good.keypoints])
    kp[1, 2, 0, 0] = -np.inf
    batch = TrajectoryBatch(
        kp, good.keypoint_names, np.concatenate([good.signals] * 2), good.signal_names, np.array([3, 3])
    )
    table = semantics_program.score(batch, nonfinite="worst")
    assert table.valid.tolist() == [True, False]
    assert table.r_ext[1] == 0.0 and np.isinf(table.stage_costs[1]).all()
    assert table.stage_bounds[1].tolist() == [[-1, -1]] * 3
    assert table.r_ext[0] > 0
    # the valid trajectory scores exactly as it does alone
    np.testing.assert_array_equal(table.constraint_costs[0], semantics_program.score(good).constraint_costs[0])


def test_nan_in_padding_is_ignored_but_any_bound_component_is_an_error(
    semantics_program: CompiledProgram,
) -> None:
    batch = _one([0.0, 1.0], [0.0, 0.0], [0.0, 0.0], t_max=5)  # padding is NaN
    assert np.isfinite(semantics_program.score(batch).r_ext).all()
    # The program reads only gripper.tip's x, but a bound input is checked whole, at every
    # valid step, whether or not a constraint evaluates it there (docs/language.md).
    batch.keypoints[0, 1, 0, 1] = np.nan
    with pytest.raises(BatchError, match=r"keypoints\[0, 1, 0, 1\].*is nan"):
        semantics_program.score(batch)
    worst = semantics_program.score(batch, nonfinite="worst")
    assert not worst.valid[0] and worst.r_ext[0] == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("extra_columns", [0, 40], ids=["bound-columns-dominate", "mostly-unbound"])
def test_the_kernels_find_each_trajectorys_first_nonfinite_step_as_the_rule_says(
    cache_dir: Path, dtype: type, extra_columns: int
) -> None:
    """The kernel checks each trajectory before scoring it, as one contiguous run when the
    bound columns are at least half of the batch and column by column otherwise; both must
    find exactly what grape_dsl.score.first_nonfinite_steps (the rule in numpy) finds."""
    compiled = compile_task(STOCK / "tasks" / "pick_place.grc", cache_dir=cache_dir)
    program = compiled.program
    rng = np.random.default_rng(extra_columns + (dtype is np.float64))
    base = random_batch(rng, 300, 12)
    bound = [KEYPOINTS.index(name) for name in program.keypoint_sources]
    keypoints = np.concatenate(
        [base.keypoints[:, :, bound], rng.normal(size=(300, 12, extra_columns, 3))], axis=2
    ).astype(dtype)
    names = list(program.keypoint_sources) + [f"unused.k{i}" for i in range(extra_columns)]
    signals = base.signals.astype(dtype)  # some signals are not bound
    for n in range(0, 300, 3):  # NaN/inf anywhere: bound or unbound columns, valid steps or padding
        array = keypoints if n % 2 else signals
        where = tuple(int(rng.integers(0, size)) for size in array.shape[1:])
        array[(n, *where)] = [np.nan, np.inf, -np.inf][n % 3]
    keypoints[7, :, 0] = 1e300 if dtype is np.float64 else 3e38  # huge, finite
    batch = TrajectoryBatch(keypoints, names, signals, base.signal_names, base.lengths)
    want = first_nonfinite_steps(prepare_batch(batch, program.keypoint_sources, program.signal_sources))
    assert 10 < (want >= 0).sum() < 100  # both kinds of trajectory are there

    worst = compiled.score(batch, nonfinite="worst")
    np.testing.assert_array_equal(worst.valid, want < 0)
    clean = np.flatnonzero(want < 0)
    alone = compiled.score(
        TrajectoryBatch(keypoints[clean], names, signals[clean], base.signal_names, base.lengths[clean])
    )
    np.testing.assert_array_equal(worst.r_ext[clean], alone.r_ext)
    np.testing.assert_array_equal(worst.constraint_costs[clean], alone.constraint_costs)
    first = int(np.flatnonzero(want >= 0)[0])
    with pytest.raises(BatchError, match=rf"\[{first}, {want[first]}[,\]]"):
        compiled.score(batch)


def test_computed_nan_counts_as_infinitely_violated(cache_dir: Path) -> None:
    text = """
task nan
signals { g = grasped }
stage only {
    path root: sqrt(g - 1) <= 1
    subgoal off: log(g - 2) <= 0 weight 0
}
"""
    module = parse(text, "nan.grc")
    compiled = load_program(lower_task(module), cache_dir)
    sig = np.array([[[0.5], [2.0]]], dtype=np.float32)
    batch = TrajectoryBatch(np.zeros((1, 2, 0, 3), np.float32), [], sig, ["grasped"], np.array([2]))
    table = compiled.score(batch)
    want = oracle.score(module, batch)
    assert np.isinf(table.constraint_costs[0, 0]) and table.constraint_costs[0, 1] == 0.0
    assert table.r_ext[0] == 0.0
    assert_tables_match(table, want)


def test_division_by_a_literal_zero_follows_ieee(cache_dir: Path) -> None:
    text = """
task div
signals { g = grasped }
stage only {
    subgoal pos: g / 0 >= 1
    subgoal neg: -g / (g - g) <= 0
}
"""
    module = parse(text, "div.grc")
    compiled = load_program(lower_task(module), cache_dir)
    sig = np.array([[[2.0]], [[0.0]]], dtype=np.float32)
    batch = TrajectoryBatch(np.zeros((2, 1, 0, 3), np.float32), [], sig, ["grasped"], np.array([1, 1]))
    table = compiled.score(batch)
    assert_tables_match(table, oracle.score(module, batch))
    # g = 2: +inf >= 1 holds; -2 / 0 = -inf <= 0 holds.  g = 0: 0 / 0 is NaN: violated by +inf.
    assert table.constraint_costs[0].tolist() == [0.0, 0.0]
    assert np.isinf(table.constraint_costs[1]).all() and table.r_ext[1] == 0.0


# ---------------------------------------------------------------------------- random programs

KP_POOL = ["gripper.tip", "object.center", "container.top"]
SIG_POOL = ["grasped", "contact.obstacle", "action.norm"]


def num(lo: float = -2.0, hi: float = 2.0) -> st.SearchStrategy[ast.Number]:
    return st.floats(lo, hi, allow_nan=False).map(lambda v: ast.Number(round(v, 3)))


thresholds = st.integers(-1999, 1999).map(lambda i: ast.Number(round(i / 1000 + 0.0003, 4)))


class Scope:
    """Names visible to an expression, by type."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    def of(self, type_: str) -> list[str]:
        return sorted(n for n, t in self.names.items() if t == type_)


def exprs(scope: Scope, type_: str, depth: int) -> st.SearchStrategy[ast.Expr]:
    """Random well-typed expressions whose values stay finite (guarded sqrt, log, exp, /)."""
    leaves: list[st.SearchStrategy] = []
    if type_ == "scalar":
        leaves.append(num())
        leaves.append(st.just(ast.Name("t")))
    if type_ == "bool":
        leaves.append(st.builds(ast.Bool, st.booleans()))
    names = scope.of(type_)
    if names:
        leaves.append(st.sampled_from(names).map(ast.Name))
    if type_ == "vec3" and not names:
        leaves.append(st.tuples(num(), num(), num()).map(lambda a: ast.Call("vec", a)))
    leaf = st.one_of(*leaves)
    if depth <= 0:
        return leaf
    s = lambda: exprs(scope, "scalar", depth - 1)  # noqa: E731
    v = lambda: exprs(scope, "vec3", depth - 1)  # noqa: E731
    b = lambda: exprs(scope, "bool", depth - 1)  # noqa: E731
    safe = s().map(lambda e: ast.Binary("+", ast.Number(1.0), ast.Call("abs", (e,))))  # >= 1
    if type_ == "scalar":
        composite = st.one_of(
            st.builds(ast.Binary, st.sampled_from(["+", "-", "*"]), s(), s()),
            st.builds(lambda a, d: ast.Binary("/", a, d), s(), safe),
            st.builds(ast.Neg, s()),
            st.builds(ast.Component, v(), st.sampled_from(["x", "y", "z"])),
            st.builds(lambda f, a, c: ast.Call(f, (a, c)), st.sampled_from(["dist", "dist_xy", "dot"]), v(), v()),
            v().map(lambda a: ast.Call("norm", (a,))),
            s().map(lambda a: ast.Call("abs", (a,))),
            s().map(lambda a: ast.Call("sqrt", (ast.Call("abs", (a,)),))),
            s().map(lambda a: ast.Call("log", (ast.Binary("+", ast.Number(1.0), ast.Call("abs", (a,))),))),
            s().map(lambda a: ast.Call("exp", (ast.Call("clamp", (a, ast.Number(-4.0), ast.Number(2.0))),))),
            st.builds(lambda a, lo, hi: ast.Call("clamp", (a, lo, hi)), s(), num(-1, 0), num(0, 1)),
            st.builds(
                lambda f, a: ast.Call(f, tuple(a)),
                st.sampled_from(["min", "max", "mean"]),
                st.lists(s(), min_size=2, max_size=3),
            ),
            s().map(lambda a: ast.Call("delta", (a,))),
        )
    elif type_ == "vec3":
        composite = st.one_of(
            st.builds(lambda a, c, d: ast.Call("vec", (a, c, d)), s(), s(), s()),
            st.builds(ast.Binary, st.sampled_from(["+", "-"]), v(), v()),
            st.builds(lambda k, a: ast.Binary("*", k, a), s(), v()),
            st.builds(lambda a, d: ast.Binary("/", a, d), v(), safe),
            st.builds(ast.Neg, v()),
            st.builds(lambda a, c: ast.Call("cross", (a, c)), v(), v()),
            st.lists(v(), min_size=2, max_size=3).map(lambda a: ast.Call("mean", tuple(a))),
            v().map(lambda a: ast.Call("delta", (a,))),
        )
    else:
        # Comparisons against constants off round values (kept from when the compiler
        # simplified algebraically; kernels now match the oracle exactly, see
        # test_kernels_ieee.py for the special values).
        composite = st.one_of(
            st.builds(ast.Compare, st.sampled_from(["<=", "<", ">=", ">", "==", "!="]), s(), thresholds),
            st.builds(ast.BoolOp, st.sampled_from(["and", "or"]), b(), b()),
            st.builds(ast.Not, b()),
        )
    return st.one_of(leaf, composite)


@st.composite
def programs(draw: st.DrawFn) -> ast.TaskFile:
    decls: list[ast.TaskDecl] = []
    names: dict[str, str] = {}
    n_kp = draw(st.integers(1, 3))
    keypoints = []
    for i in range(n_kp):
        source = ast.Source(tuple(draw(st.sampled_from(KP_POOL)).split(".")))
        offset = draw(st.none() | st.tuples(num(-0.1, 0.1), num(-0.1, 0.1), num(-0.1, 0.1)))
        if offset is None:
            keypoints.append(ast.KeypointDecl(f"k{i}", source))
        else:
            keypoints.append(
                ast.KeypointDecl(f"k{i}", source, draw(st.sampled_from(["+", "-"])), ast.Call("vec", offset))
            )
        names[f"k{i}"] = "vec3"
    decls.append(ast.KeypointsBlock(tuple(keypoints)))
    signals = []
    for i in range(draw(st.integers(1, 2))):
        signals.append(ast.SignalDecl(f"g{i}", ast.Source(tuple(draw(st.sampled_from(SIG_POOL)).split(".")))))
        names[f"g{i}"] = "scalar"
    decls.append(ast.SignalsBlock(tuple(signals)))
    decls.append(ast.ParamDecl("p0", draw(st.floats(-1, 1).map(lambda x: round(x, 2)))))
    names["p0"] = "scalar"
    for i in range(draw(st.integers(0, 2))):
        type_ = draw(st.sampled_from(["scalar", "vec3", "bool"]))
        value = draw(exprs(Scope(dict(names)), type_, 2))
        decls.append(ast.LetDecl(f"l{i}", value))
        names[f"l{i}"] = type_
    scope = Scope(names)
    n_stages = draw(st.integers(1, 4))
    for s in range(n_stages):
        until = draw(exprs(scope, "bool", 2)) if s < n_stages - 1 else None
        constraints = []
        for c in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["subgoal", "path"]))
            constraints.append(
                ast.Constraint(
                    kind=kind,
                    name=f"c{c}",
                    expr=draw(exprs(scope, "bool", 3)),
                    tol=ast.Number(draw(st.sampled_from([0.0, 0.1, 1.0]))),
                    weight=ast.Number(draw(st.sampled_from([0.0, 0.5, 1.0, 2.0]))),
                    over=draw(st.sampled_from(["sum", "mean", "max"])) if kind == "path" else None,
                    tag=draw(st.sampled_from(["task", "collision", "path"])),
                )
            )
        decls.append(ast.Stage(f"s{s}", until, tuple(constraints)))
    decls.append(ast.UnreachedDecl(draw(st.sampled_from([0.5, 1.0, 3.0]))))
    return ast.TaskFile("random", None, tuple(decls))


@st.composite
def batches(draw: st.DrawFn) -> TrajectoryBatch:
    seed = draw(st.integers(0, 2**32 - 1))
    return random_batch(
        np.random.default_rng(seed), n=draw(st.integers(1, 6)), t_max=draw(st.integers(1, 9)), scale=0.5
    )


# Each example compiles a kernel (seconds), so examples are few and each scores several batches.
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(task=programs(), data=st.data())
def test_random_programs_match_oracle(task: ast.TaskFile, data: st.DataObject, cache_dir: Path) -> None:
    compiled = load_program(lower_task(task), cache_dir)
    for _ in range(4):
        batch = data.draw(batches())
        assert_tables_match(compiled.score(batch), oracle.score(task, batch))


def test_thread_ranges_cover_every_trajectory_once() -> None:
    from grape_dsl.runtime.kernels import _split_range

    for n, threads in [(0, 2), (1, 2), (255, 2), (10_000, 2), (100_003, 16), (5_000, 1)]:
        ranges = _split_range(n, threads)
        covered = [i for lo, hi in ranges for i in range(lo, hi)]
        assert covered == list(range(n))
    assert len(_split_range(5_000, 1)) == 1


def test_threaded_scoring_equals_single_range(semantics_program: CompiledProgram, monkeypatch) -> None:
    rng = np.random.default_rng(5)
    n, t_max = 3_000, 12
    kp = rng.normal(size=(n, t_max, 1, 3)).astype(np.float32)
    sig = (rng.random((n, t_max, 2)) > 0.7).astype(np.float32)
    batch = TrajectoryBatch(
        kp, ["gripper.tip"], sig, ["grasped", "contact.obstacle"], rng.integers(1, t_max + 1, size=n)
    )
    threaded = semantics_program.score(batch)
    monkeypatch.setenv("GRAPE_DSL_THREADS", "1")
    single = semantics_program.score(batch)
    np.testing.assert_array_equal(threaded.constraint_costs, single.constraint_costs)
    np.testing.assert_array_equal(threaded.stage_bounds, single.stage_bounds)
