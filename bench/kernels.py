"""Benchmark: compiled .grc cost kernels against the styles they replace.

Scores N trajectories x T steps (K=8 keypoints, S=4 signals) with the stock
pick_place_obstacle task under the safety objective, four ways, side by side in one process:

  (a) the compiled kernels (`compile_task(...).score(batch)`),
  (b) the same costs as per-step Python functions, the style of the GRAPE reference code and
      ReKep (one call per constraint per step), timed on a subsample and scaled,
  (c) the same costs hand-vectorized in numpy over [N, T] arrays (in chunks of 10^4
      trajectories, which is also numpy's fastest setting here),
  (d) `keypoints.sum()`: one plain numpy pass over the same keypoint tensor (memory speed).

Every style's R_ext is checked against (a) before its time counts. Then compile times: cold
(empty cache) and cached, each in a new process, with the cached load's share of start-up.

    python bench/kernels.py                      # N = 1e3, 1e4, 1e5
    python bench/kernels.py --sizes 1000 --repeat 3
    python bench/kernels.py --write-batch batch.npz --sizes 64   # a batch for `grapec score`
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from grape_dsl.runtime.kernels import CompiledProgram

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "constraints" / "tasks" / "pick_place_obstacle.grc"
OBJECTIVE = ROOT / "constraints" / "safety.grc"
KEYPOINTS = [
    "gripper.tip",
    "object.center",
    "object.top",
    "object.bottom",
    "container.center",
    "container.top",
    "obstacle.center",
    "obstacle.top",
]
SIGNALS = ["grasped", "contact.obstacle", "contact.table", "contact.distractor"]
EE, OBJ, OBJ_BOTTOM, GOAL, OBSTACLE, OBSTACLE_TOP = (
    KEYPOINTS.index(k)
    for k in ("gripper.tip", "object.center", "object.bottom", "container.top", "obstacle.center", "obstacle.top")
)
GRASPED, HIT_OBSTACLE, HIT_TABLE, HIT_OTHER = range(4)

# The program's constants (params, and tol/weight after the safety objective). `configure`
# reads them from the compiled program, so the hand-written styles below follow the stock file
# as it is edited; the structure of the costs is written out by hand.
REACH_TOL = NEAR = SETTLE = KEEP_OUT = CLEARANCE = HORIZON = 0.0
W_REACH = W_ABOVE = W_INSIDE = W_DOWN = W_HOLD = W_RELEASED = 0.0
W_COLLISION = TOL_COLLISION = W_PATH = TOL_PATH = W_ON_TIME = TOL_ON_TIME = UNREACHED = 0.0


def configure(program) -> None:  # noqa: ANN001 - an ir.Program
    params = dict(program.params)
    attrs = {f"{s.name}.{c.name}": c for s in program.stages for c in s.constraints}
    expected = {
        "grasp.reach",
        "grasp.bump",
        "grasp.travel",
        "transport.above",
        "transport.hold",
        "transport.bump",
        "transport.pass_over",
        "transport.travel",
        "place.inside",
        "place.down",
        "place.released",
        "place.on_time",
        "place.bump",
    }
    if set(attrs) != expected:
        raise SystemExit(f"{TASK.name} changed shape ({sorted(attrs)}); update bench/kernels.py")
    same = [("grasp.bump", "transport.bump", "transport.pass_over", "place.bump"), ("grasp.travel", "transport.travel")]
    for group in same:
        if len({(attrs[c].tol, attrs[c].weight) for c in group}) != 1:
            raise SystemExit(f"{group} no longer share tol/weight; update bench/kernels.py")
    zero_tol = [c for c in expected - set(same[0]) - set(same[1]) - {"place.on_time"} if attrs[c].tol]
    if zero_tol:
        raise SystemExit(f"{zero_tol} now have a tol; update bench/kernels.py")
    globals().update(
        REACH_TOL=params["reach_tol"],
        NEAR=params["near"],
        SETTLE=params["settle"],
        KEEP_OUT=params["keep_out"],
        CLEARANCE=params["clearance"],
        HORIZON=params["horizon"],
        W_REACH=attrs["grasp.reach"].weight,
        W_ABOVE=attrs["transport.above"].weight,
        W_INSIDE=attrs["place.inside"].weight,
        W_DOWN=attrs["place.down"].weight,
        W_HOLD=attrs["transport.hold"].weight,
        W_RELEASED=attrs["place.released"].weight,
        W_COLLISION=attrs["grasp.bump"].weight,
        TOL_COLLISION=attrs["grasp.bump"].tol,
        W_PATH=attrs["grasp.travel"].weight,
        TOL_PATH=attrs["grasp.travel"].tol,
        W_ON_TIME=attrs["place.on_time"].weight,
        TOL_ON_TIME=attrs["place.on_time"].tol,
        UNREACHED=program.unreached,
    )


def make_batch(n: int, t_max: int, seed: int = 0):
    """Pick-and-place-like trajectories: approach, grasp, carry over the obstacle, release, with
    noise, occasional contacts and some failures (no grasp, dropped object)."""
    from grape_dsl.batch import TrajectoryBatch

    rng = np.random.default_rng(seed)
    steps = np.arange(t_max, dtype=np.float32)
    kp = np.empty((n, t_max, len(KEYPOINTS), 3), dtype=np.float32)
    start = rng.uniform([-0.1, -0.2, 0.02], [0.1, -0.1, 0.02], size=(n, 3)).astype(np.float32)
    goal = rng.uniform([-0.1, 0.15, 0.06], [0.1, 0.25, 0.06], size=(n, 3)).astype(np.float32)
    grasp_t = rng.integers(20, 80, size=n)
    release_t = grasp_t + rng.integers(60, 110, size=n)
    never = rng.random(n) < 0.1  # 10% never grasp
    grasp_t[never] = t_max + 1
    frac = np.clip((steps[None, :] - grasp_t[:, None]) / np.maximum(release_t - grasp_t, 1)[:, None], 0, 1)
    carried = start[:, None, :] + frac[..., None] * (goal - start)[:, None, :]
    carried[..., 2] += 0.15 * np.sin(np.pi * frac)  # lift over the obstacle
    kp[:, :, KEYPOINTS.index("object.center")] = carried
    kp[:, :, KEYPOINTS.index("object.top")] = carried + (0, 0, 0.02)
    kp[:, :, KEYPOINTS.index("object.bottom")] = carried - (0, 0, 0.02)
    approach = np.clip(steps[None, :] / np.maximum(grasp_t, 1)[:, None], 0, 1)[..., None]
    home = np.array([0.0, -0.3, 0.3], dtype=np.float32)
    kp[:, :, EE] = home + approach * (carried - home)
    kp[:, :, EE] += rng.normal(scale=0.004, size=(n, t_max, 3)).astype(np.float32)
    kp[:, :, KEYPOINTS.index("container.center")] = goal[:, None, :] - (0, 0, 0.03)
    kp[:, :, GOAL] = goal[:, None, :]
    obstacle = ((start + goal) / 2 * (1, 1, 0) + (0, 0, 0.05)).astype(np.float32)
    kp[:, :, OBSTACLE] = obstacle[:, None, :]
    kp[:, :, OBSTACLE_TOP] = obstacle[:, None, :] + (0, 0, 0.05)
    sig = np.zeros((n, t_max, len(SIGNALS)), dtype=np.float32)
    sig[:, :, GRASPED] = (steps[None, :] >= grasp_t[:, None]) & (steps[None, :] < release_t[:, None])
    sig[:, :, HIT_OBSTACLE] = rng.random((n, t_max)) < 0.01
    sig[:, :, HIT_TABLE] = rng.random((n, t_max)) < 0.005
    lengths = np.full(n, t_max, dtype=np.int64)
    return TrajectoryBatch(kp, list(KEYPOINTS), sig, list(SIGNALS), lengths)


def write_batch(path: str, n: int, t_max: int) -> None:
    """The batch .npz contract of docs/scoring.md, written atomically; ragged lengths for realism."""
    batch = make_batch(n, t_max)
    lengths = np.random.default_rng(1).integers(t_max // 2, t_max + 1, size=n)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.npz")
    np.savez(
        tmp,
        keypoints=batch.keypoints,
        keypoint_names=np.array(batch.keypoint_names),
        signals=batch.signals,
        signal_names=np.array(batch.signal_names),
        lengths=lengths,
    )
    os.replace(tmp, target)
    print(f"wrote {target}: {n} trajectories, T={t_max}, lengths {lengths.min()}..{lengths.max()}")


# ---------------------------------------------------------------------------- (b) per-step Python


def _norm(v: np.ndarray) -> float:
    return float(np.linalg.norm(v))


def reach(kp, sig, t):  # noqa: ANN001, ANN201 - reference-style per-step functions
    return max(0.0, _norm(kp[EE] - kp[OBJ]) - REACH_TOL)


def touching(kp, sig, t):  # noqa: ANN001, ANN201
    return max(0.0, float(sig[HIT_OBSTACLE] + sig[HIT_TABLE] + sig[HIT_OTHER]))


def travel(prev, kp, index):  # noqa: ANN001, ANN201
    return 0.0 if prev is None else max(0.0, _norm(kp[index] - prev[index]))


def above(kp, sig, t):  # noqa: ANN001, ANN201
    return max(0.0, float(kp[GOAL][2] - kp[OBJ_BOTTOM][2]))


def hold(kp, sig, t):  # noqa: ANN001, ANN201
    return max(0.0, 0.5 - float(sig[GRASPED]))


def near_miss(kp, sig, t):  # noqa: ANN001, ANN201
    beside = _norm(kp[OBJ][:2] - kp[OBSTACLE][:2]) < KEEP_OUT
    low = kp[OBJ_BOTTOM][2] < kp[OBSTACLE_TOP][2] + CLEARANCE
    return 1.0 if (beside and low) else 0.0


def place_subgoals(kp, sig, t):  # noqa: ANN001, ANN201
    inside = max(0.0, _norm(kp[OBJ][:2] - kp[GOAL][:2]) - NEAR)
    down = max(0.0, float(kp[OBJ][2] - (kp[GOAL][2] + SETTLE)))
    released = max(0.0, float(sig[GRASPED]))
    on_time = max(0.0, t / HORIZON - 1.0)
    return inside, down, released, on_time


def until_grasp(kp, sig, t):  # noqa: ANN001, ANN201
    return sig[GRASPED] >= 0.5


def until_transport(kp, sig, t):  # noqa: ANN001, ANN201
    return sig[GRASPED] >= 0.5 and _norm(kp[OBJ][:2] - kp[GOAL][:2]) <= NEAR


def per_step_python(keypoints: np.ndarray, signals: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """R_ext per trajectory, one Python call per constraint per step."""
    out = np.empty(len(lengths))
    for n in range(len(lengths)):
        kps, sigs, length = keypoints[n].astype(np.float64), signals[n].astype(np.float64), int(lengths[n])
        total, t, alive = 0.0, 0, True
        # stage grasp
        bump = trav = 0.0
        ended = False
        while t < length:
            prev = kps[t - 1] if t > 0 else None
            bump += touching(kps[t], sigs[t], t)
            trav += travel(prev, kps[t], EE)
            if until_grasp(kps[t], sigs[t], t):
                ended = True
                break
            t += 1
        end = t if ended else length - 1
        total += W_REACH * reach(kps[end], sigs[end], end)
        total += W_COLLISION * max(0.0, bump - TOL_COLLISION) + W_PATH * max(0.0, trav - TOL_PATH)
        t = end + 1
        alive = ended and t < length
        # stage transport
        last = length - 1
        if alive:
            start, ended = t, False
            held = bump = passed = trav = 0.0
            while t < length:
                kp_t, s_t = kps[t], sigs[t]
                held += hold(kp_t, s_t, t)
                bump += touching(kp_t, s_t, t)
                passed += near_miss(kp_t, s_t, t)
                trav += travel(kps[t - 1], kp_t, OBJ)
                if until_transport(kp_t, s_t, t):
                    ended = True
                    break
                t += 1
            end = t if ended else length - 1
            total += W_ABOVE * above(kps[end], sigs[end], end) + W_HOLD * held / (end - start + 1)
            total += W_COLLISION * (max(0.0, bump - TOL_COLLISION) + max(0.0, passed - TOL_COLLISION))
            total += W_PATH * max(0.0, trav - TOL_PATH)
            t = end + 1
            alive = ended and t < length
        else:
            kp_l, s_l = kps[last], sigs[last]
            prev = kps[last - 1] if last > 0 else None
            total += UNREACHED + W_ABOVE * above(kp_l, s_l, last) + W_HOLD * hold(kp_l, s_l, last)
            total += W_COLLISION * (
                max(0.0, touching(kp_l, s_l, last) - TOL_COLLISION)
                + max(0.0, near_miss(kp_l, s_l, last) - TOL_COLLISION)
            )
            total += W_PATH * max(0.0, travel(prev, kp_l, OBJ) - TOL_PATH)
        # stage place
        if alive:
            bump = 0.0
            while t < length:
                bump += touching(kps[t], sigs[t], t)
                t += 1
            sub = place_subgoals(kps[last], sigs[last], last)
        else:
            bump = touching(kps[last], sigs[last], last)
            sub = place_subgoals(kps[last], sigs[last], last)
            total += UNREACHED
        inside, down, released, on_time = sub
        total += W_INSIDE * inside + W_DOWN * down + W_RELEASED * released
        total += W_ON_TIME * max(0.0, on_time - TOL_ON_TIME) + W_COLLISION * max(0.0, bump - TOL_COLLISION)
        out[n] = math.exp(-total)
    return out


# ---------------------------------------------------------------------------- (c) numpy


def _first(mask: np.ndarray, default: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    found = mask.any(axis=1)
    return np.where(found, mask.argmax(axis=1), default), found


def _at(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values, index[:, None], axis=1)[:, 0]


def vectorized_numpy(keypoints: np.ndarray, signals: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """R_ext per trajectory with whole-array numpy operations over [n, T]."""
    kp = keypoints.astype(np.float64)
    sig = signals.astype(np.float64)
    n, t_max = sig.shape[:2]
    steps = np.arange(t_max)[None, :]
    length = lengths[:, None]
    last = lengths - 1
    ee, obj, bottom, goal = kp[:, :, EE], kp[:, :, OBJ], kp[:, :, OBJ_BOTTOM], kp[:, :, GOAL]
    grasped = sig[:, :, GRASPED]
    touch = np.maximum(0.0, sig[:, :, HIT_OBSTACLE] + sig[:, :, HIT_TABLE] + sig[:, :, HIT_OTHER])
    d_ee = np.zeros((n, t_max))
    d_ee[:, 1:] = np.linalg.norm(np.diff(ee, axis=1), axis=2)
    d_obj = np.zeros((n, t_max))
    d_obj[:, 1:] = np.linalg.norm(np.diff(obj, axis=1), axis=2)
    reach_v = np.maximum(0.0, np.linalg.norm(ee - obj, axis=2) - REACH_TOL)
    xy_goal = np.linalg.norm(obj[:, :, :2] - goal[:, :, :2], axis=2)
    above_v = np.maximum(0.0, goal[:, :, 2] - bottom[:, :, 2])
    hold_v = np.maximum(0.0, 0.5 - grasped)
    miss = (
        (np.linalg.norm(obj[:, :, :2] - kp[:, :, OBSTACLE, :2], axis=2) < KEEP_OUT)
        & (bottom[:, :, 2] < kp[:, :, OBSTACLE_TOP, 2] + CLEARANCE)
    ).astype(np.float64)
    valid = steps < length

    # segmentation
    end1, ended1 = _first((grasped >= 0.5) & valid, last)
    start2 = end1 + 1
    reached2 = ended1 & (start2 < lengths)
    end2, ended2 = _first((grasped >= 0.5) & (xy_goal <= NEAR) & valid & (steps >= start2[:, None]), last)
    start3 = end2 + 1
    reached3 = reached2 & ended2 & (start3 < lengths)
    in1 = steps <= end1[:, None]
    in2 = reached2[:, None] & (steps >= start2[:, None]) & (steps <= end2[:, None])
    in3 = reached3[:, None] & (steps >= start3[:, None]) & valid

    total = W_REACH * _at(reach_v, end1)
    total += W_COLLISION * np.maximum(0.0, (touch * in1).sum(1) - TOL_COLLISION)
    total += W_PATH * np.maximum(0.0, (d_ee * in1).sum(1) - TOL_PATH)

    at2 = np.where(reached2, end2, last)
    count2 = np.maximum(in2.sum(1), 1)
    stage2 = W_ABOVE * _at(above_v, at2)
    stage2 += W_HOLD * np.where(reached2, (hold_v * in2).sum(1) / count2, _at(hold_v, last))
    stage2 += W_COLLISION * np.maximum(0.0, np.where(reached2, (touch * in2).sum(1), _at(touch, last)) - TOL_COLLISION)
    stage2 += W_COLLISION * np.maximum(0.0, np.where(reached2, (miss * in2).sum(1), _at(miss, last)) - TOL_COLLISION)
    stage2 += W_PATH * np.maximum(0.0, np.where(reached2, (d_obj * in2).sum(1), _at(d_obj, last)) - TOL_PATH)
    total += stage2 + np.where(reached2, 0.0, UNREACHED)

    inside = np.maximum(0.0, _at(xy_goal, last) - NEAR)
    down = np.maximum(0.0, _at(obj[:, :, 2], last) - (_at(goal[:, :, 2], last) + SETTLE))
    released = np.maximum(0.0, _at(grasped, last))
    on_time = np.maximum(0.0, last / HORIZON - 1.0)
    stage3 = W_INSIDE * inside + W_DOWN * down + W_RELEASED * released
    stage3 += W_ON_TIME * np.maximum(0.0, on_time - TOL_ON_TIME)
    stage3 += W_COLLISION * np.maximum(0.0, np.where(reached3, (touch * in3).sum(1), _at(touch, last)) - TOL_COLLISION)
    total += stage3 + np.where(reached3, 0.0, UNREACHED)
    return np.exp(-total)


def vectorized_numpy_chunked(keypoints, signals, lengths, chunk: int = 10_000):  # noqa: ANN001, ANN201
    return np.concatenate(
        [
            vectorized_numpy(keypoints[i : i + chunk], signals[i : i + chunk], lengths[i : i + chunk])
            for i in range(0, len(lengths), chunk)
        ]
    )


# ---------------------------------------------------------------------------- timing


def best_of(fn, repeat: int) -> tuple[float, object]:  # noqa: ANN001
    best, result = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


PROBE = """
import time
t0 = time.perf_counter()
import numba, numpy
t1 = time.perf_counter()
from grape_dsl.api import load_task
from grape_dsl.ir.lower import lower
from grape_dsl.runtime.kernels import load_program
t2 = time.perf_counter()
program = lower(load_task({task!r}, [{objective!r}]))
t3 = time.perf_counter()
compiled = load_program(program, {cache!r})
t4 = time.perf_counter()
import json
print(json.dumps({{"import_numba": t1 - t0, "import_grape_dsl": t2 - t1, "front_end": t3 - t2,
                  "load_program": t4 - t3, "compile_task": t4 - t2,
                  "numba_compiled": compiled.info.numba_compiled, "generated": compiled.info.generated}}))
