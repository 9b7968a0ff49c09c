import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.cli import eval_main, train_main
from trainer.config import TrainConfig, build_parser, config_differences, config_from_args, validate

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- config = CLI
def test_every_field_has_help_and_defaults_round_trip():
    parser = build_parser()
    text = parser.format_help()
    for flag in (
        "--constraints",
        "--policy",
        "--tasks",
        "--iterations",
        "--states-per-task",
        "--samples-per-state",
        "--m",
        "--beta",
        "--lambda-self",
        "--lambda-ext",
        "--lambda-success",
        "--lr",
        "--lora-rank",
        "--seed",
        "--output-dir",
        "--loss",
        "--set",
    ):
        assert flag in text
    for action in parser._actions:
        if action.dest not in ("help",):
            assert action.help and "(default" in action.help, action.dest
    config = config_from_args(parser.parse_args(["--constraints", "c.grc"]))
    assert config == TrainConfig(constraints="c.grc")
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_flags_reach_the_nested_configs():
    args = build_parser().parse_args(
        [
            "--constraints",
            "c.grc",
            "--policy",
            "p",
            "--tasks",
            "stack",
            "push_to_target",
            "--m",
            "3",
            "--samples-per-state",
            "6",
            "--loss",
            "dpo-step",
            "--set",
            "near=0.05",
            "--set",
            "settle=0.02",
            "--lambda-self",
            "0",
        ]
    )
    config = config_from_args(args)
    assert config.policy.base_policy == "p"
    assert config.rollout.tasks == ["stack", "push_to_target"]
    assert (config.gcpg.m, config.gcpg.lambda_self, config.optim.loss) == (3, 0.0, "dpo-step")
    assert config.overrides == ["near=0.05", "settle=0.02"]
    assert validate(config) == []


def test_default_output_dir_names_objective_loss_seed_and_time():
    import datetime as dt

    path = TrainConfig(constraints="constraints/safety.grc", seed=3).default_output_dir(
        dt.datetime(2026, 11, 25, 16, 0, 0)
    )
    assert path == Path("runs/safety__tpo__seed3__20261125-160000")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--m", "4"], "needs --samples-per-state >= 8"),
        (["--beta", "0"], "--beta must be > 0"),
        (["--set", "near"], "expected NAME=NUMBER"),
        ([], None),  # --constraints missing
    ],
)
def test_bad_flag_values_exit_2(argv, message, capsys):
    base = [] if not argv else ["--constraints", "constraints/safety.grc"]
    assert train_main(base + argv) == 2
    err = capsys.readouterr().err
    assert "error:" in err and (message or "--constraints is required") in err


def test_unknown_choice_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        train_main(["--constraints", "x.grc", "--loss", "ppo"])
    assert info.value.code == 2


