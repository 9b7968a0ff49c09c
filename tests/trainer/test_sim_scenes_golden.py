"""Golden scenes: `sample_scene` for a few seeds per task and split, pinned in tests/trainer/golden/scenes.json.

The datasets (demonstrations, rollouts, evaluation episodes) are built from these scenes, so a
refactor that changes one value changes every experiment. If a change is meant (a new split, a
new object), regenerate the file and say so in the commit:

    GRAPE_UPDATE_GOLDEN=1 python -m pytest -q tests/trainer/test_sim_scenes_golden.py
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainer.sim.splits import EVAL_SEED_BASE, SPLITS, sample_scene
from trainer.sim.tasks import TASKS

GOLDEN = Path(__file__).parent / "golden" / "scenes.json"
SEEDS = (7, EVAL_SEED_BASE, EVAL_SEED_BASE + 1)
"""A training seed and the first two evaluation seeds (the scenes every evaluation starts with)."""


def _plain(value: Any) -> Any:
    """JSON-ready: dataclasses as dicts, tuples and arrays as lists, numpy scalars as Python numbers."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _scenes() -> dict[str, Any]:
    return {
        f"{task}/{split}/{seed}": _plain(sample_scene(task, split, seed))
        for task in TASKS
        for split in SPLITS
        for seed in SEEDS
    }


def _differences(want: Any, got: Any, where: str = "") -> list[str]:
    """Paths where `got` differs from `want`; floats may differ by rounding (1e-12 relative) only."""
    if isinstance(want, dict) and isinstance(got, dict):
        keys = sorted(set(want) | set(got))
        return [
            d for k in keys for d in _differences(want.get(k, "<missing>"), got.get(k, "<missing>"), f"{where}.{k}")
        ]
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (a, b) in enumerate(zip(want, got)) for d in _differences(a, b, f"{where}[{i}]")]
    if (
        isinstance(want, float)
        and isinstance(got, (int, float))
        and not isinstance(got, bool)
        and math.isclose(want, got, rel_tol=1e-12, abs_tol=1e-15)
    ):
        return []
    return [] if want == got else [f"{where}: {want!r} -> {got!r}"]


def test_sampled_scenes_match_the_golden_file():
    scenes = _scenes()
    if os.environ.get("GRAPE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            f"{json.dumps(key)}: {json.dumps(scene, sort_keys=True, separators=(',', ':'))}"
            for key, scene in sorted(scenes.items())
        ]
        GOLDEN.write_text("{\n" + ",\n".join(lines) + "\n}\n")  # one scene per line: readable diffs
        pytest.skip(f"rewrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert set(scenes) == set(golden), "the golden file covers other tasks, splits or seeds"
    differences = _differences(golden, json.loads(json.dumps(scenes)))
    assert not differences, f"{len(differences)} scene values changed:\n" + "\n".join(differences[:20])


def test_the_golden_file_tells_scenes_apart():
    """The pin is not vacuous: different seeds, splits and tasks give different scenes."""
    golden = json.loads(GOLDEN.read_text())
    bodies = [
        json.dumps({k: v for k, v in scene.items() if k not in ("seed",)}, sort_keys=True) for scene in golden.values()
    ]
    assert len(set(bodies)) == len(bodies)
