"""Kernels are exact to the language reference under IEEE float64 rules: no algebraic rewrite
changes a result. Every builtin is compared with the reference evaluator (grape_dsl/oracle.py)
on inputs that include 0, -0, negatives, tiny and huge values, and the NaN and infinities they
produce (0/0, x/0, log(0), sqrt(-1), exp(huge), huge*huge): bit for bit but for exp/log's last
bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grape_dsl import oracle
from grape_dsl.batch import TrajectoryBatch
from grape_dsl.ir.lower import lower_task
from grape_dsl.parser import parse
from grape_dsl.runtime.kernels import CompiledProgram, load_program

REPRODUCER = """
task repro
signals { x = x }
stage s {
    subgoal notnan: not (sqrt(x) <= 1)
    subgoal divself: x / x == 1
    subgoal explog: exp(log(x)) <= 2
}
"""

# Scalar operands: the inputs and what they make, so that NaN and +-inf reach every builtin
# even though NaN/inf *inputs* are refused (docs/language.md, "Non-finite values").
SCALARS = ["a", "b", "a / b", "a * b", "log(a)", "(a + 1e16) - 1e16"]
VECTORS = ["p", "q", "vec(a, b, a / b)", "p * b"]


def _group_calls(group: str) -> list[str]:
    calls = []
    if group == "unary":
        for s in SCALARS:
            calls += [
                f"abs({s})",
                f"sqrt({s})",
                f"exp({s})",
                f"log({s})",
                f"delta({s})",
                f"{s} / {s}",
                f"exp(log({s}))",
                f"0 * {s}",
                f"-({s}) - {s}",
            ]
    elif group == "nary":
        for i, s in enumerate(SCALARS):
            t = SCALARS[(i + 2) % len(SCALARS)]
            u = SCALARS[(i + 4) % len(SCALARS)]
            calls += [
                f"min({s}, {t})",
                f"max({s}, {t})",
                f"min({t}, {s}, {u})",
                f"max({t}, {s}, {u})",
                f"mean({s}, {t})",
                f"clamp({s}, {t}, {u})",
                f"{s} * {t}",
                f"{s} / {t}",
            ]
    else:
        for i, v in enumerate(VECTORS):
            w = VECTORS[(i + 1) % len(VECTORS)]
            calls += [
                f"dist({v}, {w})",
                f"dist_xy({v}, {w})",
                f"norm({v})",
                f"dot({v}, {w})",
                f"cross({v}, {w}).x",
                f"cross({v}, {w}).y",
                f"cross({v}, {w}).z",
                f"mean({v}, {w}).z",
                f"delta({v}).y",
                f"({v} / a).x",
                f"(-{v}).x",
            ]
    # |v - 0.25| summed over the steps: equal costs mean equal values; NaN -> +inf
    lines = [f"path c{k}: {call} == 0.25 over sum" for k, call in enumerate(calls)]
    if group == "unary":
        lines += [
            "path ne: not (sqrt(a) <= 1) over sum",
            "path neq: a / b != 1 over sum",
            "path eq: log(a) == log(b) over sum",
            "path both: a / b <= 1 and log(b) >= 0 over sum",
            "path either: a / b <= 1 or log(b) >= 0 over max",
            "path notnan: not (a / b > 0) or a < b over max",
        ]
    return lines


def builtins_task(group: str) -> str:
    return (
        f"task builtins_{group}\nkeypoints {{ p = one.point\n q = two.point }}\n"
        "signals { a = a\n b = b }\n"
        "stage only {\n    " + "\n    ".join(_group_calls(group)) + "\n}\n"
    )


SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    -3.5,
    1e-310,
    -1e-310,
    1e300,
    -1e300,
    1.7e308,
    -1.7e308,
    1e16,
    710.0,
    -745.0,
    3.0e-8,
]
values = st.one_of(st.sampled_from(SPECIAL), st.floats(allow_nan=False, allow_infinity=False))


@pytest.fixture(scope="module", params=["unary", "nary", "vector"])
def compiled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[CompiledProgram, object]:
    module = parse(builtins_task(request.param), f"builtins_{request.param}.grc")
    cache = tmp_path_factory.mktemp("ieee-cache")
    return load_program(lower_task(module), cache), module


def _batch(rows: list[list[float]]) -> TrajectoryBatch:
    """Rows of 2 steps x (a, b, p.xyz, q.xyz) as float64 trajectories of length 2 (or 1)."""
    data = np.array(rows, dtype=np.float64).reshape(len(rows), 2, 8)
    keypoints = np.stack([data[:, :, 2:5], data[:, :, 5:8]], axis=2)
    lengths = np.array([1 + (i % 2) for i in range(len(rows))], dtype=np.int64)
    return TrajectoryBatch(keypoints, ["one.point", "two.point"], data[:, :, :2].copy(), ["a", "b"], lengths)


def test_reproducer_scores_as_the_reference_says(tmp_path: Path) -> None:
    module = parse(REPRODUCER, "repro.grc")
    program = load_program(lower_task(module), tmp_path)
    sig = np.array([[[-1.0]], [[0.0]]], dtype=np.float32)
    batch = TrajectoryBatch(np.zeros((2, 1, 0, 3), np.float32), [], sig, ["x"], np.array([1, 1]))
    table = program.score(batch)
    assert table.constraint_costs.tolist() == [[0.0, 0.0, np.inf], [1.0, np.inf, 0.0]]
    assert table.r_ext.tolist() == [0.0, 0.0]


def test_cancellation_and_zero_times_log_zero_are_not_simplified(tmp_path: Path) -> None:
    text = """
