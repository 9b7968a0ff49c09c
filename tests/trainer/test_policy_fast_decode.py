import numpy as np
import torch

from trainer.policy import add_lora, make_policy
from trainer.policy.base import inverse_cdf
from trainer.policy.fast_decode import LlamaDecoding
from trainer.sim.env import STATE_DIM

torch.set_num_threads(1)
INSTRUCTIONS = ["put the orange cube in the brown tray", "stack the blue block on the orange block"] * 3


def _policy():
    torch.manual_seed(0)
    return make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def _obs(batch=6):
    return {"state": np.random.default_rng(0).normal(size=(batch, STATE_DIM)).astype(np.float32)}


def test_decoding_matches_the_transformers_forward_position_by_position():
    policy = _policy()
    backbone = policy.decoder.model
    inputs = torch.randn(3, 6, 32)
    reference = backbone(inputs_embeds=inputs, use_cache=False).last_hidden_state
    decoding = LlamaDecoding(backbone, 3, 8, inputs.device, inputs.dtype)
    outputs = [decoding.prefill(inputs[:, :2])] + [decoding.step(inputs[:, t : t + 1]) for t in range(2, 6)]
    torch.testing.assert_close(torch.stack(outputs, 1), reference[:, 1:], rtol=0, atol=1e-5)


def test_rotary_tables_kept_between_decodings_fit_each_length():
    backbone = _policy().decoder.model
    inputs = torch.randn(2, 6, 32)
    reference = backbone(inputs_embeds=inputs, use_cache=False).last_hidden_state
    with torch.inference_mode():  # where the tables are kept from one decoding to the next
        for length in (4, 6, 5, 6):  # each decoding fills its cache to max_length
            decoding = LlamaDecoding(backbone, 2, length, inputs.device, inputs.dtype)
            outputs = [decoding.prefill(inputs[:, :3])]
            outputs += [decoding.step(inputs[:, t : t + 1]) for t in range(3, length)]
            torch.testing.assert_close(torch.stack(outputs, 1), reference[:, 2:length], rtol=0, atol=1e-5)


def test_a_layer_with_a_projection_of_another_kind_is_run_module_by_module():
    policy = _policy()
    backbone = policy.decoder.model
    attention = backbone.layers[0].self_attn
    attention.q_proj = torch.nn.Sequential(attention.q_proj)  # not stackable: layer 0 takes the module path
    inputs = torch.randn(3, 6, 32)
    reference = backbone(inputs_embeds=inputs, use_cache=False).last_hidden_state
    decoding = LlamaDecoding(backbone, 3, 8, inputs.device, inputs.dtype)
    assert decoding.layers[0] is None and decoding.layers[1] is not None
    outputs = [decoding.prefill(inputs[:, :2])] + [decoding.step(inputs[:, t : t + 1]) for t in range(2, 6)]
    torch.testing.assert_close(torch.stack(outputs, 1), reference[:, 1:], rtol=0, atol=1e-5)


def test_sampled_logprobs_equal_recomputed_ones_with_and_without_the_lora_adapter():
    policy = add_lora(_policy(), rank=4, alpha=8)
    for name, parameter in policy.named_parameters():
        if "lora_B" in name:  # a trained adapter, not the zero-initialized one
            parameter.data.normal_(0, 0.2)
    obs = _obs()
    adapted = policy.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, adapted.tokens), adapted.logprobs, rtol=0, atol=1e-5)
    with policy.adapter_disabled():
        reference = policy.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            policy.log_prob(obs, INSTRUCTIONS, reference.tokens), reference.logprobs, rtol=0, atol=1e-5
        )
        assert not torch.allclose(policy.log_prob(obs, INSTRUCTIONS, adapted.tokens), adapted.logprobs, atol=1e-3)


def test_sampling_from_uniforms_follows_each_row_and_the_distribution():
    policy = _policy()
    obs = _obs()
    uniforms = torch.rand(6, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = policy.sample(obs, INSTRUCTIONS, uniforms=uniforms)
    torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, full.tokens), full.logprobs, rtol=0, atol=1e-5)
    # a row's tokens depend on its own uniforms only, not on the rows beside it
    alone = policy.sample({"state": obs["state"][2:3]}, INSTRUCTIONS[2:3], uniforms=uniforms[2:3])
    assert torch.equal(alone.tokens[0], full.tokens[2])
    # the inverse CDF puts each token's share of an even grid of uniforms on it, never a zero-probability one
    probs = torch.tensor([[0.5, 0.0, 0.25, 0.25, 0.0]])
    grid = (torch.arange(400, dtype=torch.float64) + 0.5) / 400
    tokens = inverse_cdf(probs.expand(400, -1), grid)
    assert torch.bincount(tokens, minlength=5).tolist() == [200, 0, 100, 100, 0]
    assert inverse_cdf(probs, torch.tensor([1.0 - 1e-12])).item() == 3


def test_sampling_sees_training_steps_loads_and_adapter_switches():
    # Every kind of weight change must reach the next sampling call (the decoding reads stacked copies).
    policy = add_lora(_policy(), rank=4, alpha=8)
    obs, uniforms = _obs(), torch.rand(6, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def sampled_matches_recomputed():
        out = policy.sample(obs, INSTRUCTIONS, uniforms=uniforms)
        torch.testing.assert_close(policy.log_prob(obs, INSTRUCTIONS, out.tokens), out.logprobs, rtol=0, atol=1e-5)
        return out.logprobs

    before = sampled_matches_recomputed()
    lora = [parameter for name, parameter in policy.named_parameters() if "lora_B" in name]
    optimizer = torch.optim.SGD(lora, lr=1.0)
    optimizer.zero_grad()
    policy.log_prob(obs, INSTRUCTIONS, torch.zeros(6, 7, dtype=torch.long)).sum().backward()
    optimizer.step()  # in place, through autograd's view of the LoRA factors
    stepped = sampled_matches_recomputed()
    assert not torch.allclose(stepped, before, atol=1e-4)
    with policy.adapter_disabled():
        sampled_matches_recomputed()
    base = policy.decoder.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    with torch.no_grad():
        base.copy_(torch.randn_like(base))  # as load_state_dict writes a checkpoint's weights
    sampled_matches_recomputed()
