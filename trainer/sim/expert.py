"""Scripted experts: one per task, acting on the observation's `state` vector alone.

The action is a piecewise-smooth function of the state: the phase (reach, close, carry, place,
push) is read from the state itself (grasped flag, last gripper command, gripper opening and
the geometry), so a policy that sees the same state can learn it by behaviour cloning.

Knobs: `noise` (std of Gaussian noise on the translation, as a fraction of the step limit),
`speed` (fraction of the step limit used while travelling), `brush` (for obstacle tasks: carry
the object this many metres *below* the obstacle's top, so that the path touches it; used to
build deliberately unsafe demonstrations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trainer.sim.env import MAX_ROTATION, MAX_TRANSLATION, STATE_INDEX, GrapeSimEnv
from trainer.sim.episode import Episode
from trainer.sim.tasks import get_task

CLOSE, OPEN = 1.0, -1.0
HOVER = 0.07  # m above the object top while lining up
CLEARANCE = 0.04  # m between the carried object's bottom and whatever it passes over
PLACE_GAP = 0.012  # m between the object's bottom and the goal surface when released
OBSTACLE_RADIUS = 0.12  # m, horizontal distance from the obstacle's axis within which the tip keeps above it


def _s(state: np.ndarray, name: str) -> float:
    return float(state[STATE_INDEX[name]])


def _v(state: np.ndarray, prefix: str) -> np.ndarray:
    return np.array([state[STATE_INDEX[f"{prefix}.{a}"]] for a in "xyz"], dtype=np.float64)


@dataclass
class Expert:
    """A scripted expert for one task. Call `act(state)` each step; `reset(seed)` per episode."""

    task: str
    noise: float = 0.0
    speed: float = 1.0
    brush: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.spec = get_task(self.task)
        if not 0.0 < self.speed <= 1.0:
            raise ValueError(f"speed must lie in (0, 1], got {self.speed}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")
        self.rng = np.random.default_rng(self.seed)

    def reset(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, state: np.ndarray) -> np.ndarray:
        state = np.asarray(state, dtype=np.float64)
        if self.spec.goal == "target":
            move, dyaw, grip = self._push(state)
        else:
            move, dyaw, grip = self._pick_place(state)
        limit = MAX_TRANSLATION * self.speed
        norm = np.linalg.norm(move)
        if norm > limit:
            move = move * (limit / norm)
        if self.noise > 0:
            move = move + self.rng.normal(0.0, self.noise * MAX_TRANSLATION, 3)
        action = np.zeros(7, dtype=np.float32)
        action[:3] = np.clip(move, -MAX_TRANSLATION, MAX_TRANSLATION)
        action[5] = np.clip(dyaw, -MAX_ROTATION, MAX_ROTATION)
        action[6] = grip
        return action

    # ------------------------------------------------------------------ pick and place, stack
    def _pick_place(self, s: np.ndarray) -> tuple[np.ndarray, float, float]:
        ee, obj, goal = _v(s, "ee"), _v(s, "object"), _v(s, "goal")
        ext = _v(s, "object.extent")
        grasped = _s(s, "grasped") > 0.5
        closing = _s(s, "gripper.command") > 0
        opening = _s(s, "gripper.opening")
        # An object lying on its side is lower than its extent says: its centre height bounds it.
        half_height = ext[2] / 2 if grasped else min(ext[2] / 2, obj[2])
        obj_top, obj_bottom = obj[2] + half_height, obj[2] - half_height
        grasp_z = max(obj_top - 0.025, 0.012)
        yaw_error = _s(s, "grasp.yaw_error")

        if grasped:
            hold = ee[2] - obj_bottom  # tip height above the object's bottom while held
            floor = goal[2] + CLEARANCE  # lowest the object's bottom may be while travelling
            if _s(s, "obstacle.present") > 0.5:
                top = _s(s, "obstacle.top")
                floor = max(floor, top + CLEARANCE if self.brush <= 0 else top - self.brush)
            carry_z = max(floor, 0.1) + hold
            to_goal = goal[:2] - obj[:2]
            distance = float(np.linalg.norm(to_goal))
            if distance > 0.04:
                if ee[2] < carry_z - 0.02:  # climb before travelling so the path clears everything
                    return np.array([0.0, 0.0, carry_z - ee[2]]), 0.0, CLOSE
                return np.array([*to_goal, carry_z - ee[2]]), 0.0, CLOSE
            # Over the goal: descend while damping the held object's sway, then let go.
            release_z = goal[2] + PLACE_GAP + hold
            tolerance = 0.02 if self.spec.goal == "container" else 0.012
            if ee[2] > release_z + 0.006:
                return np.array([*(0.5 * to_goal), release_z - ee[2]]), 0.0, CLOSE
            if distance > tolerance:
                return np.array([*(0.5 * to_goal), 0.0]), 0.0, CLOSE
            return np.zeros(3), 0.0, OPEN

        at_goal = np.linalg.norm(obj[:2] - goal[:2]) < 0.04 and obj_bottom > 0.5 * goal[2] - 0.01 and obj_bottom > 0.005
        if at_goal and not closing:  # released: back off upward and wait for the env to settle
            return np.array([0.0, 0.0, 0.3 - ee[2]]), 0.0, OPEN
        if closing:
            if opening > 0.6 * min(ext[0], ext[1]) and opening > 0.01:
                return np.zeros(3), 0.0, CLOSE  # still closing on the object
            return np.array([0.0, 0.0, 0.02]), 0.0, OPEN  # closed on nothing: open and retry
        to_obj = obj[:2] - ee[:2]
        hover_z = obj_top + HOVER
        if _s(s, "obstacle.present") > 0.5:
            # Over the obstacle's footprint (half-width <= 7 cm, plus the open fingers) the tip stays above it.
            obstacle_xy = np.array([_s(s, "obstacle.x"), _s(s, "obstacle.y")])
            over_obstacle = np.linalg.norm(ee[:2] - obstacle_xy) < OBSTACLE_RADIUS
            above_z = _s(s, "obstacle.top") + CLEARANCE
            if over_obstacle and ee[2] < above_z - 0.005:
                return np.array([0.0, 0.0, above_z - ee[2]]), 0.0, OPEN
            if over_obstacle:
                hover_z = max(hover_z, above_z)
        if np.linalg.norm(to_obj) > 0.01 or abs(yaw_error) > 0.08:
            z_target = hover_z if np.linalg.norm(to_obj) > 0.03 else max(ee[2], grasp_z + 0.03)
            if ee[2] < obj_top + 0.015 and np.linalg.norm(to_obj) > 0.02:
                z_target = hover_z  # too low next to the object: lift before sliding over
                to_obj = to_obj * 0.3
            return np.array([*to_obj, z_target - ee[2]]), 2.0 * yaw_error, OPEN
        if ee[2] > grasp_z + 0.006:
            return np.array([*to_obj, grasp_z - ee[2]]), 2.0 * yaw_error, OPEN
        return np.array([*to_obj, 0.0]), 0.0, CLOSE

    # ------------------------------------------------------------------ push
    def _push(self, s: np.ndarray) -> tuple[np.ndarray, float, float]:
        ee, obj, goal = _v(s, "ee"), _v(s, "object"), _v(s, "goal")
        ext = _v(s, "object.extent")
        to_goal = goal[:2] - obj[:2]
        dist = float(np.linalg.norm(to_goal))
        if dist < 1e-6:
            return np.zeros(3), 0.0, CLOSE
        direction = to_goal / dist
        normal = np.array([-direction[1], direction[0]])
        half_width = 0.5 * min(ext[0], ext[1])
        reach = 0.5 * math.hypot(ext[0], ext[1]) + 0.012  # tip-to-centre distance that clears the object
        push_z = float(np.clip(1.2 * obj[2], 0.012, 0.035))  # a little above the centre of what lies there
        safe_z = ext[2] + 0.05
        rel = ee[:2] - obj[:2]
        along, across = float(rel @ direction), float(rel @ normal)
        if along < -half_width and abs(across) < half_width + 0.005 and ee[2] < push_z + 0.02:
            if dist < 0.015:
                return np.zeros(3), 0.0, CLOSE  # there: stop pushing and let the object come to rest
            # Behind the object: push toward the goal, steering back onto the object-goal line.
            # Slow down when off the line, so the lateral correction wins before the object turns away.
            forward = min(0.6 * dist, 0.015) * max(0.25, 1.0 - abs(across) / half_width)
            contact = obj[:2] - direction * (half_width + 0.012)  # where the tip touches the object's back
            move = direction * forward + (contact - ee[:2])
            return np.array([*move, 0.5 * (push_z - ee[2])]), 0.0, CLOSE
        start = obj[:2] - direction * (reach + 0.015)
        to_start = start - ee[:2]
        if ee[2] < safe_z - 0.01 and np.linalg.norm(rel) < reach + 0.03 and np.linalg.norm(to_start) > 0.015:
            return np.array([0.0, 0.0, safe_z - ee[2]]), 0.0, CLOSE  # beside the object: rise before going around
        if np.linalg.norm(to_start) > 0.03:
            return np.array([*to_start, safe_z - ee[2]]), 0.0, CLOSE
        return np.array([*to_start, 0.5 * (push_z - ee[2])]), 0.0, CLOSE


def run_expert(env: GrapeSimEnv, expert: Expert, seed: int | None = None) -> Episode:
    """Roll the expert out in `env` until the episode ends; returns the Episode."""
    obs, _ = env.reset(seed=seed)
    expert.reset(env.seed)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(expert.act(obs["state"]))
        done = terminated or truncated
    return env.episode()
