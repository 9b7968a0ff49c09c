"""The model card lists and hashes every .grc file a run read."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from trainer.modelcard import objective_files, render_card

ROOT = Path(__file__).resolve().parents[2]


def card(constraints: Path, tasks: list[str]) -> str:
    return render_card(
        title="t",
        base_policy=None,
        tasks=tasks,
        constraints=str(constraints),
        iteration=1,
        metrics={"rollout/success_rate": 0.25},
        settings={},
    )


def test_an_objective_runs_card_hashes_the_stock_task_files_it_was_applied_to() -> None:
    text = card(ROOT / "constraints" / "safety.grc", ["stack", "push_to_target"])
    for task in ("stack", "push_to_target"):
        path = ROOT / "constraints" / "tasks" / f"{task}.grc"
        assert f"`{path}` sha256 `{hashlib.sha256(path.read_bytes()).hexdigest()}`" in text
    assert "pick_place.grc" not in text  # only the tasks the run trained
    assert str(ROOT / "constraints" / "safety.grc") in text


def test_a_task_file_run_lists_only_that_file(tmp_path: Path) -> None:
    task_file = tmp_path / "stack.grc"
    shutil.copy(ROOT / "constraints" / "tasks" / "stack.grc", task_file)
    assert objective_files(str(task_file), ["stack", "pick_place"]) == [task_file]


def test_an_objective_beside_its_own_tasks_folder_hashes_those(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "constraints", tmp_path / "constraints")
    (tmp_path / "constraints" / "tasks" / "stack.grc").write_text(
        (ROOT / "constraints" / "tasks" / "stack.grc").read_text() + "\n# edited\n"
    )
    files = objective_files(str(tmp_path / "constraints" / "safety.grc"), ["stack"])
    assert tmp_path / "constraints" / "tasks" / "stack.grc" in files
