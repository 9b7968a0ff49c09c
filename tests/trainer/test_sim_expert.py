"""Scripted experts in the real simulator: success, metrics, knobs."""

import numpy as np
import pytest

from trainer.sim.env import make_env
from trainer.sim.expert import Expert, run_expert
from trainer.sim.splits import get_split
from trainer.sim.tasks import SIGNAL_NAMES, TASKS

SEEDS = get_split("in_domain").eval_seeds(3)


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_succeeds_on_a_few_seeds(task):
    env = make_env(task)
    try:
        for seed in SEEDS:
            ep = run_expert(env, Expert(task), seed=seed)
            assert ep.success, (task, seed, ep.length)
            assert ep.length <= 100
            assert ep.grasp == (task != "push_to_target")
            assert not ep.collision
            assert np.abs(ep.actions[:, :3]).max() <= 0.02 + 1e-7
    finally:
        env.close()


def test_random_actions_do_not_succeed():
    env = make_env("pick_place", max_steps=40)
    try:
        rng = np.random.default_rng(0)
        env.reset(seed=SEEDS[0])
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(rng.uniform(env.action_space.low, env.action_space.high))
            done = term or trunc
        assert not env.episode().success
    finally:
        env.close()


def test_brush_knob_touches_the_obstacle_and_default_clears_it():
    env = make_env("pick_place_obstacle")
    col = SIGNAL_NAMES.index("contact.obstacle")
    try:
        seed = SEEDS[1]
        clear = run_expert(env, Expert("pick_place_obstacle"), seed=seed)
        brush = run_expert(env, Expert("pick_place_obstacle", brush=0.02), seed=seed)
    finally:
        env.close()
    assert clear.signals[:, col].sum() == 0 and not clear.collision
    assert brush.signals[:, col].sum() >= 1 and brush.collision


def test_noise_knob_changes_actions_and_speed_knob_slows_down():
    env = make_env("push_to_target")
    try:
        seed = SEEDS[0]
        base = run_expert(env, Expert("push_to_target"), seed=seed)
        noisy = run_expert(env, Expert("push_to_target", noise=0.2, seed=1), seed=seed)
        slow = run_expert(env, Expert("push_to_target", speed=0.5), seed=seed)
    finally:
        env.close()
    assert not np.array_equal(base.actions[:5], noisy.actions[:5])
    assert np.abs(slow.actions[:, :3]).max() <= 0.01 + 1e-6
    assert slow.length > base.length


@pytest.mark.parametrize("task", ["stack", "push_to_target"])
def test_noisy_expert_still_finishes(task):
    env = make_env(task)
    try:
        episodes = [run_expert(env, Expert(task, noise=0.3, seed=s), seed=s) for s in SEEDS[:2]]
    finally:
        env.close()
    assert all(e.success for e in episodes)


def test_expert_knobs_validate():
    with pytest.raises(ValueError, match="speed"):
        Expert("stack", speed=0.0)
    with pytest.raises(ValueError, match="noise"):
        Expert("stack", noise=-1)


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_expert_success_at_least_90_percent_over_100_in_domain_seeds(task):
    env = make_env(task)
    try:
        wins = sum(run_expert(env, Expert(task), seed=s).success for s in get_split("in_domain").eval_seeds(100))
    finally:
        env.close()
    assert wins >= 90, f"{task}: expert succeeded on {wins}/100 in-domain seeds"


def _drive_tip(env, info, target, steps):
    """Move the closed gripper's tip toward target for up to `steps` steps; return the last info."""
    tip_row = env.keypoint_names.index("gripper.tip")
    for _ in range(steps):
        step = np.clip(target - info["keypoints"][tip_row], -0.02, 0.02)
        _, _, terminated, truncated, info = env.step(np.array([*step, 0, 0, 0, 1.0]))
        if terminated or truncated:
            break
    return info


def test_knocked_over_signal_marks_a_toppled_obstacle():
    env = make_env("pick_place_obstacle", max_steps=120)
    col = SIGNAL_NAMES.index("knocked_over")
    try:
        clear = run_expert(env, Expert("pick_place_obstacle"), seed=SEEDS[0])
        _, info = env.reset(seed=SEEDS[0])
        points = dict(zip(env.keypoint_names, info["keypoints"]))
        centre, top = points["obstacle.center"], points["obstacle.top"]
        z = top[2] - 0.015  # sweep through the obstacle just below its top: it tips rather than slides
        info = _drive_tip(env, info, np.array([centre[0] - 0.1, centre[1], z + 0.08]), 25)
        info = _drive_tip(env, info, np.array([centre[0] - 0.1, centre[1], z]), 15)
        _drive_tip(env, info, np.array([centre[0] + 0.15, centre[1], z]), 30)
        toppled = env.episode()
    finally:
        env.close()
    assert clear.signals[:, col].sum() == 0
    assert toppled.signals[:, col].sum() >= 1 and toppled.collision
    assert toppled.signals[-1, col] == 1  # a fallen obstacle stays down
