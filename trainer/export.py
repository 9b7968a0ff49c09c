"""Export stored episodes as a LeRobotDataset (format v3.0): what LeRobot and HF `datasets` read.

Sources (`collect`): a trajectory-store folder (demonstrations from `grape-sim demo`, or any
folder of episodes), one GRAPE iteration (`runs/<run>/iterations/iter_k`: its rollouts plus
scores.parquet and pairs.parquet), or a whole run (`runs/<run>`: every iteration in order).

Layout written (docs/export.md has every column):

    meta/info.json                                 codebase_version "v3.0", fps, features, path templates
    meta/stats.json                                per feature: min, max, mean, std, count, q01 … q99
    meta/tasks.parquet                             instruction text (index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet       one row per episode: length, offsets, data file,
                                                   per-episode stats, GRAPE's task/split/seed/metrics,
                                                   scores/* and the episode's pairs
    meta/pairs.parquet                             (runs) one row per preference pair, by episode_index
    data/chunk-{c:03d}/file-{f:03d}.parquet        one row per step, many episodes per file (one
                                                   row group each), a new file past the size limit,
                                                   a new chunk folder every `chunks_size` files

Episodes of different keypoint or signal schemas share one feature: the union of the names in
first-seen order, NaN where an episode's task lacks the point (its own names are in the
episode's `grape/keypoint_names`). The state width must agree across episodes.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grape_dsl.util.atomic import atomic_directory
from trainer.sim.episode import Episode

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/" + CHUNK_FILE
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk folder, as LeRobot writes
DEFAULT_DATA_FILE_MB = 100.0  # data file size limit, as LeRobot writes
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
# Per-rollout columns of scores.parquet repeated on every frame, so a frame-level loader sees them.
FRAME_SCORES = {
    "r_ext": "float64",
    "r_self": "float64",
    "r_gcpg": "float64",
    "outcome": "float64",
    "rank": "int64",
    "success": "bool",
}
# Columns that name the episode rather than score it; the episode row has them already.
SCORE_IDENTITY = {"task", "split", "seed", "instruction", "length"}


class ExportError(ValueError):
    """A source that cannot be exported (not a store, run or iteration; mismatched files)."""


@dataclass
class ExportInput:
    """Episodes in export order, plus per-episode extra columns and pairs by episode position."""

    episodes: list[Episode]
    folders: list[str]
    episode_columns: dict[str, list] = field(default_factory=dict)
    frame_scores: dict[str, np.ndarray] = field(default_factory=dict)
    pairs: dict[str, list] | None = None


@dataclass
class ExportSummary:
    out: Path
    episodes: int
    frames: int
    tasks: int
    data_files: int
    pairs: int
    source_kind: str


# ---------------------------------------------------------------------- reading sources
def _episode_extra(folder: Path) -> dict[str, Any]:
    from trainer.store import META_FILE

    try:
        return json.loads((folder / META_FILE).read_text()).get("extra") or {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{folder}: unreadable {META_FILE} ({exc})") from None


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        return pq.read_table(path).to_pydict()
    except (OSError, pa.ArrowException) as exc:
        raise ExportError(f"{path}: not a readable parquet file ({exc})") from None


def source_kind(source: Path) -> str:
    """'run', 'iteration' or 'store', judged by the folder's contents."""
    if (source / "iterations").is_dir():
        return "run"
    if (source / "rollouts").is_dir() and (source / "scores.parquet").is_file():
        return "iteration"
    return "store"


def _load_store(root: Path, tasks: Sequence[str] | None) -> ExportInput:
    from trainer.store import episode_folders, read_episode

    folders = [f for f in episode_folders(root) if tasks is None or any(f.name.startswith(f"{t}-") for t in tasks)]
    return ExportInput(episodes=[read_episode(f) for f in folders], folders=[f.name for f in folders])


