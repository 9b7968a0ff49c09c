"""The HF VLA adapter on a tiny randomly initialised Llava built and saved locally (no download)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.policy import ActionTokenizer, CheckpointError, PolicyInputError, add_lora, load_policy, lora_parameters
from trainer.policy.hf_adapter import HFVLAPolicy
from trainer.policy.tiny_hf import build_tiny_llava

torch.set_num_threads(1)
INSTRUCTIONS = ["pick up the red cube", "push the block to the target quickly", "stack the cube on the base"]
STATS = ActionTokenizer(q01=np.array([-0.02] * 3 + [-0.1] * 3 + [-1.0]), q99=np.array([0.02] * 3 + [0.1] * 3 + [1.0]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llava")
    build_tiny_llava(folder)
    return folder


@pytest.fixture(scope="module")
def policy(checkpoint):
    return HFVLAPolicy.from_pretrained(checkpoint, action_stats=STATS)


def observations(size=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, size=(size, 40, 48, 3), dtype=np.uint8),
        "state": rng.normal(size=(size, 9)).astype(np.float32),
    }


def test_prompt_is_openvlas():
    folderless = HFVLAPolicy.__new__(HFVLAPolicy)
    torch.nn.Module.__init__(folderless)
    folderless.processor = type("P", (), {"image_token": "<image>"})()
    assert folderless._prompts(["Pick up the red cube."]) == [
        "<image>\nIn: What action should the robot take to pick up the red cube?\nOut:"
    ]


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_sampled_logprobs_equal_recomputed(policy, temperature):
    obs = observations()
    out = policy.sample(obs, INSTRUCTIONS, temperature=temperature, generator=torch.Generator().manual_seed(3))
    assert out.tokens.shape == (3, 7) and out.actions.shape == (3, 7)
    assert set(out.actions[:, 6].tolist()) <= {-1.0, 1.0}
    recomputed = policy.log_prob(obs, INSTRUCTIONS, out.tokens)
    torch.testing.assert_close(out.logprobs, recomputed.detach(), atol=1e-4, rtol=0)
    # Left padding must not change a step's log-prob: score each row alone.
    for row in range(3):
        alone = policy.log_prob(
            {"image": obs["image"][row : row + 1]}, INSTRUCTIONS[row : row + 1], out.tokens[row : row + 1]
        )
        torch.testing.assert_close(alone.detach(), recomputed[row : row + 1].detach(), atol=1e-4, rtol=0)


def test_action_ids_are_the_last_256_reversed(policy, checkpoint):
    assert policy.image_size == 32  # the processor's crop size: what rollouts should render
    vocab = policy.model.get_output_embeddings().weight.shape[0]
    assert policy.action_token_end == vocab
    assert policy.bins_to_ids(torch.tensor([0, 255])).tolist() == [vocab - 1, vocab - 256]
    obs = observations(size=1)
    out = policy.sample(obs, INSTRUCTIONS[:1], greedy=True)
    inputs = policy._encode(obs, INSTRUCTIONS[:1])
    with torch.no_grad():
        logits = policy.model(**inputs).logits[0, -1]
    first_id = vocab - 256 + int(logits[vocab - 256 :].argmax())
    assert int(out.tokens[0, 0]) == vocab - 1 - first_id


def test_lora_reference_save_and_reload(checkpoint, tmp_path):
    policy = HFVLAPolicy.from_pretrained(checkpoint, action_stats=STATS)
    obs = observations()
    tokens = policy.sample(obs, INSTRUCTIONS, generator=torch.Generator().manual_seed(0)).tokens
    base = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    add_lora(policy, rank=4, alpha=8)
    names = [n for n, _ in policy.named_parameters() if "lora_" in n]
    assert names and all("language_model" in n for n in names)
    optimizer = torch.optim.AdamW(lora_parameters(policy), lr=5e-2)
    for _ in range(3):
        loss = -policy.log_prob(obs, INSTRUCTIONS, tokens).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    adapted = policy.log_prob(obs, INSTRUCTIONS, tokens).detach()
    assert (adapted - base).abs().max() > 1e-3
    with policy.adapter_disabled():
        assert torch.equal(policy.log_prob(obs, INSTRUCTIONS, tokens).detach(), base)
    policy.save_pretrained(tmp_path / "aligned")
    loaded = load_policy(tmp_path / "aligned")
    assert isinstance(loaded, HFVLAPolicy) and loaded.has_adapter
    torch.testing.assert_close(loaded.log_prob(obs, INSTRUCTIONS, tokens).detach(), adapted, atol=1e-5, rtol=0)
    with loaded.adapter_disabled():
        torch.testing.assert_close(loaded.log_prob(obs, INSTRUCTIONS, tokens).detach(), base, atol=1e-5, rtol=0)


def test_remote_code_class_from_auto_map_needs_trust(checkpoint, tmp_path):
    from transformers import LlavaForConditionalGeneration

    folder = tmp_path / "remote"
    shutil.copytree(checkpoint, folder)
    # Remote-code checkpoints get no key renaming from transformers: store the module's own names.
    LlavaForConditionalGeneration.from_pretrained(checkpoint).save_pretrained(folder, save_original_format=False)
    (folder / "modeling_tiny_vla.py").write_text(
        "from transformers import LlavaForConditionalGeneration\n\n\n"
        "class TinyVLAForActionPrediction(LlavaForConditionalGeneration):\n    pass\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "tiny_vla"  # unknown to transformers, like OpenVLA's "openvla"
    config["auto_map"] = {"AutoModelForVision2Seq": "modeling_tiny_vla.TinyVLAForActionPrediction"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="remote code.*pass trust_remote_code=True"):
        HFVLAPolicy.from_pretrained(folder, action_stats=STATS)
    policy = HFVLAPolicy.from_pretrained(folder, action_stats=STATS, trust_remote_code=True)
    assert type(policy.model).__name__ == "TinyVLAForActionPrediction"
    out = policy.sample(observations(), INSTRUCTIONS, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        out.logprobs, policy.log_prob(observations(), INSTRUCTIONS, out.tokens).detach(), atol=1e-4, rtol=0
    )


def test_bad_checkpoints_are_refused(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="folder not found"):
        HFVLAPolicy.from_pretrained(tmp_path / "nope", action_stats=STATS)
    folder = tmp_path / "copy"
    shutil.copytree(checkpoint, folder)
    with pytest.raises(CheckpointError, match="no action statistics"):
        HFVLAPolicy.from_pretrained(folder)
    six_d = tmp_path / "six.json"
    six_d.write_text(json.dumps({"q01": [0.0] * 6, "q99": [1.0] * 6, "gripper_dim": 5}))
    policy = HFVLAPolicy.from_pretrained(folder, action_stats=six_d)
    assert policy.action_tokenizer.action_dim == 6  # a 6-D robot is fine; tokens then must be 6-D
    with pytest.raises(PolicyInputError, match=r"tokens has shape \(3, 7\); expected \[3, 6\]"):
        policy.log_prob(observations(), INSTRUCTIONS, torch.zeros(3, 7, dtype=torch.long))
    no_processor = tmp_path / "no_processor"
    shutil.copytree(checkpoint, no_processor)
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        (no_processor / name).unlink()
    with pytest.raises(CheckpointError, match="cannot load the processor/tokenizer"):
        HFVLAPolicy.from_pretrained(no_processor, action_stats=STATS)
    (no_processor / "config.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match=r"config.json:1:3: invalid JSON"):
        HFVLAPolicy.from_pretrained(no_processor, action_stats=STATS)
    weights = load_file(folder / "model.safetensors")
    dropped = {name: tensor for name, tensor in weights.items() if "layers.1." not in name}
    save_file(dropped, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="refusing to run with random weights"):
        HFVLAPolicy.from_pretrained(folder, action_stats=STATS)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="has no weights"):
        HFVLAPolicy.from_pretrained(folder, action_stats=STATS)


def test_bad_observations_are_named(policy):
    with pytest.raises(PolicyInputError, match="sees pixels"):
        policy.sample({"state": np.zeros((3, 9), np.float32)}, INSTRUCTIONS)
    with pytest.raises(PolicyInputError, match=r"obs\['image'\] has shape \(3, 40, 48\); expected \[B, H, W, 3\]"):
        policy.sample({"image": np.zeros((3, 40, 48), np.uint8)}, INSTRUCTIONS)
    with pytest.raises(PolicyInputError, match="batch 2 but 3 instructions"):
        policy.sample({"image": np.zeros((2, 40, 48, 3), np.uint8)}, INSTRUCTIONS)
