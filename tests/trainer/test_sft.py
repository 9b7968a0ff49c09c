"""SFT on real scripted-expert demonstrations, kept tiny (a few demos, a 1-layer model, a few steps)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainer.policy import load_policy
from trainer.policy.tokenizer import ActionTokenizer
from trainer.sft import (
    SFTConfig,
    SFTError,
    ensure_default_sft_policy,
    evaluate_sft,
    load_demonstrations,
    main,
    record_demonstrations,
    train_sft,
)

torch.set_num_threads(1)
TINY = dict(
    tasks=("push_to_target",),
    demos_per_task=2,
    steps=30,
    batch_size=32,
    lr=3e-3,
    warmup_steps=5,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
)
CLI_TINY = [
    "--tasks",
    "push_to_target",
    "--demos",
    "2",
    "--hidden-size",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--batch-size",
    "16",
    "--threads",
    "1",
]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("demos")
    record_demonstrations(SFTConfig(**TINY), store, progress=False)
    return store


def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "trainer.sft", *args], capture_output=True, text=True, env=env, timeout=240
    )


def test_recording_tops_up_without_duplicates(demo_store, tmp_path):
    demos = load_demonstrations(demo_store, ["push_to_target"], 2)
    assert demos.episodes == 2 and demos.states.shape[0] == demos.actions.shape[0] == len(demos.instructions)
    assert demos.actions.shape[1] == 7 and np.all(np.abs(demos.actions[:, :3]) <= 0.02 + 1e-6)
    assert load_demonstrations(demo_store, ["push_to_target"], 5).episodes_per_task == {"push_to_target": 2}
    import shutil

    store = tmp_path / "store"
    shutil.copytree(demo_store, store)
    record_demonstrations(SFTConfig(**TINY | {"demos_per_task": 3}), store, progress=False)
    from trainer.store import read_episodes

    seeds = [episode.seed for episode in read_episodes(store, "push_to_target")]
    assert len(seeds) == 3 and len(set(seeds)) == 3


def test_training_fits_the_demonstrations_and_saves_statistics(demo_store, tmp_path):
    config = SFTConfig(**TINY)
    policy_dir = train_sft(config, tmp_path / "run", demos_dir=demo_store, progress=False)
    policy = load_policy(policy_dir)
    demos = load_demonstrations(demo_store, config.tasks, config.demos_per_task)
    # Statistics were fitted once on these demonstrations and travel with the policy.
    fitted = ActionTokenizer.fit(demos.actions)
    assert np.allclose(policy.action_tokenizer.q01, fitted.q01) and np.allclose(policy.action_tokenizer.q99, fitted.q99)
    tokens = torch.as_tensor(policy.action_tokenizer.tokenize(demos.actions))
    with torch.no_grad():
        trained = policy.log_prob({"state": demos.states}, list(demos.instructions), tokens).mean()
    uniform = -7 * np.log(256)
    assert trained > uniform + 10, f"SFT did not fit: mean log-prob {trained:.1f} vs uniform {uniform:.1f}"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "run" / "tensorboard"))
    saved = json.loads((tmp_path / "run" / "sft_config.json").read_text())
    assert saved["cache_key"] == config.cache_key()


def test_evaluation_reports_per_task_success(demo_store, tmp_path):
    policy_dir = train_sft(SFTConfig(**TINY | {"steps": 5}), tmp_path / "run", demos_dir=demo_store, progress=False)
    result = evaluate_sft(
        load_policy(policy_dir), ["push_to_target"], episodes=2, greedy=False, max_steps=8, progress=False
    )
    task = result["tasks"]["push_to_target"]
    assert task["n"] == 2 and 0.0 <= task["success"] <= 1.0 and task["mean_length"] <= 8
    assert result["mode"] == "sampling T=1" and result["overall"]["n"] == 2


def test_cli_smoke_then_resume_and_mismatch(demo_store, tmp_path, capsys):
    out = tmp_path / "run"
    done = run_cli(
        "--out",
        str(out),
        "--demos-dir",
        str(demo_store),
        *CLI_TINY,
        "--steps",
        "4",
        "--checkpoint-every",
        "2",
        "-q",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["config"]["steps"] == 4 and load_policy(summary["policy"]) is not None

    common = ["--out", str(out), "--demos-dir", str(demo_store), *CLI_TINY, "-q"]
    assert main([*common, "--steps", "4"]) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert main([*common, "--steps", "6", "--resume"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 6
    assert main([*common, "--steps", "8", "--lr", "0.5", "--resume"]) == 1
    error = capsys.readouterr().err
    assert "differs in ['lr']" in error and "Traceback" not in error

    # --config replays the saved run config; flags given override it (here: a new folder and seed)
    saved = json.loads((out / "sft_run_config.json").read_text())
    assert saved["recipe"]["num_layers"] == 1 and saved["demos_dir"] == str(demo_store) and saved["resume"] is True
    replay = tmp_path / "replay"
    assert main(["--config", str(out), "--out", str(replay), "--no-resume", "--seed", "1", "-q"]) == 0
    again = json.loads((replay / "sft_run_config.json").read_text())
    assert again["recipe"] == saved["recipe"] | {"seed": 1, "steps": 6} and again["out"] == str(replay)


def test_cli_usage_and_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    helped = capsys.readouterr().out
    assert help_exit.value.code == 0 and "examples:" in helped and "--eval-episodes" in helped
    with pytest.raises(SystemExit) as usage_exit:
        main([])
    assert usage_exit.value.code == 2
    assert main(["--out", str(tmp_path / "x"), "--tasks", "juggle"]) == 2
    error = capsys.readouterr().err
    assert "unknown task(s) ['juggle']" in error and "push_to_target" in error
    assert main(["--out", str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--eval-split", "mars"]) == 2
    assert "unknown split 'mars'" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--demos-dir", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["--out", str(tmp_path / "x"), "--tasks", "stack", "pick_plac"]) == 2
    assert "unknown task(s) ['pick_plac']" in capsys.readouterr().err


def test_tasks_flag_takes_spaces_commas_or_all():
    from trainer.sim.tasks import TASKS, task_names

    assert task_names(["stack", "push_to_target"]) == task_names("stack,push_to_target") == ["stack", "push_to_target"]
    assert task_names(["stack,", "pick_place"]) == ["stack", "pick_place"]
    assert task_names(["all"]) == task_names("all") == list(TASKS)
    assert task_names([" "]) == []


def test_default_policy_is_trained_once_and_cached(demo_store, tmp_path):
    config = SFTConfig(**TINY | {"steps": 3})
    first = ensure_default_sft_policy(tmp_path / "cache", config=config, progress=False)
    assert first.name == "policy" and first.parent.name == f"sft-{config.cache_key()}"
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = ensure_default_sft_policy(tmp_path / "cache", config=config, progress=False)
    assert again == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert SFTConfig(**TINY | {"steps": 4}).cache_key() != config.cache_key()


def test_default_recipe_and_its_cache_key_never_change():
    """The default SFT policy is cached by this hash: a change would make every user retrain."""
    from trainer.policy.embedded import EmbeddedVLAConfig

    assert SFTConfig().cache_key() == "9e48cb9e3908"
    model = EmbeddedVLAConfig(state_dim=1)
    recipe = SFTConfig()
    sizes = ("hidden_size", "num_layers", "num_heads", "intermediate_size")
    assert [getattr(recipe, name) for name in sizes] == [getattr(model, name) for name in sizes] == [128, 2, 4, 256]


def test_config_validation_names_the_argument():
    with pytest.raises(SFTError, match="--lr must be > 0, got -1.0"):
        SFTConfig(lr=-1.0).validate()
    with pytest.raises(SFTError, match="--seed must be >= 0, got -3"):
        SFTConfig(seed=-3).validate()
    with pytest.raises(SFTError, match="--hidden-size 30 must be divisible by --num-heads 4"):
        SFTConfig(hidden_size=30).validate()


def test_pixel_policy_trains_on_replayed_frames(demo_store, tmp_path):
    config = SFTConfig(**TINY | {"demos_per_task": 1, "steps": 3, "image_size": 32})
    policy_dir = train_sft(config, tmp_path / "run", demos_dir=demo_store, progress=False)
    policy = load_policy(policy_dir)
    assert policy.image_size == 32
    frames = np.load(tmp_path / "run" / "demo_images_32.npy")
    demos = load_demonstrations(demo_store, config.tasks, 1)
    assert frames.shape == (len(demos.states), 32, 32, 3) and frames.dtype == np.uint8
    assert frames.std() > 0 and not np.array_equal(frames[0], frames[-1])  # real, changing pictures
    from trainer.sim.env import make_env

    task, split, seed, _ = demos.sources[0]
    env = make_env(task, split, seed, image_size=32)
    first, _ = env.reset(seed=seed)
    env.close()
    assert np.array_equal(first["image"], frames[0])
    # A replay that no longer matches its recorded states is refused, not silently used.
    demos.states[3] += 1.0
    from trainer.sft import render_demonstration_images

    with pytest.raises(SFTError, match="diverged at step 3"):
        render_demonstration_images(demos, 32, tmp_path / "other.npy", 120, progress=False)


def test_ctrl_c_exits_130(tmp_path):
    from interrupting import interrupt_when

    code, err = interrupt_when(
        ["-m", "trainer.sft", "--out", str(tmp_path / "run"), "--tasks", "stack", "--demos-per-task", "5000"], "demos"
    )
    assert code == 130 and "continue with --resume" in err and "Traceback" not in err
