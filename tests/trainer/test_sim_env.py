"""The gymnasium env: schema, determinism, action handling and bad input (real pybullet)."""

import numpy as np
import pytest

from trainer.sim.env import STATE_DIM, STATE_NAMES, make_env
from trainer.sim.splits import MAX_SEED
from trainer.sim.tasks import SIGNAL_NAMES, TASKS, UnknownNameError


@pytest.fixture(scope="module")
def env():
    e = make_env("pick_place_obstacle", seed=5)
    yield e
    e.close()


def test_every_task_reports_its_schema():
    for name, spec in TASKS.items():
        e = make_env(name, seed=1)
        try:
            obs, info = e.reset()
            assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
            assert e.observation_space.contains(obs)
            assert e.instruction and info["instruction"] == e.instruction
            for _ in range(3):
                e.step(np.zeros(7, np.float32))
            ep = e.episode()
            assert ep.keypoints.shape == (3, len(spec.keypoint_names), 3)
            assert ep.signals.shape == (3, len(SIGNAL_NAMES))
            assert ep.keypoint_names == list(spec.keypoint_names)
            assert ep.signal_names == list(SIGNAL_NAMES)
        finally:
            e.close()


def test_reset_is_deterministic_per_seed(env):
    a, _ = env.reset(seed=11)
    b, _ = env.reset(seed=11)
    c, _ = env.reset(seed=12)
    np.testing.assert_array_equal(a["state"], b["state"])
    assert not np.allclose(a["state"], c["state"])


def test_translation_moves_the_tip_and_is_clipped(env):
    obs, _ = env.reset(seed=3)
    z0 = obs["state"][STATE_NAMES.index("ee.z")]
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 1.0, 0, 0, 0, -1]))  # asks for 1 m, gets 0.02 m per step
    dz = obs["state"][STATE_NAMES.index("ee.z")] - z0
    assert 0.07 < dz <= 0.1 + 1e-3
    ep = env.episode()
    assert np.allclose(ep.actions[:, 2], 0.02)
    assert np.allclose(ep.signals[:, SIGNAL_NAMES.index("action.norm")], 0.02, atol=1e-6)


def test_gripper_closes_and_opens(env):
    env.reset(seed=3)
    for _ in range(4):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, 1.0]))
    assert obs["state"][STATE_NAMES.index("gripper.opening")] < 0.01
    for _ in range(4):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert obs["state"][STATE_NAMES.index("gripper.opening")] > 0.075


@pytest.mark.parametrize(
    "action, words",
    [
        (np.zeros(6), "shape (7,)"),
        (np.zeros((7, 1)), "shape (7,)"),
        (np.array([0, 0, np.nan, 0, 0, 0, 1]), "non-finite values at indices [2]"),
        (np.array([np.inf, 0, 0, 0, 0, 0, 1]), "non-finite values at indices [0]"),
        (["a"] * 7, "numeric array"),
    ],
)
def test_malformed_actions_raise_and_env_survives(env, action, words):
    env.reset(seed=2)
    with pytest.raises(ValueError) as err:
        env.step(action)
    assert words in str(err.value)
    obs, *_ = env.step(np.zeros(7))  # the simulator is still usable
    assert np.isfinite(obs["state"]).all()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'pick_place'.*known: pick_place, pick_place_obstacle"):
        make_env("pick_plac")
    with pytest.raises(UnknownNameError, match="unknown split 'indomain'.*known: in_domain, subject"):
        make_env("stack", split="indomain")


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, "3", True])
def test_seed_out_of_range_is_rejected(seed):
    with pytest.raises(ValueError, match="seed"):
        make_env("stack", seed=seed)


def test_max_steps_truncates():
    e = make_env("stack", seed=0, max_steps=4)
    try:
        e.reset()
        flags = [e.step(np.zeros(7))[3] for _ in range(4)]
        assert flags == [False, False, False, True]
        with pytest.raises(RuntimeError, match="episode has ended"):
            e.step(np.zeros(7))
        assert e.episode().length == 4
        e.reset()
        e.step(np.zeros(7))  # usable again after reset
    finally:
        e.close()


def test_camera_image_when_enabled():
    e = make_env("push_to_target", seed=0, image_size=32)
    try:
        obs, _ = e.reset()
        assert obs["image"].shape == (32, 32, 3) and obs["image"].dtype == np.uint8
        assert obs["image"].std() > 0  # not a blank frame
    finally:
        e.close()


def test_close_disconnects():
    import pybullet as p

    e = make_env("stack")
    client = e.client
    e.close()
    assert not p.isConnected(client)


def test_same_seed_replays_identically_in_a_reused_world():
    from trainer.sim.expert import Expert, run_expert

    fresh = make_env("pick_place_obstacle")
    reused = make_env("pick_place_obstacle")
    try:
        for seed in (1, 2):
            run_expert(reused, Expert("pick_place_obstacle"), seed=seed)
        a = run_expert(fresh, Expert("pick_place_obstacle"), seed=7)
        b = run_expert(reused, Expert("pick_place_obstacle"), seed=7)
    finally:
        fresh.close()
        reused.close()
    assert a.length == b.length
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.signals, b.signals)


@pytest.mark.parametrize("image_size", [None, 24])
def test_passes_gymnasium_env_checker(image_size):
    from gymnasium.utils.env_checker import check_env

    e = make_env("pick_place_obstacle", image_size=image_size)
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"image_size": 4}, "image_size must be an int in [16, 1024]"),
        ({"image_size": 64.0}, "image_size must be an int"),
        ({"max_steps": 0}, "max_steps must be a positive int"),
    ],
)
def test_bad_env_arguments(kwargs, words):
    with pytest.raises(ValueError) as err:
        make_env("stack", **kwargs)
    assert words in str(err.value)
