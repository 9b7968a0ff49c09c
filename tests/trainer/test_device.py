"""--device / --dtype: a missing GPU is a one-line usage error; bfloat16 weights on CPU sample,
score and train with float32 log-probs close to the float32 policy's."""

import copy

import numpy as np
import pytest
import torch

from trainer.device import DeviceError, place_policy, resolve, resolve_device
from trainer.policy import add_lora, lora_parameters, make_policy

torch.set_num_threads(1)
STATE_DIM = 12
INSTRUCTIONS = ["put the red cube in the box", "stack the cube on the base", "push the block to the target"]
BF16_LOGPROB_TOLERANCE = 0.05
"""|log pi_bf16 - log pi_fp32| per step (a sum over 7 tokens, about -38.8 here): measured at most
0.006 on 64 states of this tiny random policy (three seeds); bfloat16 keeps 8 bits of mantissa."""
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")


@no_gpu
def test_cuda_without_a_gpu_is_a_clear_device_error():
    with pytest.raises(DeviceError, match=r"^--device cuda: .*use --device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="--dtype 'float16': expected one of float32, bfloat16"):
        resolve("cpu", "float16")


@no_gpu
@pytest.mark.parametrize("command", ["grape-train", "grape-eval", "grape-sft"])
def test_commands_exit_2_naming_the_missing_device(command, capsys, tmp_path):
    from trainer.cli import eval_main, train_main
    from trainer.sft import main as sft_main

    argv = {
        "grape-train": (train_main, ["--constraints", "constraints/safety.grc"]),
        "grape-eval": (eval_main, ["--policy", str(tmp_path)]),
        "grape-sft": (sft_main, ["--out", str(tmp_path / "sft")]),
    }
    main, args = argv[command]
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--device cuda:" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "sft").exists()


@pytest.fixture(scope="module")
def policies():
    torch.manual_seed(0)
    full = make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    full.set_state_statistics(np.random.default_rng(1).normal(2.0, 3.0, size=(64, STATE_DIM)))
    add_lora(full, rank=4)
    with torch.no_grad():
        for name, p in full.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    half = place_policy(copy.deepcopy(full), torch.device("cpu"), torch.bfloat16)
    return full, half


def _obs(rows=3, seed=0):
    return {"state": np.random.default_rng(seed).normal(2.0, 3.0, size=(rows, STATE_DIM)).astype(np.float32)}


def test_bfloat16_weights_keep_lora_buffers_and_log_probs_float32(policies):
    full, half = policies
    dtypes = {name: p.dtype for name, p in half.named_parameters()}
    assert all(dtype == torch.float32 for name, dtype in dtypes.items() if "lora_" in name)
    assert {dtype for name, dtype in dtypes.items() if "lora_" not in name} == {torch.bfloat16}
    assert half.state_mean.dtype == torch.float32  # buffers are not weights
    tokens = full.sample(_obs(), INSTRUCTIONS, generator=torch.Generator().manual_seed(0)).tokens
    exact = full.log_prob(_obs(), INSTRUCTIONS, tokens).detach()
    approx = half.log_prob(_obs(), INSTRUCTIONS, tokens)
    assert approx.dtype == torch.float32
    assert float((approx.detach() - exact).abs().max()) < BF16_LOGPROB_TOLERANCE
    assert float((approx.detach() - exact).abs().max()) > 0  # it really ran in bfloat16
    # sampling in bfloat16 (the KV-cache decoder with float32 LoRA factors) reports the log-probs log_prob computes
    out = half.sample(_obs(), INSTRUCTIONS, uniforms=torch.rand(3, 7, generator=torch.Generator().manual_seed(1)))
    assert out.logprobs.dtype == torch.float32
    recomputed = half.log_prob(_obs(), INSTRUCTIONS, out.tokens).detach()
    assert float((out.logprobs - recomputed).abs().max()) < BF16_LOGPROB_TOLERANCE
    # and a gradient reaches the float32 LoRA factors
    (-approx.sum()).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora_parameters(half))


def test_one_bfloat16_iteration_of_the_loop_on_cpu(tmp_path):
    from safetensors.torch import load_file

    from trainer.config import TrainConfig
    from trainer.loop import train
    from trainer.sim.env import STATE_DIM as SIM_STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    make_policy(
        "embedded", state_dim=SIM_STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    config = TrainConfig(constraints="constraints/safety.grc", iterations=1, output_dir=str(tmp_path / "run"))
    config.policy.base_policy, config.policy.device, config.policy.dtype = str(folder), "cpu", "bfloat16"
    config.policy.lora_rank = 2
    config.rollout.tasks, config.rollout.states_per_task, config.rollout.samples_per_state = ["stack"], 1, 3
    config.rollout.max_steps, config.gcpg.m, config.gcpg.min_gap = 6, 1, 0.0
    run = train(config, progress=False, echo=lambda _: None)
    adapter = load_file(str(run / "checkpoints" / "iter_0001" / "policy" / "adapter" / "adapter_model.safetensors"))
    first = load_file(str(run / "checkpoints" / "iter_0000" / "policy" / "adapter" / "adapter_model.safetensors"))
    assert {t.dtype for t in adapter.values()} == {torch.float32}
    assert any(not torch.equal(adapter[name], first[name]) for name in adapter)  # it trained
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in lines)
