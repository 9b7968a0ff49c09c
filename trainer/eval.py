"""Fixed-seed evaluation: success, grasp, collision rate and step length per split and task.

Evaluation seeds are the sim's `eval_seeds` (EVAL_SEED_BASE + i, optionally shifted by
`seed_offset`), disjoint from every training seed, and the same for every policy evaluated, so
two policies are compared on identical initial states. Actions are decoded greedily (arg-max
token per dimension), as OpenVLA is evaluated, or sampled at a temperature with a fixed seed;
each episode then draws from its own stream (seed, task, split, episode seed), so two policies
evaluated with one seed meet the same sampling noise episode by episode (trainer/paired.py
compares them pair by pair).

Rates carry 95% Wilson score intervals (sound at 0% and 100%, where the normal approximation
collapses to a zero-width interval); step length carries mean +- 1.96 standard errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from grape_dsl.util.atomic import atomic_write, atomic_write_text
from trainer.bounds import AT_LEAST_ONE, POSITIVE, SEED

Z_95 = 1.959963984540054
EVAL_SPLITS = ("in_domain", "subject", "physical", "semantic", "visual")
RATE_METRICS = ("success", "grasp", "collision")
EVAL_INFO_FILE = "eval_info.json"
EVAL_CONFIG_FILE = "eval_config.json"
"""The EvalConfig grape-eval ran with, saved in its output folder (`grape-eval --config FOLDER` replays it)."""


@dataclass
class EvalConfig:
    """Every setting of `grape-eval`: one flag per field, the docstring is its --help (trainer.flags)."""

    policy: str = field(default="", metadata={"required": True, "metavar": "RUN_OR_CHECKPOINT"})
    """A grape-train run folder (evaluates each iteration's checkpoint), a checkpoint folder, or a policy folder."""
    splits: list[str] = field(default_factory=lambda: list(EVAL_SPLITS))
    """Splits to evaluate."""
    tasks: list[str] | None = None
    """Tasks (default: the run's tasks, else all four stock tasks)."""
    episodes: int = field(default=10, metadata={"bounds": AT_LEAST_ONE})
    """Episodes per task and split."""
    seed_offset: int = 0
    """Skip this many evaluation seeds."""
    iterations: list[int] | None = None
    """With a run folder: only these iterations (default: all; 0 = the base policy)."""
    max_steps: int | None = field(default=None, metadata={"bounds": AT_LEAST_ONE})
    """Cap on steps per episode (default: each task's limit)."""
    batch_envs: int = field(default=24, metadata={"bounds": AT_LEAST_ONE})
    """Environments stepped in lockstep, one policy batch."""
    temperature: float | None = field(default=None, metadata={"bounds": POSITIVE})
    """Sample actions at this temperature (seeded by --seed) instead of greedy decoding (default: greedy)."""
    seed: int = field(default=0, metadata={"bounds": SEED})
    """Sampling seed with --temperature."""
    gifs: int = 1
    """GIFs per task of the last policy, first split (0 = none)."""
    output_dir: str | None = None
    """Where results go (default: <run or checkpoint>/eval)."""
    policy_type: Literal["auto", "embedded", "hf"] = "auto"
    """Kind of the policy folders: embedded, hf (an OpenVLA-style HF checkpoint), or auto (a folder written by this
    project names its kind; one with only a config.json is an HF checkpoint)."""
    trust_remote_code: bool = False
    """Let an HF checkpoint whose config.json names its own model code (auto_map) run that code."""
    action_stats: str | None = None
    """Action statistics of an HF checkpoint (JSON with q01/q99 per dimension; default: the folder's
    action_stats.json)."""
    unnorm_key: str | None = None
    """Which dataset's action statistics of an OpenVLA config.json (norm_stats) to use."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the policy runs: cuda (a GPU; an error if none is visible), cpu, or auto (cuda when available)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the policy's weights; log-probs stay float32."""

    def problems(self) -> list[str]:
        """Values argparse cannot judge; each names its flag. Ranges are in the fields' metadata
        (trainer.bounds; a number without one must be finite and >= 0)."""
        from trainer.bounds import dataclass_problems
        from trainer.sim.splits import SPLITS
        from trainer.sim.tasks import TASKS

        found = dataclass_problems(self)
        unknown = [s for s in self.splits if s not in SPLITS] + [t for t in (self.tasks or []) if t not in TASKS]
        if unknown:
            found.append(f"unknown split/task {unknown}; splits: {', '.join(SPLITS)}; tasks: {', '.join(TASKS)}")
        if self.device == "cuda" or self.dtype != "float32":  # the defaults need no torch to check
            from trainer.device import DeviceError, resolve

            try:
                resolve(self.device, self.dtype)
            except DeviceError as error:
                found.append(str(error))
        return found


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion successes / n."""
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1 trials")
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes {successes} outside [0, {n}]")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float, float]:
    """(mean, low, high): mean +- z standard errors (sample standard deviation, ddof=1)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = float(x.mean())
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size) if x.size > 1 else 0.0
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class EpisodeOutcome:
    """What evaluation keeps of one episode."""

    task: str
    split: str
    seed: int
    success: bool
    grasp: bool
    collision: bool
    length: int
    contact_steps: int = 0
    """Steps with the robot or the object touching the table (links other than the fingers), a
    distractor or the obstacle: what the stock objectives' collision terms count."""
    path_length: float = 0.0
    """Metres the gripper tip travelled: what the stock objectives' path terms count."""


