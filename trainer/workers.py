"""Rollouts spread over Ray worker processes, local or on a cluster.

Each worker is a Ray actor holding its own environment pool and a copy of the policy. Per
call the policy is put into Ray's object store once and every worker loads it once (the
weights travel once per iteration, not per episode). The episodes are cut into chunks of at
most ``batch_envs`` (see :func:`work_chunks`) and handed out as workers become free; each
worker runs a chunk with :func:`trainer.rollout.collect_rollouts` and per-episode sampling
streams, so an episode's tokens do not depend on the number of workers or on which worker ran
it.

A worker that dies (killed, out of memory, node lost) fails only its current chunk: the
failure is logged, a replacement worker is started, and the chunk runs again there, so the
call still returns every episode. Ray is imported only when workers are asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from trainer.policy.base import Policy
from trainer.rollout import EpisodeSpec, Rollout

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
"""A chunk that kills this many workers in a row is an error, not bad luck."""


def work_chunks(episodes: int, batch_envs: int, workers: int) -> list[range]:
    """Consecutive chunks of episode indices, each run in lockstep by one worker: at most
    `batch_envs` wide, and narrower when that leaves fewer than two chunks per worker (96
    episodes in chunks of 32 on two workers would leave one worker idle for the third chunk)."""
    if episodes <= 0:
        return []
    width = max(1, min(batch_envs, -(-episodes // (2 * workers))))
    return [range(start, min(start + width, episodes)) for start in range(0, episodes, width)]


class RolloutWorkerError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or a chunk failed on every attempt."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RolloutWorkerError(
            "--rollout-workers needs Ray: pip install 'ray>=2.9' (or pip install grape-dsl[ray])"
        ) from None
    return ray


class _Worker:
    """The actor body: one policy copy (reloaded when the call's version changes) and an env pool."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)  # one worker per core: more threads would fight the simulator
        self.version: int | None = None
        self.policy: Policy | None = None

    def pid(self) -> int:
        return os.getpid()

    def run(self, version: int, policy_ref: list, specs: list[EpisodeSpec], options: dict) -> list[Rollout]:
        import ray

        from trainer.rollout import collect_rollouts

        if version != self.version:
            (self.policy,) = ray.get(policy_ref)
            self.policy.eval()
            self.version = version
        rollouts, _ = collect_rollouts(self.policy, specs, **options)
        return rollouts


@dataclass
class RolloutWorkers:
    """``count`` Ray actors; ``address`` None starts a local Ray, else joins that cluster."""

    count: int
    address: str | None = None
    failures: list[str] = field(default_factory=list)
    """One line per worker lost during a call (also logged as warnings)."""

    def __post_init__(self) -> None:
        if self.count < 1:
            raise RolloutWorkerError(f"--rollout-workers must be >= 1, got {self.count}")
        ray = _import_ray()
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    **({} if self.address else {"num_cpus": max(self.count, os.cpu_count() or 1)}),
                )
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise RolloutWorkerError(
                    f"--ray-address {self.address}: cannot join the Ray cluster: {error}"
                ) from None
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self.actors = [self._actor_class.remote() for _ in range(self.count)]
        self._version = 0

    def pids(self) -> list[int]:
        """Process ids of the current workers (local clusters; used to test failures)."""
        ray = _import_ray()
        return ray.get([actor.pid.remote() for actor in self.actors])

    def collect(
        self,
        policy: Policy,
        specs: Sequence[EpisodeSpec],
        *,
        sample_seed: int,
        temperature: float = 1.0,
        greedy: bool = False,
        max_steps: int | None = None,
        batch_envs: int = 16,
        on_episode: Callable[[Rollout], None] | None = None,
    ) -> list[Rollout]:
        """Every spec run to the end on the workers; the rollouts in the order of ``specs``."""
        ray = _import_ray()
        from ray.exceptions import RayActorError

        self._version += 1
        if policy.device.type != "cpu":  # workers sample on CPU (they hold no GPU): send a CPU copy
            import copy

            policy = copy.deepcopy(policy).cpu()
        policy_ref = [ray.put(policy)]  # in a list: Ray hands the reference over instead of resolving it per call
        options = {
            "sample_seed": sample_seed,
            "temperature": temperature,
            "greedy": greedy,
            "max_steps": max_steps,
            "batch_envs": batch_envs,
        }
        chunks = [list(chunk) for chunk in work_chunks(len(specs), batch_envs, len(self.actors))]
        queue = [(chunk, 1) for chunk in reversed(chunks)]  # pop() takes the first chunk
        running: dict = {}  # ObjectRef -> (actor, chunk, attempt)
        idle = list(self.actors)
        results: dict[int, Rollout] = {}
        while queue or running:
            while queue and idle:
                chunk, attempt = queue.pop()
                actor = idle.pop()
                ref = actor.run.remote(self._version, policy_ref, [specs[i] for i in chunk], options)
                running[ref] = (actor, chunk, attempt)
            (done,), _ = ray.wait(list(running), num_returns=1)
            actor, chunk, attempt = running.pop(done)
            try:
                rollouts = ray.get(done)
            except RayActorError as error:
                message = (
                    f"rollout worker lost while running episodes {specs[chunk[0]].group} .. {specs[chunk[-1]].group} "
                    f"(attempt {attempt}): {type(error).__name__}; re-running them on a new worker"
                )
                log.warning(message)
                self.failures.append(message)
                if attempt >= MAX_ATTEMPTS:
                    raise RolloutWorkerError(
                        f"episodes {[specs[i] for i in chunk][:3]}... failed on {attempt} workers"
                    ) from None
                replacement = self._actor_class.remote()
                self.actors[self.actors.index(actor)] = replacement
                idle.append(replacement)
                queue.append((chunk, attempt + 1))
                continue
            idle.append(actor)
            for index, rollout in zip(chunk, rollouts):
                results[index] = rollout
                if on_episode is not None:
                    on_episode(rollout)
        return [results[i] for i in range(len(specs))]

    def close(self) -> None:
        ray = _import_ray()
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


_shared: RolloutWorkers | None = None


def shared_rollout_workers(count: int, address: str | None = None) -> RolloutWorkers:
    """The process's workers, started on first use and kept across iterations."""
    global _shared
    if _shared is None or (_shared.count, _shared.address) != (count, address):
        if _shared is not None:
            _shared.close()
        _shared = RolloutWorkers(count, address)
    return _shared
