"""`grape-sim` as a user runs it: subprocess smoke tests, exit codes, errors on stderr."""

import json
import subprocess
import sys

import pytest
from interrupting import interrupt_when

from trainer.store import read_episodes


def run(*args):
    return subprocess.run([sys.executable, "-m", "trainer.sim.cli", *args], capture_output=True, text=True, timeout=240)


def test_tasks_json_lists_schema():
    out = run("tasks", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["tasks"]["pick_place_obstacle"]["keypoint_names"][-2:] == ["obstacle.center", "obstacle.top"]
    assert "semantic" in data["splits"] and len(data["state_names"]) > 10


def test_demo_records_a_readable_store(tmp_path):
    out = run("demo", "--tasks", "stack,push_to_target", "-n", "2", "--out", str(tmp_path / "d"), "--json", "-q")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["tasks"]["stack"]["written"] == 2
    episodes = read_episodes(tmp_path / "d")
    assert sorted(e.task for e in episodes) == ["push_to_target"] * 2 + ["stack"] * 2
    assert sorted({e.seed for e in episodes}) == [0, 1]  # training seeds, never evaluation seeds
    assert all(e.success for e in episodes)

    # the store keeps the config it was recorded with; --config replays it, flags override it
    saved = json.loads((tmp_path / "d" / "demo_config.json").read_text())
    assert saved["tasks"] == ["stack,push_to_target"] and saved["num"] == 2
    out = run("demo", "--config", str(tmp_path / "d"), "--out", str(tmp_path / "e"), "--tasks", "stack", "--json", "-q")
    assert out.returncode == 0, out.stderr
    replayed = read_episodes(tmp_path / "e")
    assert [e.seed for e in replayed] == [0, 1] and {e.task for e in replayed} == {"stack"}


def test_expert_eval_json():
    out = run("expert-eval", "--tasks", "push_to_target", "-n", "2", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)["tasks"]["push_to_target"]
    assert row["episodes"] == 2 and 0.0 <= row["success"] <= 1.0


def test_render_gif_and_replay_stored_episode(tmp_path):
    gif = tmp_path / "a.gif"
    out = run("render", "--task", "push_to_target", "--seed", "1", "--size", "48", "--out", str(gif))
    assert out.returncode == 0, out.stderr
    assert gif.stat().st_size > 1000 and "success=True" in out.stdout
    store = tmp_path / "s"
    assert run("demo", "--tasks", "stack", "-n", "1", "--out", str(store), "-q").returncode == 0
    (folder,) = [p for p in store.iterdir() if p.is_dir()]
    out = run("render", "--episode", str(folder), "--size", "48", "--out", str(tmp_path / "b.mp4"))
    assert out.returncode == 0, out.stderr
    assert "success=True" in out.stdout  # replaying the stored actions reproduces the episode
    assert (tmp_path / "b.mp4").read_bytes()[4:8] == b"ftyp"  # an MP4 container


def test_render_reports_the_frames_the_file_holds(tmp_path):
    import imageio.v2 as imageio
    from PIL import Image

    for name in ("c.gif", "c.mp4"):
        out = run(
            "render",
            "--task",
            "stack",
            "--seed",
            "1",
            "--size",
            "32",
            "--max-steps",
            "6",
            "--out",
            str(tmp_path / name),
        )
        assert out.returncode == 0, out.stderr
        printed = int(out.stdout.split(": ", 1)[1].split(" frames")[0])
        if name.endswith(".gif"):
            with Image.open(tmp_path / name) as image:
                assert printed == image.n_frames
        else:
            with imageio.get_reader(tmp_path / name, format="FFMPEG") as reader:
                assert printed == reader.count_frames()


@pytest.mark.parametrize(
    "args, code, words",
    [
        (("demo", "--tasks", "stak", "--out", "x"), 2, "did you mean 'stack'"),
        (("expert-eval", "--split", "visaul", "-n", "1"), 2, "unknown split 'visaul'"),
        (("render", "--task", "stak", "--out", "x.gif"), 2, "did you mean 'stack'"),
        (("demo", "-n", "1"), 2, "required: --out"),
        (("demo", "--out", "x", "--config", "/nonexistent/c.json"), 2, "no such file"),
        (("render", "--task", "stack", "--out", "x.png"), 1, "must end in .gif or .mp4"),
        (("render", "--episode", "/nonexistent/ep", "--out", "x.gif"), 1, "not a readable episode"),
        (("demo", "--out", "x", "-n", "0"), 2, "must be >= 1"),
        (("demo", "--out", "x", "-n", "2", "--seed-start", "999999"), 1, "training seeds must lie in [0, 1000000)"),
        (("frobnicate",), 2, "invalid choice"),
    ],
)
def test_bad_input_exit_codes(args, code, words):
    out = run(*args)
    assert out.returncode == code
    assert words in out.stderr and "Traceback" not in out.stderr


def test_ctrl_c_exits_130():
    code, err = interrupt_when(["-m", "trainer.sim.cli", "expert-eval", "--tasks", "all", "-n", "5000"], "expert-eval")
    assert code == 130 and "interrupted" in err and "Traceback" not in err
