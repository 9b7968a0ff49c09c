"""`grape-sim`: record expert demonstrations, evaluate the experts, render episodes, list tasks, export datasets.

Each subcommand's flags are the fields of one dataclass below (DemoConfig, ExpertEvalConfig,
RenderConfig, ExportConfig), turned into argparse by trainer.flags; `--config FILE` replays one (`demo` saves
the config it ran with in its store as demo_config.json). Exit status as every trainer command
(trainer.command): 0 ok, 1 failure (bad seed, unreadable store), 2 usage (a bad flag value, an
unknown task or split name), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES = """examples:
  grape-sim tasks
  grape-sim demo --tasks all -n 200 --out data/demos --workers 2
  grape-sim demo --tasks pick_place stack -n 50 --noise 0.1 --out data/noisy
  grape-sim expert-eval --tasks all -n 100 --workers 2
  grape-sim expert-eval --tasks push_to_target --split physical --json
  grape-sim render --task pick_place_obstacle --seed 7 --out obstacle.gif
  grape-sim render --episode data/demos/stack-in_domain-0000000003-1a2b3c4d5e --out stack.mp4
  grape-sim export data/demos --out exports/demos                 # a LeRobotDataset v3.0 folder
  grape-sim export runs/grape --out exports/grape --tasks stack   # every iteration, scores and pairs
  grape-sim demo --config data/demos --out data/more --seed-start 100
      the settings of an earlier recording (saved in its store) into another store, other seeds
"""
DEMO_CONFIG_FILE = "demo_config.json"
"""The DemoConfig of the last `grape-sim demo` into a store, saved in that store (`--config STORE` replays it)."""


@dataclass
class DemoConfig:
    """`grape-sim demo`: record scripted-expert demonstrations into a trajectory store."""

    out: str = field(default="", metadata={"required": True, "metavar": "STORE"})
    """Store directory (created if missing)."""
    tasks: list[str] = field(default_factory=lambda: ["all"])
    """Task names (`a b`; `a,b` works too), or 'all'."""
    split: str = "in_domain"
    """Split to draw scenes from."""
    num: int = field(default=100, metadata={"aliases": ("-n",)})
    """Episodes per task."""
    seed_start: int = 0
    """First training seed (seeds 0 .. 999,999; never evaluation seeds)."""
    workers: int = 1
    """Worker processes."""
    noise: float = 0.0
    """Expert translation noise, fraction of the step limit."""
    speed: float = 1.0
    """Expert speed, fraction of the step limit (0, 1]."""
    max_steps: int = 120
    """Episode step limit."""
    keep_failures: bool = False
    """Also store episodes the expert failed."""

    def problems(self) -> list[str]:
        return _at_least_one(num=self.num, workers=self.workers, max_steps=self.max_steps)


@dataclass
class ExpertEvalConfig:
    """`grape-sim expert-eval`: expert success/grasp/collision/length per task over fixed eval seeds."""

    tasks: list[str] = field(default_factory=lambda: ["all"])
    """Task names (`a b`; `a,b` works too), or 'all'."""
    split: str = "in_domain"
    """Split of the evaluation seeds."""
    num: int = field(default=100, metadata={"aliases": ("-n",)})
    """Eval seeds per task."""
    workers: int = 1
    """Worker processes."""
    noise: float = 0.0
    """Expert translation noise."""
    speed: float = 1.0
    """Expert speed (0, 1]."""

    def problems(self) -> list[str]:
        return _at_least_one(num=self.num, workers=self.workers)


@dataclass
class RenderConfig:
    """`grape-sim render`: render an expert episode or a stored one to a GIF or MP4."""

    out: str = field(default="", metadata={"required": True, "metavar": "FILE"})
    """Output .gif or .mp4."""
    task: str | None = None
    """Task to roll the expert out in."""
    seed: int = 0
    """Scene seed."""
    split: str = "in_domain"
    """Split."""
    episode: str | None = None
    """A stored episode folder to replay instead."""
    size: int = 256
    """Frame size in pixels."""
    fps: int = 20
    """Frames per second (20 = the control rate)."""
    noise: float = 0.0
    """Expert noise."""
    brush: float = 0.0
    """Expert carries this far below the obstacle top (m)."""
    max_steps: int = 120
    """Episode step limit."""

    def problems(self) -> list[str]:
        return _at_least_one(size=self.size, fps=self.fps, max_steps=self.max_steps)


@dataclass
class ExportConfig:
    """`grape-sim export`: a store, a GRAPE run or one iteration as a LeRobotDataset v3.0 folder (docs/export.md)."""

    source: str = field(default="", metadata={"positional": True, "required": True, "metavar": "SOURCE"})
    """A trajectory store, a run folder, or a run's iterations/iter_k."""
    out: str = field(default="", metadata={"required": True, "metavar": "DIR"})
    """Dataset folder to write (written whole, atomically)."""
    tasks: list[str] | None = None
    """Only these tasks' episodes (default: all)."""
    fps: int | None = None
    """Frames per second recorded in info.json (default: 20, the control rate)."""
    file_size_mb: float = 100.0
    """Start a new data file past this size."""
    chunks_size: int = 1000
    """Data files per chunk folder."""
    overwrite: bool = False
    """Replace an existing, non-empty --out."""

    def problems(self) -> list[str]:
        return _at_least_one(chunks_size=self.chunks_size, **({"fps": self.fps} if self.fps is not None else {}))


