"""`grapec lsp` as a command: help, and usage errors before any protocol is spoken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def grapec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grape_dsl.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_help_has_examples():
    done = grapec("lsp", "--help")
    assert done.returncode == 0 and "examples:" in done.stdout and "--scene" in done.stdout


def test_a_bad_scene_is_a_usage_error(tmp_path: Path):
    scene = tmp_path / "scene.json"
    scene.write_text("[1, 2]")
    done = grapec("lsp", "--scene", str(scene))
    assert done.returncode == 2 and "scene file holds a JSON object" in done.stderr
    done = grapec("lsp", "--scene", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "cannot read scene file" in done.stderr
    done = grapec("lsp", "--debounce-ms", "-5")
    assert done.returncode == 2 and "must be 0 or more" in done.stderr


def test_the_server_exits_cleanly_when_its_input_ends():
    done = grapec("lsp")  # stdin is empty: the client went away
    assert done.returncode == 0, done.stderr