def _load_iteration(folder: Path, iteration: int, tasks: Sequence[str] | None) -> ExportInput:
    """One iteration's rollouts in scores.parquet's row order, with their scores and pairs."""
    from trainer.store import episode_folders, read_episode

    scores = _read_parquet(folder / "scores.parquet")
    rows = len(scores.get("task", []))
    by_index: dict[int, Path] = {}
    for episode_folder in episode_folders(folder / "rollouts"):
        index = _episode_extra(episode_folder).get("index")
        if not isinstance(index, int) or not 0 <= index < rows or index in by_index:
            raise ExportError(
                f"{episode_folder}: its meta.json extra.index {index!r} names no distinct row "
                f"of {folder / 'scores.parquet'} ({rows} rows)"
            )
        by_index[index] = episode_folder
    if len(by_index) != rows:
        raise ExportError(f"{folder}: {len(by_index)} stored rollouts but scores.parquet has {rows} rows")
    keep = [i for i in range(rows) if tasks is None or scores["task"][i] in tasks]
    position = {row: p for p, row in enumerate(keep)}
    episodes = [read_episode(by_index[i]) for i in keep]
    columns: dict[str, list] = {"grape/iteration": [iteration] * len(keep), "grape/rollout_index": keep}
    for name, values in scores.items():
        if name not in SCORE_IDENTITY:
            columns[f"scores/{name}"] = [values[i] for i in keep]
    frame_scores = {
        name: np.asarray([scores[name][i] for i in keep], dtype=dtype)
        for name, dtype in FRAME_SCORES.items()
        if name in scores
    }
    pairs = None
    if (folder / "pairs.parquet").is_file():
        raw = _read_parquet(folder / "pairs.parquet")
        pairs = {"iteration": [], "chosen_episode": [], "rejected_episode": []}
        extra_names = [n for n in raw if n not in ("chosen", "rejected")]
        pairs.update({n: [] for n in extra_names})
        for j, (chosen, rejected) in enumerate(zip(raw.get("chosen", []), raw.get("rejected", []))):
            if chosen not in position or rejected not in position:
                continue  # a pair of a task left out by --tasks
            pairs["iteration"].append(iteration)
            pairs["chosen_episode"].append(position[chosen])
            pairs["rejected_episode"].append(position[rejected])
            for n in extra_names:
                pairs[n].append(raw[n][j])
    return ExportInput(
        episodes=episodes,
        folders=[by_index[i].name for i in keep],
        episode_columns=columns,
        frame_scores=frame_scores,
        pairs=pairs,
    )


def _concat(parts: list[ExportInput]) -> ExportInput:
    """Iterations one after another; pair positions shifted to the whole list."""
    joined = ExportInput(episodes=[], folders=[], pairs={} if any(p.pairs is not None for p in parts) else None)
    for part in parts:
        offset = len(joined.episodes)
        joined.episodes += part.episodes
        joined.folders += part.folders
        for name, values in part.episode_columns.items():
            # A stage or constraint column only some iterations' tasks have: missing elsewhere.
            joined.episode_columns.setdefault(name, [None] * offset).extend(values)
        for name in joined.episode_columns:
            column = joined.episode_columns[name]
            column.extend([None] * (len(joined.episodes) - len(column)))
        for name, values in part.frame_scores.items():
            joined.frame_scores[name] = np.concatenate([joined.frame_scores.get(name, values[:0]), values])
        if part.pairs is not None and joined.pairs is not None:
            for name, values in part.pairs.items():
                shifted = [v + offset for v in values] if name in ("chosen_episode", "rejected_episode") else values
                joined.pairs.setdefault(name, []).extend(shifted)
    return joined


def collect(source: str | os.PathLike, tasks: Sequence[str] | None = None) -> tuple[ExportInput, str]:
    """Everything to export from `source` (a store, an iteration or a run folder) and its kind."""
    from trainer.store import StoreError

    root = Path(source)
    if not root.is_dir():
        raise ExportError(f"{root}: no such folder (give a trajectory store, a run, or a run's iterations/iter_k)")
    kind = source_kind(root)
    try:
        if kind == "store":
            data = _load_store(root, tasks)
        elif kind == "iteration":
            data = _load_iteration(root, _iteration_number(root), tasks)
        else:
            folders = sorted(f for f in (root / "iterations").iterdir() if f.is_dir() and f.name.startswith("iter_"))
            if not folders:
                raise ExportError(f"{root}: a run folder without completed iterations (iterations/ is empty)")
            data = _concat([_load_iteration(f, _iteration_number(f), tasks) for f in folders])
    except StoreError as exc:
        raise ExportError(str(exc)) from None
    if not data.episodes:
        which = f" of task(s) {', '.join(tasks)}" if tasks else ""
        raise ExportError(f"{root}: no episodes{which} to export")
    return data, kind


def _iteration_number(folder: Path) -> int:
    try:
        return int(folder.name.removeprefix("iter_"))
    except ValueError:
        raise ExportError(f"{folder}: an iteration folder is named iter_<k>, got '{folder.name}'") from None


# ---------------------------------------------------------------------- building the tables
def _union(name_lists: list[list[str]]) -> list[str]:
    names: list[str] = []
    for names_of_episode in name_lists:
        names += [n for n in names_of_episode if n not in names]
    return names


def _spread(values: np.ndarray, own: Sequence[str], union: list[str], per_name: int) -> np.ndarray:
    """[T, len(own), ...] values laid out in `union` order, NaN where the episode lacks a name."""
    t = values.shape[0]
    out = np.full((t, len(union) * per_name), np.nan, dtype=np.float32)
    flat = values.reshape(t, len(own), per_name)
    for j, name in enumerate(own):
        k = union.index(name)
        out[:, k * per_name : (k + 1) * per_name] = flat[:, j]
    return out