def _at_least_one(**values: int) -> list[str]:
    return [f"--{name.replace('_', '-')} must be >= 1, got {value}" for name, value in values.items() if value < 1]


class CliError(Exception):
    """Bad input: printed to stderr, exit status 1."""


def _parse_tasks(values: list[str]) -> list[str]:
    """Task names from `a b`, `a,b` or 'all'; an unknown name is a usage error."""
    from trainer.command import UsageError
    from trainer.sim.tasks import get_task, task_names

    names = task_names(values)
    if not names:
        raise UsageError("--tasks is empty (give task names, or 'all')")
    for name in names:
        get_task(name)
    return names


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ep", disable=quiet, file=sys.stderr, dynamic_ncols=True)


def cmd_tasks(config: None, args: argparse.Namespace) -> int:
    from trainer.sim.env import ACTION_HIGH, CONTROL_HZ, STATE_NAMES
    from trainer.sim.splits import SPLITS
    from trainer.sim.tasks import SIGNAL_NAMES, TASKS

    data = {
        "tasks": {
            name: {
                "description": t.description,
                "keypoint_names": list(t.keypoint_names),
                "signal_names": list(t.signal_names),
                "templates": list(t.templates),
            }
            for name, t in TASKS.items()
        },
        "splits": {name: s.description for name, s in SPLITS.items()},
        "state_names": list(STATE_NAMES),
        "action": {
            "dims": ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"],
            "limits": [float(v) for v in ACTION_HIGH],
            "control_hz": CONTROL_HZ,
        },
    }
    if args.json:
        print(json.dumps(data, indent=1))
        return 0
    print("tasks:")
    for name, t in TASKS.items():
        print(f"  {name:<22} {t.description}")
        print(f"  {'':<22} keypoints: {', '.join(t.keypoint_names)}")
        print(f'  {"":<22} e.g. "{t.templates[0]}"')
    print(f"signals (every task): {', '.join(SIGNAL_NAMES)}")
    print("splits:")
    for name, s in SPLITS.items():
        print(f"  {name:<22} {s.description}")
    print(f"state ({len(STATE_NAMES)}): {', '.join(STATE_NAMES)}")
    print(
        f"action (7, {CONTROL_HZ} Hz): dx dy dz (|.| <= 0.02 m), droll dpitch dyaw (|.| <= 0.1 rad), "
        "gripper (> 0 close)"
    )
    return 0


