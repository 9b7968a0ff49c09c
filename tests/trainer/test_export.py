"""`grape-sim export`: a LeRobotDataset v3.0 folder that HF `datasets` loads (the way LeRobot's own
loader does: features from meta/info.json), and that round-trips the stored episodes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

datasets = pytest.importorskip("datasets")
pd = pytest.importorskip("pandas")

from trainer.config import TrainConfig  # noqa: E402
from trainer.export import ExportError, export_lerobot  # noqa: E402
from trainer.policy import make_policy  # noqa: E402
from trainer.sim import cli as sim_cli  # noqa: E402
from trainer.store import episode_folders, read_episode  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _hf_features(info: dict) -> datasets.Features:
    """LeRobot's rule: shape [1] is a scalar column, shape [n] a fixed-length list."""

    def one(feature: dict):
        value = datasets.Value(feature["dtype"])
        return value if feature["shape"] == [1] else datasets.List(value, length=feature["shape"][0])

    return datasets.Features({name: one(f) for name, f in info["features"].items()})


def load(root: Path, cache: Path) -> tuple[dict, datasets.Dataset, datasets.Dataset, pd.DataFrame, dict]:
    info = json.loads((root / "meta" / "info.json").read_text())
    files = sorted(str(p) for p in (root / "data").glob("chunk-*/file-*.parquet"))
    frames = datasets.Dataset.from_parquet(files, features=_hf_features(info), cache_dir=str(cache))
    episodes = datasets.Dataset.from_parquet(
        sorted(str(p) for p in (root / "meta" / "episodes").glob("*/*.parquet")), cache_dir=str(cache)
    )
    tasks = pd.read_parquet(root / "meta" / "tasks.parquet")
    stats = json.loads((root / "meta" / "stats.json").read_text())
    return info, frames.with_format("numpy"), episodes, tasks, stats


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "demos"
    rc = sim_cli.main(
        [
            "demo",
            "--tasks",
            "pick_place_obstacle",
            "stack",
            "-n",
            "2",
            "--max-steps",
            "30",
            "--keep-failures",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from trainer.loop import train
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("export_run")
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(tmp / "policy")
    config = TrainConfig(
        constraints=str(ROOT / "constraints" / "safety.grc"), iterations=2, output_dir=str(tmp / "run")
    )
    config.policy.base_policy = str(tmp / "policy")
    config.policy.lora_rank = 2
    config.rollout.tasks = ["stack", "push_to_target"]
    config.rollout.states_per_task = 2
    config.rollout.samples_per_state = 2
    config.rollout.max_steps = 8
    config.gcpg.m = 1
    config.gcpg.min_gap = 0.0  # 8-step rollouts all fail: any R_ext difference makes a pair
    config.optim.pairs_per_step = 2
    return train(config, progress=False, echo=lambda _: None)


def test_demonstrations_round_trip_exactly_through_hf_datasets(demos: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    # A tiny file limit puts every episode in its own file, two files per chunk folder.
    summary = export_lerobot(demos, out, data_file_mb=1e-6, chunks_size=2)
    stored = [read_episode(f) for f in episode_folders(demos)]
    assert (summary.episodes, summary.frames, summary.data_files) == (4, sum(e.length for e in stored), 4)
    assert sorted(p.relative_to(out).as_posix() for p in (out / "data").rglob("*.parquet")) == [
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "data/chunk-001/file-000.parquet",
        "data/chunk-001/file-001.parquet",
    ]

    info, frames, episodes, tasks, stats = load(out, tmp_path / "cache")
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_frames"] == len(frames)
    keypoint_columns = info["features"]["observation.keypoints"]["names"]
    assert (
        len(keypoint_columns) == 3 * 10
    )  # the union: pick_place_obstacle's 8 points and stack's base.center, base.top
    for e_index, episode in enumerate(stored):
        row = episodes[e_index]
        assert row["episode_index"] == e_index and row["length"] == episode.length
        assert row["tasks"] == [episode.instruction]
        assert (row["grape/task"], row["grape/seed"], row["grape/success"]) == (
            episode.task,
            episode.seed,
            episode.success,
        )
        # The data file named in the episode row holds exactly its rows.
        data_file = out / info["data_path"].format(
            chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
        )
        assert pq.read_table(data_file, columns=["episode_index"]).column(0).to_pylist() == [e_index] * episode.length
        rows = frames[row["dataset_from_index"] : row["dataset_to_index"]]
        assert (rows["episode_index"] == e_index).all()
        assert np.array_equal(rows["frame_index"], np.arange(episode.length))
        assert np.array_equal(rows["action"], episode.actions)
        assert np.array_equal(rows["observation.state"], episode.states)
        assert np.array_equal(rows["observation.signals"], episode.signals)
        keypoints = rows["observation.keypoints"].reshape(episode.length, -1, 3)
        own = [keypoint_columns.index(f"{name}.x") // 3 for name in row["grape/keypoint_names"]]
        assert row["grape/keypoint_names"] == episode.keypoint_names
        assert np.array_equal(keypoints[:, own], episode.keypoints)
        absent = [k for k in range(keypoints.shape[1]) if k not in own]
        assert np.isnan(keypoints[:, absent]).all()
        assert tasks.index[rows["task_index"][0]] == episode.instruction
        assert rows["next.done"].tolist() == [False] * (episode.length - 1) + [True]
    assert tasks.index.name == "task" and tasks["task_index"].tolist() == list(range(len(tasks)))
    every = frames[:]
    assert stats["action"]["mean"] == pytest.approx(every["action"].astype(np.float64).mean(axis=0).tolist(), rel=1e-12)
    assert stats["observation.state"]["max"] == every["observation.state"].max(axis=0).astype(np.float64).tolist()
    assert stats["action"]["count"] == [len(frames)]


def test_a_run_exports_every_iteration_with_scores_ranks_and_pairs(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = export_lerobot(run, out)
    info, frames, episodes, _, _ = load(out, tmp_path / "cache")
    pairs = pq.read_table(out / "meta" / "pairs.parquet").to_pydict()
    assert summary.source_kind == "run" and summary.episodes == 16 and summary.pairs == len(pairs["chosen_episode"]) > 0
    assert "score.r_gcpg" in info["features"] and "grape.logprob" in info["features"]
    e_index = 0
    for k in (1, 2):
        folder = run / "iterations" / f"iter_{k:04d}"
        scores = pq.read_table(folder / "scores.parquet").to_pydict()
        by_index = {
            json.loads((f / "meta.json").read_text())["extra"]["index"]: f for f in episode_folders(folder / "rollouts")
        }
        written_pairs = pq.read_table(folder / "pairs.parquet").to_pydict()
        first = e_index
        for i in range(len(scores["task"])):
            row = episodes[e_index]
            episode = read_episode(by_index[i])
            assert (row["grape/iteration"], row["grape/rollout_index"]) == (k, i)
            for name in ("r_ext", "r_self", "r_gcpg", "outcome", "rank", "success", "logp_sum", "kept"):
                assert row[f"scores/{name}"] == scores[name][i], name
            rows = frames[row["dataset_from_index"] : row["dataset_to_index"]]
            assert np.array_equal(rows["action"], episode.actions)
            assert np.array_equal(rows["observation.state"], episode.states)
            assert np.array_equal(_own_keypoints(rows, row, info), episode.keypoints)
            assert np.array_equal(rows["grape.logprob"], episode.logprobs)
            assert np.array_equal(rows["grape.action_tokens"], episode.action_tokens)
            assert (rows["score.r_gcpg"] == scores["r_gcpg"][i]).all() and (
                rows["score.rank"] == scores["rank"][i]
            ).all()
            e_index += 1
        exported = [
            (c - first, r - first)
            for c, r, it in zip(pairs["chosen_episode"], pairs["rejected_episode"], pairs["iteration"])
            if it == k
        ]
        assert exported == list(zip(written_pairs["chosen"], written_pairs["rejected"]))
        for chosen, rejected in exported:
            assert rejected + first in episodes[chosen + first]["pairs/preferred_over"]
            assert chosen + first in episodes[rejected + first]["pairs/rejected_for"]


def _own_keypoints(rows: dict, row: dict, info: dict) -> np.ndarray:
    names = info["features"]["observation.keypoints"]["names"]
    own = [names.index(f"{name}.x") // 3 for name in row["grape/keypoint_names"]]
    return rows["observation.keypoints"].reshape(len(rows["action"]), -1, 3)[:, own]


def test_one_iteration_and_a_task_filter(run: Path, tmp_path: Path) -> None:
    summary = export_lerobot(run / "iterations" / "iter_0001", tmp_path / "ds", tasks=["stack"])
    _, frames, episodes, _, _ = load(tmp_path / "ds", tmp_path / "cache")
    assert summary.source_kind == "iteration" and summary.episodes == 4
    assert set(episodes["grape/task"]) == {"stack"} and frames[:]["observation.keypoints"].shape[1] == 3 * 6


def test_cli_exit_codes_and_json(demos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert sim_cli.main(["export", str(demos), "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["episodes"] == 4 and report["source_kind"] == "store"
    assert sim_cli.main(["export", str(demos), "--out", str(out)]) == 1  # not empty, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert sim_cli.main(["export", str(demos), "--out", str(out), "--overwrite", "--tasks", "stack"]) == 0
    assert json.loads((out / "meta" / "info.json").read_text())["total_episodes"] == 2
    assert sim_cli.main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "no such folder" in capsys.readouterr().err
    assert (
        sim_cli.main(["export", str(demos), "--out", str(tmp_path / "y"), "--tasks", "stak"]) == 2
    )  # an unknown task name is a usage error
    assert not (tmp_path / "y").exists()
    with pytest.raises(ExportError, match="file size"):
        export_lerobot(demos, tmp_path / "z", data_file_mb=0)
