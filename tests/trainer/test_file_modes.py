"""Everything the trainer writes for others to read (checkpoints, SFT output, store episodes,
exported datasets) gets the permissions of a plain file or folder: 0666 / 0777 less the umask
(0644 / 0755 under the usual 022), never a temporary file's 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from trainer.config import TrainConfig
from trainer.policy import make_policy
from trainer.sim.env import STATE_DIM
from trainer.store import read_episode, write_episode

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def wrong_modes(root: Path, umask: int) -> list[str]:
    """Every path under `root` (itself included) whose permission bits are not the plain ones."""
    wrong = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        if mode != expected:
            wrong.append(f"{path.relative_to(root.parent)}: {oct(mode)}, expected {oct(expected)}")
    return wrong


def tiny_policy():
    torch.manual_seed(0)
    return make_policy("embedded", state_dim=STATE_DIM, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)


def test_checkpoint_folder_modes(tmp_path: Path, umask: int) -> None:
    from trainer.loop import attach_adapter, save_checkpoint

    config = TrainConfig(
        constraints=str(ROOT / "constraints" / "safety.grc"), iterations=1, output_dir=str(tmp_path / "run")
    )
    config.policy.lora_rank = 2
    config.rollout.tasks = ["stack"]
    policy = attach_adapter(tiny_policy(), config)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    target = save_checkpoint(
        tmp_path / "run", 1, policy, optimizer, config, global_step=0, summary={"rollout/success_rate": 0.5}
    )
    assert (target / "policy" / "README.md").is_file() and (target / "policy" / "config.json").is_file()
    assert wrong_modes(target, umask) == []


def test_saved_policy_and_sft_output_modes(tmp_path: Path, umask: int) -> None:
    from trainer.sft import SFTConfig, train_sft

    tiny_policy().save_pretrained(tmp_path / "policy")
    assert wrong_modes(tmp_path / "policy", umask) == []
    config = SFTConfig(
        tasks=("push_to_target",),
        demos_per_task=1,
        steps=2,
        batch_size=8,
        warmup_steps=1,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_episode_steps=40,
    )
    policy_dir = train_sft(config, tmp_path / "sft", progress=False)
    assert policy_dir.is_dir()
    assert wrong_modes(tmp_path / "sft", umask) == []


def test_store_episode_and_export_modes(tmp_path: Path, umask: int) -> None:
    from trainer.export import export_lerobot
    from trainer.sim.env import make_env

    env = make_env("stack", seed=0, max_steps=3)
    env.reset()
    for _ in range(3):
        env.step(env.action_space.sample() * 0)
    episode = env.episode()
    env.close()
    folder = write_episode(tmp_path / "store", episode)
    assert read_episode(folder).length == episode.length
    assert wrong_modes(tmp_path / "store", umask) == []
    export_lerobot(tmp_path / "store", tmp_path / "dataset")
    assert wrong_modes(tmp_path / "dataset", umask) == []
