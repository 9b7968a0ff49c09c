"""grape-experiment: the plan, resume, tables from eval_info.json, and small real end-to-end runs."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.config import build_parser, config_from_args, validate
from trainer.eval import EVAL_INFO_FILE, EpisodeOutcome, summarize, write_eval_info
from trainer.experiment import (
    DONE_FILE,
    PLAN,
    PRESETS,
    STATE_SPLITS,
    TABLES,
    Experiment,
    ExperimentError,
    Preset,
    check_targets,
    get_run,
    load_results,
    main,
    open_experiment,
    run_dir,
    run_experiment,
    train_argv,
    train_config,
    write_report,
)

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
TINY = Preset(
    "tiny",
    iterations=1,
    states_per_task=1,
    samples_per_state=2,
    m=1,
    epochs=1,
    pairs_per_step=2,
    eval_episodes=1,
    tasks=("pick_place",),
    max_steps=15,
)


# ---------------------------------------------------------------------- the plan
def test_plan_covers_the_paper_and_tables_name_planned_runs():
    names = [r.name for r in PLAN]
    assert len(names) == len(set(names))
    assert {
        "sft",
        "step_dpo",
        "grape_tc",
        "random_success",
        "no_r_self",
        "no_r_ext",
        "no_success",
        "grape_safety",
        "grape_efficiency",
    } == set(names)
    for table in TABLES:
        assert all(name in names for name, _ in table.rows), table.key
    assert PRESETS["full"].episodes_per_cell >= 100  # the issue's bar: >= 100 episodes per table cell


def test_every_trained_run_differs_from_grape_tc_only_in_what_it_ablates(tmp_path):
    preset = PRESETS["full"]
    configs = {r.name: train_config(r, preset, tmp_path, 3, "pol").to_dict() for r in PLAN if r.trains}
    base = configs["grape_tc"]

    def flat(d):
        return {
            **{k: v for k, v in d.items() if not isinstance(v, dict)},
            **{k: v for sub in d.values() if isinstance(sub, dict) for k, v in sub.items()},
        }

    def differences(config):
        a, b = flat(base), flat(config)
        return {k for k in a if a[k] != b[k]} - {"output_dir"}

    assert differences(configs["step_dpo"]) == {"loss"}
    assert differences(configs["random_success"]) == {"pairing"}
    assert differences(configs["no_r_self"]) == {"lambda_self"}
    assert differences(configs["no_r_ext"]) == {"lambda_ext"}
    assert differences(configs["no_success"]) == {"lambda_success"}
    assert differences(configs["grape_safety"]) == differences(configs["grape_efficiency"]) == {"constraints"}
    assert configs["grape_safety"]["constraints"].endswith("constraints/safety.grc")
    assert all(c["seed"] == 3 and c["policy"]["base_policy"] == "pol" for c in configs.values())
    assert len({c["output_dir"] for c in configs.values()}) == len(configs)


def test_train_argv_reproduces_the_config_through_grape_train_parser(tmp_path):
    tuned = dataclasses.replace(
        PRESETS["quick"], lr=2e-4, nll_weight=0.5, ref_update="iteration", lora_targets="all-linear"
    )
    for preset in (PRESETS["quick"], tuned):
        for run in PLAN:
            if not run.trains:
                continue
            config = train_config(run, preset, tmp_path, 1, str(tmp_path / "sft"))
            parsed = config_from_args(build_parser().parse_args(train_argv(config)))
            assert parsed == config, run.name
            assert validate(parsed) == []
    config = train_config(get_run("step_dpo"), tuned, tmp_path, 1, str(tmp_path / "sft"))
    assert (config.optim.lr, config.optim.nll_weight, config.optim.ref_update, config.policy.lora_targets) == (
        2e-4,
        0.5,
        "iteration",
        "all-linear",
    )


# ---------------------------------------------------------------------- tables from synthetic results
def _summary(rates: dict[str, tuple[int, int, float, int]], n: int = 100):
    """rates: split -> (successes, collisions, mean length, ...) over n episodes of one task."""
    outcomes = []
    for split, (wins, collisions, length, _) in rates.items():
        for i in range(n):
            outcomes.append(
                EpisodeOutcome("pick_place", split, i, i < wins, i < wins, i < collisions, int(length) + (i % 2))
            )
    return summarize(outcomes)


def _plant(out: Path, name: str, summaries: dict[int, dict]):
    folder = run_dir(out, name)
    write_eval_info({"iterations": {str(k): v for k, v in summaries.items()}}, folder / EVAL_INFO_FILE)
    (folder / DONE_FILE).write_text(json.dumps({"run": name, "train_seconds": 1.0, "eval_seconds": 2.0}))


def _experiment(out: Path, preset: Preset = TINY, runs=None) -> Experiment:
    return open_experiment(
        out,
        Experiment(
            preset,
            0,
            "sft-policy",
            list(STATE_SPLITS),
            False,
            runs or [r.name for r in PLAN],
            "grape-experiment paper --out x",
            "now",
        ),
    )


def test_report_tables_and_target_checks_from_eval_info_files(tmp_path):
    out = tmp_path / "exp"
    exp = _experiment(out)

    def rates(s, c=10, length=80):
        return {split: (s, c, length, 0) for split in STATE_SPLITS}

    _plant(out, "sft", {0: _summary(rates(40, 30, 90))})
    _plant(out, "grape_tc", {1: _summary(rates(64))})  # 1.6x SFT
    _plant(out, "step_dpo", {1: _summary(rates(50))})
    _plant(out, "no_r_ext", {1: _summary(rates(70))})  # an ablation beating full GRAPE: must be flagged
    _plant(out, "grape_safety", {1: _summary(rates(60, 18))})  # 0.6x SFT's collisions
    _plant(out, "grape_efficiency", {1: _summary(rates(60, 10, 85))})  # 85.5 / 90.5 = 0.94x: missed
    report = write_report(out).read_text()

    assert "| GRAPE-TC (TPO) | 64.0 [" in report and "| SFT | 40.0 [" in report
    assert "| GRAPE w/o R_self | — |" in report  # not run yet
    assert "| GRAPE-Safety | 18.0 [" in report
    assert "visual" in report and "state vector only" in report
    checks = {c.target: c for c in check_targets(load_results(out), exp)}
    assert checks["GRAPE-TC success >= 1.5x SFT (in_domain)"].met is True
    assert "1.60x" in checks["GRAPE-TC success >= 1.5x SFT (semantic)"].measured
    assert checks["TPO > step-DPO (success, all splits pooled)"].met is True
    assert checks["full GRAPE >= GRAPE w/o R_ext (success, all splits pooled)"].met is False
    assert checks["full GRAPE >= GRAPE w/o R_self (success, all splits pooled)"].met is None
    assert checks["GRAPE-Safety collision rate <= 0.63x SFT (in_domain)"].met is True
    efficiency = checks["GRAPE-Efficiency step length <= 0.89x SFT (in_domain)"]
    assert efficiency.met is False and "0.94x" in efficiency.measured
    zero = {split: (0, 0, 50, 0) for split in STATE_SPLITS}
    _plant(out, "sft", {0: _summary(zero)})
    checks = {c.target: c for c in check_targets(load_results(out), exp)}
    assert checks["GRAPE-TC success >= 1.5x SFT (in_domain)"].met is None  # no ratio to a 0% baseline
    assert "no ratio" in checks["GRAPE-Safety collision rate <= 0.63x SFT (in_domain)"].measured
    for plot in ("baselines", "table1", "table2"):
        assert (out / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "plots" / "fig6_success_per_iteration.png").is_file()  # SFT (iteration 0) and iteration 1


def test_fig6_curve_starts_at_the_sft_policy(tmp_path):
    out = tmp_path / "exp"
    _experiment(out, Preset(**{**TINY.__dict__, "iterations": 2}))

    def rates(s):
        return {split: (s, 0, 50, 0) for split in STATE_SPLITS}

    _plant(out, "sft", {0: _summary(rates(20))})
    _plant(out, "grape_tc", {1: _summary(rates(30)), 2: _summary(rates(45))})
    report = write_report(out).read_text()
    assert (out / "plots" / "fig6_success_per_iteration.png").is_file()
    rows = [line for line in report.splitlines() if line.startswith("| 0 |") or line.startswith("| 2 |")]
    assert rows[0].startswith("| 0 | 20.0") and rows[1].startswith("| 2 | 45.0")


def test_an_output_folder_of_another_experiment_is_refused(tmp_path):
    out = tmp_path / "exp"
    _experiment(out)
    with pytest.raises(ExperimentError, match="seed: 0 -> 5"):
        open_experiment(out, Experiment(TINY, 5, "sft-policy", list(STATE_SPLITS), False, ["sft"]))
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(ExperimentError, match="not an experiment folder"):
        open_experiment(stray, Experiment(TINY, 0, "p", list(STATE_SPLITS), False, ["sft"]))


# ---------------------------------------------------------------------- CLI
def run_cli(*args, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "trainer.experiment", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def test_cli_plan_usage_and_bad_folders(tmp_path, capsys):
    assert main(["plan", "--quick", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in plan["runs"]] == [r.name for r in PLAN]
    assert "--pairing" in plan["runs"][[r["run"] for r in plan["runs"]].index("random_success")]["grape_train"]
    assert main(["report", "--out", str(tmp_path / "nothing")]) == 1
    assert "not an experiment folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["paper", "--out", str(tmp_path), "--only", "bogus", "--preset", "huge"])
    assert exit_info.value.code == 2
    assert main(["paper", "--out", str(tmp_path / "x"), "--only", "bogus"]) == 2
    assert "unknown run 'bogus'" in capsys.readouterr().err
    assert main(["plan", "--json", "--eval-episodes", "7", "--tasks", "stack"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["preset"]["name"] == "full (eval_episodes=7, tasks=stack)" and plan["preset"]["tasks"] == ["stack"]
    assert plan["runs"][0]["eval_episodes"] == 7 * len(STATE_SPLITS)
    assert main(["plan", "--samples-per-state", "3"]) == 2  # m = 2 needs 4
    assert "--samples-per-state >= 4" in capsys.readouterr().err
    assert main(["plan", "--eval-episodes", "0"]) == 2
    assert main(["plan", "--json", "--nll-weight", "0", "--lr", "1e-4", "--ref-update", "fixed"]) == 0
    preset = json.loads(capsys.readouterr().out)["preset"]
    assert (preset["nll_weight"], preset["lr"], preset["ref_update"]) == (0.0, 1e-4, "fixed")
    assert main(["plan", "--lr", "0"]) == 2 and "--lr must be > 0" in capsys.readouterr().err
    assert main(["plan", "--json", "--eval-temperature", "0"]) == 0  # 0 = greedy
    assert json.loads(capsys.readouterr().out)["preset"]["eval_temperature"] is None
    assert main(["plan", "--eval-temperature", "-0.5"]) == 2 and "--eval-temperature" in capsys.readouterr().err
    assert main(["plan", "--nll-weight", "-1"]) == 2 and "--nll-weight must be >= 0" in capsys.readouterr().err
    assert main(["plan", "--quick", "--preset", "full"]) == 2
    assert main(["paper", "--out", str(tmp_path / "y"), "--policy", str(tmp_path / "missing")]) == 1
    assert "--policy" in capsys.readouterr().err and not (tmp_path / "y").exists()
    result = run_cli("--help")
    assert result.returncode == 0 and "grape-experiment paper --out runs/paper" in result.stdout


# ---------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def tiny_sft(tmp_path_factory):
    from trainer.sft import SFTConfig, ensure_default_sft_policy

    config = SFTConfig(
        tasks=("pick_place",),
        demos_per_task=2,
        steps=5,
        batch_size=16,
        warmup_steps=1,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
    )
    return str(ensure_default_sft_policy(tmp_path_factory.mktemp("sft"), config, progress=False))


def test_tiny_experiment_end_to_end_resumes_a_half_trained_run_and_skips_done_ones(tmp_path, tiny_sft):
    from trainer.loop import completed_checkpoints, train

    out = tmp_path / "exp"
    preset = Preset(**{**TINY.__dict__, "iterations": 2, "eval_temperature": 1.0})
    lines = []
    # A previous invocation that was killed after grape_tc's first iteration: the loop's own
    # checkpoint is there, the run is not marked done.
    open_experiment(out, Experiment(preset, 0, tiny_sft, list(STATE_SPLITS), False, ["sft", "grape_tc"]))
    config = train_config(next(r for r in PLAN if r.name == "grape_tc"), preset, out, 0, tiny_sft)
    train(config, progress=False, echo=lambda _: None, stop_after=1)
    first = completed_checkpoints(Path(config.output_dir))[1] / "trainer_state.pt"
    first_mtime = first.stat().st_mtime_ns

    run_experiment(out, preset, policy=tiny_sft, only=["sft", "grape_tc"], progress=False, echo=lines.append)
    assert any("resuming" in line and "after iteration 1" in line for line in lines)
    assert first.stat().st_mtime_ns == first_mtime
    assert sorted(completed_checkpoints(Path(config.output_dir))) == [0, 1, 2]
    info = json.loads((run_dir(out, "grape_tc") / EVAL_INFO_FILE).read_text())
    assert sorted(info["iterations"]) == ["1", "2"] and info["splits"] == list(STATE_SPLITS)
    assert info["iterations"]["2"]["in_domain"]["all"]["episodes"] == 1
    assert (out / "report.md").is_file() and (out / "plots" / "fig6_success_per_iteration.png").is_file()
    commands = (out / "commands.sh").read_text()
    assert "grape-train --constraints" in commands and "--iterations 2" in commands
    assert info["temperature"] == 1.0 and not info["greedy"] and "--temperature 1 --seed 0" in commands
    assert "sampled at temperature 1" in (out / "report.md").read_text()

    # Done runs are skipped: a second call evaluates and trains nothing.
    done_before = {n: (run_dir(out, n) / DONE_FILE).stat().st_mtime_ns for n in ("sft", "grape_tc")}
    lines.clear()
    run_experiment(out, preset, policy=tiny_sft, only=["sft", "grape_tc"], progress=False, echo=lines.append)
    assert any("2 of 2 runs already done" in line for line in lines)
    assert {n: (run_dir(out, n) / DONE_FILE).stat().st_mtime_ns for n in ("sft", "grape_tc")} == done_before


def test_a_corrupt_checkpoint_names_a_command_that_repairs_the_run(tmp_path, tiny_sft, capsys):
    """grape-experiment resumes from the newest checkpoint only; when that one is corrupt its
    message must give a command that exists (grape-train on the run folder), and after it the
    experiment finishes."""
    import shlex

    from trainer.cli import train_main
    from trainer.loop import completed_checkpoints, train

    out = tmp_path / "exp"
    preset = Preset(**{**TINY.__dict__, "iterations": 2})
    open_experiment(out, Experiment(preset, 0, tiny_sft, list(STATE_SPLITS), False, ["grape_tc"]))
    config = train_config(next(r for r in PLAN if r.name == "grape_tc"), preset, out, 0, tiny_sft)
    train(config, progress=False, echo=lambda _: None, stop_after=1)
    newest = completed_checkpoints(Path(config.output_dir))[1] / "policy" / "adapter" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    with pytest.raises(ExperimentError) as failure:
        run_experiment(out, preset, policy=tiny_sft, only=["grape_tc"], progress=False, echo=lambda _: None)
    message = str(failure.value)
    assert "iter_0001 is corrupt" in message and "\n" not in message
    command = shlex.split(message.split("Repair the run with: ", 1)[1].split(";")[0])
    assert command[0] == "grape-train" and command[-2:] == ["--resume-from", "previous"]
    assert train_main(command[1:] + ["--no-progress"]) == 0
    capsys.readouterr()
    assert sorted(completed_checkpoints(Path(config.output_dir))) == [0, 1, 2]
    run_experiment(out, preset, policy=tiny_sft, only=["grape_tc"], progress=False, echo=lambda _: None)
    assert (run_dir(out, "grape_tc") / DONE_FILE).is_file()


@pytest.mark.slow  # ~20 s of real rollouts and evaluation; the pairing rule itself is in test_pairing.py
def test_random_success_ablation_trains_on_success_failure_pairs(tmp_path, tiny_sft):
    import pyarrow.parquet as pq

    out = tmp_path / "exp"
    preset = Preset(**{**TINY.__dict__, "samples_per_state": 4, "states_per_task": 2, "eval_episodes": 1})
    run_experiment(out, preset, policy=tiny_sft, only=["random_success"], progress=False, echo=lambda _: None)
    iteration = run_dir(out, "random_success") / "train" / "iterations" / "iter_0001"
    scores = pq.read_table(iteration / "scores.parquet").to_pydict()
    pairs = pq.read_table(iteration / "pairs.parquet").to_pydict()
    for chosen, rejected in zip(pairs["chosen"], pairs["rejected"]):
        assert scores["success"][chosen] and not scores["success"][rejected]
        assert scores["group"][chosen] == scores["group"][rejected]
    assert (run_dir(out, "random_success") / DONE_FILE).is_file()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # every run of the plan, twice over (the second call must skip them all)
def test_quick_preset_end_to_end_subprocess(tmp_path):
    out = tmp_path / "paper"
    result = run_cli(
        "paper",
        "--out",
        str(out),
        "--quick",
        "--no-progress",
        "--sft-cache",
        str(tmp_path / "sft"),
        "--json",
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(summary["runs_done"]) == sorted(r.name for r in PLAN)
    report = (out / "report.md").read_text()
    for table in TABLES:
        assert table.title in report
    again = run_cli("paper", "--out", str(out), "--quick", "--no-progress", "--sft-cache", str(tmp_path / "sft"))
    assert again.returncode == 0 and "9 of 9 runs already done" in again.stderr
