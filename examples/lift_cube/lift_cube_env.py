"""An environment this project does not ship with its tasks: a floating gripper lifts a cube.

A few pybullet bodies (a ground plane, a cube, a kinematic sphere for the gripper tip); closing
the gripper within `GRASP_RADIUS` of the cube's centre holds the cube (a fixed constraint), opening
lets go. It meets the contract of docs/environments.md: 7-D actions, {"state"} observations,
`info["keypoints"]`, `info["signals"]` (names in `metadata`), `info["success"]` (the cube's
bottom `LIFT` above the ground while held).

    grape-sft   --env lift_cube_env:make --schema examples/lift_cube/scene.json --demos-dir DEMOS ...
    python examples/lift_cube/lift_cube_env.py record --out DEMOS -n 20    # scripted demonstrations
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np

STEP = 0.02  # metres per control step
SUBSTEPS = 8
CUBE_HALF = 0.02
GRASP_RADIUS = 0.03
LIFT = 0.06
KEYPOINT_NAMES = ("gripper.tip", "cube.center", "cube.top")
SIGNAL_NAMES = ("grasped", "action.norm")


class LiftCubeEnv(gym.Env):
    """Lift the cube. State: tip xyz, cube xyz, grasped, gripper command (8 floats)."""

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 20,
        "keypoint_names": list(KEYPOINT_NAMES),
        "signal_names": list(SIGNAL_NAMES),
    }

    def __init__(self, max_steps: int = 40, render_mode: str | None = "rgb_array") -> None:
        import pybullet as p
        import pybullet_data

        self.p, self.max_steps, self.render_mode = p, max_steps, render_mode
        self.client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        self.observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-2.0, 2.0, (8,), np.float32)})
        self.action_space = gym.spaces.Box(
            np.array([-STEP] * 3 + [-0.1] * 3 + [-1], np.float32), np.array([STEP] * 3 + [0.1] * 3 + [1], np.float32)
        )
        self.instruction = "lift the cube"

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        p, c = self.p, self.client
        p.resetSimulation(physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.loadURDF("plane.urdf", physicsClientId=c)
        xy = self.np_random.uniform(-0.1, 0.1, size=2)
        box = p.createCollisionShape(p.GEOM_BOX, halfExtents=[CUBE_HALF] * 3, physicsClientId=c)
        look = p.createVisualShape(
            p.GEOM_BOX, halfExtents=[CUBE_HALF] * 3, rgbaColor=[0.8, 0.2, 0.2, 1], physicsClientId=c
        )
        self.cube = p.createMultiBody(0.05, box, look, [xy[0], xy[1], CUBE_HALF], physicsClientId=c)
        ball = p.createVisualShape(p.GEOM_SPHERE, radius=0.01, rgbaColor=[0.2, 0.2, 0.9, 1], physicsClientId=c)
        self.tip = np.array([0.0, 0.0, 0.2]) + np.append(self.np_random.uniform(-0.05, 0.05, size=2), 0.0)
        self.gripper = p.createMultiBody(0, -1, ball, self.tip.tolist(), physicsClientId=c)
        self.hold, self.closed, self.steps = None, False, 0
        return self._obs(), self._info(0.0)

    def step(self, action):
        p, c = self.p, self.client
        action = np.clip(np.asarray(action, dtype=np.float64), self.action_space.low, self.action_space.high)
        self.tip = np.clip(self.tip + action[:3], [-0.3, -0.3, 0.01], [0.3, 0.3, 0.4])
        p.resetBasePositionAndOrientation(self.gripper, self.tip.tolist(), [0, 0, 0, 1], physicsClientId=c)
        self.closed = bool(action[6] > 0)
        cube = self._cube()
        if self.closed and self.hold is None and np.linalg.norm(cube - self.tip) <= GRASP_RADIUS:
            self.hold = p.createConstraint(
                self.gripper,
                -1,
                self.cube,
                -1,
                p.JOINT_FIXED,
                [0, 0, 0],
                [0, 0, 0],
                (cube - self.tip).tolist(),
                physicsClientId=c,
            )
        elif not self.closed and self.hold is not None:
            p.removeConstraint(self.hold, physicsClientId=c)
            self.hold = None
        for _ in range(SUBSTEPS):
            p.stepSimulation(physicsClientId=c)
        self.steps += 1
        info = self._info(float(np.linalg.norm(action[:3])))
        terminated = info["success"]
        truncated = not terminated and self.steps >= self.max_steps
        return self._obs(), float(terminated), terminated, truncated, info

    def _cube(self) -> np.ndarray:
        return np.array(self.p.getBasePositionAndOrientation(self.cube, physicsClientId=self.client)[0])

    def _obs(self) -> dict:
        state = np.concatenate([self.tip, self._cube(), [float(self.hold is not None), 1.0 if self.closed else -1.0]])
        return {"state": state.astype(np.float32)}

    def _info(self, action_norm: float) -> dict:
        cube = self._cube()
        held = self.hold is not None
        return {
            "keypoints": np.stack([self.tip, cube, cube + [0, 0, CUBE_HALF]]).astype(np.float32),
            "signals": np.array([float(held), action_norm], dtype=np.float32),
            "success": bool(held and cube[2] - CUBE_HALF >= LIFT),
            "grasp": held,
            "instruction": self.instruction,
        }

    def render(self):
        p = self.p
        view = p.computeViewMatrix([0.5, 0.5, 0.4], [0, 0, 0.05], [0, 0, 1])
        proj = p.computeProjectionMatrixFOV(50, 1.0, 0.05, 3.0)
        _, _, rgba, _, _ = p.getCameraImage(
            96, 96, view, proj, renderer=p.ER_TINY_RENDERER, physicsClientId=self.client
        )
        return np.asarray(rgba, dtype=np.uint8).reshape(96, 96, 4)[:, :, :3]

    def close(self) -> None:
        if self.client is not None and self.p.isConnected(self.client):
            self.p.disconnect(self.client)
        self.client = None


def make(**kwargs) -> LiftCubeEnv:
    """The factory `--env lift_cube_env:make` names."""
    return LiftCubeEnv(**kwargs)


if "GrapeExamples/LiftCube-v0" not in gym.registry:  # also run as a script: register once
    gym.register("GrapeExamples/LiftCube-v0", entry_point=LiftCubeEnv, disable_env_checker=True)


def expert_action(state: np.ndarray) -> np.ndarray:
    """Scripted expert: above the cube, down, close, lift."""
    tip, cube, held = state[:3], state[3:6], state[6] > 0.5
    action = np.zeros(7, dtype=np.float32)
    if held:
        action[2], action[6] = STEP, 1.0
        return action
    offset = cube - tip
    if np.linalg.norm(offset[:2]) > 0.005:
        action[:2] = np.clip(offset[:2], -STEP, STEP)
        action[6] = -1.0
    elif np.linalg.norm(offset) > GRASP_RADIUS * 0.5:
        action[2] = np.clip(offset[2], -STEP, STEP)
        action[6] = -1.0
    else:
        action[6] = 1.0
    return action


def record(out: str, episodes: int, first_seed: int = 1000) -> int:
    """Write `episodes` successful scripted episodes into the trajectory store `out`."""
    from pathlib import Path

    from trainer.envs import register_environment
    from trainer.sim.env import make_env
    from trainer.store import write_episode

    task = register_environment("lift_cube_env:make", Path(__file__).with_name("scene.json"))
    written, seed = 0, first_seed
    while written < episodes:
        env = make_env(task, "in_domain", seed, max_steps=40)
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(expert_action(obs["state"]))
            done = terminated or truncated
        episode = env.episode()
        env.close()
        if episode.success:
            write_episode(out, episode, extra={"source": "expert"})
            written += 1
        seed += 1
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scripted demonstrations of the lift-cube example")
    parser.add_argument("command", choices=["record"])
    parser.add_argument("--out", required=True, help="trajectory store folder")
    parser.add_argument("-n", type=int, default=20, help="successful episodes to record")
    args = parser.parse_args(argv)
    print(f"recorded {record(args.out, args.n)} episodes into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
