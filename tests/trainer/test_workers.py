import os
import signal

import numpy as np
import pytest
import torch

from trainer.policy import make_policy
from trainer.rollout import EpisodeSpec, collect_rollouts
from trainer.sim.env import STATE_DIM

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # starting Ray and its workers takes ~30-60 s on 2 cores
torch.set_num_threads(1)
SPECS = [
    EpisodeSpec(task, "in_domain", seed, sample)
    for task in ("stack", "pick_place")
    for seed in (3, 4)
    for sample in range(2)
]


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def workers():
    from trainer.workers import RolloutWorkers

    pool = RolloutWorkers(2)
    yield pool
    pool.close()
    ray.shutdown()


def _same(a, b):
    assert [r.spec for r in a] == [r.spec for r in b]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.episode.action_tokens, y.episode.action_tokens)
        np.testing.assert_array_equal(x.episode.states, y.episode.states)
        np.testing.assert_allclose(x.episode.logprobs, y.episode.logprobs, rtol=0, atol=1e-5)


def test_episodes_do_not_depend_on_the_number_of_workers(policy, workers):
    local, _ = collect_rollouts(policy, SPECS, sample_seed=5, max_steps=6, batch_envs=3)
    two = workers.collect(policy, SPECS, sample_seed=5, max_steps=6, batch_envs=3)
    one_worker = workers.collect(
        policy, SPECS, sample_seed=5, max_steps=6, batch_envs=8
    )  # one chunk: one worker runs all
    _same(local, two)
    _same(local, one_worker)


def test_a_killed_worker_costs_a_rerun_not_the_iteration(policy, workers):
    expected, _ = collect_rollouts(policy, SPECS, sample_seed=9, max_steps=6, batch_envs=2)
    victims = workers.pids()
    killed = []

    def kill_once(rollout):
        if not killed:  # the first chunk is back; the other worker is mid-chunk: kill both processes
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    rollouts = workers.collect(policy, SPECS, sample_seed=9, max_steps=6, batch_envs=2, on_episode=kill_once)
    assert killed and len(rollouts) == len(SPECS)
    _same(expected, rollouts)
    assert workers.failures and "re-running" in workers.failures[0]
    assert set(workers.pids()).isdisjoint(victims)
