"""An OpenVLA-style HF checkpoint from the command line: grape-train one iteration, grape-eval the run."""

import json

import numpy as np
import pytest
import torch

from trainer.cli import eval_main, train_main
from trainer.policy import ActionTokenizer
from trainer.policy.tiny_hf import build_tiny_llava

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    build_tiny_llava(root / "tiny_llava")
    stats = ActionTokenizer(
        q01=np.array([-0.02] * 3 + [-0.1] * 3 + [-1.0]), q99=np.array([0.02] * 3 + [0.1] * 3 + [1.0])
    )
    stats.save(root / "stats.json")
    return root / "tiny_llava", root / "stats.json"


def test_grape_train_and_eval_take_an_hf_checkpoint(hf_checkpoint, tmp_path, capsys):
    folder, stats = hf_checkpoint
    run = tmp_path / "run"
    argv = [
        "--constraints",
        "constraints/safety.grc",
        "--policy",
        str(folder),
        "--action-stats",
        str(stats),
        "--tasks",
        "stack",
        "--states-per-task",
        "1",
        "--samples-per-state",
        "3",
        "--m",
        "1",
        "--min-gap",
        "0",
        "--max-steps",
        "4",
        "--iterations",
        "1",
        "--lr",
        "0.05",
        "--output-dir",
        str(run),
        "--device",
        "cpu",
        "--no-progress",
        "--json",
    ]
    assert train_main(argv) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    checkpoint = run / "checkpoints" / "iter_0001" / "policy"
    assert summary["checkpoint"] == str(checkpoint.parent)
    assert json.loads((checkpoint / "grape_policy.json").read_text())["policy_type"] == "hf_vla"
    rollouts = sorted((run / "iterations" / "iter_0001" / "rollouts").rglob("*.parquet"))
    assert rollouts  # the HF policy drove the simulator from rendered images
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics) and any(m.get("rollout/pairs", 0) >= 1 for m in metrics)

    assert (
        eval_main(
            [
                "--policy",
                str(run),
                "--tasks",
                "stack",
                "--splits",
                "in_domain",
                "--episodes",
                "1",
                "--max-steps",
                "4",
                "--gifs",
                "0",
                "--device",
                "cpu",
                "--no-progress",
                "--json",
            ]
        )
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert sorted(info["iterations"]) == ["0", "1"]


def test_hf_options_are_checked(hf_checkpoint, tmp_path, capsys):
    folder, stats = hf_checkpoint
    base = [
        "--constraints",
        "constraints/safety.grc",
        "--tasks",
        "stack",
        "--output-dir",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert train_main([*base, "--policy-type", "hf"]) == 2
    assert "--policy-type hf needs --policy" in capsys.readouterr().err
    # without action statistics the checkpoint cannot map tokens to actions: one message, nothing written
    assert train_main([*base, "--policy", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "no action statistics" in err and "Traceback" not in err
    assert train_main([*base, "--policy", str(folder), "--policy-type", "embedded"]) == 1
    assert "--policy-type embedded" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