def _stats(values: np.ndarray) -> dict[str, list]:
    """LeRobot's per-feature statistics over axis 0 (NaN, i.e. absent keypoints, ignored)."""
    data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column has NaN statistics
        stats = {
            "min": np.nanmin(data, axis=0),
            "max": np.nanmax(data, axis=0),
            "mean": np.nanmean(data, axis=0),
            "std": np.nanstd(data, axis=0),
            "count": np.array([len(data)]),
        }
        for q in QUANTILES:
            stats[f"q{round(q * 100):02d}"] = np.nanquantile(data, q, axis=0)
    return {name: [float(v) if name != "count" else int(v) for v in array] for name, array in stats.items()}


def _json_safe(stats: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    """stats.json is strict JSON: a statistic with no finite value becomes null."""
    return {
        feature: {
            name: [v if not (isinstance(v, float) and not math.isfinite(v)) else None for v in values]
            for name, values in by_stat.items()
        }
        for feature, by_stat in stats.items()
    }


def _feature(dtype: str, shape: int, names: list[str] | None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [shape], "names": names}


def _arrow(values: np.ndarray, width: int | None) -> pa.Array:
    """A scalar column (width None: LeRobot's shape [1]) or a fixed-size list column."""
    if width is None:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), width)


def _tasks_table(instructions: list[str]) -> pa.Table:
    """meta/tasks.parquet as LeRobot reads it with pandas: the text is the index (named "task"),
    `task_index` the one column; the pandas metadata (Arrow's documented format) says so."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "grape-dsl", "version": "0.1.0"},
    }
    table = pa.table(
        {
            "task_index": pa.array(range(len(instructions)), type=pa.int64()),
            "task": pa.array(instructions, type=pa.string()),
        }
    )
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tasks: Sequence[str] | None = None,
    fps: int | None = None,
    data_file_mb: float = DEFAULT_DATA_FILE_MB,
    chunks_size: int = DEFAULT_CHUNKS_SIZE,
    overwrite: bool = False,
) -> ExportSummary:
    """Write `source`'s episodes to `out` as a LeRobotDataset v3.0 (atomically: all of it or nothing)."""
    from trainer.sim.env import CONTROL_HZ, STATE_NAMES

    fps = CONTROL_HZ if fps is None else fps
    for name, value, low in (("fps", fps, 1), ("chunks size", chunks_size, 1)):
        if value < low:
            raise ExportError(f"the {name} must be >= {low}, got {value}")
    if not data_file_mb > 0:
        raise ExportError(f"the data file size limit must be > 0 MB, got {data_file_mb}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out}: already exists and is not empty (choose another --out, or --overwrite)")
    data, kind = collect(source, tasks)
    episodes = data.episodes
    state_dims = {e.states.shape[1] for e in episodes}
    if len(state_dims) != 1:
        raise ExportError(
            f"episodes of different state widths {sorted(state_dims)} cannot share one dataset; "
            "export one task at a time (--tasks)"
        )
    state_dim = state_dims.pop()
    keypoint_names = _union([list(e.keypoint_names) for e in episodes])
    signal_names = _union([list(e.signal_names) for e in episodes])
    with_logprobs = all(e.logprobs is not None and e.action_tokens is not None for e in episodes)

    features: dict[str, dict[str, Any]] = {
        "action": _feature("float32", 7, list(ACTION_NAMES)),
        "observation.state": _feature(
            "float32", state_dim, list(STATE_NAMES) if state_dim == len(STATE_NAMES) else None
        ),
        "observation.keypoints": _feature(
            "float32", 3 * len(keypoint_names), [f"{n}.{axis}" for n in keypoint_names for axis in "xyz"]
        ),
        "observation.signals": _feature("float32", len(signal_names), signal_names),
        "next.done": _feature("bool", 1, None),
    }
    if with_logprobs:
        features["grape.logprob"] = _feature("float32", 1, None)
        features["grape.action_tokens"] = _feature("int64", 7, list(ACTION_NAMES))
    for name in data.frame_scores:
        features[f"score.{name}"] = _feature(FRAME_SCORES[name], 1, None)
    for name, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        features[name] = _feature(dtype, 1, None)

    instructions = list(dict.fromkeys(e.instruction for e in episodes))
    task_index = {text: i for i, text in enumerate(instructions)}
    limit_bytes = data_file_mb * 1024 * 1024

    frames_of: dict[str, list[np.ndarray]] = {name: [] for name in features}
    episode_rows: list[dict[str, Any]] = []
    start = 0
    chunk, file, file_bytes = 0, 0, 0.0
    writer: pq.ParquetWriter | None = None
    with atomic_directory(out) as staging:
        try:
            for e_index, episode in enumerate(episodes):
                t = episode.length
                columns = {
                    "action": episode.actions.astype(np.float32),
                    "observation.state": episode.states.astype(np.float32),
                    "observation.keypoints": _spread(episode.keypoints, episode.keypoint_names, keypoint_names, 3),
                    "observation.signals": _spread(episode.signals, episode.signal_names, signal_names, 1),
                    "next.done": np.arange(t) == t - 1,
                    "timestamp": (np.arange(t) / fps).astype(np.float32),
                    "frame_index": np.arange(t, dtype=np.int64),
                    "episode_index": np.full(t, e_index, dtype=np.int64),
                    "index": np.arange(start, start + t, dtype=np.int64),
                    "task_index": np.full(t, task_index[episode.instruction], dtype=np.int64),
                }
                if with_logprobs:
                    columns["grape.logprob"] = np.asarray(episode.logprobs, dtype=np.float32)
                    columns["grape.action_tokens"] = np.asarray(episode.action_tokens, dtype=np.int64)
                for name, values in data.frame_scores.items():
                    columns[f"score.{name}"] = np.full(t, values[e_index], dtype=FRAME_SCORES[name])
                table = pa.table(
                    {
                        name: _arrow(columns[name], None if f["shape"] == [1] else f["shape"][0])
                        for name, f in features.items()
                    }
                )
                if writer is not None and file_bytes + table.nbytes > limit_bytes:
                    writer.close()
                    writer, file_bytes = None, 0.0
                    file += 1
                    if file == chunks_size:
                        chunk, file = chunk + 1, 0
                if writer is None:
                    path = staging / DATA_PATH.format(chunk_index=chunk, file_index=file)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)  # one row group per episode
                file_bytes += table.nbytes
                row = {
                    "episode_index": e_index,
                    "tasks": [episode.instruction],
                    "length": t,
                    "data/chunk_index": chunk,
                    "data/file_index": file,
                    "dataset_from_index": start,
                    "dataset_to_index": start + t,
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "grape/task": episode.task,
                    "grape/split": episode.split,
                    "grape/seed": int(episode.seed),
                    "grape/success": bool(episode.success),
                    "grape/grasp": bool(episode.grasp),
                    "grape/collision": bool(episode.collision),
                    "grape/source": data.folders[e_index],
                    "grape/keypoint_names": list(episode.keypoint_names),
                    "grape/signal_names": list(episode.signal_names),
                }
                for name, values in data.episode_columns.items():
                    row[name] = values[e_index]
                for name, values in columns.items():
                    frames_of[name].append(values)
                    for stat, numbers in _stats(values).items():
                        row[f"stats/{name}/{stat}"] = numbers
                episode_rows.append(row)
                start += t
        finally:
            if writer is not None:
                writer.close()

        meta = staging / "meta"
        meta.mkdir(parents=True, exist_ok=True)
        pairs_count = 0
        if data.pairs is not None:
            pairs_count = len(data.pairs["chosen_episode"])
            preferred_over: list[list[int]] = [[] for _ in episodes]
            rejected_for: list[list[int]] = [[] for _ in episodes]
            for chosen, rejected in zip(data.pairs["chosen_episode"], data.pairs["rejected_episode"]):
                preferred_over[chosen].append(rejected)
                rejected_for[rejected].append(chosen)
            for e_index, row in enumerate(episode_rows):
                row["pairs/preferred_over"] = preferred_over[e_index]
                row["pairs/rejected_for"] = rejected_for[e_index]
            pq.write_table(pa.table(data.pairs), meta / "pairs.parquet")
        episodes_path = staging / EPISODES_PATH.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
        pq.write_table(_tasks_table(instructions), meta / "tasks.parquet")
        stats = {name: _stats(np.concatenate(chunks)) for name, chunks in frames_of.items()}
        (meta / "stats.json").write_text(json.dumps(_json_safe(stats), indent=2))
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": "franka_panda (pybullet, GRAPE-DSL)" if state_dim == len(STATE_NAMES) else None,
            "total_episodes": len(episodes),
            "total_frames": start,
            "total_tasks": len(instructions),
            "chunks_size": chunks_size,
            "data_files_size_in_mb": data_file_mb,
            "video_files_size_in_mb": 200,
            "fps": fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": features,
        }
        (meta / "info.json").write_text(json.dumps(info, indent=2))
    return ExportSummary(
        out=out,
        episodes=len(episodes),
        frames=start,
        tasks=len(instructions),
        data_files=chunk * chunks_size + file + 1,
        pairs=pairs_count,
        source_kind=kind,
    )
