"""Simulator throughput, measured side by side in one run.

    python bench/sim.py [--task pick_place] [--seconds 6] [--rounds 3] [--workers 2] [--json]

Rows (control steps per second unless noted; one control step = 12 physics steps of 1/240 s):
  physics        raw p.stepSimulation in a built scene (physics steps/s, and /12 as control steps)
  env.step       env.step with random actions (IK + 12 physics steps + contacts + observation)
  expert         the scripted expert in the loop, resets included (what demo recording costs)
  expert, 50 ..  the same with pybullet's default 50 solver iterations instead of the env's 20
  expert+image   the same with a 128x128 TinyRenderer image every step
  vector         VectorEnv over --workers processes, expert actions computed in the main process
  pool           whole expert episodes in a process pool of --workers (demo recording)
Ratios are printed against `expert` (single process).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


class Row:
    """A measurement kept warm across rounds: `step()` does some work and returns the steps it did."""

    def __init__(self, step, close=lambda: None) -> None:
        self.step, self.close = step, close
        self.steps, self.seconds = 0, 0.0

    def run(self, seconds: float) -> None:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.steps += self.step()
        self.seconds += time.perf_counter() - start

    @property
    def rate(self) -> float:
        return self.steps / max(self.seconds, 1e-9)


def physics_row(task: str) -> Row:
    from trainer.sim.env import make_env

    env = make_env(task, seed=0)
    env.reset()
    p, c = env.p, env.client

    def step() -> int:
        for _ in range(240):
            p.stepSimulation(physicsClientId=c)
        return 240

    return Row(step, env.close)


def env_step_row(task: str) -> Row:
    from trainer.sim.env import make_env

    env = make_env(task, seed=0, max_steps=10**9)
    env.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(env.action_space.low, env.action_space.high, size=(64, 7)).astype(np.float32)
    actions[:, 2] = np.abs(actions[:, 2]) * np.sign(np.sin(np.arange(64)))  # wander, but stay in the workspace

    def step() -> int:
        for a in actions[:20]:
            env.step(a)
        return 20

    return Row(step, env.close)


def expert_row(task: str, image_size: int | None = None, solver_iterations: int | None = None) -> Row:
    from trainer.sim.env import make_env
    from trainer.sim.expert import Expert, run_expert

    env = make_env(task, image_size=image_size)
    if solver_iterations is not None:
        env.solver_iterations = solver_iterations
    expert = Expert(task)
    seeds = iter(range(10**6))
    return Row(lambda: run_expert(env, expert, seed=next(seeds)).length, env.close)


def vector_row(task: str, workers: int) -> Row:
    from trainer.sim.expert import Expert
    from trainer.sim.vector import VectorEnv

    experts = [Expert(task) for _ in range(workers)]
    venv = VectorEnv([task] * workers)
    seeds = iter(range(10**6))
    states, _ = venv.reset([next(seeds) for _ in range(workers)])

    def step() -> int:
        nonlocal states
        actions = np.stack([e.act(s) for e, s in zip(experts, states)])
        states, _, terminated, truncated, _ = venv.step(actions)
        done = terminated | truncated
        if done.any():  # reset every env at once when any finishes (lock-step, like policy rollouts)
            states, _ = venv.reset([next(seeds) for _ in range(workers)])
        return workers

    return Row(step, venv.close)


def pool_row(task: str, workers: int) -> Row:
    import multiprocessing as mp

    from trainer.sim.vector import ExpertJob, run_expert_job

    pool = mp.get_context("spawn").Pool(workers)
    seeds = iter(range(10**6))

    def step() -> int:
        jobs = [ExpertJob(task, "in_domain", next(seeds)) for _ in range(2 * workers)]
        return sum(e.length for e in pool.map(run_expert_job, jobs))

    pool.map(run_expert_job, [ExpertJob(task, "in_domain", 10**6 + i) for i in range(workers)])  # warm up
    return Row(step, pool.terminate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--seconds", type=float, default=6.0, help="time per row, split over the rounds")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = {
        "physics (control-step equivalent)": physics_row(args.task),
        "env.step (random actions)": env_step_row(args.task),
        "expert": expert_row(args.task),
        "expert, 50 solver iterations": expert_row(args.task, solver_iterations=50),
        "expert+image128": expert_row(args.task, image_size=128),
        f"vector x{args.workers}": vector_row(args.task, args.workers),
        f"pool x{args.workers}": pool_row(args.task, args.workers),
    }
    # Interleave the rows in rounds so that a busy machine slows them all alike.
    for _ in range(args.rounds):
        for row in rows.values():
            row.run(args.seconds / args.rounds)
    for row in rows.values():
        row.close()
    physics = rows["physics (control-step equivalent)"].rate
    rates = {name: row.rate / (12 if name.startswith("physics") else 1) for name, row in rows.items()}
    base = rates["expert"]
    if args.json:
        print(
            json.dumps(
                {
                    "task": args.task,
                    "physics_steps_per_s": physics,
                    "control_steps_per_s": rates,
                    "ratio_to_expert": {k: v / base for k, v in rates.items()},
                },
                indent=1,
            )
        )
        return
    print(f"task={args.task}  raw physics: {physics:,.0f} physics steps/s")
    print(f"{'row':<36} {'steps/s':>10} {'x expert':>9}")
    for name, rate in rates.items():
        print(f"{name:<36} {rate:>10,.0f} {rate / base:>9.2f}")


if __name__ == "__main__":
    main()