"""


# numba's own floor: the first call of any cached njit function in a new process (numba loads
# its typing and lowering registries then), here a one-line array sum.
FLOOR_MODULE = """
from numba import njit

@njit(cache=True)
def total(a):
    s = 0.0
    for x in a:
        s += x
    return s
"""
FLOOR_PROBE = """
import sys, time, json
import numpy as np
import numba
sys.path.insert(0, {directory!r})
t0 = time.perf_counter()
import floor_module
floor_module.total(np.zeros(3, np.float32))
print(json.dumps({{"seconds": time.perf_counter() - t0}}))
"""


def _probe(script: str) -> dict:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def compile_times() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        script = PROBE.format(task=str(TASK), objective=str(OBJECTIVE), cache=cache)
        cold, cached = _probe(script), _probe(script)
        Path(cache, "floor_module.py").write_text(FLOOR_MODULE)
        floor_script = FLOOR_PROBE.format(directory=cache)
        _probe(floor_script)  # fills numba's cache
        floor = _probe(floor_script)
    assert cold["generated"] and cold["numba_compiled"] > 0
    assert not cached["generated"] and cached["numba_compiled"] == 0
    return {"cold": cold, "cached": cached, "numba_floor": floor}


def measure_size(
    compiled: CompiledProgram, n: int, steps_per_trajectory: int, repeat: int, python_subsample: int
) -> dict:
    """Throughputs (trajectory-steps/s) and time ratios of the four styles on one batch of n trajectories.

    The batch lives only in this call, so it is freed before the next (larger) size is built.
    """
    batch = make_batch(n, steps_per_trajectory)
    steps = n * steps_per_trajectory
    t_a, table = best_of(lambda: compiled.score(batch), repeat)
    os.environ["GRAPE_DSL_THREADS"] = "1"
    t_a1, _ = best_of(lambda: compiled.score(batch), repeat)
    del os.environ["GRAPE_DSL_THREADS"]
    r_ext = table.r_ext
    sub = min(n, python_subsample)
    t_b_sub, r_b = best_of(lambda: per_step_python(batch.keypoints[:sub], batch.signals[:sub], batch.lengths[:sub]), 1)
    np.testing.assert_allclose(r_b, r_ext[:sub], rtol=1e-5)
    t_b = t_b_sub * n / sub
    t_c, r_c = best_of(lambda: vectorized_numpy_chunked(batch.keypoints, batch.signals, batch.lengths), repeat)
    np.testing.assert_allclose(r_c, r_ext, rtol=1e-5)
    t_d, _ = best_of(lambda: batch.keypoints.sum(), repeat)
    row = {"n": n, "a": steps / t_a, "b": steps / t_b, "c": steps / t_c, "d": steps / t_d}
    row.update(a_b=t_b / t_a, a_c=t_c / t_a, a_d=t_d / t_a, a1=steps / t_a1, a1_d=t_d / t_a1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--python-subsample",
        type=int,
        default=100,
        help="trajectories timed for the per-step Python style (then scaled)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--write-batch",
        metavar="FILE.npz",
        help="only write a synthetic batch of the first --sizes trajectories (for `grapec score`)",
    )
    args = parser.parse_args()
    if args.write_batch:
        write_batch(args.write_batch, args.sizes[0], args.steps)
        return

    from grape_dsl.compiler import compile_task
    from grape_dsl.runtime.kernels import _threads

    with tempfile.TemporaryDirectory() as cache:
        compiled = compile_task(TASK, [OBJECTIVE], cache_dir=cache)
    configure(compiled.program)
    print(
        f"task {TASK.name} + {OBJECTIVE.name}; T={args.steps}, K={len(KEYPOINTS)}, S={len(SIGNALS)}; "
        f"kernel threads {_threads()}, cpu count {os.cpu_count()}; numpy single-threaded"
    )
    header = (
        f"{'N':>8} {'(a) kernel':>12} {'(b) py/step':>12} {'(c) numpy':>12} {'(d) sum':>12} "
        f"{'a/b':>8} {'a/c':>7} {'a/d':>6} {'a 1 thread':>11} {'a1/d':>6}"
    )
    print("trajectory-steps per second")
    print(header)
    results = []
    for n in args.sizes:
        row = measure_size(compiled, n, args.steps, args.repeat, args.python_subsample)
        results.append(row)
        print(
            f"{n:>8} {row['a']:>12.3g} {row['b']:>12.3g} {row['c']:>12.3g} {row['d']:>12.3g} "
            f"{row['a_b']:>8.0f} {row['a_c']:>7.1f} {row['a_d']:>6.2f} {row['a1']:>11.3g} {row['a1_d']:>6.2f}"
        )
    times = compile_times()
    cold, cached = times["cold"], times["cached"]
    for label, run in (("empty cache", cold), ("cached", cached)):
        print(
            f"compile in a new process, {label}: compile_task {run['compile_task']:.2f}s = "
            f"parse+check+lower {run['front_end']:.2f}s + kernels {run['load_program']:.2f}s "
            f"({run['numba_compiled']} numba functions compiled); before it: import numba "
            f"{run['import_numba']:.2f}s, import grape_dsl {run['import_grape_dsl']:.2f}s"
        )
    print(
        f"numba's floor, first call of a cached one-line njit function in a new process: "
        f"{times['numba_floor']['seconds']:.2f}s"
    )
    if args.json:
        print(json.dumps({"throughput": results, "compile": times}, indent=2))


if __name__ == "__main__":
    main()
