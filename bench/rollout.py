"""Policy rollouts against physics alone: the same episodes, side by side in one run, one core.

Row "policy in the loop": ``collect_rollouts`` as a GRAPE iteration runs it (lockstep envs,
sampling at temperature 1 with per-episode streams, environments from the process's pool,
warmed by one call first as after a training run's first iteration), with as many episodes per
initial state as grape-train draws by default (6). ``--samples-per-state 1`` gives every episode
its own initial state: for more than half of them (18-21 of 32, measured) the instruction is
then a string the encoder has not seen, a harder case than any iteration meets.
Row "physics only": the same episodes replayed from their recorded actions through the same
pooled environments (reset, ``env.step``: IK, 12 physics steps, contacts, observation), with
no policy; the replay must reproduce every recorded state, so both rows step the same worlds.
Row "policy, fresh worlds": as the first row with a pool that keeps nothing, so every call
builds its environments anew (what rollouts did before the pool).
Rows are interleaved per round (one ``collect_rollouts`` call, then the replay of its episodes,
then the fresh-worlds call), so that load from other jobs hits every row alike. A repeat is
``--rounds`` rounds; every round of every repeat runs its own episodes (fresh seeds, so the
instruction encoder's cache helps no repeat more than the first). The in-loop/physics ratio is
reported per repeat (median and min-max) beside the totals: on a shared machine it moves by
several hundredths between back-to-back runs of the same code.

    python bench/rollout.py                                  # cached default SFT policy if present
    python bench/rollout.py --rounds 2 --repeats 3           # median ratio and spread over 3 repeats
    python bench/rollout.py --samples-per-state 1           # every episode its own scene and instruction
    python bench/rollout.py --policy runs/x/policy --episodes 32 --rounds 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch


def load_policy(folder: str | None, sft_cache: str):
    from trainer.policy import load_policy as load
    from trainer.policy import make_policy
    from trainer.sft import POLICY_DIR, SFTConfig
    from trainer.sim.env import STATE_DIM

    if folder is None:
        cached = Path(sft_cache) / f"sft-{SFTConfig().cache_key()}" / POLICY_DIR
        folder = str(cached) if cached.is_dir() else None
    if folder is not None:
        return load(folder), folder
    defaults = SFTConfig()
    torch.manual_seed(0)
    policy = make_policy(
        "embedded",
        state_dim=STATE_DIM,
        hidden_size=defaults.hidden_size,
        num_layers=defaults.num_layers,
        num_heads=defaults.num_heads,
        intermediate_size=defaults.intermediate_size,
    )
    return policy.eval(), "untrained policy of the default SFT size (no cached SFT policy found)"


def replay(rollouts, pool, max_steps: int) -> tuple[int, int]:
    """Step every rollout's recorded actions again; return (steps, episodes whose every state
    matched the recording bit for bit). The scene of each seed must match exactly; a reused world
    may drift from the recording by float rounding late in contact-rich episodes (docs/sim.md)."""
    steps = exact = 0
    for rollout in rollouts:
        spec, episode = rollout.spec, rollout.episode
        key = (spec.task, spec.split, None, max_steps)
        env = pool.take(key, spec.seed)
        try:
            obs, _ = env.reset(seed=spec.seed)
            if not np.array_equal(obs["state"], episode.states[0]):
                raise AssertionError(f"the scene of {spec} differs from the recorded one")
            same = True
            for t, action in enumerate(episode.actions):
                same = same and np.array_equal(obs["state"], episode.states[t])
                obs, *_ = env.step(action)
            steps += episode.length
            exact += same
        finally:
            pool.give_back(key, env)
    return steps, exact


def main() -> None:
    from trainer.config import RolloutConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--policy", help="policy folder (default: the cached default SFT policy, else an untrained one)"
    )
    parser.add_argument("--sft-cache", default="cache/sft", help="where grape-train caches the default SFT policy")
    parser.add_argument("--task", default="pick_place")
    parser.add_argument("--episodes", type=int, default=32, help="episodes per round (default 32)")
    loop_envs = RolloutConfig().batch_envs
    parser.add_argument(
        "--batch-envs", type=int, default=loop_envs, help=f"envs in lockstep (default {loop_envs}, grape-train's)"
    )
    parser.add_argument("--max-steps", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per repeat (default 3)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats, each with its own episodes (default 1)")
    loop_default = RolloutConfig().samples_per_state
    parser.add_argument(
        "--samples-per-state",
        type=int,
        default=loop_default,
        help=f"episodes drawn from each initial state (default {loop_default}, grape-train's --samples-per-state; "
        "1: every episode its own scene and instruction, so the instruction encoder sees that many more new strings)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for name in ("episodes", "batch_envs", "max_steps", "rounds", "repeats", "samples_per_state"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    torch.set_num_threads(1)
    from trainer.loop import TRAIN_SPLIT
    from trainer.rollout import EnvPool, EpisodeSpec, collect_rollouts, shared_env_pool

    policy, source = load_policy(args.policy, args.sft_cache)
    pool = shared_env_pool()

    def specs(round_index: int) -> list[EpisodeSpec]:
        per_state = args.samples_per_state
        return [
            EpisodeSpec(args.task, TRAIN_SPLIT, 1000 * round_index + i // per_state, i % per_state)
            for i in range(args.episodes)
        ]

    # warm the pool with episodes of their own (the index after every measured round's)
    warm_up = specs(args.rounds * args.repeats)
    collect_rollouts(policy, warm_up, sample_seed=0, max_steps=args.max_steps, batch_envs=args.batch_envs)
    names = ("policy in the loop", "physics only", "policy, fresh worlds")
    totals = {name: [0, 0.0, 0.0] for name in names}  # steps, wall seconds, CPU seconds of this process
    # in-loop steps/s over physics-only steps/s, one per repeat, by wall-clock and by CPU time
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    exact_replays = 0

    def timed(row: list, run):
        wall, cpu = time.perf_counter(), time.process_time()
        result = run()
        row[1] += time.perf_counter() - wall
        row[2] += time.process_time() - cpu
        return result

    for repeat in range(args.repeats):
        mine = {name: [0, 0.0, 0.0] for name in names}
        for r in range(repeat * args.rounds, (repeat + 1) * args.rounds):
            rollouts, _ = timed(
                mine["policy in the loop"],
                lambda: collect_rollouts(
                    policy, specs(r), sample_seed=r, max_steps=args.max_steps, batch_envs=args.batch_envs
                ),
            )
            mine["policy in the loop"][0] += sum(x.episode.length for x in rollouts)
            steps, same = timed(mine["physics only"], lambda: replay(rollouts, pool, args.max_steps))
            mine["physics only"][0] += steps
            exact_replays += same
            fresh, _ = timed(
                mine["policy, fresh worlds"],
                lambda: collect_rollouts(
                    policy,
                    specs(r),
                    sample_seed=r,
                    max_steps=args.max_steps,
                    batch_envs=args.batch_envs,
                    env_pool=EnvPool(capacity=0),
                ),
            )
            mine["policy, fresh worlds"][0] += sum(x.episode.length for x in fresh)
        loop, physics = mine["policy in the loop"], mine["physics only"]
        for clock, column in (("wall", 1), ("cpu", 2)):
            ratios[clock].append((loop[0] / loop[column]) / (physics[0] / physics[column]))
        for name in names:
            totals[name] = [a + b for a, b in zip(totals[name], mine[name])]
    physics_wall = totals["physics only"][0] / totals["physics only"][1]
    physics_cpu = totals["physics only"][0] / totals["physics only"][2]
    rows = {
        name: {
            "steps": steps,
            "seconds": round(wall, 3),
            "steps_per_second": round(steps / wall, 1),
            "x_physics": round(steps / wall / physics_wall, 3),
            "cpu_seconds": round(cpu, 3),
            "x_physics_cpu": round(steps / cpu / physics_cpu, 3),
        }
        for name, (steps, wall, cpu) in totals.items()
    }
    result = {
        "policy": source,
        "task": args.task,
        "episodes_per_round": args.episodes,
        "samples_per_state": args.samples_per_state,
        "rounds": args.rounds,
        "repeats": args.repeats,
        "batch_envs": args.batch_envs,
        "replays_exact": f"{exact_replays}/{args.episodes * args.rounds * args.repeats}",
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    for clock, suffix in (("wall", ""), ("cpu", "_cpu")):
        result[f"in_loop_x_physics{suffix}_per_repeat"] = [round(x, 3) for x in ratios[clock]]
        result[f"in_loop_x_physics{suffix}_median"] = round(float(np.median(ratios[clock])), 3)
        result[f"in_loop_x_physics{suffix}_range"] = [round(min(ratios[clock]), 3), round(max(ratios[clock]), 3)]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"policy: {source}; {args.task}, {args.episodes} episodes ({args.samples_per_state} per initial state) "
        f"x {args.rounds} rounds x {args.repeats} repeats, "
        f"{args.batch_envs} envs in lockstep, "
        f"1 torch thread; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'row':<24} {'steps':>7} {'seconds':>8} {'steps/s':>8} {'x physics':>10} {'CPU s':>7} {'x (CPU)':>8}")
    for name, row in rows.items():
        print(
            f"{name:<24} {row['steps']:>7} {row['seconds']:>8.2f} {row['steps_per_second']:>8.1f} "
            f"{row['x_physics']:>10.2f} {row['cpu_seconds']:>7.2f} {row['x_physics_cpu']:>8.2f}"
        )
    print(f"physics-only replays identical to the recorded episodes at every step: {result['replays_exact']}")
    for clock, suffix in (("wall-clock", ""), ("CPU time", "_cpu")):
        low, high = result[f"in_loop_x_physics{suffix}_range"]
        each = ", ".join(f"{x:.2f}" for x in result[f"in_loop_x_physics{suffix}_per_repeat"])
        print(
            f"policy in the loop x physics per repeat, {clock}: median "
            f"{result[f'in_loop_x_physics{suffix}_median']:.2f} (min {low:.2f}, max {high:.2f}; {each})"
        )


if __name__ == "__main__":
    main()