CONTACT_SIGNALS = ("contact.obstacle", "contact.distractor", "contact.table")
TIP_KEYPOINT = "gripper.tip"


def contact_steps(episode: Any) -> int:
    """Steps of an Episode with any contact signal set (0 where it records none)."""
    columns = [episode.signal_names.index(name) for name in CONTACT_SIGNALS if name in episode.signal_names]
    if not columns or episode.signals.size == 0:
        return 0
    return int((episode.signals[:, columns] > 0.5).any(axis=1).sum())


def path_length(episode: Any) -> float:
    """Metres the gripper tip moved over an Episode's steps (0 where it records no tip)."""
    if TIP_KEYPOINT not in episode.keypoint_names or len(episode.keypoints) < 2:
        return 0.0
    tip = np.asarray(episode.keypoints[:, episode.keypoint_names.index(TIP_KEYPOINT)], dtype=np.float64)
    return float(np.linalg.norm(np.diff(tip, axis=0), axis=1).sum())


def summarize(outcomes: Sequence[EpisodeOutcome]) -> dict[str, Any]:
    """Metrics per split and task, per split over all tasks ("all"), and overall.

    Layout: {split: {task|"all": {"episodes": n, "success": {"rate", "ci95"}, "grasp": ...,
    "collision": ..., "step_length": {"mean", "ci95"}, "contact_steps": ..., "path_length": ...}}}.
    """

    def block(rows: list[EpisodeOutcome]) -> dict[str, Any]:
        n = len(rows)
        out: dict[str, Any] = {"episodes": n}
        for metric in RATE_METRICS:
            k = sum(bool(getattr(r, metric)) for r in rows)
            out[metric] = {"rate": k / n, "count": k, "ci95": list(wilson_interval(k, n))}
        for name, values in (
            ("step_length", [r.length for r in rows]),
            ("contact_steps", [r.contact_steps for r in rows]),
            ("path_length", [r.path_length for r in rows]),
        ):
            mean, low, high = mean_interval(values)
            out[name] = {"mean": mean, "ci95": [low, high]}
        return out

    result: dict[str, Any] = {}
    for split in sorted({o.split for o in outcomes}, key=_split_order):
        in_split = [o for o in outcomes if o.split == split]
        per_task = {task: block([o for o in in_split if o.task == task]) for task in sorted({o.task for o in in_split})}
        result[split] = {**per_task, "all": block(in_split)}
    return result


def _split_order(split: str) -> tuple[int, str]:
    return (EVAL_SPLITS.index(split) if split in EVAL_SPLITS else len(EVAL_SPLITS), split)


def write_eval_info(info: dict[str, Any], path: str | Path) -> Path:
    atomic_write_text(path, json.dumps(info, indent=2, sort_keys=False) + "\n")
    return Path(path)