task cancel
signals { u = u }
stage s {
    subgoal back: (u + 1e16) - 1e16 == u
    subgoal zlog: 0 * log(u) <= 1
}
"""
    program = load_program(lower_task(parse(text, "cancel.grc")), tmp_path)
    sig = np.array([[[1.0]], [[0.0]]], dtype=np.float64)
    table = program.score(TrajectoryBatch(np.zeros((2, 1, 0, 3)), [], sig, ["u"], np.array([1, 1])))
    # 1e16 + 1 rounds to 1e16, so the difference is 0, one away from u = 1; 0 * log(0) is NaN
    assert table.constraint_costs.tolist() == [[1.0, 0.0], [0.0, np.inf]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(values, min_size=16, max_size=16), min_size=1, max_size=8))
def test_every_builtin_matches_the_oracle(compiled, rows: list[list[float]]) -> None:
    program, module = compiled
    batch = _batch(rows)
    got = program.score(batch)
    want = oracle.score(module, batch)
    np.testing.assert_array_equal(got.stage_bounds, want.stage_bounds)
    _assert_agrees(got.constraint_costs, want.constraint_costs)
    _assert_agrees(got.r_ext, want.r_ext)


def _assert_agrees(got: np.ndarray, want: np.ndarray) -> None:
    """Infinities in the same places, finite values equal up to the last bits: the kernels'
    exp and log come from the platform's C math library and numpy's from its own, which may
    differ by one ulp (docs/language.md, "Precision"); every other operation is exact."""
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_float32_inputs_are_computed_in_float64(compiled) -> None:
    program, module = compiled
    rng = np.random.default_rng(0)
    batch32 = _batch(rng.normal(size=(6, 16)).astype(np.float32).astype(np.float64).tolist())
    batch32 = TrajectoryBatch(
        batch32.keypoints.astype(np.float32),
        batch32.keypoint_names,
        batch32.signals.astype(np.float32),
        batch32.signal_names,
        batch32.lengths,
    )
    got = program.score(batch32)
    want = oracle.score(module, batch32)  # the oracle widens every input to float64
    _assert_agrees(got.constraint_costs, want.constraint_costs)
