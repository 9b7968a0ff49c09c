"""Batched stepping over worker processes."""

import numpy as np
import pytest

from trainer.sim.env import STATE_DIM, make_env
from trainer.sim.expert import Expert
from trainer.sim.tasks import UnknownNameError
from trainer.sim.vector import ExpertJob, VectorEnv, collect_expert_episodes


def test_vector_env_matches_single_envs():
    tasks = ["stack", "push_to_target"]
    seeds = [3, 4]
    experts = [Expert(t) for t in tasks]
    with VectorEnv(tasks) as venv:
        states, infos = venv.reset(seeds)
        assert states.shape == (2, STATE_DIM) and all(i["instruction"] for i in infos)
        for _ in range(10):
            actions = np.stack([e.act(s) for e, s in zip(experts, states)])
            states, _, _, _, _ = venv.step(actions)
        episodes = venv.episodes()
        bad = np.zeros((2, 7))
        bad[0, 2] = np.nan
        with pytest.raises(ValueError, match=r"env 0 \(stack\): action has non-finite values at indices \[2\]"):
            venv.step(bad)
        assert venv.step(np.zeros((2, 7)))[0].shape == (2, STATE_DIM)  # workers survive bad input
    for task, seed, expert, batched in zip(tasks, seeds, [Expert(t) for t in tasks], episodes):
        env = make_env(task)
        obs, _ = env.reset(seed=seed)
        for _ in range(10):
            obs, *_ = env.step(expert.act(obs["state"]))
        np.testing.assert_allclose(env.episode().keypoints, batched.keypoints, atol=1e-6)
        env.close()


def test_vector_env_rejects_bad_names_and_shapes():
    with pytest.raises(UnknownNameError):
        VectorEnv(["stackk"])
    with VectorEnv(["stack"]) as venv:
        venv.reset([0])
        with pytest.raises(ValueError, match=r"shape \(1, 7\)"):
            venv.step(np.zeros((2, 7)))


def test_collect_expert_episodes_in_a_pool_matches_serial():
    jobs = [ExpertJob("push_to_target", "in_domain", s) for s in (1, 2, 3)]
    serial = list(collect_expert_episodes(jobs, workers=1))
    pooled = list(collect_expert_episodes(jobs, workers=2))
    assert [e.seed for e in pooled] == [1, 2, 3]
    for a, b in zip(serial, pooled):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-6)
