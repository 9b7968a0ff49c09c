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
    policy = make_policy("embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
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
