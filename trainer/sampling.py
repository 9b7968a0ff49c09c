"""Which rollouts an iteration draws: every sampled initial state, or dynamic sampling.

Plain sampling runs `samples_per_state` episodes from each of `states_per_task` initial states
per task, and every state is used.

Dynamic sampling (as in DAPO, RIPT-VLA and SimpleVLA-RL) keeps only *informative* initial
states: those whose samples differ in outcome score by more than `min_gap`. A state where every
sample succeeds equally well, or every one fails equally badly, gives no pair and no
group-relative advantage, so its rollouts would cost time and teach nothing. Rounds of fresh
initial states are drawn for every task still short of `states_per_task` informative ones,
until each task has them or the iteration has drawn `max_rollouts` episodes. Every rollout
drawn is kept (and stored); the loop trains on the informative states only.

Round 0 draws exactly the states plain sampling draws, so both start from the same episodes;
each later round draws from its own seeded stream, never repeating a state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.config import TrainConfig
from trainer.gcpg import informative_groups
from trainer.policy.base import Policy
from trainer.rollout import EpisodeSpec, Rollout, collect_rollouts

TRAIN_SPLIT = "in_domain"
ROUNDS_LIMIT = 64
"""Dynamic sampling stops after this many rounds even below --max-rollouts (a policy that never
varies on a task must not loop for ever)."""


@dataclass
class Gathered:
    """An iteration's rollouts, their score columns, and the initial states worth training on."""

    rollouts: list[Rollout]
    columns: dict[str, Any]
    kept_groups: set[str]
    rounds: int


def round_states(
    config: TrainConfig, task: str, task_index: int, iteration: int, round_: int, count: int, used: set[int]
) -> list[int]:
    """`count` training seeds for one round: round 0 is the plain draw from (seed, k, task)."""
    from trainer.sim.splits import TRAIN_SEED_LIMIT

    rng = np.random.default_rng([config.seed, iteration, task_index] + ([round_] if round_ else []))
    if round_ == 0:
        return sorted(int(s) for s in rng.choice(TRAIN_SEED_LIMIT, size=count, replace=False))
    seeds: list[int] = []
    while len(seeds) < count:
        seed = int(rng.integers(TRAIN_SEED_LIMIT))
        if seed not in used and seed not in seeds:
            seeds.append(seed)
    return sorted(seeds)


def default_max_rollouts(config: TrainConfig, tasks: Sequence[str]) -> int:
    return 4 * len(tasks) * config.rollout.states_per_task * config.rollout.samples_per_state


def gather_rollouts(
    config: TrainConfig,
    iteration: int,
    policy: Policy,
    tasks: Sequence[str],
    score: Callable[[list[Rollout]], dict[str, Any]],
    progress: bool,
) -> Gathered:
    """Draw the iteration's rollouts (plain or dynamic sampling) and score them with `score`."""
    from tqdm.auto import tqdm

    from trainer.sim.tasks import TASKS

    ro = config.rollout
    task_index = {task: list(TASKS).index(task) if task in TASKS else i for i, task in enumerate(tasks)}
    cap = (ro.max_rollouts or default_max_rollouts(config, tasks)) if ro.dynamic_sampling else None
    rollouts: list[Rollout] = []
    used: dict[str, set[int]] = {task: set() for task in tasks}
    wanted = {task: ro.states_per_task for task in tasks}
    kept: set[str] = set()
    columns: dict[str, Any] = {}
    round_ = 0
    with tqdm(desc=f"iter {iteration} rollouts", unit="ep", disable=not progress, leave=False) as bar:
        while True:
            specs = []
            for task in tasks:
                short = wanted[task] if round_ == 0 else wanted[task] - sum(g.startswith(f"{task}/") for g in kept)
                if short <= 0:
                    continue
                if cap is not None:
                    short = min(short, (cap - len(rollouts) - len(specs)) // ro.samples_per_state)
                if short <= 0:
                    continue
                seeds = round_states(config, task, task_index[task], iteration, round_, short, used[task])
                used[task].update(seeds)
                specs += [
                    EpisodeSpec(task, TRAIN_SPLIT, seed, sample)
                    for seed in seeds
                    for sample in range(ro.samples_per_state)
                ]
            if not specs:
                break
            bar.total = len(rollouts) + len(specs)
            bar.refresh()
            stream = [config.seed, iteration, 7] + ([round_] if round_ else [])
            # One sampling stream per episode: its tokens do not depend on the batch or worker it ran in.
            sample_seed = int(np.random.default_rng(stream).integers(2**62))
            if ro.rollout_workers:
                new = _collect_on_workers(config, policy, specs, sample_seed, lambda _: bar.update(1))
            else:
                new, _ = collect_rollouts(
                    policy,
                    specs,
                    temperature=ro.temperature,
                    sample_seed=sample_seed,
                    max_steps=ro.max_steps,
                    batch_envs=ro.batch_envs,
                    on_episode=lambda _: bar.update(1),
                )
            rollouts += new
            columns = score(rollouts)
            groups = np.asarray(columns["group"])
            if not ro.dynamic_sampling:
                kept = set(groups.tolist())
                break
            kept = informative_groups(columns["outcome"], groups, config.gcpg.min_gap)
            round_ += 1
            if round_ >= ROUNDS_LIMIT:
                break
    rounds_drawn = round_ if ro.dynamic_sampling else 1  # dynamic sampling counts each round it drew
    return Gathered(rollouts, columns, kept, rounds_drawn)


def _collect_on_workers(config, policy, specs: list[EpisodeSpec], sample_seed: int, on_episode) -> list[Rollout]:
    """The round's episodes on the Ray rollout workers (--rollout-workers), started once per process."""
    from trainer.loop import TrainError
    from trainer.workers import RolloutWorkerError, shared_rollout_workers

    ro = config.rollout
    try:
        workers = shared_rollout_workers(ro.rollout_workers, ro.ray_address)
        return workers.collect(
            policy,
            specs,
            temperature=ro.temperature,
            sample_seed=sample_seed,
            max_steps=ro.max_steps,
            batch_envs=ro.batch_envs,
            on_episode=on_episode,
        )
    except RolloutWorkerError as error:
        raise TrainError(str(error)) from None
