"""`grapec score` on a trajectory-store folder: the scores equal those the training loop wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from grape_dsl import cli
from trainer.config import TrainConfig
from trainer.policy import make_policy

ROOT = Path(__file__).resolve().parents[2]


def grapec(*argv: str | Path) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit:
        return int(exit.code)


@pytest.fixture(scope="module")
def one_iteration_run(tmp_path_factory) -> Path:
    from trainer.loop import train
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("score_store")
    policy_dir = tmp / "policy"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(policy_dir)
    config = TrainConfig(
        constraints=str(ROOT / "constraints" / "safety.grc"), iterations=1, output_dir=str(tmp / "run")
    )
    config.policy.base_policy = str(policy_dir)
    config.policy.lora_rank = 2
    config.rollout.tasks = ["stack", "push_to_target"]
    config.rollout.states_per_task = 2
    config.rollout.samples_per_state = 2
    config.rollout.max_steps = 8
    config.gcpg.m = 1
    config.optim.pairs_per_step = 2
    return train(config, progress=False, echo=lambda _: None)


@pytest.mark.parametrize("task", ["stack", "push_to_target"])
def test_rescoring_a_stored_rollout_folder_equals_the_loops_scores(one_iteration_run: Path, task: str, capsys) -> None:
    iteration = one_iteration_run / "iterations" / "iter_0001"
    written = pq.read_table(iteration / "scores.parquet").to_pydict()
    expected = [r for t, r in zip(written["task"], written["r_ext"]) if t == task]
    assert len(expected) == 4
    rc = grapec(
        "score",
        ROOT / "constraints" / "tasks" / f"{task}.grc",
        "--objective",
        ROOT / "constraints" / "safety.grc",
        "--batch",
        iteration / "rollouts",
        "--json",
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["r_ext_per_trajectory"] == expected  # exactly: same kernels, same batching, same order
    assert len(report["episodes"]) == 4 and all(name.startswith(f"{task}-") for name in report["episodes"])


def test_store_errors_are_one_clear_line(one_iteration_run: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert grapec("score", ROOT / "constraints/tasks/stack.grc", "--batch", empty) == 1
    assert "no episodes in this folder" in capsys.readouterr().err
    rollouts = one_iteration_run / "iterations" / "iter_0001" / "rollouts"
    assert grapec("score", ROOT / "constraints/tasks/pick_place.grc", "--batch", rollouts) == 1
    err = capsys.readouterr().err
    assert "push_to_target, stack" in err and "none named 'pick_place'" in err and "Traceback" not in err


def test_checkpoints_carry_a_model_card_and_model_type(one_iteration_run: Path) -> None:
    import hashlib

    from trainer.policy import load_policy

    policy_dir = one_iteration_run / "checkpoints" / "iter_0001" / "policy"
    assert json.loads((policy_dir / "config.json").read_text())["model_type"] == "grape_embedded_vla"
    card = (policy_dir / "README.md").read_text()
    assert card.startswith("---\n") and "base_model:" in card
    for name in ("safety.grc", "task_completion.grc"):  # the objective and what it imports
        digest = hashlib.sha256((ROOT / "constraints" / name).read_bytes()).hexdigest()
        assert f"{name}` sha256 `{digest}`" in card
    assert "rollout/r_ext_mean" in card and "`stack`" in card
    load_policy(policy_dir)  # the added config key does not break loading
