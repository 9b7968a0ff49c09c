"""`grapec compile` and `grapec score` as a user runs them: real subprocesses, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from grape_dsl.llm import builtin_schema
from grape_dsl.score import ScoreTable

ROOT = Path(__file__).resolve().parents[2]
TASK = str(ROOT / "constraints" / "tasks" / "pick_place_obstacle.grc")
SAFETY = str(ROOT / "constraints" / "safety.grc")
KEYPOINTS = [
    "gripper.tip",
    "object.center",
    "object.top",
    "object.bottom",
    "container.center",
    "container.top",
    "obstacle.center",
    "obstacle.top",
]
SIGNALS = list(builtin_schema("pick_place").signals)  # every built-in task reports the same signals


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("cli-cache")
    return {**os.environ, "GRAPE_DSL_CACHE": str(cache), "NUMBA_NUM_THREADS": "2"}


def grapec(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grape_dsl.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=240
    )


@pytest.fixture(scope="module")
def batch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    n, t_max = 6, 20
    path = tmp_path_factory.mktemp("batch") / "batch.npz"
    np.savez(
        path,
        keypoints=(rng.normal(size=(n, t_max, len(KEYPOINTS), 3)) * 0.1).astype(np.float32),
        keypoint_names=np.array(KEYPOINTS),
        signals=(rng.random((n, t_max, len(SIGNALS))) > 0.5).astype(np.float32),
        signal_names=np.array(SIGNALS),
        lengths=np.array([1, 5, 20, 20, 13, 2]),
        success=np.zeros(n, dtype=bool),
    )
    return path


def test_help_shows_examples(env: dict[str, str]) -> None:
    for command in ("compile", "score"):
        result = grapec(command, "--help", env=env)
        assert result.returncode == 0 and "examples:" in result.stdout


def test_compile_then_score(env: dict[str, str], batch_file: Path, tmp_path: Path) -> None:
    result = grapec("compile", TASK, "--objective", SAFETY, "--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "pick_place_obstacle" and Path(report["module"]).is_file()
    assert report["module"].startswith(env["GRAPE_DSL_CACHE"])
    assert "grasp.bump" in report["constraints"]

    out = tmp_path / "scores.parquet"
    result = grapec(
        "score", TASK, "--objective", SAFETY, "--batch", str(batch_file), "--out", str(out), "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["trajectories"] == 6 and len(summary["r_ext_per_trajectory"]) == 6
    table = ScoreTable.load(out)
    np.testing.assert_allclose(table.r_ext, summary["r_ext_per_trajectory"])
    assert table.constraint_names[1] == "grasp.bump"

    result = grapec("score", TASK, "--batch", str(batch_file), env=env)  # human-readable table
    assert result.returncode == 0, result.stderr
    assert "pick_place_obstacle" in result.stdout and "bump" in result.stdout


def test_emit_stages(env: dict[str, str]) -> None:
    for stage, marker in (
        ("ast", "task pick_place_obstacle"),
        ("ir", "program pick_place_obstacle"),
        ("blocks", "-- step block ("),
        ("python", "def score_kernel("),
    ):
        result = grapec("compile", TASK, "--emit", stage, "--set", "near=0.05", env=env)
        assert result.returncode == 0, result.stderr
        assert marker in result.stdout
    result = grapec("compile", TASK, "--emit", "ast", "--set", "near=0.05", env=env)
    assert "param near = 0.05" in result.stdout


def test_compile_output_dir(env: dict[str, str], tmp_path: Path) -> None:
    result = grapec("compile", TASK, "-o", str(tmp_path / "build"), "--emit", "python", env=env)
    assert result.returncode == 0 and not (tmp_path / "build").exists()  # --emit compiles nothing


def test_bad_task_file_renders_diagnostics(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.grc"
    bad.write_text("task bad\nkeypoints { ee = gripper.tip }\nstage only {\n    subgoal s: dist(ee, nope) <= 1\n}\n")
    result = grapec("compile", str(bad), env=env)
    assert result.returncode == 1
    assert f"{bad}:4:" in result.stderr and "nope" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(env: dict[str, str], batch_file: Path) -> None:
    assert grapec("compile", TASK, "--set", "near", env=env).returncode == 2
    assert grapec("compile", TASK, "--emit", "llvm", env=env).returncode == 2
    assert grapec("score", TASK, env=env).returncode == 2  # --batch is required
    result = grapec("score", TASK, "--batch", str(batch_file), "--out", "x.csv", env=env)
    assert result.returncode == 2 and ".parquet or .npz" in result.stderr


def test_unknown_param_override_is_an_input_error(env: dict[str, str]) -> None:
    result = grapec("compile", TASK, "--set", "nearr=0.05", env=env)
    assert result.returncode == 1 and "nearr" in result.stderr


def test_bad_batches_exit_1_with_a_clear_message(env: dict[str, str], tmp_path: Path, batch_file: Path) -> None:
    result = grapec("score", TASK, "--batch", str(tmp_path / "none.npz"), env=env)
    assert result.returncode == 1 and "no such file" in result.stderr

    with np.load(batch_file) as data:
        fields = dict(data)
    fields["signal_names"] = np.array([s.replace("grasped", "grasp") for s in SIGNALS])
    renamed = tmp_path / "renamed.npz"
    np.savez(renamed, **fields)
    result = grapec("score", TASK, "--batch", str(renamed), env=env)
    assert result.returncode == 1
    assert "signal 'grasped'" in result.stderr and "did you mean 'grasp'" in result.stderr
    assert "Traceback" not in result.stderr

    del fields["lengths"]
    partial = tmp_path / "partial.npz"
    np.savez(partial, **fields)
    result = grapec("score", TASK, "--batch", str(partial), env=env)
    assert result.returncode == 1 and "missing field(s) lengths" in result.stderr

    with np.load(batch_file) as data:
        fields = dict(data)
    fields["signals"][2, 3, 2] = np.nan  # contact.obstacle: read at every step (bump)
    nan_file = tmp_path / "nan.npz"
    np.savez(nan_file, **fields)
    result = grapec("score", TASK, "--batch", str(nan_file), env=env)
    assert result.returncode == 1 and "signals[2, 3, 2] ('contact.obstacle') is nan" in result.stderr
    result = grapec("score", TASK, "--batch", str(nan_file), "--nonfinite", "worst", "--json", env=env)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["valid"][2] is False and report["r_ext_per_trajectory"][2] == 0.0


def test_unwritable_cache_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = grapec("compile", TASK, "--cache-dir", str(blocker / "cache"), env=env)
    assert result.returncode == 1
    assert "cannot write kernels to the cache directory" in result.stderr and "Traceback" not in result.stderr
