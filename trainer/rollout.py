"""Policy x simulator -> episodes with per-step log-probs and action tokens.

Episodes run in lockstep: a pool of environments steps together and the policy samples one
batch of actions for every live environment per control step, so the model sees batch sizes
of `batch_envs` instead of 1. When an episode ends, its environment is reset to the next
pending episode (continuous batching), so short and long episodes mix without idle slots.

Environments come from an :class:`EnvPool` that outlives the call: a pybullet client with its
loaded Panda costs ~0.15-0.4 s to create, more than a whole short episode, so worlds are
reused across episodes, calls and training iterations (``env.reset(seed)`` rebuilds the scene
in full; a seed replays identically in a fresh or a reused world). Work is ordered by task so
an environment changes hands only when the next pending episode is of another task.

Randomness: with ``generator`` every draw of a call comes from one torch.Generator, so the
episodes depend on the work list and batch size. With ``sample_seed`` each episode has its own
stream, seeded by (sample_seed, task, split, seed, sample): an episode's tokens then do not
depend on which other episodes ran beside it, in this process or on any rollout worker.
"""

from __future__ import annotations

import zlib
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


ROLLOUT_STREAM_SALT = 7_402_661
"""Mixed into every per-episode sampling stream so it never coincides with another stream of the project."""


def make_rollout_env(task: str, split: str, seed: int, image_size: int | None, max_steps: int):
    """The one place rollouts create an environment (a gymnasium env with ``spec_task``, ``split``,
    ``instruction``, ``render_frame`` and ``episode()``)."""
    from trainer.sim.env import make_env

    return make_env(task, split, seed, image_size=image_size, max_steps=max_steps)


EnvKey = tuple[str, str, "int | None", int]
"""(task, split, image_size, max_steps): environments with equal keys are interchangeable."""


class EnvPool:
    """Idle environments kept between episodes and calls, at most ``capacity`` of them.

    ``take`` hands out an idle environment of the same key (or makes one); ``give_back`` returns
    it; beyond ``capacity`` the least recently returned ones are closed.
    """

    def __init__(self, capacity: int = 16) -> None:
        # A pybullet world with the Panda and its scene holds about 93 MB (measured), so the pool
        # is capped low: 64 idle worlds made an evaluation process over 4 splits x 4 tasks grow
        # to 9 GB. 16 keeps the worlds of the current task and split (one lockstep batch of 16;
        # a wider lockstep raises the shared pool's capacity to its width, see hold_at_least).
        self.capacity = capacity
        self._idle: list[tuple[EnvKey, object]] = []  # oldest first
        self.created = 0

    def hold_at_least(self, count: int) -> None:
        """Raise the capacity to `count`: a lockstep batch that wide hands back `count` worlds at
        its end, and closing the ones beyond the capacity would make the next call build them
        again (0.15-0.4 s each)."""
        self.capacity = max(self.capacity, count)

    def take(self, key: EnvKey, seed: int):
        for i in range(len(self._idle) - 1, -1, -1):
            if self._idle[i][0] == key:
                return self._idle.pop(i)[1]
        self.created += 1
        task, split, image_size, max_steps = key
        return make_rollout_env(task, split, seed, image_size, max_steps)

    def give_back(self, key: EnvKey, env) -> None:
        self._idle.append((key, env))
        while len(self._idle) > self.capacity:
            self._idle.pop(0)[1].close()

    def close(self) -> None:
        """Close every idle environment (the pool stays usable)."""
        while self._idle:
            self._idle.pop()[1].close()

    def __len__(self) -> int:
        return len(self._idle)


_shared_pool = EnvPool()


def shared_env_pool() -> EnvPool:
    """The process's pool, used by :func:`collect_rollouts` unless it is given another; it keeps
    as many idle worlds as the widest lockstep batch the process has run (16 at least)."""
    return _shared_pool


def episode_stream(sample_seed: int, spec: EpisodeSpec) -> np.random.Generator:
    """The sampling stream of one episode: a function of the seed and the spec only."""
    names = [zlib.crc32(spec.task.encode()), zlib.crc32(spec.split.encode())]
    return np.random.default_rng([ROLLOUT_STREAM_SALT, sample_seed, *names, spec.seed, spec.sample])


@dataclass
class _Slot:
    """One environment of the lockstep pool and the episode it is running (index -1: idle)."""

    key: EnvKey
    env: object
    index: int = -1
    obs: dict | None = None
    tokens: list | None = None
    logprobs: list | None = None
    images: list | None = None
    stream: np.random.Generator | None = None