def cmd_demo(config: DemoConfig, args: argparse.Namespace) -> int:
    from trainer.flags import save_config
    from trainer.sim.splits import Split, get_split
    from trainer.sim.vector import ExpertJob, collect_expert_episodes
    from trainer.store import write_episode

    tasks = _parse_tasks(config.tasks)
    split = get_split(config.split)
    # Demonstrations always come from training seeds, whatever the split, so that no evaluation
    # scene ever leaks into training data.
    seeds = Split.train_seeds(config.num, start=config.seed_start)
    jobs = [
        ExpertJob(task, split.name, seed, noise=config.noise, speed=config.speed, max_steps=config.max_steps)
        for task in tasks
        for seed in seeds
    ]
    out = Path(config.out)
    counts = {task: {"written": 0, "success": 0, "skipped": 0} for task in tasks}
    with _progress(len(jobs), "demos", args.quiet) as bar:
        for episode in collect_expert_episodes(jobs, workers=config.workers):
            c = counts[episode.task]
            c["success"] += int(episode.success)
            if episode.success or config.keep_failures:
                write_episode(out, episode, extra={"source": "expert", "noise": config.noise, "speed": config.speed})
                c["written"] += 1
            else:
                c["skipped"] += 1
            bar.update(1)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / DEMO_CONFIG_FILE)
    if args.json:
        print(json.dumps({"out": str(out), "split": split.name, "tasks": counts}, indent=1))
    else:
        for task, c in counts.items():
            print(
                f"{task:<22} written {c['written']:>5}  expert successes {c['success']}/{len(seeds)}  "
                f"skipped {c['skipped']}"
            )
        print(f"store: {out}")
    return 0


def expert_eval(
    tasks: list[str], split: str, num: int, workers: int, quiet: bool = True, noise: float = 0.0, speed: float = 1.0
) -> dict[str, dict[str, float]]:
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
    return {
        task: {
            "episodes": s["episodes"],
            **{k: s[k] / max(s["episodes"], 1) for k in ("success", "grasp", "collision", "length")},
        }
        for task, s in sums.items()
    }


def cmd_expert_eval(config: ExpertEvalConfig, args: argparse.Namespace) -> int:
    from trainer.sim.splits import get_split

    tasks = _parse_tasks(config.tasks)
    get_split(config.split)
    table = expert_eval(
        tasks,
        config.split,
        config.num,
        config.workers,
        quiet=args.quiet or args.json,
        noise=config.noise,
        speed=config.speed,
    )
    if args.json:
        print(json.dumps({"split": config.split, "tasks": table}, indent=1))
        return 0
    knobs = "" if (config.noise, config.speed) == (0.0, 1.0) else f", noise={config.noise}, speed={config.speed}"
    print(f"scripted expert, split={config.split}, {config.num} eval seeds per task{knobs}")
    print(f"{'task':<22} {'success':>8} {'grasp':>7} {'collision':>10} {'length':>7}")
    for task, row in table.items():
        print(f"{task:<22} {row['success']:>8.2f} {row['grasp']:>7.2f} {row['collision']:>10.2f} {row['length']:>7.1f}")
    return 0


def _count_frames(path: Path) -> int:
    """Frames the written file holds (a GIF writer merges identical consecutive frames, so this
    can be fewer than were rendered)."""
    import imageio.v2 as imageio

    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as image:
            return int(image.n_frames)
    with imageio.get_reader(path, format="FFMPEG") as reader:
        return int(reader.count_frames())


def cmd_render(config: RenderConfig, args: argparse.Namespace) -> int:
    import imageio.v2 as imageio
    import numpy as np

    from trainer.sim.env import CONTROL_HZ, make_env
    from trainer.sim.expert import Expert
    from trainer.store import read_episode

    if config.episode:
        stored = read_episode(config.episode)
        task, split, seed, actions = stored.task, stored.split, stored.seed, stored.actions
    else:
        if not config.task:
            raise CliError("render needs --task (with --seed) or --episode DIR")
        task, split, seed, actions = config.task, config.split, config.seed, None
    out = Path(config.out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise CliError(f"--out must end in .gif or .mp4, got '{out.name}'")
    env = make_env(task, split=split, seed=seed, max_steps=config.max_steps)
    try:
        obs, _ = env.reset()
        expert = Expert(task, noise=config.noise, brush=config.brush, seed=seed)
        frames = [env.render_frame(config.size)]
        steps = len(actions) if actions is not None else config.max_steps
        for t in range(steps):
            action = actions[t] if actions is not None else expert.act(obs["state"])
            obs, _, terminated, truncated, _ = env.step(action)
            frames.append(env.render_frame(config.size))
            if terminated or truncated:
                break
        episode = env.episode()
    finally:
        env.close()
    hold = CONTROL_HZ // 2  # show the last frame this many frame-times longer, so the ending is visible
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}")
    if out.suffix.lower() == ".gif":
        # A GIF frame carries its own duration: the hold is one longer last frame.
        durations = [1000 / config.fps] * (len(frames) - 1) + [1000 / config.fps * (1 + hold)]
        imageio.mimsave(tmp, [np.asarray(f) for f in frames], format="GIF", duration=durations, loop=0)
    else:
        imageio.mimsave(tmp, frames + [frames[-1]] * hold, format="FFMPEG", fps=config.fps)
    written = _count_frames(tmp)
    tmp.replace(out)
    print(
        f'{out}: {written} frames; {task} seed {seed} ({split}): "{episode.instruction}" '
        f"success={episode.success} grasp={episode.grasp} collision={episode.collision} length={episode.length}"
    )
    return 0


