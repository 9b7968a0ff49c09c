"""Bring your own environment: any gymnasium env that reports keypoints and signals in `info`
becomes a task the trainer can roll out, train on and evaluate (docs/environments.md).

The contract an environment meets (the stock tasks meet it too, `trainer.sim.registration`):
- observations: a dict with "state" (float vector) or a flat float vector;
- actions: a Box of shape (7,) (dx, dy, dz, droll, dpitch, dyaw, gripper), the policies' action space;
- every `step`'s info: `info["keypoints"]` float [K, 3] and `info["signals"]` float [S], ordered
  as `env.metadata["keypoint_names"]` / `env.metadata["signal_names"]` (or dicts name -> value,
  then no metadata is needed), and `info["success"]` (or "is_success");
- optional: `info["instruction"]` (or `env.unwrapped.instruction`), `info["grasp"]`,
  `info["collision"]`, `render()` returning an RGB frame for GIFs.

`register_environment(env, schema_file)` makes the env a task named after its schema file (the
`--scene` JSON format of `grapec generate`): the name joins `trainer.sim.tasks.TASKS` and
`trainer.sim.env.make_env` builds a `GymTaskEnv` for it. The registry lives in this process.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from trainer.sim.episode import Episode
from trainer.sim.tasks import TASKS, TaskSpec

INFO_KEYPOINTS = "keypoints"
INFO_SIGNALS = "signals"
INFO_SUCCESS = ("success", "is_success")
META_KEYPOINT_NAMES = "keypoint_names"
META_SIGNAL_NAMES = "signal_names"
ACTION_DIM = 7
EXTERNAL_GOAL = "external"  # TaskSpec.goal of a registered environment

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

EXTERNAL_ENVS: dict[str, Callable[..., GymTaskEnv]] = {}
"""task name -> make(split, seed, image_size, max_steps): the registered environments."""


class EnvError(ValueError):
    """An environment that does not meet the contract, or an unusable --env/--schema; says which and why."""


def load_factory(env: str) -> Callable[[], Any]:
    """A no-argument constructor for `env`: `module:factory` (a callable returning a gymnasium
    env) or a gymnasium id (`Namespace/Name-v0`, or `module:Namespace/Name-v0`)."""
    if _FACTORY.match(env):
        module_name, _, attribute = env.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as error:
            raise EnvError(f"--env {env}: cannot import module '{module_name}' ({error})") from None
        for part in attribute.split("."):
            if not hasattr(target, part):
                raise EnvError(f"--env {env}: module '{module_name}' has no attribute '{attribute}'")
            target = getattr(target, part)
        if not callable(target):
            raise EnvError(f"--env {env}: '{attribute}' is not callable")
        return target

    import gymnasium

    def make() -> Any:
        try:
            return gymnasium.make(env, disable_env_checker=True)
        except gymnasium.error.Error as error:
            raise EnvError(f"--env {env}: {error}") from None

    return make


def _names(env: Any, key: str) -> list[str] | None:
    names = getattr(env, "metadata", {}).get(key)
    return None if names is None else [str(n) for n in names]


def register_environment(env: str, schema_file: str | Path) -> str:
    """Register `env` as a task named after `schema_file`; returns the task name.

    The env is built once to check that its metadata names (when it gives them) are the
    schema's names; each step's info is checked as episodes run.
    """
    from grape_dsl.llm import InputError, load_scene

    try:
        schema = load_scene(schema_file)
    except InputError as error:
        raise EnvError(f"--schema: {error}") from None
    name = schema.name
    if name in TASKS and TASKS[name].goal != EXTERNAL_GOAL:
        raise EnvError(f"--schema {schema_file}: name '{name}' is a stock task; give the scene another \"name\"")
    factory = load_factory(env)
    probe = _build(factory, env)
    try:
        for key, wanted in ((META_KEYPOINT_NAMES, list(schema.keypoints)), (META_SIGNAL_NAMES, list(schema.signals))):
            reported = _names(probe, key)
            if reported is not None and sorted(reported) != sorted(wanted):
                raise EnvError(
                    f"--env {env}: metadata['{key}'] {reported} differs from the names in "
                    f"--schema {schema_file}: {wanted}"
                )
        keypoint_names = _names(probe, META_KEYPOINT_NAMES) or list(schema.keypoints)
        signal_names = _names(probe, META_SIGNAL_NAMES) or list(schema.signals)
    finally:
        probe.close()
    spec = TaskSpec(
        name=name,
        goal=EXTERNAL_GOAL,
        keypoint_names=tuple(keypoint_names),
        templates=(schema.description or name,),
        paraphrases=(),
        signal_names=tuple(signal_names),
        description=schema.description,
    )
    TASKS[name] = spec

    def make(split: str, seed: int, image_size: int | None, max_steps: int) -> GymTaskEnv:
        return GymTaskEnv(spec, _build(factory, env), env, split, seed, image_size, max_steps)

    EXTERNAL_ENVS[name] = make
    return name


def _build(factory: Callable[[], Any], env: str) -> Any:
    try:
        built = factory()
    except EnvError:
        raise
    except Exception as error:  # the user's constructor: report it, whatever it raised
        raise EnvError(f"--env {env}: building the environment failed: {type(error).__name__}: {error}") from None
    space = getattr(built, "action_space", None)
    if getattr(space, "shape", None) != (ACTION_DIM,):
        built.close()
        raise EnvError(
            f"--env {env}: the action space must be a Box of shape ({ACTION_DIM},) "
            f"(dx, dy, dz, droll, dpitch, dyaw, gripper), got {space}"
        )
    return built


class GymTaskEnv:
    """A gymnasium env seen as the trainer sees a stock env: reset/step with {"state", "image"}
    observations, `instruction`, `episode()` (keypoints and signals gathered from `info`),
    `render_frame(size)`. Truncates at `max_steps` when the env has not ended by then."""

    def __init__(
        self, spec: TaskSpec, env: Any, env_name: str, split: str, seed: int, image_size: int | None, max_steps: int
    ) -> None:
        self.spec_task, self.env, self.env_name = spec, env, env_name
        self.split, self._seed, self.image_size, self.max_steps = split, int(seed), image_size, max_steps
        self.keypoint_names, self.signal_names = list(spec.keypoint_names), list(spec.signal_names)
        space = env.action_space
        self._low = np.asarray(getattr(space, "low", -np.inf), dtype=np.float32)
        self._high = np.asarray(getattr(space, "high", np.inf), dtype=np.float32)
        self.instruction = spec.templates[0]
        self._log: dict[str, list] = {}
        self._done = True

    @property
    def seed(self) -> int:
        return self._seed

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self._seed = int(seed)
        obs, info = self.env.reset(seed=self._seed, options=options)
        self._obs = self._observation(obs)
        self.instruction = str(
            info.get("instruction") or getattr(self.env.unwrapped, "instruction", "") or self.spec_task.templates[0]
        )
        self._log = {"actions": [], "states": [], "keypoints": [], "signals": []}
        self._steps, self._success, self._grasp, self._collision, self._done = 0, False, False, False, False
        return self._obs, info

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("the episode has ended; call reset() before stepping again")
        action = np.clip(np.asarray(action, dtype=np.float32).reshape(ACTION_DIM), self._low, self._high)
        self._log["states"].append(self._obs["state"])
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        self._log["actions"].append(action)
        self._log["keypoints"].append(self._read(info, INFO_KEYPOINTS, self.keypoint_names, (3,)))
        self._log["signals"].append(self._read(info, INFO_SIGNALS, self.signal_names, ()))
        found = [key for key in INFO_SUCCESS if key in info]
        if not found:
            raise EnvError(
                f"--env {self.env_name}: step {self._steps}: info has no 'success' (or 'is_success') "
                f"key (has: {', '.join(map(str, info)) or 'nothing'})"
            )
        self._success = bool(info[found[0]])
        self._grasp |= bool(info.get("grasp", False))
        self._collision |= bool(info.get("collision", False))
        truncated = bool(truncated) or (not terminated and self._steps >= self.max_steps)
        self._done = bool(terminated) or truncated
        self._obs = self._observation(obs)
        return self._obs, float(reward), bool(terminated), truncated, info

    def _observation(self, obs: Any) -> dict:
        state = obs.get("state") if isinstance(obs, dict) else obs
        if state is None:
            raise EnvError(f"--env {self.env_name}: a dict observation needs a 'state' entry (has: {', '.join(obs)})")
        out = {"state": np.asarray(state, dtype=np.float32).reshape(-1)}
        if self.image_size:
            image = obs.get("image") if isinstance(obs, dict) else None
            if image is None or np.shape(image) != (self.image_size, self.image_size, 3):
                raise EnvError(
                    f"--env {self.env_name}: the policy reads {self.image_size}x{self.image_size} images, "
                    f"but the observation's 'image' is {None if image is None else np.shape(image)}"
                )
            out["image"] = np.asarray(image, dtype=np.uint8)
        return out

    def _read(self, info: dict, key: str, names: list[str], shape: tuple[int, ...]) -> np.ndarray:
        where = f"--env {self.env_name}: step {self._steps}: info['{key}']"
        if key not in info:
            raise EnvError(f"{where} is missing; every step must report {key} ({', '.join(names)})")
        value = info[key]
        if isinstance(value, dict):
            missing = [n for n in names if n not in value]
            if missing:
                raise EnvError(f"{where} lacks {', '.join(missing)}")
            value = [value[n] for n in names]
        array = np.asarray(value, dtype=np.float32)
        if array.shape != (len(names), *shape):
            raise EnvError(f"{where} has shape {array.shape}, expected {(len(names), *shape)} ({', '.join(names)})")
        return array

    def episode(self) -> Episode:
        t, k, s = len(self._log["actions"]), len(self.keypoint_names), len(self.signal_names)
        return Episode(
            task=self.spec_task.name,
            instruction=self.instruction,
            seed=self._seed,
            split=self.split,
            actions=np.array(self._log["actions"], dtype=np.float32).reshape(t, ACTION_DIM),
            states=np.array(self._log["states"], dtype=np.float32).reshape(t, len(self._obs["state"])),
            keypoints=np.array(self._log["keypoints"], dtype=np.float32).reshape(t, k, 3),
            keypoint_names=list(self.keypoint_names),
            signals=np.array(self._log["signals"], dtype=np.float32).reshape(t, s),
            signal_names=list(self.signal_names),
            success=self._success,
            grasp=self._grasp,
            collision=self._collision,
        )

    def render_frame(self, size: int = 256) -> np.ndarray:
        """The env's `render()` frame, resampled (nearest) to size x size."""
        frame = self.env.render()
        if frame is None:
            raise EnvError(
                f"--env {self.env_name}: render() returned nothing; make the env with "
                "render_mode='rgb_array' or evaluate with --gifs 0"
            )
        frame = np.asarray(frame, dtype=np.uint8)[..., :3]
        rows = np.arange(size) * frame.shape[0] // size
        cols = np.arange(size) * frame.shape[1] // size
        return frame[rows][:, cols].copy()

    def close(self) -> None:
        self.env.close()


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    """`--env` and `--schema`, shared by grape-train, grape-eval and grape-sft."""
    group = parser.add_argument_group("your own environment (docs/environments.md)")
    group.add_argument(
        "--env",
        metavar="ID|MODULE:FACTORY",
        default=None,
        help="a gymnasium env id or module:factory that reports keypoints and signals in info; needs --schema",
    )
    group.add_argument(
        "--schema",
        metavar="SCENE.json",
        default=None,
        help="the env's keypoint and signal names with their meaning (grapec generate's --scene format); "
        "its name is the task name",
    )


def register_from_args(args: argparse.Namespace) -> str | None:
    """Register --env/--schema (removing both from `args`); the task name, or None without --env."""
    env, schema = args.env, args.schema
    del args.env, args.schema
    if env is None and schema is None:
        return None
    if env is None or schema is None:
        raise EnvError("--env and --schema go together: the environment and the file naming what it reports")
    return register_environment(env, schema)
