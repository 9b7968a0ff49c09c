"""The multi-process learner: two gloo processes give the one-process update."""

import copy

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.learner import LearnerGroup, _QuietLogger
from trainer.loop import StepBank, train_on_units
from trainer.policy import add_lora, lora_parameters, make_policy

torch.set_num_threads(1)
STATE_DIM = 12
LENGTHS = np.array([5, 9, 3, 7, 6, 4, 8, 2])


@pytest.fixture(scope="module")
def start_policy():
    torch.manual_seed(0)
    policy = make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    add_lora(policy, rank=4)
    with torch.no_grad():  # LoRA B starts at zero: give it values so the reference and the policy differ
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy


@pytest.fixture(scope="module")
def group():
    learners = LearnerGroup(2, torch.device("cpu"))
    yield learners
    learners.close()


def _bank():
    rng = np.random.default_rng(0)
    total = int(LENGTHS.sum())
    return StepBank(
        states=rng.normal(size=(total, STATE_DIM)).astype(np.float32),
        tokens=torch.as_tensor(rng.integers(0, 256, size=(total, 7))),
        instructions=[f"put the cube {i} in the box" for i in range(len(LENGTHS))],
        offsets=np.concatenate([[0], np.cumsum(LENGTHS)]).astype(np.int64),
    )


def _config(loss, chunk_steps):
    config = TrainConfig(constraints="c.grc")
    config.optim.loss, config.optim.chunk_steps = loss, chunk_steps
    config.optim.pairs_per_step, config.optim.epochs, config.optim.lr = 3, 2, 1e-2
    return config


@pytest.mark.parametrize(("loss", "chunk_steps"), [("tpo", 4096), ("dpo-step", 5), ("grpo", 4096)])
def test_two_processes_give_the_one_process_update(start_policy, group, loss, chunk_steps):
    config = _config(loss, chunk_steps)
    bank = _bank()
    if loss == "grpo":
        units, advantages = np.arange(len(LENGTHS))[:, None], np.linspace(-1.0, 1.0, len(LENGTHS))
    else:
        units, advantages = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [1, 2]]), None
    results, steps = [], []
    for run in ("one process", "two processes"):
        policy = copy.deepcopy(start_policy)
        optimizer = torch.optim.AdamW(lora_parameters(policy), lr=config.optim.lr)
        train = train_on_units if run == "one process" else group.train_on_units
        steps.append(train(config, 1, policy, optimizer, bank, units, _QuietLogger(), 0, False, advantages=advantages))
        results.append([p.detach().clone() for p in lora_parameters(policy)])
    assert steps == [2 * -(-len(units) // 3)] * 2  # two epochs of batches of three units
    before = [p.detach() for p in lora_parameters(start_policy)]
    assert max(float((a - b).abs().max()) for a, b in zip(results[0], before)) > 1e-3  # the step moved the weights
    for one, two in zip(*results):
        torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-6)


def test_a_group_needs_two_processes():
    from trainer.learner import LearnerError

    with pytest.raises(LearnerError, match="at least 2"):
        LearnerGroup(1, torch.device("cpu"))


def test_grape_train_with_two_learner_processes_matches_one(tmp_path, group):
    from safetensors.torch import load_file

    from trainer.loop import train
    from trainer.sim.env import STATE_DIM as SIM_STATE_DIM

    group.close()  # one process group at a time: the run starts its own
    torch.manual_seed(0)
    folder = tmp_path / "tiny"
    make_policy(
        "embedded", state_dim=SIM_STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    adapters = []
    for processes in (1, 2):
        config = TrainConfig(
            constraints="constraints/safety.grc", iterations=2, output_dir=str(tmp_path / f"run{processes}")
        )
        config.policy.base_policy, config.policy.lora_rank, config.policy.device = str(folder), 2, "cpu"
        config.rollout.tasks, config.rollout.states_per_task, config.rollout.samples_per_state = ["stack"], 2, 3
        config.rollout.max_steps, config.gcpg.m, config.gcpg.min_gap = 6, 1, 0.0
        config.optim.lr, config.optim.pairs_per_step, config.optim.learner_processes = 1e-2, 2, processes
        run = train(config, progress=False, echo=lambda _: None)  # iteration 2 merges iteration 1's adapter first
        adapters.append(
            load_file(str(run / "checkpoints" / "iter_0002" / "policy" / "adapter" / "adapter_model.safetensors"))
        )
    assert adapters[0].keys() == adapters[1].keys()
    assert any(float(t.abs().max()) > 0 for name, t in adapters[0].items() if "lora_B" in name)  # it trained
    for name, tensor in adapters[0].items():
        torch.testing.assert_close(adapters[1][name], tensor, rtol=1e-4, atol=1e-6)
