"""How much of a success's length and contacts a policy controls, and what an objective file asks.

An objective that grades successes (safety.grc: contact steps; efficiency.grc: travel and time)
can only teach what varies between the samples of one initial state, since every update compares
trajectories from the same state, and only what its score orders. This draws ``--samples``
sampled episodes (temperature 1, as a GRAPE iteration does) from each of ``--states`` initial
states per task and reports, per task (statistics: trainer/headroom.py):

- len within: the share of the variance of successes' length that lies between the samples of
  one state (the rest lies between states: the scene decides it); same for contact steps;
- best/mean: the mean over states of the shortest (least contacting) success over the state's
  mean success: what always keeping each state's best sample would give;
- len/expert: the successes' mean length over the scripted expert's on the same state;
- step/limit: mean translation per step over the per-axis step limit (the expert travels at
  the limit; the action box allows up to sqrt(3) times it on a diagonal);
- rho(speed, len): within-state rank correlation of a success's mean step size with its length;
- with ``--constraints FILE ...``: each file's within-state rank correlation of R_ext with length
  and with contact steps among successes. Two objectives that should steer apart must order
  successes differently.

    python bench/headroom.py                                  # cached default SFT policy
    python bench/headroom.py --constraints constraints/safety.grc constraints/efficiency.grc
    python bench/headroom.py --policy runs/x/iter_0004/policy --states 32 --samples 8 --json

Seeds: evaluation seeds from ``--seed-offset`` on (default 9000, beyond the offsets the
documented evaluations use), never training seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout import load_policy  # noqa: E402  (bench/rollout.py's policy resolution)

from trainer.sim.tasks import TASKS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", help="policy folder (default: the cached default SFT policy)")
    parser.add_argument("--sft-cache", default="cache/sft")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--states", type=int, default=24, help="initial states per task (default 24)")
    parser.add_argument("--samples", type=int, default=8, help="sampled episodes per initial state (default 8)")
    parser.add_argument("--seed-offset", type=int, default=9000)
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--constraints", nargs="*", default=[], help="objective files whose ranking to report")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.states < 1 or args.samples < 2 or args.seed_offset < 0:
        parser.error("--states must be >= 1, --samples >= 2 and --seed-offset >= 0")
    unknown = [task for task in args.tasks if task not in TASKS]
    if unknown:
        parser.error(f"--tasks: unknown task(s) {', '.join(unknown)}; known: {', '.join(sorted(TASKS))}")

    from trainer.eval import evaluation_specs
    from trainer.gcpg import GcpgWeights
    from trainer.headroom import objective_ranking, success_headroom
    from trainer.loop import TrainError, resolve_constraints, score_rollouts
    from trainer.rollout import EpisodeSpec, collect_rollouts
    from trainer.sim.vector import ExpertJob, collect_expert_episodes

    try:
        programs = {
            path: {tp.task: tp for tp in resolve_constraints(path, args.tasks, {})} for path in args.constraints
        }
    except TrainError as error:
        print(f"headroom: error: {error}", file=sys.stderr)
        return 1
    policy, source = load_policy(args.policy, args.sft_cache)
    states = evaluation_specs(args.tasks, ["in_domain"], args.states, args.seed_offset)
    specs = [EpisodeSpec(s.task, s.split, s.seed, k) for s in states for k in range(args.samples)]
    rollouts, _ = collect_rollouts(policy, specs, sample_seed=args.sample_seed, batch_envs=32)
    experts = collect_expert_episodes([ExpertJob(s.task, s.split, s.seed) for s in states])
    expert_lengths = {state.group: e.length for state, e in zip(states, experts, strict=True) if e.success}
    report = {"policy": source, "states_per_task": args.states, "samples": args.samples, "tasks": {}}
    members = {task: [i for i, r in enumerate(rollouts) if r.spec.task == task] for task in args.tasks}
    for task, indices in members.items():
        report["tasks"][task] = success_headroom([rollouts[i] for i in indices], expert_lengths)
    for path, by_task in programs.items():
        r_ext = np.asarray(score_rollouts(rollouts, by_task, GcpgWeights())["r_ext"])
        for task, indices in members.items():
            ranking = objective_ranking([rollouts[i] for i in indices], r_ext[indices])
            report["tasks"][task].setdefault("objectives", {})[Path(path).name] = ranking
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"policy: {source}; {args.states} states x {args.samples} samples per task, T = 1")
    print("task | success | len | len/expert | len within | len best/mean | contact within | clean+touching states | "
          "step/limit | rho(speed, len)")  # fmt: skip
    for task, t in report["tasks"].items():
        print(
            f"{task} | {t['success']:.2f} | {t['success_length_mean']:.1f} | {t['success_length_over_expert']:.3f} | "
            f"{t['length']['within_share']:.2f} | {t['length_best_of_group']:.3f} | "
            f"{t['contact_steps']['within_share']:.2f} | "
            f"{t['states_with_clean_and_touching_successes']}/{t['states_with_2_successes']} | "
            f"{t['step_over_axis_limit']:.2f} | {t['speed_length_rho_within_state']:+.2f}"
        )
    for path in programs:
        name = Path(path).name
        print(f"{name}: within-state rho of R_ext with length / with contact steps, among successes")
        for task, t in report["tasks"].items():
            o = t["objectives"][name]
            print(
                f"  {task}: {o['r_ext_length_rho']:+.2f} / {o['r_ext_contact_rho']:+.2f} ({o['states_ranked']} states)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
