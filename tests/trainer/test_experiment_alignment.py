import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import validate
from trainer.eval import EpisodeOutcome
from trainer.experiment.alignment import (
    METHODS,
    PRESETS,
    eval_path,
    evaluation_plan,
    render_report,
    summarize_experiment,
    train_config,
)
from trainer.experiment.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_method_is_a_valid_grape_train_run_at_one_rollout_budget(preset, tmp_path):
    p = PRESETS[preset]
    configs = [train_config(m, p, tmp_path, 0, "policy") for m in METHODS if m.trains]
    for config in configs:
        assert validate(config) == []
        assert config.rollout.dynamic_sampling and config.rollout.max_rollouts == p.max_rollouts
    # Methods differ only in loss, objective and NLL weight: the budget and sizes are shared.
    shared = {
        (c.iterations, c.rollout.states_per_task, c.rollout.samples_per_state, c.optim.lr, c.optim.epochs)
        for c in configs
    }
    assert len(shared) == 1
    assert {c.optim.loss for c in configs} >= {"rloo", "tpo", "sft", "dpo-step"}
    assert {Path(c.constraints).name for c in configs} == {"task_completion.grc", "safety.grc", "efficiency.grc"}


def test_the_headline_decoding_covers_every_split_of_the_headline_methods_and_the_other_in_domain():
    p = PRESETS["full"]
    plan = evaluation_plan(p)
    headline = {m.name: splits for m, decoding, splits in plan if decoding == p.headline_decoding}
    other = {m.name: splits for m, decoding, splits in plan if decoding != p.headline_decoding}
    assert headline["sft"] == p.splits and headline["tc_rloo"] == p.splits
    assert headline["safety_rloo"] == ("in_domain",)
    assert set(other) == {m.name for m in METHODS} and all(s == ("in_domain",) for s in other.values())


def _write_eval(out, name, decoding, successes, collisions=None):
    collisions = collisions or [False] * len(successes)
    episodes = [
        dataclasses.asdict(
            EpisodeOutcome("stack", "in_domain", 1_000_000 + i, bool(s), bool(s), bool(c), 40 if s else 80)
        )
        for i, (s, c) in enumerate(zip(successes, collisions))
    ]
    path = eval_path(out, name, decoding)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"episodes": episodes}))


def test_summary_pairs_each_policy_with_sft_and_the_report_shows_it(tmp_path):
    n = 200
    sft = [i % 2 == 0 for i in range(n)]  # 50%
    better = [s or i % 4 == 1 for i, s in enumerate(sft)]  # 75%, never losing an SFT success
    _write_eval(tmp_path, "sft", "sampled", sft, collisions=[True] * n)
    _write_eval(tmp_path, "tc_rloo", "sampled", better, collisions=[i % 2 == 0 for i in range(n)])
    summary = summarize_experiment(tmp_path)
    (sft_row,) = [r for r in summary["records"] if r["policy"] == "sft"]
    (row,) = [r for r in summary["records"] if r["policy"] == "tc_rloo"]
    assert "vs_sft" not in sft_row and sft_row["n"] == n
    v = row["vs_sft"]
    assert v["success_difference"] == pytest.approx(0.25) and v["success_difference_ci95"][0] > 0
    assert v["success_ratio"] == pytest.approx(1.5)
    assert v["collision_ratio"] == pytest.approx(0.5) and v["collision_difference_ci95"][1] < 0
    report = render_report(
        tmp_path, summary, {"preset": dataclasses.asdict(PRESETS["full"]), "seed": 0, "policy_dir": "p"}
    )
    assert "+25.0" in report and "1.50x" in report


def test_alignment_cli_usage_errors_exit_2(tmp_path, capsys):
    assert main(["alignment", "--out", str(tmp_path / "x"), "--eval-episodes", "0"]) == 2
    assert main(["alignment", "--out", str(tmp_path / "x"), "--only", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["alignment", "--out", str(tmp_path / "x"), "--lr", "0"]) == 2
    assert main(["alignment", "--out", str(tmp_path / "x"), "--splits", "nowhere"]) == 2
    assert not (tmp_path / "x").exists()


def test_alignment_overrides_rename_the_preset():
    from trainer.experiment.cli import _alignment_preset, build_parser

    args = build_parser().parse_args(
        ["alignment", "--out", "x", "--epochs", "8", "--lr", "5e-4", "--splits", "in_domain", "--jobs", "2"]
    )
    preset = _alignment_preset(args)
    assert (preset.epochs, preset.lr, preset.splits) == (8, 5e-4, ("in_domain",))
    assert preset.name == "full (lr=0.0005, epochs=8, splits=in_domain)"


@pytest.mark.slow
def test_quick_alignment_experiment_end_to_end_and_resume(tmp_path):
    out = tmp_path / "al"
    command = [
        sys.executable,
        "-m",
        "trainer.experiment",
        "alignment",
        "--quick",
        "--out",
        str(out),
        "--no-progress",
        "--sft-cache",
        str(tmp_path / "sft"),
        "--json",
    ]
    first = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    policies = {r["policy"] for r in summary["records"]}
    assert policies == {m.name for m in METHODS}
    assert all("vs_sft" in r for r in summary["records"] if r["policy"] != "sft")
    assert (out / "report.md").read_text().startswith("# Alignment experiment")
    evaluated = {p: p.stat().st_mtime_ns for p in (out / "eval").iterdir()}
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already done" in again.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "eval").iterdir()} == evaluated  # nothing evaluated twice
    assert json.loads((out / "summary.json").read_text())["records"] == summary["records"]


def test_a_plain_run_trains_the_default_methods_and_named_ones_on_request():
    defaults = {m.name for m in METHODS if m.default}
    assert {"sft", "tc_tpo", "tc_rloo", "safety_tpo", "efficiency_tpo", "tc_sft_successes", "tc_step_dpo"} <= defaults
    assert {"safety_rloo", "efficiency_rloo"}.isdisjoint(defaults)


def test_summary_and_report_carry_contact_steps_and_path_length(tmp_path):
    def write(name, contacts, path):
        episodes = [
            dataclasses.asdict(EpisodeOutcome("stack", "in_domain", 1_000_000 + i, True, True, False, 40, c, p))
            for i, (c, p) in enumerate(zip(contacts, path))
        ]
        target = eval_path(tmp_path, name, "sampled")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"episodes": episodes}))

    write("sft", [4] * 50, [1.0] * 50)
    write("safety_tpo", [1] * 50, [1.2] * 50)
    summary = summarize_experiment(tmp_path)
    (row,) = [r for r in summary["records"] if r["policy"] == "safety_tpo"]
    assert row["contact_steps"] == pytest.approx(1.0) and row["path_length"] == pytest.approx(1.2)
    assert row["vs_sft"]["contact_steps_ratio"] == pytest.approx(0.25)
    assert row["vs_sft"]["path_length_ratio"] == pytest.approx(1.2)
    report = render_report(
        tmp_path, summary, {"preset": dataclasses.asdict(PRESETS["full"]), "seed": 0, "policy_dir": "p"}
    )
    assert "| GRAPE-Safety (TPO + NLL) | in_domain | 1.00 | 0.25 [0.25, 0.25] | 1.200 | 1.200 [1.20, 1.20] |" in report
