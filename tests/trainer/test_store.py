"""Trajectory store: round trip, atomic writes, batching into TrajectoryBatch."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from trainer.sim.episode import Episode
from trainer.store import StoreError, episode_folders, episodes_to_batch, read_episodes, write_episode


def make_episode(task="pick_place", length=5, seed=3, k=6, s=6, logprobs=False, offset=0.0):
    rng = np.random.default_rng(seed)
    return Episode(
        task=task,
        instruction="put the red cube in the white box",
        seed=seed,
        split="in_domain",
        actions=rng.normal(size=(length, 7)).astype(np.float32),
        states=rng.normal(size=(length, 28)).astype(np.float32),
        keypoints=(rng.normal(size=(length, k, 3)) + offset).astype(np.float32),
        keypoint_names=[f"kp{i}" for i in range(k)],
        signals=rng.normal(size=(length, s)).astype(np.float32),
        signal_names=[f"sig{i}" for i in range(s)],
        success=True,
        grasp=True,
        collision=False,
        logprobs=rng.normal(size=length).astype(np.float32) if logprobs else None,
        action_tokens=rng.integers(0, 256, size=(length, 7)) if logprobs else None,
    )


def test_round_trip_keeps_every_field(tmp_path):
    ep = make_episode(logprobs=True)
    folder = write_episode(tmp_path, ep, extra={"source": "test"})
    meta = json.loads((folder / "meta.json").read_text())
    assert (
        meta["task"] == "pick_place"
        and meta["keypoint_names"] == ep.keypoint_names
        and meta["extra"] == {"source": "test"}
    )
    (back,) = read_episodes(tmp_path)
    for name in ("actions", "states", "keypoints", "signals", "logprobs", "action_tokens"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ep, name), err_msg=name)
    assert (back.task, back.seed, back.split, back.instruction) == (ep.task, ep.seed, ep.split, ep.instruction)
    assert (back.success, back.grasp, back.collision, back.length) == (True, True, False, 5)


def test_reader_ignores_temp_folders_and_filters_by_task(tmp_path):
    write_episode(tmp_path, make_episode())
    write_episode(tmp_path, make_episode(task="stack"))
    (tmp_path / ".tmp-pick_place-in_domain-0000000009-dead").mkdir()
    assert len(episode_folders(tmp_path)) == 2
    assert [e.task for e in read_episodes(tmp_path, task="stack")] == ["stack"]


def test_killed_writer_leaves_only_complete_episodes(tmp_path):
    script = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        "from tests.trainer.test_store import make_episode\n"
        "from trainer.store import write_episode\n"
        "i = 0\n"
        "while True:\n"
        f"    write_episode({str(tmp_path)!r}, make_episode(length=400, seed=i)); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while len(list(tmp_path.iterdir())) < 3 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    episodes = read_episodes(tmp_path)
    assert len(episodes) >= 2
    assert all(e.length == 400 for e in episodes)


def test_empty_episode_round_trips_and_batches(tmp_path):
    write_episode(tmp_path, make_episode(length=0, logprobs=True))
    (back,) = read_episodes(tmp_path)
    assert back.length == 0 and back.keypoints.shape == (0, 6, 3) and back.action_tokens.shape == (0, 7)
    batch = episodes_to_batch([back, make_episode(length=2)])
    assert batch.lengths.tolist() == [0, 2] and batch.keypoints.shape == (2, 2, 6, 3)


def test_batch_pads_to_the_longest_and_keeps_lengths():
    a, b = make_episode(length=3, seed=1), make_episode(length=7, seed=2)
    batch = episodes_to_batch([a, b])
    assert batch.keypoints.shape == (2, 7, 6, 3) and batch.signals.shape == (2, 7, 6)
    assert batch.lengths.tolist() == [3, 7] and batch.success.tolist() == [True, True]
    np.testing.assert_array_equal(batch.keypoints[0, :3], a.keypoints)
    np.testing.assert_array_equal(batch.keypoints[1], b.keypoints)
    assert batch.keypoint_names == a.keypoint_names


def test_batch_rejects_mixed_schemas_and_empty_input():
    with pytest.raises(StoreError, match="different schemas"):
        episodes_to_batch([make_episode(), make_episode(k=8)])
    with pytest.raises(StoreError, match="at least one"):
        episodes_to_batch([])


def test_missing_store_and_bad_episode_shape(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        read_episodes(tmp_path / "nope")
    ep = make_episode()
    ep.signals = ep.signals[:2]
    with pytest.raises(ValueError, match="signals has shape"):
        write_episode(tmp_path, ep)
    assert list(tmp_path.iterdir()) == []


def test_real_expert_episode_round_trips(tmp_path):
    from trainer.sim.env import make_env
    from trainer.sim.expert import Expert, run_expert

    env = make_env("stack")
    try:
        ep = run_expert(env, Expert("stack"), seed=4)
    finally:
        env.close()
    write_episode(tmp_path, ep)
    (back,) = read_episodes(tmp_path)
    np.testing.assert_array_equal(back.keypoints, ep.keypoints)
    batch = episodes_to_batch([back])
    assert batch.keypoint_names[:2] == ["gripper.tip", "object.center"] and batch.lengths[0] == ep.length
