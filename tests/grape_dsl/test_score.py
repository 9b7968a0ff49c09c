"""Batch validation (every mistake named, before any kernel runs) and score table files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grape_dsl.batch import TrajectoryBatch
from grape_dsl.score import BatchError, ScoreTable, prepare_batch

KPS = ("gripper.tip", "object.center")
SIGS = ("grasped",)


def batch(**changes) -> TrajectoryBatch:
    fields = dict(
        keypoints=np.zeros((3, 5, 3, 3), np.float32),
        keypoint_names=["object.center", "gripper.tip", "container.top"],
        signals=np.zeros((3, 5, 2), np.float32),
        signal_names=["contact.table", "grasped"],
        lengths=np.array([5, 1, 3]),
    )
    fields.update(changes)
    return TrajectoryBatch(**fields)


def test_a_valid_batch_maps_program_slots_to_batch_columns() -> None:
    prepared = prepare_batch(batch(), KPS, SIGS)
    assert prepared.keypoint_index == (1, 0) and prepared.signal_index == (1,)
    assert prepared.lengths.dtype == np.int64


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            dict(keypoints=np.zeros((3, 5, 3), np.float32)),
            r"keypoints must have shape \[N, T, K, 3\], got shape \(3, 5, 3\)",
        ),
        (dict(keypoints=np.zeros((3, 5, 3, 2), np.float32)), r"keypoints must have shape \[N, T, K, 3\]"),
        (dict(keypoints=np.zeros((3, 5, 3, 3), np.int32)), "keypoints must be float32 .* got dtype int32"),
        (dict(keypoints=[[0.0]]), "keypoints must be a numpy array .* got list"),
        (
            dict(signals=np.zeros((3, 4, 2), np.float32)),
            r"signals has shape \(3, 4, 2\) but keypoints has shape \(3, 5, 3, 3\)",
        ),
        (dict(signals=np.zeros((3, 5, 2), np.float16)), "signals must be float32 .* got dtype float16"),
        (dict(keypoint_names=["object.center", "gripper.tip"]), "keypoint_names has 2 names but the array has 3"),
        (dict(signal_names=["grasped", "grasped"]), "signal_names repeats 'grasped'"),
        (dict(lengths=np.array([5, 0, 3])), r"lengths\[1\] = 0"),
        (dict(lengths=np.array([5, 6, 3])), r"every length must be in 1..T = 1..5 .* lengths\[1\] = 6"),
        (dict(lengths=np.array([5, 1])), r"lengths must be an integer array of shape \[N\] = \[3\]"),
        (dict(lengths=np.array([5.0, 1.0, 3.0])), "lengths must be integers, got dtype float64"),
        (dict(success=np.zeros(2, bool)), r"success must have shape \[N\] = \[3\]"),
    ],
)
def test_malformed_batches_are_named(changes: dict, message: str) -> None:
    with pytest.raises(BatchError, match=message):
        prepare_batch(batch(**changes), KPS, SIGS)


def test_missing_names_are_listed_with_near_names() -> None:
    bad = batch(
        keypoint_names=["object.centre", "gripper.tips", "container.top"], signal_names=["contact.table", "grasp"]
    )
    with pytest.raises(BatchError) as err:
        prepare_batch(bad, KPS, SIGS)
    text = str(err.value)
    assert "keypoint 'gripper.tip' (did you mean 'gripper.tips'?)" in text
    assert "keypoint 'object.center' (did you mean 'object.centre'?)" in text
    assert "signal 'grasped' (did you mean 'grasp'?)" in text


def test_byte_string_names_are_decoded() -> None:
    prepared = prepare_batch(
        batch(
            keypoint_names=np.array([b"object.center", b"gripper.tip", b"x"]),
            signal_names=np.array([b"contact.table", b"grasped"]),
        ),
        KPS,
        SIGS,
    )
    assert prepared.keypoint_index == (1, 0) and prepared.signal_index == (1,)


def test_float64_batches_are_accepted() -> None:
    prepared = prepare_batch(batch(keypoints=np.zeros((3, 5, 3, 3))), KPS, SIGS)
    assert prepared.keypoints.dtype == np.float64


def _table() -> ScoreTable:
    rng = np.random.default_rng(0)
    return ScoreTable(
        task_name="demo",
        stage_names=("grasp", "place"),
        constraint_names=("grasp.reach", "grasp.bump", "place.inside"),
        tags=("grasp", "collision", "task"),
        stage_bounds=np.array([[[0, 3], [4, 9]], [[0, 9], [-1, -1]]]),
        reached=np.array([[True, True], [True, False]]),
        constraint_costs=rng.random((2, 3)),
        stage_costs=rng.random((2, 2)),
        r_ext=rng.random(2),
        valid=np.array([True, False]),
    )


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_score_tables_round_trip(suffix: str, tmp_path: Path) -> None:
    table = _table()
    path = table.save(tmp_path / f"scores{suffix}")
    back = ScoreTable.load(path)
    assert (back.task_name, back.stage_names, back.constraint_names, back.tags) == (
        table.task_name,
        table.stage_names,
        table.constraint_names,
        table.tags,
    )
    for name in ("stage_bounds", "reached", "constraint_costs", "stage_costs", "r_ext", "valid"):
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    assert [p.name for p in tmp_path.iterdir()] == [f"scores{suffix}"]  # no temporary left behind


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=".npz or .parquet"):
        _table().save(tmp_path / "scores.csv")


def test_summary_and_printed_table() -> None:
    from rich.console import Console

    info = _table().summary()
    assert info["invalid"] == 1 and info["stages"][1]["reached"] == 0.5
    assert [c["name"] for c in info["constraints"]] == ["grasp.reach", "grasp.bump", "place.inside"]
    console = Console(record=True, width=120)
    _table().print_summary(console)
    text = console.export_text()
    assert "demo: 2 trajectories" in text and "reach" in text and "1 invalid" in text
