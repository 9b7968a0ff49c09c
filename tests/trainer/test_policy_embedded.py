import json

import numpy as np
import pytest
import torch

from trainer.policy import CheckpointError, PolicyInputError, load_policy, make_policy
from trainer.policy.embedded import EmbeddedVLA, EmbeddedVLAConfig
from trainer.policy.tokenizer import ActionTokenizer

torch.set_num_threads(1)
STATE_DIM = 12
INSTRUCTIONS = ["pick up the red cube", "push the blue block to the green target", "stack the cube on the base"]


def small_policy(**overrides) -> EmbeddedVLA:
    torch.manual_seed(0)
    config = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64) | overrides
    return make_policy("embedded", state_dim=STATE_DIM, **config)


def batch(size: int = 6, image_size: int | None = None, seed: int = 0) -> tuple[dict, list[str]]:
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=(size, STATE_DIM)).astype(np.float32)}
    if image_size:
        obs["image"] = rng.integers(0, 256, size=(size, image_size, image_size, 3), dtype=np.uint8)
    return obs, [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(size)]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_sampled_logprobs_equal_recomputed(temperature):
    policy = small_policy()
    obs, instructions = batch()
    out = policy.sample(obs, instructions, temperature=temperature, generator=torch.Generator().manual_seed(1))
    assert out.actions.shape == (6, 7) and out.actions.dtype == np.float32
    assert out.tokens.shape == (6, 7) and out.tokens.dtype == torch.int64
    recomputed = policy.log_prob(obs, instructions, out.tokens)
    torch.testing.assert_close(out.logprobs, recomputed.detach(), atol=1e-4, rtol=0)
    assert np.array_equal(out.actions, policy.action_tokenizer.detokenize(out.tokens.numpy()))


def test_greedy_is_the_mode_and_deterministic():
    policy = small_policy()
    obs, instructions = batch()
    first = policy.sample(obs, instructions, greedy=True)
    second = policy.sample(obs, instructions, greedy=True)
    assert torch.equal(first.tokens, second.tokens)
    other = policy.sample(obs, instructions, generator=torch.Generator().manual_seed(3))
    assert torch.all(first.logprobs >= other.logprobs - 1e-5)  # for this near-uniform init, greedy ~ max


def test_generator_makes_sampling_reproducible():
    policy = small_policy()
    obs, instructions = batch()
    a = policy.sample(obs, instructions, generator=torch.Generator().manual_seed(7))
    b = policy.sample(obs, instructions, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.tokens, b.tokens)


