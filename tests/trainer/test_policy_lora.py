import numpy as np
import pytest
import torch

from trainer.policy import add_lora, load_policy, lora_parameters, make_policy, merge_lora

torch.set_num_threads(1)
STATE_DIM = 10
INSTRUCTIONS = ["pick up the red cube", "push the blue block to the green target"] * 2


def base_policy():
    torch.manual_seed(0)
    return make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def data(seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=(4, STATE_DIM)).astype(np.float32)}
    return obs, torch.as_tensor(rng.integers(0, 256, size=(4, 7)))


def train_steps(policy, obs, tokens, steps: int = 3):
    optimizer = torch.optim.AdamW(lora_parameters(policy), lr=1e-2)
    for _ in range(steps):
        loss = -policy.log_prob(obs, INSTRUCTIONS, tokens).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_disabled_adapter_is_the_base_model_exactly_and_no_copy_is_made():
    policy = base_policy()
    obs, tokens = data()
    base_logprobs = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    base_weights = {name: p.detach().clone() for name, p in policy.named_parameters()}
    base_count = sum(p.numel() for p in policy.parameters())
    add_lora(policy, rank=4, alpha=8)
    lora_count = sum(p.numel() for p in lora_parameters(policy))
    # Only the LoRA factors were added: the reference is not a second copy of the weights.
    assert sum(p.numel() for p in policy.parameters()) == base_count + lora_count
    assert lora_count == 4 * (32 + 32) * 4 * 2  # rank x (in + out) x 4 projections x 2 layers
    assert {n for n, p in policy.named_parameters() if p.requires_grad} == {
        n for n, _ in policy.named_parameters() if "lora_" in n
    }

    train_steps(policy, obs, tokens)
    adapted = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    assert (adapted - base_logprobs).abs().max() > 1e-3
    assert adapted.mean() > base_logprobs.mean()  # it learned what it was trained on
    with policy.adapter_disabled() as reference:
        assert reference is policy
        assert torch.equal(reference.log_prob(obs, INSTRUCTIONS, tokens).detach(), base_logprobs)
        reference_sample = reference.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, tokens).detach(), adapted, atol=0, rtol=0)
    # Base weights are untouched by LoRA training.
    for name, p in policy.named_parameters():
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" not in name:
            assert torch.equal(p, base_weights[clean]), name
    fresh = base_policy()
    expected = fresh.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(0))
    assert torch.equal(reference_sample.tokens, expected.tokens)


def test_sampled_logprobs_match_with_adapter_on():
    policy = add_lora(base_policy(), rank=4, alpha=8)
    obs, tokens = data()
    train_steps(policy, obs, tokens, steps=2)
    out = policy.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.logprobs, policy.log_prob(obs, INSTRUCTIONS, out.tokens).detach(), atol=1e-4, rtol=0)


def test_adapter_saves_and_loads(tmp_path):
    policy = add_lora(base_policy(), rank=4, alpha=8)
    obs, tokens = data()
    train_steps(policy, obs, tokens)
    policy.save_pretrained(tmp_path / "aligned")
    assert (tmp_path / "aligned" / "adapter" / "adapter_model.safetensors").is_file()
    loaded = load_policy(tmp_path / "aligned")
    assert loaded.has_adapter
    torch.testing.assert_close(
        loaded.log_prob(obs, INSTRUCTIONS, tokens), policy.log_prob(obs, INSTRUCTIONS, tokens), atol=1e-6, rtol=0
    )
    with loaded.adapter_disabled(), policy.adapter_disabled():
        torch.testing.assert_close(
            loaded.log_prob(obs, INSTRUCTIONS, tokens), policy.log_prob(obs, INSTRUCTIONS, tokens), atol=1e-6, rtol=0
        )
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == []
    trainable = load_policy(tmp_path / "aligned", is_trainable=True)
    assert lora_parameters(trainable)


def test_misuse_is_reported():
    policy = base_policy()
    with pytest.raises(RuntimeError, match="needs a LoRA adapter"):
        with policy.adapter_disabled():
            pass
    with pytest.raises(ValueError, match="rank must be positive"):
        add_lora(policy, rank=0)
    add_lora(policy, rank=2)
    with pytest.raises(RuntimeError, match="already carries"):
        add_lora(policy, rank=2)


def test_merged_adapter_keeps_the_outputs_and_becomes_the_next_reference():
    policy = base_policy()
    obs, tokens = data()
    base_logprobs = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    add_lora(policy, rank=4, alpha=8)
    train_steps(policy, obs, tokens)
    trained = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    assert not torch.allclose(trained, base_logprobs)
    merge_lora(policy)
    assert not policy.has_adapter
    torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, tokens), trained)
    add_lora(policy, rank=4, alpha=8)
    torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, tokens), trained)  # fresh B = 0
    with policy.adapter_disabled():  # the reference is now the trained policy, not the original base
        torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, tokens), trained)
    assert all(p.requires_grad == ("lora_" in name) for name, p in policy.named_parameters())
    with pytest.raises(RuntimeError, match="has none"):
        merge_lora(base_policy())


def test_all_linear_adapter_also_adapts_the_mlp_and_round_trips(tmp_path):
    policy = add_lora(base_policy(), rank=4, alpha=8, target_modules="all-linear")
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name, _ in policy.named_parameters() if "lora_" in name}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # never the head
    obs, tokens = data()
    train_steps(policy, obs, tokens)
    policy.save_pretrained(tmp_path / "aligned")
    loaded = load_policy(tmp_path / "aligned", is_trainable=True)
    torch.testing.assert_close(
        loaded.log_prob(obs, INSTRUCTIONS, tokens), policy.log_prob(obs, INSTRUCTIONS, tokens), atol=1e-6, rtol=0
    )
    assert sum(p.numel() for p in lora_parameters(loaded)) == sum(p.numel() for p in lora_parameters(policy))
    trained = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    torch.testing.assert_close(merge_lora(policy).log_prob(obs, INSTRUCTIONS, tokens), trained)
