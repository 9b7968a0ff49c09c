"""Policy x simulator -> episodes with per-step log-probs and action tokens.

Episodes run in lockstep: a pool of environments steps together and the policy samples one
batch of actions for every live environment per control step, so the model sees batch sizes
of `batch_envs` instead of 1. When an episode ends, its environment is reset to the next
pending episode (continuous batching), so short and long episodes mix without idle slots.

Work is ordered by task so an environment is rebuilt (a new pybullet client) only when the
next pending episode is of another task. Sampling draws from one torch.Generator seeded by the
caller: the same work list, policy and seed give the same episodes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from trainer.policy.base import Policy
from trainer.sim.episode import Episode


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode to run: the initial state is (task, split, seed); `sample` tells apart the
    stochastic samples drawn from the same initial state."""

    task: str
    split: str
    seed: int
    sample: int = 0

    @property
    def group(self) -> str:
        """The ranking group: trajectories are compared only within one initial state."""
        return f"{self.task}/{self.split}/{self.seed}"


@dataclass
class Rollout:
    """An episode with the spec it was run for and, for pixel policies, the images it saw."""

    spec: EpisodeSpec
    episode: Episode
    images: np.ndarray | None = None
    """uint8 [T, H, W, 3]: the observation images (None for state-only policies)."""


def collect_rollouts(
    policy: Policy,
    specs: Sequence[EpisodeSpec],
    *,
    greedy: bool = False,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    max_steps: int | None = None,
    batch_envs: int = 16,
    on_episode: Callable[[Rollout], None] | None = None,
    record_frames: Callable[[EpisodeSpec], bool] | None = None,
    frame_size: int = 128,
) -> tuple[list[Rollout], dict[EpisodeSpec, list[np.ndarray]]]:
    """Run every spec to the end with `policy`; return the rollouts in the order of `specs`.

    `on_episode` is called as each episode finishes (progress bars). `record_frames(spec)` True
    keeps rendered frames of that episode (for GIFs), returned in the second value.
    """
    from trainer.sim.env import DEFAULT_MAX_STEPS, make_env

    if batch_envs < 1:
        raise ValueError(f"batch_envs must be >= 1, got {batch_envs}")
    image_size = policy.image_size  # None: the policy reads only the state vector
    steps_cap = max_steps or DEFAULT_MAX_STEPS
    order = sorted(range(len(specs)), key=lambda i: (specs[i].task, i))
    pending = list(reversed(order))  # pop() takes the next in order
    results: list[Rollout | None] = [None] * len(specs)
    frames: dict[EpisodeSpec, list[np.ndarray]] = {}

    @dataclass
    class Slot:
        env: object
        index: int = -1
        obs: dict | None = None
        tokens: list | None = None
        logprobs: list | None = None
        images: list | None = None

    slots: list[Slot] = []

    def start(slot: Slot) -> bool:
        if not pending:
            slot.index = -1
            return False
        index = pending.pop()
        spec = specs[index]
        if slot.env.spec_task.name != spec.task or slot.env.split != spec.split:
            slot.env.close()
            slot.env = make_env(spec.task, spec.split, spec.seed, image_size=image_size, max_steps=steps_cap)
        slot.obs, _ = slot.env.reset(seed=spec.seed)
        slot.index, slot.tokens, slot.logprobs = index, [], []
        slot.images = [slot.obs["image"]] if image_size else None
        if record_frames is not None and record_frames(spec):
            frames[spec] = [slot.env.render_frame(frame_size)]
        return True

    try:
        while pending and len(slots) < batch_envs:
            spec = specs[pending[-1]]
            slot = Slot(make_env(spec.task, spec.split, spec.seed, image_size=image_size, max_steps=steps_cap))
            slots.append(slot)
            start(slot)
        while any(slot.index >= 0 for slot in slots):
            live = [slot for slot in slots if slot.index >= 0]
            obs = {"state": np.stack([slot.obs["state"] for slot in live])}
            if image_size:
                obs["image"] = np.stack([slot.obs["image"] for slot in live])
            instructions = [slot.env.instruction for slot in live]
            out = policy.sample(obs, instructions, temperature=temperature, greedy=greedy, generator=generator)
            tokens = out.tokens.cpu().numpy()
            logprobs = out.logprobs.detach().cpu().numpy()
            for row, slot in enumerate(live):
                slot.obs, _, terminated, truncated, _ = slot.env.step(out.actions[row])
                slot.tokens.append(tokens[row])
                slot.logprobs.append(logprobs[row])
                spec = specs[slot.index]
                if spec in frames:
                    frames[spec].append(slot.env.render_frame(frame_size))
                if image_size and not (terminated or truncated):
                    slot.images.append(slot.obs["image"])
                if terminated or truncated:
                    episode = slot.env.episode()
                    episode.logprobs = np.asarray(slot.logprobs, dtype=np.float32)
                    episode.action_tokens = np.asarray(slot.tokens, dtype=np.int64)
                    episode.validate()
                    images = np.stack(slot.images) if image_size else None
                    rollout = Rollout(spec, episode, images)
                    results[slot.index] = rollout
                    if on_episode is not None:
                        on_episode(rollout)
                    start(slot)
    finally:
        for slot in slots:
            slot.env.close()
    return [r for r in results if r is not None], frames