class _Lockstep:
    """The state of one :func:`collect_rollouts` call: pending work, slots, finished rollouts."""

    def __init__(
        self,
        specs: Sequence[EpisodeSpec],
        pool: EnvPool,
        image_size: int | None,
        max_steps: int,
        sample_seed: int | None,
        record_frames: Callable[[EpisodeSpec], bool] | None,
        frame_size: int,
    ) -> None:
        self.specs, self.pool, self.image_size, self.max_steps = specs, pool, image_size, max_steps
        self.sample_seed, self.record_frames, self.frame_size = sample_seed, record_frames, frame_size
        order = sorted(range(len(specs)), key=lambda i: (specs[i].task, i))
        self.pending = list(reversed(order))  # pop() takes the next in order
        self.results: list[Rollout | None] = [None] * len(specs)
        self.frames: dict[EpisodeSpec, list[np.ndarray]] = {}
        self.slots: list[_Slot] = []

    def key(self, spec: EpisodeSpec) -> EnvKey:
        return (spec.task, spec.split, self.image_size, self.max_steps)

    def open_slots(self, count: int) -> None:
        while self.pending and len(self.slots) < count:
            spec = self.specs[self.pending[-1]]
            key = self.key(spec)
            slot = _Slot(key, self.pool.take(key, spec.seed))
            self.slots.append(slot)
            self.start(slot)

    def start(self, slot: _Slot) -> None:
        """Reset the slot's environment to the next pending episode (or leave the slot idle)."""
        if not self.pending:
            slot.index = -1
            return
        index = self.pending.pop()
        spec = self.specs[index]
        key = self.key(spec)
        if key != slot.key:
            self.pool.give_back(slot.key, slot.env)
            slot.key, slot.env = key, self.pool.take(key, spec.seed)
        slot.obs, _ = slot.env.reset(seed=spec.seed)
        slot.index, slot.tokens, slot.logprobs = index, [], []
        slot.images = [slot.obs["image"]] if self.image_size else None
        slot.stream = episode_stream(self.sample_seed, spec) if self.sample_seed is not None else None
        if self.record_frames is not None and self.record_frames(spec):
            self.frames[spec] = [slot.env.render_frame(self.frame_size)]

    def finish(self, slot: _Slot) -> Rollout:
        episode = slot.env.episode()
        episode.logprobs = np.asarray(slot.logprobs, dtype=np.float32)
        episode.action_tokens = np.asarray(slot.tokens, dtype=np.int64)
        episode.validate()
        images = np.stack(slot.images) if self.image_size else None
        rollout = Rollout(self.specs[slot.index], episode, images)
        self.results[slot.index] = rollout
        return rollout

    def close(self, reuse: bool) -> None:
        """Hand the environments back to the pool, or close them after an error (a failed
        environment must not serve the next call)."""
        for slot in self.slots:
            if reuse:
                self.pool.give_back(slot.key, slot.env)
            else:
                slot.env.close()
        self.slots = []


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
    sample_seed: int | None = None,
    env_pool: EnvPool | None = None,
) -> tuple[list[Rollout], dict[EpisodeSpec, list[np.ndarray]]]:
    """Run every spec to the end with `policy`; return the rollouts in the order of `specs`.

    `on_episode` is called as each episode finishes (progress bars). `record_frames(spec)` True
    keeps rendered frames of that episode (for GIFs), returned in the second value.
    `sample_seed` gives every episode its own sampling stream (see the module docstring; not
    together with `generator`). `env_pool` defaults to the process's shared pool, which then
    keeps at least `batch_envs` idle worlds; a pool given here keeps its own capacity.
    """
    from trainer.sim.env import DEFAULT_MAX_STEPS

    if batch_envs < 1:
        raise ValueError(f"batch_envs must be >= 1, got {batch_envs}")
    if sample_seed is not None and generator is not None:
        raise ValueError(
            "give either generator (one stream for the call) or sample_seed (one stream per episode), not both"
        )
    image_size = policy.image_size  # None: the policy reads only the state vector
    action_dim = policy.action_tokenizer.action_dim
    if env_pool is None:
        env_pool = shared_env_pool()
        env_pool.hold_at_least(batch_envs)
    run = _Lockstep(
        specs,
        env_pool,
        image_size,
        max_steps or DEFAULT_MAX_STEPS,
        sample_seed,
        record_frames,
        frame_size,
    )
    try:
        run.open_slots(batch_envs)
        while True:
            live = [slot for slot in run.slots if slot.index >= 0]
            if not live:
                break
            obs = {"state": np.stack([slot.obs["state"] for slot in live])}
            if image_size:
                obs["image"] = np.stack([slot.obs["image"] for slot in live])
            instructions = [slot.env.instruction for slot in live]
            uniforms = None
            if sample_seed is not None and not greedy:
                uniforms = torch.from_numpy(np.stack([slot.stream.random(action_dim) for slot in live]))
            per_row = {"uniforms": uniforms} if uniforms is not None else {}  # policies without the option still sample
            out = policy.sample(
                obs, instructions, temperature=temperature, greedy=greedy, generator=generator, **per_row
            )
            tokens = out.tokens.cpu().numpy()
            logprobs = out.logprobs.detach().cpu().numpy()
            for row, slot in enumerate(live):
                slot.obs, _, terminated, truncated, _ = slot.env.step(out.actions[row])
                slot.tokens.append(tokens[row])
                slot.logprobs.append(logprobs[row])
                spec = specs[slot.index]
                if spec in run.frames:
                    run.frames[spec].append(slot.env.render_frame(run.frame_size))
                if image_size and not (terminated or truncated):
                    slot.images.append(slot.obs["image"])
                if terminated or truncated:
                    rollout = run.finish(slot)
                    if on_episode is not None:
                        on_episode(rollout)
                    run.start(slot)
    except BaseException:
        run.close(reuse=False)
        raise
    run.close(reuse=True)
    return [r for r in run.results if r is not None], run.frames
