"""`grape-sim`: record expert demonstrations, evaluate the experts, render episodes, list tasks.

Exit status: 0 ok, 1 bad input (unknown task/split, bad seed, unreadable store), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  grape-sim tasks
  grape-sim demo --tasks all -n 200 --out data/demos --workers 2
  grape-sim demo --tasks pick_place stack -n 50 --noise 0.1 --out data/noisy
  grape-sim expert-eval --tasks all -n 100 --workers 2
  grape-sim expert-eval --tasks push_to_target --split physical --json
  grape-sim render --task pick_place_obstacle --seed 7 --out obstacle.gif
  grape-sim render --episode data/demos/stack-in_domain-0000000003-1a2b3c4d5e --out stack.mp4
"""


class CliError(Exception):
    """Bad input: printed to stderr, exit status 1."""


def _parse_tasks(values: list[str]) -> list[str]:
    from trainer.sim.tasks import get_task, task_names

    names = task_names(values)
    if not names:
        raise CliError("--tasks is empty (give task names, or 'all')")
    for name in names:
        get_task(name)
    return names


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=quiet, file=sys.stderr, dynamic_ncols=True)


def cmd_tasks(args: argparse.Namespace) -> int:
    from trainer.sim.env import ACTION_HIGH, CONTROL_HZ, STATE_NAMES
    from trainer.sim.splits import SPLITS
    from trainer.sim.tasks import SIGNAL_NAMES, TASKS

    data = {
        "tasks": {name: {"description": t.description, "keypoint_names": list(t.keypoint_names),
                         "signal_names": list(t.signal_names), "templates": list(t.templates)}
                  for name, t in TASKS.items()},
        "splits": {name: s.description for name, s in SPLITS.items()},
        "state_names": list(STATE_NAMES),
        "action": {"dims": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
                   "limits": [float(v) for v in ACTION_HIGH], "control_hz": CONTROL_HZ},
    }
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print("tasks:")
    for name, t in TASKS.items():
        print(f"  {name:<22} {t.description}")
        print(f"  {'':<22} keypoints: {', '.join(t.keypoint_names)}")
        print(f"  {'':<22} e.g. \"{t.templates[0]}\"")
    print(f"signals (every task): {', '.join(SIGNAL_NAMES)}")
    print("splits:")
    for name, s in SPLITS.items():
        print(f"  {name:<22} {s.description}")
    print(f"state ({len(STATE_NAMES)}): {', '.join(STATE_NAMES)}")
    print(f"action (7, {CONTROL_HZ} Hz): dx dy dz (|.| <= 0.02 m), droll dpitch dyaw (|.| <= 0.1 rad), gripper (> 0 close)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from trainer.sim.splits import Split, get_split
    from trainer.sim.vector import ExpertJob, collect_expert_episodes
    from trainer.store import write_episode

    tasks = _parse_tasks(args.tasks)
    split = get_split(args.split)
    # Demonstrations always come from training seeds, whatever the split, so that no evaluation
    # scene ever leaks into training data.
    seeds = Split.train_seeds(args.num, start=args.seed_start)
    jobs = [ExpertJob(task, split.name, seed, noise=args.noise, speed=args.speed, max_steps=args.max_steps)
            for task in tasks for seed in seeds]
    counts = {task: {"written": 0, "success": 0, "skipped": 0} for task in tasks}
    with _progress(len(jobs), "demos", args.quiet) as bar:
        for episode in collect_expert_episodes(jobs, workers=args.workers):
            c = counts[episode.task]
            c["success"] += int(episode.success)
            if episode.success or args.keep_failures:
                write_episode(args.out, episode, extra={"source": "expert", "noise": args.noise, "speed": args.speed})
                c["written"] += 1
            else:
                c["skipped"] += 1
            bar.update(1)
    if args.json:
        print(json.dumps({"out": str(args.out), "split": split.name, "tasks": counts}, indent=1))
    else:
        for task, c in counts.items():
            print(f"{task:<22} written {c['written']:>5}  expert successes {c['success']}/{len(seeds)}  skipped {c['skipped']}")
        print(f"store: {args.out}")
    return 0


def expert_eval(tasks: list[str], split: str, num: int, workers: int, quiet: bool = True,
                noise: float = 0.0, speed: float = 1.0) -> dict[str, dict[str, float]]:
    """Expert success, grasp, collision rates and mean length per task over the split's eval seeds."""
    from trainer.sim.splits import get_split
    from trainer.sim.vector import ExpertJob, collect_expert_episodes

    seeds = get_split(split).eval_seeds(num)
    jobs = [ExpertJob(task, split, seed, noise=noise, speed=speed) for task in tasks for seed in seeds]
    sums = {task: {"episodes": 0, "success": 0.0, "grasp": 0.0, "collision": 0.0, "length": 0.0} for task in tasks}
    with _progress(len(jobs), f"expert-eval {split}", quiet) as bar:
        for e in collect_expert_episodes(jobs, workers=workers):
            s = sums[e.task]
            s["episodes"] += 1
            s["success"] += e.success
            s["grasp"] += e.grasp
            s["collision"] += e.collision
            s["length"] += e.length
            bar.update(1)
    return {task: {"episodes": s["episodes"], **{k: s[k] / max(s["episodes"], 1) for k in ("success", "grasp", "collision", "length")}}
            for task, s in sums.items()}


def cmd_expert_eval(args: argparse.Namespace) -> int:
    from trainer.sim.splits import get_split

    tasks = _parse_tasks(args.tasks)
    get_split(args.split)
    table = expert_eval(tasks, args.split, args.num, args.workers, quiet=args.quiet or args.json,
                        noise=args.noise, speed=args.speed)
    if args.json:
        print(json.dumps({"split": args.split, "tasks": table}, indent=1))
        return 0
    knobs = "" if (args.noise, args.speed) == (0.0, 1.0) else f", noise={args.noise}, speed={args.speed}"
    print(f"scripted expert, split={args.split}, {args.num} eval seeds per task{knobs}")
    print(f"{'task':<22} {'success':>8} {'grasp':>7} {'collision':>10} {'length':>7}")
    for task, row in table.items():
        print(f"{task:<22} {row['success']:>8.2f} {row['grasp']:>7.2f} {row['collision']:>10.2f} {row['length']:>7.1f}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    import imageio.v2 as imageio
    import numpy as np

    from trainer.sim.env import CONTROL_HZ, make_env
    from trainer.sim.expert import Expert
    from trainer.store import read_episode

    if args.episode:
        stored = read_episode(args.episode)
        task, split, seed, actions = stored.task, stored.split, stored.seed, stored.actions
    else:
        if not args.task:
            raise CliError("render needs --task (with --seed) or --episode DIR")
        task, split, seed, actions = args.task, args.split, args.seed, None
    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise CliError(f"--out must end in .gif or .mp4, got '{out.name}'")
    env = make_env(task, split=split, seed=seed, max_steps=args.max_steps)
    try:
        obs, _ = env.reset()
        expert = Expert(task, noise=args.noise, brush=args.brush, seed=seed)
        frames = [env.render_frame(args.size)]
        steps = len(actions) if actions is not None else args.max_steps
        for t in range(steps):
            action = actions[t] if actions is not None else expert.act(obs["state"])
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render_frame(args.size))
            if terminated or truncated:
                break
        episode = env.episode()
    finally:
        env.close()
    frames += [frames[-1]] * (CONTROL_HZ // 2)  # hold the last frame so the ending is visible
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    if out.suffix.lower() == ".gif":
        imageio.mimsave(tmp, [np.asarray(f) for f in frames], format="GIF", duration=1000 / args.fps, loop=0)
    else:
        imageio.mimsave(tmp, frames, format="FFMPEG", fps=args.fps)
    tmp.replace(out)
    print(f"{out}: {len(frames)} frames; {task} seed {seed} ({split}): \"{episode.instruction}\" "
          f"success={episode.success} grasp={episode.grasp} collision={episode.collision} length={episode.length}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grape-sim", description=__doc__.splitlines()[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list tasks, splits and the observation/keypoint/signal schema")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("demo", help="record scripted-expert demonstrations into a trajectory store",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=["all"], metavar="TASK",
                   help="task names (`a b`; `a,b` works too), or 'all' (default)")
    p.add_argument("--split", default="in_domain", help="split to draw scenes from (default in_domain)")
    p.add_argument("-n", "--num", type=int, default=100, help="episodes per task (default 100)")
    p.add_argument("--seed-start", type=int, default=0, help="first training seed (seeds 0 .. 999,999; never evaluation seeds)")
    p.add_argument("--out", type=Path, required=True, help="store directory (created if missing)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--noise", type=float, default=0.0, help="expert translation noise, fraction of the step limit")
    p.add_argument("--speed", type=float, default=1.0, help="expert speed, fraction of the step limit (0, 1]")
    p.add_argument("--max-steps", type=int, default=120, help="episode step limit (default 120)")
    p.add_argument("--keep-failures", action="store_true", help="also store episodes the expert failed")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("expert-eval", help="expert success/grasp/collision/length per task over fixed eval seeds")
    p.add_argument("--tasks", nargs="+", default=["all"], metavar="TASK",
                   help="task names (`a b`; `a,b` works too), or 'all' (default)")
    p.add_argument("--split", default="in_domain", help="split (default in_domain)")
    p.add_argument("-n", "--num", type=int, default=100, help="eval seeds per task (default 100)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--noise", type=float, default=0.0, help="expert translation noise")
    p.add_argument("--speed", type=float, default=1.0, help="expert speed (0, 1]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_expert_eval)

    p = sub.add_parser("render", help="render an expert episode or a stored one to a GIF or MP4")
    p.add_argument("--task", help="task to roll the expert out in")
    p.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    p.add_argument("--split", default="in_domain", help="split (default in_domain)")
    p.add_argument("--episode", type=Path, help="a stored episode folder to replay instead")
    p.add_argument("--out", type=Path, required=True, help="output .gif or .mp4")
    p.add_argument("--size", type=int, default=256, help="frame size in pixels (default 256)")
    p.add_argument("--fps", type=int, default=20, help="frames per second (default 20, the control rate)")
    p.add_argument("--noise", type=float, default=0.0, help="expert noise")
    p.add_argument("--brush", type=float, default=0.0, help="expert carries this far below the obstacle top (m)")
    p.add_argument("--max-steps", type=int, default=120, help="episode step limit (default 120)")
    p.set_defaults(func=cmd_render)
    return parser


def main(argv: list[str] | None = None) -> int:
    from trainer.sim.tasks import UnknownNameError
    from trainer.store import StoreError

    args = build_parser().parse_args(argv)
    for name in ("num", "workers", "max_steps", "size", "fps"):
        if getattr(args, name, 1) is not None and getattr(args, name, 1) < 1:
            print(f"grape-sim: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (CliError, UnknownNameError, StoreError, ValueError) as exc:
        print(f"grape-sim {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("grape-sim: interrupted (stored episodes are complete; temp folders are ignored)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
