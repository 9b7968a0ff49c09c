import numpy as np
import pytest
import torch

from trainer.policy import make_policy
from trainer.rollout import EpisodeSpec, collect_rollouts
from trainer.sim.env import ACTION_HIGH, ACTION_LOW, STATE_DIM
from trainer.store import read_episodes, write_episode

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


SPECS = [
    EpisodeSpec(task, "in_domain", seed, sample)
    for task in ("stack", "pick_place")
    for seed in (3, 4)
    for sample in range(2)
]


def _run(policy, seed, batch_envs=3):
    rollouts, _ = collect_rollouts(
        policy, SPECS, generator=torch.Generator().manual_seed(seed), max_steps=6, batch_envs=batch_envs
    )
    return rollouts


def test_rollouts_follow_the_specs_and_record_tokens_and_logprobs(policy, tmp_path):
    seen = []
    rollouts, _ = collect_rollouts(
        policy,
        SPECS,
        generator=torch.Generator().manual_seed(0),
        max_steps=6,
        batch_envs=3,
        on_episode=lambda r: seen.append(r.spec),
    )
    assert [r.spec for r in rollouts] == SPECS and sorted(seen, key=SPECS.index) == SPECS
    for r in rollouts:
        e = r.episode
        assert (e.task, e.seed, e.split) == (r.spec.task, r.spec.seed, r.spec.split)
        assert e.length == 6 and e.action_tokens.shape == (6, 7) and e.logprobs.shape == (6,)
        # the stored log-probs are the policy's log-probs of the stored tokens at the stored states
        recomputed = policy.log_prob({"state": e.states}, [e.instruction] * e.length, torch.as_tensor(e.action_tokens))
        np.testing.assert_allclose(recomputed.detach().numpy(), e.logprobs, rtol=1e-4, atol=1e-4)
        # the env records the commanded action clipped to its limits
        decoded = np.clip(policy.action_tokenizer.detokenize(e.action_tokens), ACTION_LOW, ACTION_HIGH)
        np.testing.assert_allclose(decoded, e.actions, atol=1e-6)
    # two samples from one initial state start identically but differ in what was sampled
    a, b = rollouts[0].episode, rollouts[1].episode
    np.testing.assert_array_equal(a.states[0], b.states[0])
    assert not np.array_equal(a.action_tokens, b.action_tokens)
    assert rollouts[0].spec.group == rollouts[1].spec.group != rollouts[2].spec.group
    # the store keeps tokens and log-probs
    write_episode(tmp_path, a)
    (back,) = read_episodes(tmp_path)
    np.testing.assert_array_equal(back.action_tokens, a.action_tokens)
    np.testing.assert_allclose(back.logprobs, a.logprobs)


def test_rollouts_are_reproducible_from_the_seed(policy):
    first, again, other = _run(policy, 5), _run(policy, 5), _run(policy, 6)
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x.episode.action_tokens, y.episode.action_tokens)
    assert any(not np.array_equal(x.episode.action_tokens, y.episode.action_tokens) for x, y in zip(first, other))


def test_greedy_rollouts_and_frames(policy):
    specs = SPECS[:2]
    rollouts, frames = collect_rollouts(
        policy, specs, greedy=True, max_steps=4, record_frames=lambda s: s.sample == 0, frame_size=32
    )
    np.testing.assert_array_equal(rollouts[0].episode.action_tokens, rollouts[1].episode.action_tokens)
    assert list(frames) == [specs[0]] and len(frames[specs[0]]) == 5 and frames[specs[0]][0].shape == (32, 32, 3)


def test_per_episode_streams_do_not_depend_on_batching_or_order(policy):
    from trainer.rollout import EnvPool

    pool = EnvPool()
    batched, _ = collect_rollouts(policy, SPECS, sample_seed=11, max_steps=5, batch_envs=3, env_pool=pool)
    alone, _ = collect_rollouts(policy, SPECS[::-1], sample_seed=11, max_steps=5, batch_envs=1, env_pool=pool)
    for x, y in zip(batched, alone[::-1]):
        assert x.spec == y.spec
        np.testing.assert_array_equal(x.episode.action_tokens, y.episode.action_tokens)
        np.testing.assert_array_equal(x.episode.states, y.episode.states)
        np.testing.assert_allclose(x.episode.logprobs, y.episode.logprobs, rtol=0, atol=1e-5)
    other, _ = collect_rollouts(policy, SPECS, sample_seed=12, max_steps=5, batch_envs=3, env_pool=pool)
    assert any(not np.array_equal(x.episode.action_tokens, y.episode.action_tokens) for x, y in zip(batched, other))
    with pytest.raises(ValueError, match="not both"):
        collect_rollouts(policy, SPECS, sample_seed=1, generator=torch.Generator(), env_pool=pool)
    pool.close()


def test_the_shared_pool_keeps_a_whole_lockstep_batch(policy, monkeypatch):
    import trainer.rollout as rollout_module
    from trainer.rollout import EnvPool

    pool = EnvPool(capacity=1)
    monkeypatch.setattr(rollout_module, "_shared_pool", pool)
    pick_place = [spec for spec in SPECS if spec.task == "pick_place"]  # one key: four interchangeable worlds
    collect_rollouts(policy, pick_place, greedy=True, max_steps=3, batch_envs=4)
    assert pool.capacity == 4 and len(pool) == 4 and pool.created == 4
    collect_rollouts(policy, pick_place, greedy=True, max_steps=3, batch_envs=4)
    assert pool.created == 4  # the second call builds no world
    collect_rollouts(policy, pick_place, greedy=True, max_steps=3, batch_envs=2)
    assert pool.capacity == 4  # never lowered by a narrower call
    given = EnvPool(capacity=1)
    collect_rollouts(policy, pick_place, greedy=True, max_steps=3, batch_envs=4, env_pool=given)
    assert given.capacity == 1 and len(given) == 1  # a pool passed in keeps its own capacity
    pool.close()


def test_the_pool_reuses_worlds_across_calls_and_drops_them_after_an_error(policy):
    from trainer.rollout import EnvPool

    pool = EnvPool(capacity=8)
    first, _ = collect_rollouts(policy, SPECS, greedy=True, max_steps=4, batch_envs=2, env_pool=pool)
    made = pool.created
    assert made == 4 and len(pool) == 4  # two envs per task: each task's envs are made once
    again, _ = collect_rollouts(policy, SPECS, greedy=True, max_steps=4, batch_envs=2, env_pool=pool)
    assert pool.created == made
    fresh, _ = collect_rollouts(policy, SPECS, greedy=True, max_steps=4, batch_envs=2, env_pool=EnvPool(capacity=0))
    for x, y, z in zip(first, again, fresh):
        np.testing.assert_array_equal(x.episode.states, y.episode.states)
        np.testing.assert_array_equal(x.episode.states, z.episode.states)

    def fail(rollout):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        collect_rollouts(policy, SPECS, greedy=True, max_steps=4, batch_envs=2, env_pool=pool, on_episode=fail)
    assert len(pool) == 2 and pool.created == made  # the two envs in use when it failed were closed, not pooled
    pool.close()
    assert len(pool) == 0
