"""`grapec check` / `compile` with `--task`, `--scene` and `--objective`: sources checked at edit time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grape_dsl import cli

ROOT = Path(__file__).resolve().parents[2]
OBSTACLE_TASK = ROOT / "constraints" / "tasks" / "pick_place_obstacle.grc"


def grapec(*argv: str | Path) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse usage errors
        return int(exit.code)


@pytest.fixture()
def misspelled(tmp_path: Path) -> Path:
    text = OBSTACLE_TASK.read_text()
    assert "obstacle.center" in text
    path = tmp_path / "bad.grc"
    path.write_text(text.replace("obstacle.center", "obstacle.centre", 1))
    return path


def _position_of(path: Path, word: str) -> str:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if word in line:
            return f"{number}:{line.index(word) + 1}"
    raise AssertionError(word)


def test_check_with_task_reports_unknown_keypoint_with_near_name(misspelled: Path, capsys) -> None:
    assert grapec("check", misspelled, "--task", "pick_place_obstacle") == 1
    err = capsys.readouterr().err
    assert f"{misspelled}:{_position_of(misspelled, 'obstacle.centre')}: error[GRC225]" in err
    assert "did you mean 'obstacle.center'" in err


def test_check_without_schema_still_accepts_any_source(misspelled: Path) -> None:
    assert grapec("check", misspelled) == 0


def test_check_json_with_task(misspelled: Path, capsys) -> None:
    assert grapec("check", misspelled, "--task", "pick_place_obstacle", "--json") == 1
    found = json.loads(capsys.readouterr().out)
    assert [d["code"] for d in found] == ["GRC225"]
    line, column = map(int, _position_of(misspelled, "obstacle.centre").split(":"))
    assert (found[0]["line"], found[0]["column"]) == (line, column)


def test_stock_files_check_against_their_own_tasks() -> None:
    for task in ("pick_place", "pick_place_obstacle", "push_to_target", "stack"):
        path = ROOT / "constraints" / "tasks" / f"{task}.grc"
        assert grapec("check", path, "--task", task, "--objective", ROOT / "constraints" / "safety.grc") == 0


def test_task_file_against_another_tasks_schema_fails(capsys) -> None:
    assert grapec("check", ROOT / "constraints/tasks/pick_place.grc", "--task", "push_to_target") == 1
    assert "no keypoint 'container.top'" in capsys.readouterr().err


def test_unknown_task_name_is_one_clear_error(capsys) -> None:
    assert grapec("check", OBSTACLE_TASK, "--task", "pick_place_obstacl") == 1
    err = capsys.readouterr().err
    assert "unknown task 'pick_place_obstacl'; did you mean 'pick_place_obstacle'?" in err
    assert "Traceback" not in err


def test_scene_file_schema(tmp_path: Path, capsys) -> None:
    scene = tmp_path / "scene.json"
    scene.write_text(
        json.dumps(
            {
                "objects": [{"name": "cube", "keypoints": ["center"]}],
                "keypoints": ["gripper.tip"],
                "signals": ["grasped"],
            }
        )
    )
    task = tmp_path / "t.grc"
    task.write_text(
        "task t\nkeypoints {\n    ee = gripper.tip\n    c = cube.centr\n}\n"
        "signals {\n    held = grasped\n}\nstage s {\n    subgoal near: dist(ee, c) <= 0.05\n}\n"
    )
    assert grapec("check", task, "--scene", scene) == 1
    assert "did you mean 'cube.center'" in capsys.readouterr().err
    task.write_text(task.read_text().replace("cube.centr", "cube.center"))
    assert grapec("check", task, "--scene", scene) == 0


def test_missing_scene_file_is_one_clear_error(tmp_path: Path, capsys) -> None:
    assert grapec("check", OBSTACLE_TASK, "--scene", tmp_path / "nope.json") == 1
    assert "cannot read scene file" in capsys.readouterr().err


def test_check_with_objective_reports_what_applying_it_reports(tmp_path: Path, capsys) -> None:
    objective = tmp_path / "strict.grc"
    objective.write_text('objective strict "x"\n\ntag nonexistent_tag_xyz { tol 0 weight 2 }\n')
    assert grapec("check", OBSTACLE_TASK) == 0
    assert "GRC305" not in capsys.readouterr().err
    # a tag the task lacks is only seen when the objective is applied to the task
    assert grapec("check", OBSTACLE_TASK, "--objective", objective) == 0
    assert "warning[GRC305]" in capsys.readouterr().err
    assert grapec("check", OBSTACLE_TASK, "--objective", objective, "--strict") == 1


def test_compile_with_task_stops_before_compiling(misspelled: Path, capsys) -> None:
    assert grapec("compile", misspelled, "--task", "pick_place_obstacle", "--emit", "ir") == 1
    err = capsys.readouterr().err
    assert "did you mean 'obstacle.center'" in err and "nothing compiled" in err


def test_task_and_scene_are_exclusive(misspelled: Path, tmp_path: Path) -> None:
    assert grapec("check", misspelled, "--task", "pick_place", "--scene", tmp_path / "s.json") == 2