def render_table(metrics: dict[str, Any], title: str = "evaluation") -> rich.table.Table:  # noqa: F821
    """A rich table, one row per (split, task), rates as percentages with their CIs."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("split", "task", "n", "success", "grasp", "collision", "steps"):
        table.add_column(column, justify="left" if column in ("split", "task") else "right")
    for split, tasks in metrics.items():
        for task, m in tasks.items():
            cells = [
                f"{100 * m[k]['rate']:5.1f}% [{100 * m[k]['ci95'][0]:.0f}, {100 * m[k]['ci95'][1]:.0f}]"
                for k in RATE_METRICS
            ]
            steps = m["step_length"]
            half = (steps["ci95"][1] - steps["ci95"][0]) / 2
            style = "bold" if task == "all" else None
            table.add_row(split, task, str(m["episodes"]), *cells, f"{steps['mean']:.1f} ± {half:.1f}", style=style)
    return table


def plot_iterations(per_iteration: dict[int, dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Success rate per split across iterations (iteration 0 = the base policy), with 95% CI
    bands, in the style of the paper's Fig. 6; one PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = sorted(per_iteration)
    splits = [s for s in EVAL_SPLITS if any(s in per_iteration[i] for i in iterations)]
    splits += sorted({s for i in iterations for s in per_iteration[i]} - set(splits))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for split in splits:
        xs = [i for i in iterations if split in per_iteration[i]]
        rates = [100 * per_iteration[i][split]["all"]["success"]["rate"] for i in xs]
        low = [100 * per_iteration[i][split]["all"]["success"]["ci95"][0] for i in xs]
        high = [100 * per_iteration[i][split]["all"]["success"]["ci95"][1] for i in xs]
        (line,) = ax.plot(xs, rates, marker="o", label=split)
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("GRAPE iteration (0 = base policy)")
    ax.set_ylabel("success rate (%)")
    ax.set_xticks(iterations)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------- running episodes
def evaluation_specs(tasks: Sequence[str], splits: Sequence[str], episodes: int, seed_offset: int = 0) -> list:
    """The fixed evaluation episodes: the sim's eval seeds (disjoint from training seeds)."""
    from trainer.rollout import EpisodeSpec
    from trainer.sim.splits import get_split

    specs = []
    for split in splits:
        seeds = get_split(split).eval_seeds(episodes + seed_offset)[seed_offset:]
        specs += [EpisodeSpec(task, split, seed) for task in tasks for seed in seeds]
    return specs


def evaluate_policy(
    policy: Any,
    tasks: Sequence[str],
    splits: Sequence[str],
    episodes: int,
    *,
    seed_offset: int = 0,
    max_steps: int | None = None,
    gif_dir: Path | None = None,
    gifs_per_task: int = 0,
    progress: bool = True,
    desc: str = "eval",
    batch_envs: int = 24,
    temperature: float | None = None,
    sample_seed: int = 0,
) -> tuple[list[EpisodeOutcome], list[Path]]:
    """Episodes on the fixed evaluation seeds, greedy (default) or sampled at `temperature`
    (each episode's stream seeded by `sample_seed` and the episode); optionally a few GIFs (first split only)."""
    from tqdm.auto import tqdm

    from trainer.rollout import collect_rollouts

    specs = evaluation_specs(tasks, splits, episodes, seed_offset)
    first_seeds = {(s.task, s.seed) for s in specs if s.split == splits[0]}
    chosen = {t: sorted(seed for task, seed in first_seeds if task == t)[:gifs_per_task] for t in tasks}

    def wants_frames(spec: Any) -> bool:
        return gif_dir is not None and spec.split == splits[0] and spec.seed in chosen[spec.task]

    with tqdm(total=len(specs), desc=desc, unit="ep", disable=not progress, leave=False) as bar:
        # One sampling stream per episode, from (sample_seed, episode): two policies evaluated with
        # the same seed see the same noise on every episode, whatever the other episodes do.
        rollouts, frames = collect_rollouts(
            policy,
            specs,
            greedy=not temperature,
            temperature=temperature or 1.0,
            sample_seed=sample_seed if temperature else None,
            max_steps=max_steps,
            batch_envs=batch_envs,
            on_episode=lambda _: bar.update(1),
            record_frames=wants_frames,
        )
    outcomes = [
        EpisodeOutcome(
            r.spec.task,
            r.spec.split,
            r.spec.seed,
            bool(r.episode.success),
            bool(r.episode.grasp),
            bool(r.episode.collision),
            r.episode.length,
            contact_steps(r.episode),
            round(path_length(r.episode), 5),
        )
        for r in rollouts
    ]
    gifs = []
    if gif_dir is not None:
        import imageio.v2 as imageio

        by_spec = {r.spec: r for r in rollouts}
        for spec, images in frames.items():
            outcome = "success" if by_spec[spec].episode.success else "fail"
            path = Path(gif_dir) / f"{spec.task}-{spec.split}-{spec.seed}-{outcome}.gif"
            with atomic_write(path, "wb") as f:
                imageio.mimsave(f, images, format="GIF", duration=1000 / 20, loop=0)
            gifs.append(path)
    return outcomes, gifs
