"""Your own gymnasium environment through the trainer: the contract, its errors, and the
lift-cube example (not one of the stock tasks) through grape-sft, grape-train and grape-eval."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pyarrow.parquet as pq
import pytest

import trainer.sim  # noqa: F401 - registers the stock tasks with gymnasium
from trainer.envs import EXTERNAL_ENVS, EnvError, register_environment
from trainer.sim.env import make_env
from trainer.sim.registration import gym_id
from trainer.sim.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "lift_cube"
SCENE = EXAMPLE / "scene.json"


@pytest.fixture(autouse=True)
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    for name in [n for n in TASKS if TASKS[n].goal == "external"]:  # leave the registry as found
        TASKS.pop(name)
        EXTERNAL_ENVS.pop(name, None)


@pytest.mark.parametrize("task", list(TASKS))
def test_stock_tasks_are_gymnasium_ids_with_keypoints_and_signals_in_info(task):
    env = gymnasium.make(gym_id(task), seed=5, max_steps=3)
    try:
        names = env.unwrapped.metadata
        assert names["keypoint_names"] == list(TASKS[task].keypoint_names)
        assert names["signal_names"] == list(TASKS[task].signal_names)
        env.reset()
        rows_k, rows_s = [], []
        for _ in range(3):
            _, _, _, _, info = env.step(np.array([0.01, 0, 0, 0, 0, 0, -1], np.float32))
            rows_k.append(info["keypoints"])
            rows_s.append(info["signals"])
            assert "success" in info
        episode = env.unwrapped.episode()
        np.testing.assert_array_equal(np.stack(rows_k), episode.keypoints)
        np.testing.assert_array_equal(np.stack(rows_s), episode.signals)
    finally:
        env.close()


def test_example_env_registered_from_a_factory_yields_its_schema():
    task = register_environment("lift_cube_env:make", SCENE)
    assert task == "lift_cube"
    env = make_env(task, "in_domain", 3, max_steps=5)
    obs, _ = env.reset(seed=3)
    assert obs["state"].shape == (8,)
    done = False
    while not done:
        obs, _, terminated, truncated, _ = env.step(np.zeros(7, np.float32))
        done = terminated or truncated
    episode = env.episode()
    env.close()
    episode.validate()
    assert episode.length == 5 and episode.keypoint_names == ["gripper.tip", "cube.center", "cube.top"]
    assert episode.instruction == "lift the cube"


def test_gymnasium_id_works_as_env_too():
    import lift_cube_env  # noqa: F401 - registers GrapeExamples/LiftCube-v0

    assert register_environment("GrapeExamples/LiftCube-v0", SCENE) == "lift_cube"


class _NoSignals(gymnasium.Env):
    metadata = {
        "keypoint_names": ["gripper.tip", "cube.center", "cube.top"],
        "signal_names": ["grasped", "action.norm"],
    }
    action_space = gymnasium.spaces.Box(-1, 1, (7,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {"keypoints": np.zeros((3, 3)), "success": False}


def test_a_missing_info_key_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "make_no_signals", lambda: _NoSignals(), raising=False)
    task = register_environment(f"{__name__}:make_no_signals", SCENE)
    env = make_env(task, "in_domain", 0, max_steps=5)
    env.reset(seed=0)
    with pytest.raises(
        EnvError, match=r"step 1: info\['signals'\] is missing; every step must report signals \(grasped, action.norm\)"
    ):
        env.step(np.zeros(7))


def test_bad_env_and_schema_arguments_are_clear_errors(tmp_path):
    with pytest.raises(EnvError, match="cannot import module 'no_such_module'"):
        register_environment("no_such_module:make", SCENE)
    with pytest.raises(EnvError, match="GrapeSim/Nope-v0"):
        register_environment("GrapeSim/Nope-v0", SCENE)
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({"name": "lift_cube", "keypoints": ["gripper.tip", "cube.centre"], "signals": ["grasped"]})
    )
    with pytest.raises(EnvError, match=r"metadata\['keypoint_names'\].*differs from the names in --schema"):
        register_environment("lift_cube_env:make", other)
    stock = tmp_path / "stack.json"
    stock.write_text(json.dumps({"name": "stack", "keypoints": ["gripper.tip"]}))
    with pytest.raises(EnvError, match="is a stock task"):
        register_environment("lift_cube_env:make", stock)


@pytest.mark.slow
def test_example_env_trains_end_to_end_from_the_clis(tmp_path, capsys):
    """grape-sft on recorded demonstrations, grape-train one iteration scored by the example's
    own .grc, grape-eval of both iterations; grapec score re-scores the stored rollouts."""
    import lift_cube_env

    from grape_dsl import cli as grapec
    from trainer.cli import eval_main, train_main
    from trainer.sft import main as sft_main

    demos = tmp_path / "demos"
    assert lift_cube_env.record(str(demos), 6) == 6
    own = ["--env", "lift_cube_env:make", "--schema", str(SCENE)]
    assert (
        sft_main(
            [
                *own,
                "--demos-dir",
                str(demos),
                "--demos",
                "6",
                "--out",
                str(tmp_path / "sft"),
                "--steps",
                "40",
                "--hidden-size",
                "32",
                "--layers",
                "1",
                "--heads",
                "2",
                "-q",
            ]
        )
        == 0
    )
    policy = tmp_path / "sft" / "policy"
    run = tmp_path / "run"
    assert (
        train_main(
            [
                *own,
                "--constraints",
                str(EXAMPLE / "lift_cube.grc"),
                "--policy",
                str(policy),
                "--iterations",
                "1",
                "--states-per-task",
                "2",
                "--samples-per-state",
                "3",
                "--m",
                "1",
                "--max-steps",
                "30",
                "--output-dir",
                str(run),
                "--no-progress",
            ]
        )
        == 0
    )
    scores = pq.read_table(run / "iterations" / "iter_0001" / "scores.parquet").to_pydict()
    assert set(scores["task"]) == {"lift_cube"} and len(scores["r_ext"]) == 6
    capsys.readouterr()
    assert (
        grapec.main(
            [
                "score",
                str(EXAMPLE / "lift_cube.grc"),
                "--batch",
                str(run / "iterations" / "iter_0001" / "rollouts"),
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["r_ext_per_trajectory"] == scores["r_ext"]
    assert (
        eval_main(
            [
                *own,
                "--policy",
                str(run),
                "--splits",
                "in_domain",
                "--episodes",
                "2",
                "--max-steps",
                "30",
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert sorted(info["iterations"]) == ["0", "1"] and info["tasks"] == ["lift_cube"]
    assert len(info["gifs"]) == 1 and Path(info["gifs"][0]).is_file()


def test_env_without_schema_is_a_clear_cli_error(capsys):
    from trainer.cli import eval_main

    assert eval_main(["--policy", "x", "--env", "lift_cube_env:make"]) == 1
    assert "--env and --schema go together" in capsys.readouterr().err
