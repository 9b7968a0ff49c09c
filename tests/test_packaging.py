"""Packaging: every package is listed in pyproject.toml, and a built wheel carries the grammar
so an installed `grapec` works from any directory."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _package_dirs(top: str) -> set[str]:
    """Dotted names of every directory under `top` holding Python modules."""
    found = set()
    for directory in [ROOT / top, *(ROOT / top).rglob("*")]:
        if directory.is_dir() and "__pycache__" not in directory.parts and any(directory.glob("*.py")):
            found.add(".".join(directory.relative_to(ROOT).parts))
    return found


@pytest.mark.parametrize("top", ["grape_dsl", "trainer"])
def test_every_package_is_listed(top: str) -> None:
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = _package_dirs(top) - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    for name in _package_dirs(top):
        assert (ROOT / Path(*name.split(".")) / "__init__.py").is_file(), f"{name} has no __init__.py"


def test_grammar_package_maps_to_the_top_level_grammar() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["grape_dsl.grammar"] == "grammar"
    assert "grape_dsl.grammar" in setuptools["packages"]
    assert (ROOT / "grammar" / "grc.lark").is_file()
    assert (ROOT / "grammar" / "__init__.py").is_file()


def _can_build_without_isolation() -> bool:
    """setuptools builds wheels by itself from 70.1 on; before that it needs `wheel`."""
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _build_wheel(tmp_path: Path) -> Path:
    """Build from a copy of the sources, so the shared working tree gets no build/ folder."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("grape_dsl", "trainer", "grammar"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("grape_dsl-*.whl"))


@pytest.mark.timeout(600)
@pytest.mark.skipif(
    not _can_build_without_isolation(),
    reason="this venv's setuptools cannot build a wheel offline (needs >= 70.1 or `wheel`)",
)
def test_wheel_carries_the_grammar_and_grapec_runs_from_elsewhere(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "grape_dsl/grammar/grc.lark" in names
    assert "grape_dsl/grammar/__init__.py" in names
    assert "grape_dsl/commands/check.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "grapec = grape_dsl.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # Install the wheel alone into a folder and run it from another directory: the
    # installed copy (not this checkout) must find its grammar.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "t.grc").write_text("task t\nkeypoints { ee = gripper.tip }\nstage s { subgoal up: ee.z >= 0.1 }\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import grape_dsl.parser as p; print(p.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(site), where
    done = subprocess.run(
        [sys.executable, "-m", "grape_dsl.cli", "check", "t.grc"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
