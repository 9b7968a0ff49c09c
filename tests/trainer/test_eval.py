import json
import math

import pytest

from trainer.eval import (
    EpisodeOutcome,
    mean_interval,
    plot_iterations,
    render_table,
    summarize,
    wilson_interval,
    write_eval_info,
)


def test_wilson_interval_matches_hand_computed_value():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416, half 1.96 sqrt(0.016 + 0.0009604) / 1.38416
    low, high = wilson_interval(8, 10)
    z = 1.959963984540054
    denom = 1 + z * z / 10
    centre = (0.8 + z * z / 20) / denom
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / denom
    assert (low, high) == pytest.approx((centre - half, centre + half))
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_wilson_interval_is_nondegenerate_at_the_edges():
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert high == 1.0 and 0.8 < low < 0.9


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_mean_interval():
    mean, low, high = mean_interval([10, 12, 14])
    assert mean == 12
    assert high - mean == pytest.approx(1.959963984540054 * 2 / math.sqrt(3))
    assert mean_interval([5]) == (5.0, 5.0, 5.0)


def _outcomes():
    rows = []
    for i in range(10):
        rows.append(
            EpisodeOutcome(
                "stack", "in_domain", 1_000_000 + i, success=i < 8, grasp=i < 9, collision=i == 0, length=50 + i
            )
        )
        rows.append(
            EpisodeOutcome(
                "pick_place", "in_domain", 1_000_000 + i, success=i < 2, grasp=True, collision=False, length=100
            )
        )
        rows.append(
            EpisodeOutcome("stack", "visual", 1_000_000 + i, success=False, grasp=False, collision=True, length=120)
        )
    return rows


def test_summarize_per_split_and_task(tmp_path):
    metrics = summarize(_outcomes())
    assert list(metrics) == ["in_domain", "visual"]
    stack = metrics["in_domain"]["stack"]
    assert stack["episodes"] == 10
    assert stack["success"]["rate"] == 0.8
    assert stack["success"]["ci95"] == pytest.approx(list(wilson_interval(8, 10)))
    assert stack["collision"]["rate"] == 0.1
    assert stack["step_length"]["mean"] == pytest.approx(54.5)
    everything = metrics["in_domain"]["all"]
    assert everything["episodes"] == 20 and everything["success"]["count"] == 10
    assert metrics["visual"]["all"]["collision"]["rate"] == 1.0
    path = write_eval_info({"metrics": metrics}, tmp_path / "eval_info.json")
    assert json.loads(path.read_text())["metrics"]["visual"]["stack"]["grasp"]["rate"] == 0.0


def test_table_and_plot(tmp_path):
    from rich.console import Console

    metrics = summarize(_outcomes())
    console = Console(record=True, width=160)
    console.print(render_table(metrics))
    text = console.export_text()
    assert "80.0%" in text and "visual" in text
    png = plot_iterations({0: metrics, 1: metrics}, tmp_path / "success.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grape_eval_on_a_policy_folder_then_reuses_its_results(tmp_path, capsys):
    import torch

    from trainer.cli import eval_main
    from trainer.policy import make_policy
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path / "policy"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    argv = [
        "--policy",
        str(folder),
        "--tasks",
        "stack",
        "--splits",
        "in_domain",
        "visual",
        "--episodes",
        "2",
        "--max-steps",
        "3",
        "--gifs",
        "1",
        "--no-progress",
        "--json",
    ]
    assert eval_main(argv) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)
    out_dir = tmp_path / "policy-eval"
    assert json.loads((out_dir / "eval_info.json").read_text()) == info
    cell = info["iterations"]["0"]["visual"]["stack"]
    assert cell["episodes"] == 2 and cell["step_length"]["mean"] == 3.0
    assert len(info["gifs"]) == 1 and "stack-in_domain-1000000" in info["gifs"][0]
    assert (out_dir / "success_per_iteration.png").is_file()
    # same settings again: nothing re-run, same numbers
    assert eval_main(argv) == 0
    again = capsys.readouterr()
    assert "reusing iterations [0]" in again.err
    assert json.loads(again.out)["iterations"] == info["iterations"]
    # the output folder keeps the settings; --config replays them (results reused), flags override them
    saved = json.loads((out_dir / "eval_config.json").read_text())
    assert saved["tasks"] == ["stack"] and saved["episodes"] == 2 and saved["policy"] == str(folder)
    assert eval_main(["--config", str(out_dir), "--no-progress", "--json"]) == 0
    replayed = capsys.readouterr()
    assert "reusing iterations [0]" in replayed.err and json.loads(replayed.out)["iterations"] == info["iterations"]
    assert eval_main(["--config", str(out_dir), "--episodes", "1", "--gifs", "0", "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes_per_task_and_split"] == 1


def test_grape_eval_usage_errors_exit_2_and_ctrl_c_130(tmp_path, capsys):
    import pytest
    import torch
    from interrupting import entry_point, interrupt_when

    from trainer.cli import eval_main
    from trainer.policy import make_policy
    from trainer.sim.env import STATE_DIM

    with pytest.raises(SystemExit) as missing:
        eval_main([])
    assert missing.value.code == 2 and "required: --policy" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"policy": "p", "episods": 3}')
    with pytest.raises(SystemExit) as bad_file:
        eval_main(["--config", str(tmp_path / "bad.json")])
    assert bad_file.value.code == 2 and "did you mean 'episodes'" in capsys.readouterr().err
    torch.manual_seed(0)
    folder = tmp_path / "policy"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    code, err = interrupt_when(
        [
            *entry_point("trainer.cli:eval_main"),
            "--policy",
            str(folder),
            "--episodes",
            "5000",
            "--splits",
            "in_domain",
            "--gifs",
            "0",
        ],
        "eval iter 0",
    )
    assert code == 130 and "interrupted" in err and "Traceback" not in err


