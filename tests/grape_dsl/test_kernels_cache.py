"""The compile cache: a second process loads kernels without compiling; keys follow content."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from grape_dsl.api import load_task
from grape_dsl.ir.lower import lower
from grape_dsl.llm import builtin_schema
from grape_dsl.runtime.kernels import cache_key, default_cache_dir

ROOT = Path(__file__).resolve().parents[2]
STOCK = ROOT / "constraints"
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

CACHE_PROBE = """
import json, sys
import numpy as np
from grape_dsl.compiler import compile_task
from grape_dsl.batch import TrajectoryBatch
compiled = compile_task(sys.argv[1], [sys.argv[2]], cache_dir=sys.argv[3])
batch = TrajectoryBatch(np.zeros((2, 3, 8, 3), np.float32), {kps!r}, np.zeros((2, 3, len({sigs!r})), np.float32),
                        {sigs!r}, np.array([3, 1]))
table = compiled.score(batch)
print(json.dumps({{"generated": compiled.info.generated, "numba_compiled": compiled.info.numba_compiled,
                  "r_ext": table.r_ext.tolist(), "module": str(compiled.info.module_path)}}))
"""


def test_second_process_compiles_nothing(tmp_path: Path) -> None:
    script = CACHE_PROBE.format(kps=KEYPOINTS, sigs=SIGNALS)
    args = [
        sys.executable,
        "-c",
        script,
        str(STOCK / "tasks" / "pick_place_obstacle.grc"),
        str(STOCK / "safety.grc"),
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    first = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout)
    second = json.loads(subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout)
    assert first["generated"] and first["numba_compiled"] > 0
    assert not second["generated"] and second["numba_compiled"] == 0
    assert first["module"] == second["module"] and first["r_ext"] == second["r_ext"]


def test_key_changes_with_objectives_and_overrides() -> None:
    task = str(STOCK / "tasks" / "pick_place_obstacle.grc")
    keys = {
        cache_key(lower(load_task(task))),
        cache_key(lower(load_task(task, [str(STOCK / "safety.grc")]))),
        cache_key(lower(load_task(task, [str(STOCK / "efficiency.grc")]))),
        cache_key(lower(load_task(task, [], {"near": 0.05}))),
    }
    assert len(keys) == 4
    assert cache_key(lower(load_task(task))) == cache_key(lower(load_task(task)))


def test_default_cache_dir_follows_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRAPE_DSL_CACHE", str(tmp_path / "kernels"))
    assert default_cache_dir() == tmp_path / "kernels"
    monkeypatch.delenv("GRAPE_DSL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "grape_dsl"