# ---------------------------------------------------------------------- bad input: exit 1, nothing written
def test_constraints_reading_what_the_task_lacks_are_named_before_any_rollout(tmp_path, capsys):
    bad = tmp_path / "push.grc"
    bad.write_text(
        'task push_to_target "push the {object} to the {target}"\n'
        "keypoints {\n    obj = object.center\n    goal = container.top\n}\n"
        "signals {\n    hit = contact.obstacle\n    wobble = gripper.tilt\n}\n"
        "stage push {\n    subgoal there: dist(obj, goal) <= 0.02\n}\n"
    )
    out = tmp_path / "run"
    assert train_main(["--constraints", str(bad), "--output-dir", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4:12" in err and "container.top" in err
    assert "gripper.tilt" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_unknown_task_and_missing_file(tmp_path, capsys):
    assert train_main(["--constraints", str(tmp_path / "nope.grc")]) == 1
    assert "file not found" in capsys.readouterr().err
    assert (
        train_main(["--constraints", "constraints/safety.grc", "--tasks", "stak", "--output-dir", str(tmp_path / "r")])
        == 1
    )
    assert "did you mean 'stack'" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["missing", "malformed"])
def test_bad_policy_is_a_clear_error_and_leaves_no_run(tmp_path, kind, capsys):
    policy = tmp_path / "policy"
    if kind == "malformed":
        policy.mkdir()
        (policy / "grape_policy.json").write_text("{not json")
    out = tmp_path / "run"
    code = train_main(
        [
            "--constraints",
            "constraints/safety.grc",
            "--tasks",
            "stack",
            "--policy",
            str(policy),
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "cannot load the policy" in err and str(policy) in err and "Traceback" not in err
    assert not out.exists()


def test_eval_bad_input(tmp_path, capsys):
    assert eval_main(["--policy", str(tmp_path / "nothing")]) == 1
    assert "not found" in capsys.readouterr().err
    assert eval_main(["--policy", str(tmp_path), "--splits", "visul"]) == 2
    assert "visul" in capsys.readouterr().err


# ---------------------------------------------------------------------- the commands, end to end
def test_grape_train_then_grape_eval_subprocess(tmp_path):
    """A fresh default-shaped run at tiny size: SFT (tiny recipe, own cache) -> 2 GRAPE iterations -> eval.

    About 30 s on the 2-core machine at moderate load."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    started = time.perf_counter()
    train = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from trainer.cli import train_main; sys.exit(train_main())",
            "--constraints",
            "constraints/safety.grc",
            "--tasks",
            "pick_place",
            "stack",
            "--iterations",
            "2",
            "--states-per-task",
            "1",
            "--samples-per-state",
            "2",
            "--m",
            "1",
            "--min-gap",
            "0",
            "--max-steps",
            "12",
            "--sft-cache",
            str(tmp_path / "sft"),
            "--sft-demos",
            "1",
            "--sft-steps",
            "5",
            "--output-dir",
            str(run),
            "--json",
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    summary = json.loads(train.stdout.strip().splitlines()[-1])
    assert summary["run_dir"] == str(run)
    assert "iter 2 step" in train.stderr  # a log line per optimizer step
    assert (run / "checkpoints" / "iter_0002" / "policy" / "adapter").is_dir()
    assert list((run / "tb").iterdir())
    evaluation = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from trainer.cli import eval_main; sys.exit(eval_main())",
            "--policy",
            str(run),
            "--splits",
            "in_domain",
            "semantic",
            "--episodes",
            "1",
            "--max-steps",
            "8",
            "--iterations",
            "0",
            "2",
            "--json",
            "--no-progress",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    info = json.loads(evaluation.stdout)
    assert set(info["iterations"]) == {"0", "2"}
    cell = info["iterations"]["2"]["semantic"]["stack"]
    assert cell["episodes"] == 1 and 0 <= cell["success"]["ci95"][0] <= cell["success"]["ci95"][1] <= 1
    assert json.loads((run / "eval" / "eval_info.json").read_text()) == info
    # iteration 2 against the base policy, paired on the same episodes, every evaluated split and all
    paired = info["paired_vs_base"]
    assert paired["base_iteration"] == 0 and set(paired["2"]) >= {"semantic", "all"}
    block = paired["2"]["all"]["success"]
    assert block["n"] == sum(cells["all"]["episodes"] for cells in info["iterations"]["2"].values())
    assert block["difference_ci95"][0] <= block["difference"] <= block["difference_ci95"][1]
    assert Path(info["plot"]).read_bytes()[:4] == b"\x89PNG"
    assert info["gifs"] and all(Path(g).read_bytes()[:3] == b"GIF" for g in info["gifs"])
    assert time.perf_counter() - started < 300


# ---------------------------------------------------------------------- --config replays a run's config.json
def test_config_file_replays_a_run_and_flags_override_it(tmp_path):
    from trainer.cli import _train_parser
    from trainer.config import LEGACY_DEFAULTS
    from trainer.flags import parse_config

    saved = TrainConfig(constraints="constraints/safety.grc", seed=4, output_dir=str(tmp_path / "run")).to_dict()
    saved["rollout"]["tasks"] = ["stack"]
    del saved["optim"]["nll_weight"], saved["gcpg"]["self_pairs"]  # a run folder from before these fields existed
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    parser = _train_parser()
    config, _ = parse_config(
        parser,
        TrainConfig,
        ["--config", str(tmp_path / "run"), "--iterations", "5"],
        "config.json",
        missing=LEGACY_DEFAULTS,
    )
    assert (config.seed, config.rollout.tasks, config.iterations) == (4, ["stack"], 5)
    assert config.output_dir == str(
        tmp_path / "run"
    )  # so the replay resumes that run unless --output-dir says otherwise
    assert (config.optim.nll_weight, config.gcpg.self_pairs) == (
        LEGACY_DEFAULTS["nll_weight"],
        LEGACY_DEFAULTS["self_pairs"],
    )
    assert config_differences(saved, config.to_dict()) == []  # a resume through --config is a genuine resume


def test_train_ctrl_c_exits_130(tmp_path):
    from interrupting import entry_point, interrupt_when

    from trainer.policy import make_policy
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path / "policy"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    code, err = interrupt_when(
        [
            *entry_point("trainer.cli:train_main"),
            "--constraints",
            "constraints/safety.grc",
            "--policy",
            str(folder),
            "--tasks",
            "stack",
            "--states-per-task",
            "64",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        "iter 1 rollouts",
    )
    assert code == 130 and "run the same command again to resume" in err and "Traceback" not in err