def test_grape_eval_sampling_is_seeded(tmp_path, capsys):
    import torch

    from trainer.cli import eval_main
    from trainer.policy import make_policy
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path / "policy"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    runs = []
    for out in ("a", "b"):
        argv = [
            "--policy",
            str(folder),
            "--tasks",
            "push_to_target",
            "--splits",
            "in_domain",
            "--episodes",
            "2",
            "--max-steps",
            "3",
            "--gifs",
            "0",
            "--no-progress",
            "--json",
            "--temperature",
            "1.0",
            "--seed",
            "5",
            "--output-dir",
            str(tmp_path / out),
        ]
        assert eval_main(argv) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["greedy"] is False and runs[0]["temperature"] == 1.0
    assert runs[0]["iterations"] == runs[1]["iterations"]
    assert eval_main(["--policy", str(folder), "--temperature", "0"]) == 2


def test_contact_steps_and_path_length_read_the_episode_record():
    import numpy as np

    from trainer.eval import contact_steps, path_length
    from trainer.sim.env import GrapeSimEnv
    from trainer.sim.expert import Expert, run_expert

    env = GrapeSimEnv("pick_place")
    try:
        episode = run_expert(env, Expert("pick_place"), seed=3)
    finally:
        env.close()
    tip = episode.keypoints[:, episode.keypoint_names.index("gripper.tip")].astype(np.float64)
    assert path_length(episode) == pytest.approx(sum(float(np.linalg.norm(b - a)) for a, b in zip(tip, tip[1:])))
    assert 0.05 < path_length(episode) < 5.0
    # contact steps count steps with any of the three contact signals, not the sum of the flags
    signals = episode.signals.copy()
    columns = [episode.signal_names.index(n) for n in ("contact.obstacle", "contact.distractor", "contact.table")]
    signals[:, columns] = 0.0
    signals[2, columns[0]] = signals[2, columns[2]] = 1.0
    signals[5, columns[1]] = 1.0
    episode.signals = signals
    assert contact_steps(episode) == 2


def test_summary_carries_contact_steps_and_path_length():
    rows = [
        EpisodeOutcome("pick_place", "in_domain", 0, True, True, False, 50, 0, 0.5),
        EpisodeOutcome("pick_place", "in_domain", 1, False, True, True, 120, 6, 1.5),
    ]
    block = summarize(rows)["in_domain"]["all"]
    assert block["contact_steps"]["mean"] == pytest.approx(3.0)
    assert block["path_length"]["mean"] == pytest.approx(1.0)
    # files written before these fields existed still load, with zeros
    old = EpisodeOutcome(
        **{
            "task": "stack",
            "split": "in_domain",
            "seed": 1,
            "success": True,
            "grasp": True,
            "collision": False,
            "length": 40,
        }
    )
    assert (old.contact_steps, old.path_length) == (0, 0.0)
