import os
import signal

import numpy as np
import pytest
import torch

from trainer.policy import make_policy
from trainer.rollout import EpisodeSpec, collect_rollouts
from trainer.sim.env import STATE_DIM
from trainer.workers import work_chunks

torch.set_num_threads(1)
slow_ray = pytest.mark.slow  # starting Ray and its workers takes ~30-60 s on 2 cores
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
    ray = pytest.importorskip("ray")
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


def test_chunks_cover_every_episode_once_and_leave_each_worker_a_second_one():
    assert work_chunks(96, 32, 2) == [range(0, 24), range(24, 48), range(48, 72), range(72, 96)]
    assert work_chunks(512, 32, 2) == [range(i, i + 32) for i in range(0, 512, 32)]
    assert work_chunks(5, 32, 4) == [range(i, i + 1) for i in range(5)]
    assert work_chunks(0, 32, 2) == []
    for episodes in (1, 7, 97, 640):
        for width in (1, 3, 32):
            for count in (1, 2, 5):
                chunks = work_chunks(episodes, width, count)
                assert [i for chunk in chunks for i in chunk] == list(range(episodes))
                assert all(len(chunk) <= width for chunk in chunks)
                assert len(chunks) >= min(episodes, 2 * count) or max(map(len, chunks)) == width


@slow_ray
def test_episodes_do_not_depend_on_the_number_of_workers(policy, workers):
    local, _ = collect_rollouts(policy, SPECS, sample_seed=5, max_steps=6, batch_envs=3)
    two = workers.collect(policy, SPECS, sample_seed=5, max_steps=6, batch_envs=3)
    wider = workers.collect(policy, SPECS, sample_seed=5, max_steps=6, batch_envs=8)  # other chunks
    _same(local, two)
    _same(local, wider)


@slow_ray
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