def test_log_prob_is_differentiable_and_normalized():
    policy = small_policy()
    obs, instructions = batch(size=2)
    tokens = torch.randint(0, 256, (2, 7))
    loss = -policy.log_prob(obs, instructions, tokens).sum()
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # The last dimension's 256 bins given the same earlier tokens share one prefix
    # probability p(a_0..a_5); their probabilities add up to exactly that.
    sweep = tokens[:1].repeat(256, 1)
    sweep[:, 6] = torch.arange(256)
    repeated = {"state": np.repeat(obs["state"][:1], 256, axis=0)}
    joint = policy.log_prob(repeated, [instructions[0]] * 256, sweep).detach()
    prefix_logprob = torch.logsumexp(joint, 0)
    assert prefix_logprob < 0
    conditional = joint - prefix_logprob
    torch.testing.assert_close(conditional.exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_instruction_changes_the_distribution_and_paraphrases_are_close():
    policy = small_policy()
    obs, _ = batch(size=3)
    tokens = torch.randint(0, 256, (3, 7))
    states = {"state": np.repeat(obs["state"][:1], 3, axis=0)}
    texts = [
        "pick up the white box and place it into the black pot",
        "grab the white box and put it in the black pot",
        "push the red cube to the green target",
    ]
    logprobs = policy.log_prob(states, texts, tokens[:1].repeat(3, 1)).detach()
    assert abs(logprobs[0] - logprobs[1]) < abs(logprobs[0] - logprobs[2])


def test_image_variant_round_trips(tmp_path):
    policy = small_policy(use_image=True, image_size=32)
    assert policy.image_size == 32 and small_policy().image_size is None
    obs, instructions = batch(size=3, image_size=32)
    out = policy.sample(obs, instructions, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.logprobs, policy.log_prob(obs, instructions, out.tokens).detach(), atol=1e-4, rtol=0)
    obs["image"] = obs["image"][:, :16]
    with pytest.raises(PolicyInputError, match=r"obs\['image'\] has shape \(3, 16, 32, 3\); expected \[B, 32, 32, 3\]"):
        policy.sample(obs, instructions)
    with pytest.raises(PolicyInputError, match="this policy sees pixels"):
        policy.sample({"state": obs["state"]}, instructions)


def test_save_and_load_preserve_everything(tmp_path):
    policy = small_policy()
    tokenizer = ActionTokenizer(q01=np.full(7, -0.03), q99=np.full(7, 0.05))
    policy.set_action_tokenizer(tokenizer)
    obs, instructions = batch()
    policy.set_state_statistics(np.random.default_rng(1).normal(2.0, 3.0, size=(100, STATE_DIM)))
    out = policy.sample(obs, instructions, generator=torch.Generator().manual_seed(0))
    policy.save_pretrained(tmp_path / "ckpt")
    policy.save_pretrained(tmp_path / "ckpt")  # overwriting an existing folder is atomic too
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, EmbeddedVLA)
    assert np.array_equal(loaded.action_tokenizer.q99, tokenizer.q99)
    torch.testing.assert_close(
        loaded.log_prob(obs, instructions, out.tokens), policy.log_prob(obs, instructions, out.tokens), atol=0, rtol=0
    )
    again = loaded.sample(obs, instructions, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(again.actions, out.actions)


def test_bad_observations_are_named():
    policy = small_policy()
    obs, instructions = batch(size=2)
    with pytest.raises(PolicyInputError, match=r"obs\['state'\] has shape \(2, 5\); expected \[B, 12\]"):
        policy.sample({"state": obs["state"][:, :5]}, instructions)
    with pytest.raises(PolicyInputError, match="batch 2 but 1 instructions"):
        policy.sample(obs, instructions[:1])
    with pytest.raises(PolicyInputError, match="list of strings"):
        policy.sample(obs, "pick up the cube")
    with pytest.raises(PolicyInputError, match="lacks 'state'"):
        policy.sample({}, instructions)
    with pytest.raises(PolicyInputError, match=r"tokens has shape \(2, 6\); expected \[2, 7\]"):
        policy.log_prob(obs, instructions, torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(PolicyInputError, match="temperature must be > 0"):
        policy.sample(obs, instructions, temperature=0.0)


def test_bad_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        load_policy(tmp_path / "missing")
    policy = small_policy()
    policy.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        load_policy(tmp_path / "ckpt")
    policy.save_pretrained(tmp_path / "ckpt")
    stats = json.loads((tmp_path / "ckpt" / "action_stats.json").read_text())
    (tmp_path / "ckpt" / "action_stats.json").write_text(json.dumps({"q01": stats["q01"][:6], "q99": stats["q99"][:6]}))
    with pytest.raises(Exception, match="statistics describe 6-D actions but the policy emits 7-D"):
        load_policy(tmp_path / "ckpt")
    policy.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config | {"hidden_size": 64}))
    with pytest.raises(CheckpointError, match="shapes differ from config.json"):
        load_policy(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config | {"widht": 3}))
    with pytest.raises(CheckpointError, match="not a valid EmbeddedVLAConfig"):
        load_policy(tmp_path / "ckpt")


def test_registry_lists_known_names():
    with pytest.raises(KeyError, match="known policies: embedded, hf_vla"):
        make_policy("openvla-9000")
    with pytest.raises(TypeError, match="unknown EmbeddedVLAConfig field"):
        make_policy("embedded", state_dim=4, hiden_size=3)
    with pytest.raises(ValueError, match="not divisible"):
        EmbeddedVLAConfig(state_dim=4, hidden_size=30, num_heads=4)
