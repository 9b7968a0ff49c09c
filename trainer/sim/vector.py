"""Batched stepping over worker processes (spawn-safe: workers import this module afresh).

Two shapes of parallelism:

- `VectorEnv`: N envs, one per worker process, stepped in lock-step with a batch of actions
  (a policy in the main process acts for all of them at once).
- `collect_expert_episodes`: whole expert episodes run inside a process pool, no per-step
  round trips; used to record demonstrations.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from trainer.sim.env import STATE_DIM, make_env
from trainer.sim.episode import Episode


class WorkerError(RuntimeError):
    """An env in a worker process raised; the message carries the worker's error."""


def _worker(conn, task: str, split: str, image_size: int | None, max_steps: int) -> None:
    env = None
    try:
        env = make_env(task, split=split, image_size=image_size, max_steps=max_steps)
        conn.send(("ok", None))
        while True:
            command, payload = conn.recv()
            try:
                if command == "reset":
                    obs, info = env.reset(seed=payload)
                    conn.send(("ok", (obs, info)))
                elif command == "step":
                    conn.send(("ok", env.step(payload)))
                elif command == "episode":
                    conn.send(("ok", env.episode()))
                elif command == "close":
                    conn.send(("ok", None))
                    return
            except ValueError as exc:  # user errors (bad action, bad seed): report, keep serving
                conn.send(("value_error", str(exc)))
            except RuntimeError as exc:  # misuse such as stepping an ended episode: the env is intact
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        if env is not None:
            env.close()


class VectorEnv:
    """N envs in N processes. `tasks[i]` names env i's task; all share `split`."""

    def __init__(
        self,
        tasks: Sequence[str],
        split: str = "in_domain",
        image_size: int | None = None,
        max_steps: int = 120,
        context: str = "spawn",
    ) -> None:
        from trainer.sim.splits import get_split
        from trainer.sim.tasks import get_task

        for task in tasks:
            get_task(task)  # fail in the caller, with the known names, before starting processes
        get_split(split)
        ctx = mp.get_context(context)
        self.tasks = list(tasks)
        self._conns = []
        self._procs = []
        for task in self.tasks:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, task, split, image_size, max_steps), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for i in range(len(self.tasks)):
            self._receive(i)

    @property
    def num_envs(self) -> int:
        return len(self._conns)

    def _receive(self, i: int):
        try:
            status, payload = self._conns[i].recv()
        except EOFError:
            raise WorkerError(f"worker {i} ({self.tasks[i]}) died") from None
        if status == "value_error":
            raise ValueError(f"env {i} ({self.tasks[i]}): {payload}")
        if status == "error":
            raise WorkerError(f"worker {i} ({self.tasks[i]}): {payload}")
        return payload

    def _broadcast(self, command: str, payloads: Sequence) -> list:
        for conn, payload in zip(self._conns, payloads):
            conn.send((command, payload))
        # Collect every reply before raising, so the pipes stay in step after an error.
        results, first_error = [], None
        for i in range(self.num_envs):
            try:
                results.append(self._receive(i))
            except (ValueError, WorkerError) as exc:
                first_error = first_error or exc
                results.append(None)
        if first_error is not None:
            raise first_error
        return results

    def reset(self, seeds: Sequence[int]) -> tuple[np.ndarray, list[dict]]:
        """Reset env i with seeds[i]; returns states [N, STATE_DIM] and infos (with instructions)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        results = self._broadcast("reset", [int(s) for s in seeds])
        return np.stack([obs["state"] for obs, _ in results]), [info for _, info in results]

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        """Step every env; returns states [N, D], rewards, terminated, truncated [N], infos.

        Envs whose episode has ended must be reset before they are stepped again (no auto-reset,
        so that each env's episode can be collected whole with `episodes()`).
        """
        actions = np.asarray(actions, dtype=np.float32)
        if actions.shape != (self.num_envs, 7):
            raise ValueError(f"actions must have shape ({self.num_envs}, 7), got {actions.shape}")
        results = self._broadcast("step", list(actions))
        states = np.stack([r[0]["state"] for r in results]) if results else np.zeros((0, STATE_DIM), np.float32)
        return (
            states,
            np.array([r[1] for r in results]),
            np.array([r[2] for r in results]),
            np.array([r[3] for r in results]),
            [r[4] for r in results],
        )

    def episodes(self) -> list[Episode]:
        """The current episode of every env since its last reset."""
        return self._broadcast("episode", [None] * self.num_envs)

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []

    def __enter__(self) -> VectorEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class ExpertJob:
    """One expert episode to run: task, split, seed and the expert's knobs."""

    task: str
    split: str
    seed: int
    noise: float = 0.0
    speed: float = 1.0
    brush: float = 0.0
    max_steps: int = 120


_ENV_CACHE: dict = {}


def run_expert_job(job: ExpertJob) -> Episode:
    """Run one expert episode (in whichever process calls it; envs are cached per process)."""
    from trainer.sim.expert import Expert, run_expert

    key = (job.task, job.split, job.max_steps)
    env = _ENV_CACHE.get(key)
    if env is None:
        env = _ENV_CACHE[key] = make_env(job.task, split=job.split, max_steps=job.max_steps)
    expert = Expert(job.task, noise=job.noise, speed=job.speed, brush=job.brush, seed=job.seed)
    return run_expert(env, expert, seed=job.seed)


def collect_expert_episodes(jobs: Sequence[ExpertJob], workers: int = 1, context: str = "spawn") -> Iterator[Episode]:
    """Yield the expert episode of every job, in job order; `workers` > 1 runs them in a process pool."""
    if workers <= 1:
        for job in jobs:
            yield run_expert_job(job)
        return
    with mp.get_context(context).Pool(workers) as pool:
        yield from pool.imap(run_expert_job, jobs, chunksize=2)
