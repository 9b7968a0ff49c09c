"""Gymnasium environments for the task suite (pybullet, Franka Panda, end-effector delta control).

Control: 20 Hz (12 physics steps of 1/240 s per action). The env keeps a commanded tip pose;
each action moves it by (dx, dy, dz, droll, dpitch, dyaw), IK turns it into joint targets. The
commanded pose is kept within `TRACK_LIMIT` of the real tip so that a blocked arm does not wind up.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

from trainer.sim import robot as panda
from trainer.sim.episode import Episode
from trainer.sim.scene import Bodies, build_scene, tilt
from trainer.sim.splits import SceneSpec, check_seed, get_split, sample_scene
from trainer.sim.tasks import SIGNAL_NAMES, TaskSpec, get_task

PHYSICS_HZ = 240
CONTROL_HZ = 20
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ
MAX_TRANSLATION = 0.02  # metres per control step
MAX_ROTATION = 0.1  # radians per control step
TRACK_LIMIT = 0.04
WORKSPACE_LOW = np.array([0.2, -0.45, 0.008])
WORKSPACE_HIGH = np.array([0.8, 0.45, 0.45])
MAX_TILT = 0.5  # rad: roll and pitch may leave "pointing down" by at most this much
MAX_YAW = 2.2  # rad, keeps the wrist joint inside its limits
KNOCKED_OVER_TILT = 0.5  # rad, ~29 degrees: a body tilted further counts as knocked over
LIFT_HEIGHT = 0.02  # the object counts as lifted when its bottom is this far above its start
SETTLED_SPEED = 0.05  # m/s, the object must be this slow for success to count
MIN_GRASP_OPENING = 0.004  # m, finger gap below which nothing is held between the fingers
DEFAULT_MAX_STEPS = 120
REBUILD_EVERY = 50  # resets between full world rebuilds
SOLVER_ITERATIONS = 20

STATE_NAMES: tuple[str, ...] = (
    "ee.x",
    "ee.y",
    "ee.z",
    "ee.yaw.sin",
    "ee.yaw.cos",
    "gripper.opening",
    "gripper.command",  # the last action's gripper command: +1 close, -1 open
    "grasped",
    "object.x",
    "object.y",
    "object.z",
    "object.extent.x",
    "object.extent.y",
    "object.extent.z",
    "grasp.yaw_error",  # yaw the hand must turn to grasp across the object's narrow side
    "goal.x",
    "goal.y",
    "goal.z",  # container.top, target.center or base.top
    "obstacle.x",
    "obstacle.y",
    "obstacle.top",
    "obstacle.present",
    "ee_to_object.x",
    "ee_to_object.y",
    "ee_to_object.z",
    "object_to_goal.x",
    "object_to_goal.y",
    "object_to_goal.z",
)
STATE_DIM = len(STATE_NAMES)
STATE_INDEX = {name: i for i, name in enumerate(STATE_NAMES)}

ACTION_LOW = np.array([-MAX_TRANSLATION] * 3 + [-MAX_ROTATION] * 3 + [-1.0], dtype=np.float32)
ACTION_HIGH = -ACTION_LOW


def wrap_angle(angle: float, period: float = 2 * math.pi) -> float:
    """`angle` wrapped into [-period/2, period/2)."""
    return (angle + period / 2) % period - period / 2


class GrapeSimEnv(gym.Env):
    """One task of the suite. Observation: {"state": float32[STATE_DIM]} (+ "image" when image_size is set).

    Reward is 1.0 on the step the task succeeds (the episode then terminates), else 0; GRAPE
    scores episodes from keypoints and signals, not from this reward.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    solver_iterations = SOLVER_ITERATIONS  # per instance before the first reset (bench/sim.py compares)

    def __init__(
        self,
        task: str,
        split: str = "in_domain",
        seed: int = 0,
        image_size: int | None = None,
        max_steps: int = DEFAULT_MAX_STEPS,
        render_mode: str | None = "rgb_array",
    ) -> None:
        import pybullet as p
        import pybullet_data

        self.spec_task: TaskSpec = get_task(task)
        get_split(split)
        self.split = split
        self._seed = check_seed(seed)
        if image_size is not None and not (isinstance(image_size, int) and 16 <= image_size <= 1024):
            raise ValueError(f"image_size must be an int in [16, 1024] or None, got {image_size!r}")
        if not (isinstance(max_steps, int) and max_steps >= 1):
            raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")
        self.image_size = image_size
        self.max_steps = max_steps
        self.keypoint_names = list(self.spec_task.keypoint_names)
        self.signal_names = list(SIGNAL_NAMES)
        # Per instance: what this task's info["keypoints"] / info["signals"] rows are (trainer.envs).
        self.metadata = {
            **type(self).metadata,
            "keypoint_names": list(self.keypoint_names),
            "signal_names": list(self.signal_names),
        }
        self.p = p
        self.data_path = pybullet_data.getDataPath()
        self.client = p.connect(p.DIRECT)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = "rgb_array"
        # Every state entry is a position, offset, size, angle term or flag within 10 (metres/radians).
        spaces = {"state": gym.spaces.Box(-10.0, 10.0, (STATE_DIM,), np.float32)}
        if image_size:
            spaces["image"] = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(ACTION_LOW, ACTION_HIGH, dtype=np.float32)
        self.scene: SceneSpec | None = None
        self.bodies: Bodies | None = None
        self.robot: panda.Panda | None = None
        self._resets_since_rebuild = 0

    # ------------------------------------------------------------------ episode lifecycle
    @property
    def instruction(self) -> str:
        return self.scene.instruction if self.scene else ""

    @property
    def seed(self) -> int:
        """The seed of the current (or next) episode's scene."""
        return self._seed

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Build the scene of `seed` (default: the seed given at construction) from scratch."""
        if seed is not None:
            self._seed = check_seed(seed)
        super().reset(seed=self._seed)  # gymnasium's np_random; the scene itself comes from sample_scene
        p, c = self.p, self.client
        self.scene = sample_scene(self.spec_task, self.split, self._seed)
        if self.robot is None or self._resets_since_rebuild >= REBUILD_EVERY:
            # Loading the Panda costs ~36 ms, most of a reset: keep it and swap only the scene,
            # rebuilding the world now and then so created shapes do not pile up.
            p.resetSimulation(physicsClientId=c)
            p.setGravity(0, 0, -9.81, physicsClientId=c)
            p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=c)
            # Sorted contact pairs: the same seed replays identically in a fresh or a reused world.
            # 20 solver iterations (pybullet's default is 50): ~25% more env steps per second, and
            # the same expert success (docs/benchmarks.md, "Simulator throughput").
            p.setPhysicsEngineParameter(
                deterministicOverlappingPairs=1, numSolverIterations=self.solver_iterations, physicsClientId=c
            )
            self.robot = panda.Panda(p, c, self.data_path)
            self._resets_since_rebuild = 0
        else:
            for i in reversed(range(p.getNumBodies(physicsClientId=c))):
                body = p.getBodyUniqueId(i, physicsClientId=c)
                if body != self.robot.body:
                    p.removeBody(body, physicsClientId=c)
        self._resets_since_rebuild += 1
        self.bodies = build_scene(p, c, self.data_path, self.scene)
        start = np.array(self.scene.ee_start)
        self.robot.reset(start, 0.0)
        self._target_pos = start.copy()
        self._target_rpy = np.array([math.pi, 0.0, 0.0])
        for _ in range(SUBSTEPS):  # let bodies settle under gravity
            p.stepSimulation(physicsClientId=c)
        self._close = False
        self._steps = 0
        self._obj_start_bottom = float(p.getAABB(self.bodies.obj, physicsClientId=c)[0][2])
        self._ever_grasp = False
        self._ever_collision = False
        self._success = False
        self._done = False
        self._log: dict[str, list] = {"actions": [], "states": [], "keypoints": [], "signals": []}
        self._contacts = np.zeros(3, dtype=bool)
        self._obs = self._observe()
        return self._obs, self._info()

    def step(self, action):
        if self.scene is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            raise RuntimeError("the episode has ended (terminated or truncated); call reset() before stepping again")
        a = self._check_action(action)
        p, c = self.p, self.client
        self._log["states"].append(self._obs["state"])
        tip, _ = self.robot.tip_pose()
        self._target_pos = np.clip(self._target_pos + a[:3], WORKSPACE_LOW, WORKSPACE_HIGH)
        self._target_pos = np.clip(self._target_pos, tip - TRACK_LIMIT, tip + TRACK_LIMIT)
        rpy = self._target_rpy + a[3:6]
        rpy[0] = math.pi + float(np.clip(wrap_angle(rpy[0] - math.pi), -MAX_TILT, MAX_TILT))
        rpy[1] = float(np.clip(rpy[1], -MAX_TILT, MAX_TILT))
        rpy[2] = float(np.clip(rpy[2], -MAX_YAW, MAX_YAW))
        self._target_rpy = rpy
        self._close = bool(a[6] > 0)
        q = self.robot.solve_ik(self._target_pos, p.getQuaternionFromEuler(rpy.tolist()))
        self.robot.command(q, self._close)
        contacts = np.zeros(3, dtype=bool)  # obstacle, distractor, table; any substep counts
        for _ in range(SUBSTEPS):
            p.stepSimulation(physicsClientId=c)
            contacts |= self._contact_flags()
        self._contacts = contacts
        self._steps += 1
        self._obs = self._observe(action_norm=float(np.linalg.norm(a[:3])))
        terminated = self._success
        truncated = not terminated and self._steps >= self.max_steps
        self._done = terminated or truncated
        self._log["actions"].append(a)
        return self._obs, float(terminated), terminated, truncated, self._info()

    def close(self) -> None:
        if self.client is not None and self.p.isConnected(self.client):
            self.p.disconnect(self.client)
        self.client = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: pybullet may already be gone
            pass

    def episode(self) -> Episode:
        """The steps since the last reset, as an Episode."""
        if self.scene is None:
            raise RuntimeError("call reset() before episode()")
        t, k, s = len(self._log["actions"]), len(self.keypoint_names), len(self.signal_names)
        return Episode(
            task=self.spec_task.name,
            instruction=self.scene.instruction,
            seed=self._seed,
            split=self.split,
            actions=np.array(self._log["actions"], dtype=np.float32).reshape(t, 7),
            states=np.array(self._log["states"], dtype=np.float32).reshape(t, STATE_DIM),
            keypoints=np.array(self._log["keypoints"], dtype=np.float32).reshape(t, k, 3),
            keypoint_names=list(self.keypoint_names),
            signals=np.array(self._log["signals"], dtype=np.float32).reshape(t, s),
            signal_names=list(self.signal_names),
            success=self._success,
            grasp=self._ever_grasp,
            collision=self._ever_collision,
        )

    # ------------------------------------------------------------------ checks
    def _check_action(self, action) -> np.ndarray:
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"action must be a numeric array of shape (7,): {exc}") from None
        if a.shape != (7,):
            raise ValueError(
                f"action must have shape (7,) [dx, dy, dz, droll, dpitch, dyaw, gripper], got shape {a.shape}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(f"action has non-finite values at indices {np.flatnonzero(bad).tolist()}: {a.tolist()}")
        return np.clip(a, ACTION_LOW, ACTION_HIGH)

    # ------------------------------------------------------------------ measurements
    def _contact_flags(self) -> np.ndarray:
        p, c, b, r = self.p, self.client, self.bodies, self.robot.body
        movers = (r, b.obj)
        obstacle = b.obstacle is not None and any(p.getContactPoints(m, b.obstacle, physicsClientId=c) for m in movers)
        distractor = any(p.getContactPoints(m, d, physicsClientId=c) for d in b.distractors for m in movers)
        table = any(pt[3] not in (-1, *panda.FINGER_LINKS) for pt in p.getContactPoints(r, b.table, physicsClientId=c))
        return np.array([obstacle, distractor, table])

    def _body_points(self, body: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre (AABB centre), top and bottom (AABB z extremes above/below the centre) of a body."""
        lo, hi = (np.array(v) for v in self.p.getAABB(body, physicsClientId=self.client))
        centre = 0.5 * (lo + hi)
        return centre, np.array([centre[0], centre[1], hi[2]]), np.array([centre[0], centre[1], lo[2]])

    def _container_points(self) -> tuple[np.ndarray, np.ndarray]:
        pos, q = self.p.getBasePositionAndOrientation(self.bodies.container, physicsClientId=self.client)
        rot = np.array(self.p.getMatrixFromQuaternion(q)).reshape(3, 3)
        h = self.scene.container.wall_height
        return np.array(pos) + rot @ np.array([0, 0, h / 2]), np.array(pos) + rot @ np.array([0, 0, h])

    def _finger_contact(self) -> tuple[bool, bool]:
        p, c = self.p, self.client
        return tuple(
            bool(p.getContactPoints(self.robot.body, self.bodies.obj, link, -1, physicsClientId=c))
            for link in panda.FINGER_LINKS
        )

    def _observe(self, action_norm: float = 0.0) -> dict:
        p, c, b, scene = self.p, self.client, self.bodies, self.scene
        tip, ee_yaw = self.robot.tip_pose()
        opening = self.robot.opening()
        left, right = self._finger_contact()
        # Held = touched by both fingers with something between them (closed fingers pressing on
        # an object's top or side touch it with both tips but hold nothing).
        grasped = left and right and opening > MIN_GRASP_OPENING
        centre, top, bottom = self._body_points(b.obj)
        points = {"gripper.tip": tip, "object.center": centre, "object.top": top, "object.bottom": bottom}
        if b.container is not None:
            points["container.center"], points["container.top"] = self._container_points()
            goal = points["container.top"]
        elif b.base is not None:
            points["base.center"], points["base.top"], _ = self._body_points(b.base)
            goal = points["base.top"]
        else:
            goal = np.array([scene.goal_at.xy[0], scene.goal_at.xy[1], 0.0])
            points["target.center"] = goal
        obstacle_state = np.zeros(4)
        if b.obstacle is not None:
            points["obstacle.center"], points["obstacle.top"], _ = self._body_points(b.obstacle)
            obstacle_state = np.array([*points["obstacle.top"], 1.0])

        _, q = p.getBasePositionAndOrientation(b.obj, physicsClientId=c)
        obj_yaw = p.getEulerFromQuaternion(q)[2]
        ext = b.obj_extent
        # The fingers close along the hand's y-axis: turn it onto the object's narrow side.
        wanted = obj_yaw + (math.pi / 2 if ext[0] <= ext[1] else 0.0)
        period = scene.obj.grasp_period
        yaw_error = 0.0 if period >= 2 * math.pi else wrap_angle(wanted - ee_yaw, period)
        command = 1.0 if self._close else -1.0
        state = np.concatenate(
            [
                tip,
                [math.sin(ee_yaw), math.cos(ee_yaw), opening, command, float(grasped)],
                centre,
                ext,
                [yaw_error],
                goal,
                obstacle_state,
                centre - tip,
                goal - centre,
            ]
        ).astype(np.float32)

        # Metrics (docs/sim.md).
        if grasped and bottom[2] >= self._obj_start_bottom + LIFT_HEIGHT:
            self._ever_grasp = True
        knocked = any(tilt(p, c, body) > KNOCKED_OVER_TILT for body in b.upright_bodies())
        if self._contacts[0] or self._contacts[1] or knocked:
            self._ever_collision = True
        self._success = self._check_success(centre, bottom, goal, left or right)

        signals = np.array([opening, float(grasped), *self._contacts.astype(float), action_norm, float(knocked)])
        if self._steps > 0:
            self._log["keypoints"].append(np.stack([points[n] for n in self.keypoint_names]))
            self._log["signals"].append(signals)
        self._last_points = points
        self._last_keypoints = np.stack([points[n] for n in self.keypoint_names]).astype(np.float32)
        self._last_signals = signals.astype(np.float32)
        obs = {"state": state}
        if self.image_size:
            obs["image"] = self.render_frame(self.image_size)
        return obs

    def _check_success(self, centre: np.ndarray, bottom: np.ndarray, goal: np.ndarray, touching: bool) -> bool:
        p, c, b, scene = self.p, self.client, self.bodies, self.scene
        speed = float(np.linalg.norm(p.getBaseVelocity(b.obj, physicsClientId=c)[0]))
        if speed > SETTLED_SPEED or (touching and b.target is None):  # placed objects must be let go of
            return False
        if b.container is not None:
            pos, q = p.getBasePositionAndOrientation(b.container, physicsClientId=c)
            rot = np.array(p.getMatrixFromQuaternion(q)).reshape(3, 3)
            local = rot.T @ (centre - np.array(pos))
            ix, iy = scene.container.inner[0] / 2, scene.container.inner[1] / 2
            return bool(abs(local[0]) <= ix and abs(local[1]) <= iy and bottom[2] < goal[2])
        if b.base is not None:
            # Resting on the base: touching it, off the table, centre above the base's top.
            on_base = bool(p.getContactPoints(b.obj, b.base, physicsClientId=c))
            on_table = bool(p.getContactPoints(b.obj, b.table, physicsClientId=c))
            return on_base and not on_table and centre[2] > goal[2]
        return bool(np.linalg.norm(centre[:2] - goal[:2]) <= scene.target_radius and bottom[2] < 0.01)

    def _info(self) -> dict:
        return {
            "success": self._success,
            "is_success": self._success,
            "grasp": self._ever_grasp,
            "collision": self._ever_collision,
            "steps": self._steps,
            "instruction": self.scene.instruction,
            # this step's schema values, rows ordered as metadata["keypoint_names"] / ["signal_names"]
            "keypoints": self._last_keypoints.copy(),
            "signals": self._last_signals.copy(),
        }

    # ------------------------------------------------------------------ pixels
    def render_frame(self, size: int = 256) -> np.ndarray:
        """An RGB image (uint8 [size, size, 3]) from a fixed oblique camera (arm and workspace in view)."""
        p, c = self.p, self.client
        view = p.computeViewMatrix([1.0, 0.5, 0.7], [0.35, 0.0, 0.1], [0, 0, 1])  # oblique: arm and table both in view
        proj = p.computeProjectionMatrixFOV(55, 1.0, 0.05, 3.0)
        light = list(self.scene.light_direction) if self.scene else [1, 1, 2]
        _, _, rgba, _, _ = p.getCameraImage(
            size, size, view, proj, renderer=p.ER_TINY_RENDERER, lightDirection=light, shadow=0, physicsClientId=c
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)[:, :, :3].copy()

    def render(self):
        return self.render_frame(self.image_size or 256)


def make_env(
    task: str,
    split: str = "in_domain",
    seed: int = 0,
    image_size: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> GrapeSimEnv:
    """Create the env of `task` on `split`; unknown names raise an error listing the known ones.
    A task registered from a gymnasium env (trainer.envs) gets that env, adapted."""
    from trainer.envs import EXTERNAL_ENVS

    if task in EXTERNAL_ENVS:
        return EXTERNAL_ENVS[task](split, seed, image_size, max_steps)
    return GrapeSimEnv(task, split=split, seed=seed, image_size=image_size, max_steps=max_steps)
