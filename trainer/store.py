"""Trajectory store: episodes as parquet (one row per step) plus a JSON metadata file.

Layout (in the spirit of LeRobot's dataset layout), one folder per episode:

    <root>/<task>-<split>-<seed>-<id>/steps.parquet   columns: step, action[7], state[D],
                                                      keypoints[K*3], signals[S], and for policy
                                                      rollouts logprob, action_tokens[7]
    <root>/<task>-<split>-<seed>-<id>/meta.json       task, instruction, seed, split, names,
                                                      success, grasp, collision, length, extra

Writes are atomic: an episode is written into a hidden temp folder (`.tmp-*`) in the same
directory and renamed into place, so a killed writer leaves only complete episodes; readers
skip temp folders.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from grape_dsl.batch import TrajectoryBatch
from trainer.sim.episode import Episode

FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"
STEPS_FILE = "steps.parquet"
META_FILE = "meta.json"


class StoreError(ValueError):
    """A store folder that is missing, malformed, or holds episodes that cannot be batched together."""


def _list_column(array: np.ndarray, dtype=np.float32) -> pa.Array:
    width = int(np.prod(array.shape[1:]))
    flat = np.ascontiguousarray(array, dtype=dtype).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), width)


def write_episode(root: str | os.PathLike, episode: Episode, extra: dict | None = None) -> Path:
    """Write one episode under `root` atomically; returns its folder."""
    episode.validate()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{episode.task}-{episode.split}-{episode.seed:010d}-{uuid.uuid4().hex[:10]}"
    tmp = root / f"{TEMP_PREFIX}{name}"
    tmp.mkdir()
    try:
        columns = {
            "step": pa.array(np.arange(episode.length, dtype=np.int32)),
            "action": _list_column(episode.actions),
            "state": _list_column(episode.states),
            "keypoints": _list_column(episode.keypoints),
            "signals": _list_column(episode.signals),
        }
        if episode.logprobs is not None:
            columns["logprob"] = pa.array(np.asarray(episode.logprobs, dtype=np.float32))
        if episode.action_tokens is not None:
            columns["action_tokens"] = _list_column(np.asarray(episode.action_tokens), np.int32)
        pq.write_table(pa.table(columns), tmp / STEPS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "task": episode.task,
            "instruction": episode.instruction,
            "seed": int(episode.seed),
            "split": episode.split,
            "length": episode.length,
            "keypoint_names": list(episode.keypoint_names),
            "signal_names": list(episode.signal_names),
            "state_dim": int(episode.states.shape[1]),
            "success": bool(episode.success),
            "grasp": bool(episode.grasp),
            "collision": bool(episode.collision),
            "extra": extra or {},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        final = root / name
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _column(table: pa.Table, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        column = column.flatten()
    values = column.to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(shape)


def read_episode(folder: str | os.PathLike) -> Episode:
    """Read one episode folder written by `write_episode`."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
        table = pq.read_table(folder / STEPS_FILE)
    except (OSError, json.JSONDecodeError, pa.ArrowException) as exc:
        raise StoreError(f"{folder}: not a readable episode ({exc})") from None
    t, k, s, d = meta["length"], len(meta["keypoint_names"]), len(meta["signal_names"]), meta["state_dim"]
    if table.num_rows != t:
        raise StoreError(f"{folder}: {STEPS_FILE} has {table.num_rows} rows but meta.json says length {t}")
    names = table.column_names
    return Episode(
        task=meta["task"],
        instruction=meta["instruction"],
        seed=meta["seed"],
        split=meta["split"],
        actions=_column(table, "action", (t, 7)),
        states=_column(table, "state", (t, d)),
        keypoints=_column(table, "keypoints", (t, k, 3)),
        keypoint_names=list(meta["keypoint_names"]),
        signals=_column(table, "signals", (t, s)),
        signal_names=list(meta["signal_names"]),
        success=meta["success"],
        grasp=meta["grasp"],
        collision=meta["collision"],
        logprobs=_column(table, "logprob", (t,)) if "logprob" in names else None,
        action_tokens=_column(table, "action_tokens", (t, 7), np.int64) if "action_tokens" in names else None,
    )


def episode_folders(root: str | os.PathLike) -> list[Path]:
    """Complete episode folders under `root`, sorted by name (temp folders of unfinished writes skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise StoreError(f"{root}: no such store directory")
    return sorted(
        f for f in root.iterdir() if f.is_dir() and not f.name.startswith(TEMP_PREFIX) and (f / META_FILE).is_file()
    )


def read_episodes(root: str | os.PathLike, task: str | None = None) -> list[Episode]:
    """Every complete episode under `root` (optionally only those of `task`), in name order."""
    episodes = []
    for folder in episode_folders(root):
        if task is not None and not folder.name.startswith(f"{task}-"):
            continue
        episodes.append(read_episode(folder))
    return episodes


def episodes_to_batch(episodes: list[Episode]) -> TrajectoryBatch:
    """Stack episodes of one schema into a TrajectoryBatch padded to the longest (edge-padded)."""
    if not episodes:
        raise StoreError("episodes_to_batch needs at least one episode")
    first = episodes[0]
    for e in episodes[1:]:
        if e.keypoint_names != first.keypoint_names or e.signal_names != first.signal_names:
            raise StoreError(
                f"episodes of different schemas cannot share a batch: {first.task} has keypoints "
                f"{first.keypoint_names}, {e.task} has {e.keypoint_names}; batch one task at a time"
            )
    n, t = len(episodes), max(max(e.length for e in episodes), 1)
    k, s = len(first.keypoint_names), len(first.signal_names)
    keypoints = np.zeros((n, t, k, 3), dtype=np.float32)
    signals = np.zeros((n, t, s), dtype=np.float32)
    for i, e in enumerate(episodes):
        if e.length == 0:
            continue
        keypoints[i, : e.length] = e.keypoints
        keypoints[i, e.length :] = e.keypoints[-1]
        signals[i, : e.length] = e.signals
        signals[i, e.length :] = e.signals[-1]
    return TrajectoryBatch(
        keypoints=keypoints,
        keypoint_names=list(first.keypoint_names),
        signals=signals,
        signal_names=list(first.signal_names),
        lengths=np.array([e.length for e in episodes], dtype=np.int64),
        success=np.array([e.success for e in episodes], dtype=bool),
    )