def cmd_export(config: ExportConfig, args: argparse.Namespace) -> int:
    from trainer.export import export_lerobot

    tasks = _parse_tasks(config.tasks) if config.tasks else None
    summary = export_lerobot(
        Path(config.source),
        Path(config.out),
        tasks=tasks,
        fps=config.fps,
        data_file_mb=config.file_size_mb,
        chunks_size=config.chunks_size,
        overwrite=config.overwrite,
    )
    report = {
        "out": str(summary.out),
        "source": config.source,
        "source_kind": summary.source_kind,
        "episodes": summary.episodes,
        "frames": summary.frames,
        "tasks": summary.tasks,
        "data_files": summary.data_files,
        "pairs": summary.pairs,
    }
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(
            f"{summary.out}: LeRobotDataset v3.0 from a {summary.source_kind} ({config.source}): "
            f"{summary.episodes} episodes, {summary.frames} frames, {summary.tasks} instructions, "
            f"{summary.data_files} data file(s)"
            + (f", {summary.pairs} pairs" if summary.source_kind != "store" else "")
        )
    return 0


SUBCOMMANDS: dict[str, tuple[type | None, str]] = {
    "tasks": (None, "list tasks, splits and the observation/keypoint/signal schema"),
    "demo": (DemoConfig, "record scripted-expert demonstrations into a trajectory store"),
    "expert-eval": (ExpertEvalConfig, "expert success/grasp/collision/length per task over fixed eval seeds"),
    "render": (RenderConfig, "render an expert episode or a stored one to a GIF or MP4"),
    "export": (ExportConfig, "write a store, a GRAPE run or one iteration as a LeRobotDataset v3.0 folder"),
}
COMMANDS = {
    "tasks": cmd_tasks,
    "demo": cmd_demo,
    "expert-eval": cmd_expert_eval,
    "render": cmd_render,
    "export": cmd_export,
}


def build_parser() -> argparse.ArgumentParser:
    from trainer.flags import add_config_arguments, add_config_file_argument

    parser = argparse.ArgumentParser(
        prog="grape-sim",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (config_class, summary) in SUBCOMMANDS.items():
        p = sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if config_class is not None:
            add_config_arguments(p, config_class)
            add_config_file_argument(
                p, DEMO_CONFIG_FILE if config_class is DemoConfig else None
            )  # the others save nothing
        p.add_argument("--json", action="store_true", help="print JSON")
        if name in ("demo", "expert-eval"):
            p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        p.set_defaults(subparser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from trainer.command import run_command
    from trainer.export import ExportError

    parser = build_parser()
    return run_command(
        "grape-sim",
        lambda: _main(parser, argv),
        parser=parser,
        failures=(CliError, ExportError, ValueError),
        interrupted="interrupted (stored episodes are complete; temp folders are ignored)",
    )


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    from trainer.command import CommandError, UsageError
    from trainer.flags import config_and_rest
    from trainer.sim.tasks import UnknownNameError
    from trainer.store import StoreError

    args = parser.parse_args(argv)
    subparser, config_class = args.subparser, SUBCOMMANDS[args.command][0]
    del args.subparser
    config = None
    if config_class is not None:
        saved_as = DEMO_CONFIG_FILE if config_class is DemoConfig else None
        config, args = config_and_rest(subparser, config_class, args, saved_as)
        problems = config.problems()
        if problems:
            raise UsageError("; ".join(problems))
    try:
        return COMMANDS[args.command](config, args)
    except UnknownNameError as error:  # a task or split name the user typed
        raise UsageError(f"{args.command}: {error}") from None
    except StoreError as error:
        raise CommandError(f"{args.command}: {error}") from None


if __name__ == "__main__":
    sys.exit(main())
