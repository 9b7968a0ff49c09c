"""`grape-experiment`: the paper's experiments on our pybullet suite, from one SFT policy.

The plan is data: `PLAN` lists every run (the SFT baseline, step-wise DPO, GRAPE-TC with
evaluation after each iteration, the Table I reward ablations, the Table II objectives) and
`TABLES` says which runs make up which table. `run_experiment` executes the runs that are not
done yet, in order, each in its own folder:

    <out>/experiment.json                 preset, seed, SFT policy, splits (checked on resume)
    <out>/commands.sh                     the equivalent grape-train / grape-eval commands
    <out>/runs/<name>/train/              a grape-train run folder (resumed by the loop itself)
    <out>/runs/<name>/eval/iter_000k.json one summary per evaluated checkpoint
    <out>/runs/<name>/eval_info.json      grape-eval's layout, every evaluated iteration
    <out>/runs/<name>/done.json           written last, atomically: the run is complete
    <out>/report.md, <out>/plots/*.png    tables and figures, re-rendered after every run

A killed experiment resumes with the same command: completed runs are skipped (done.json),
a run killed while training resumes after its newest checkpoint through the loop's own resume,
and a run killed while evaluating keeps every checkpoint's summary already written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.atomic import atomic_write, atomic_write_text
from trainer.bounds import SEED, namespace_problems
from trainer.config import STOCK_TASKS, OptimConfig, PolicyConfig, TrainConfig, validate

EXPERIMENT_FILE = "experiment.json"
DONE_FILE = "done.json"
REPORT_FILE = "report.md"
CONSTRAINTS_DIR = Path(__file__).resolve().parents[1] / "constraints"
STATE_SPLITS = ("in_domain", "subject", "physical", "semantic")
"""Splits every policy is evaluated on; `visual` is added only for policies that see pixels."""
TABLE2_SPLIT = "in_domain"


class ExperimentError(Exception):
    """A problem with the user's input or output folder, reported as one message (exit 1)."""


# ---------------------------------------------------------------------- presets
EVAL_SAMPLE_SEED = 0
"""Seed of the action-sampling generator when a preset evaluates with sampling: the same for every policy."""

@dataclass(frozen=True)
class Preset:
    """The sizes of one experiment; every run of the plan uses the same ones."""

    name: str
    iterations: int
    """GRAPE iterations K of every trained run."""
    states_per_task: int
    samples_per_state: int
    m: int
    epochs: int
    pairs_per_step: int
    eval_episodes: int
    """Evaluation episodes per task and split (a table cell pools the tasks of a split)."""
    tasks: tuple[str, ...] = STOCK_TASKS
    sft_demos: int | None = None
    """Demonstrations per task of the SFT policy (None: grape-sft's recipe)."""
    sft_steps: int | None = None
    sft_tasks: tuple[str, ...] | None = None
    """Tasks the SFT policy learns (None: grape-sft's recipe, all stock tasks)."""
    max_steps: int | None = None
    # Training settings default to grape-train's own.
    lr: float = OptimConfig.lr
    """Learning rate of every trained run (grape-train --lr)."""
    ref_update: str = OptimConfig.ref_update
    """Reference policy of the preference losses (grape-train --ref-update)."""
    nll_weight: float = OptimConfig.nll_weight
    """NLL on the chosen trajectories added to the preference losses (grape-train --nll-weight)."""
    lora_targets: str = PolicyConfig.lora_targets
    """Layers the LoRA adapter adapts (grape-train --lora-targets)."""
    eval_temperature: float | None = None
    """None: evaluate with greedy (arg-max) decoding; else sample actions at this temperature, with one
    generator seeded with EVAL_SAMPLE_SEED for every policy (grape-eval --temperature T --seed 0)."""

    @property
    def episodes_per_cell(self) -> int:
        return self.eval_episodes * len(self.tasks)


PRESETS: dict[str, Preset] = {
    # Sized from measured per-episode and per-iteration times (docs/experiments.md, "Budget").
    # Training settings from docs/results.md "Choosing the full preset's settings": the paper's pure TPO at lr 5e-4
    # collapsed greedy success (41.5% -> 8%); the NLL term on chosen trajectories and a per-iteration reference
    # kept it; the aligned policy is the sampling distribution, so that is what is evaluated.
    "full": Preset("full", iterations=3, states_per_task=8, samples_per_state=8, m=2, epochs=2, pairs_per_step=8,
                   eval_episodes=25, eval_temperature=1.0),
    "quick": Preset("quick", iterations=2, states_per_task=2, samples_per_state=4, m=1, epochs=1, pairs_per_step=4,
                    eval_episodes=2, tasks=("pick_place",), sft_demos=6, sft_steps=60, sft_tasks=("pick_place",), max_steps=60),
}


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class RunSpec:
    """One run of the plan: how it trains (nothing, for the SFT baseline) and what it shows."""

    name: str
    """Folder name under runs/ and the key in tables."""
    label: str
    description: str
    loss: str | None = "tpo"
    """None: evaluation of the SFT policy only."""
    objective: str = "task_completion.grc"
    lambda_self: float = 0.1
    lambda_ext: float = 1.0
    lambda_success: float = 1.0
    pairing: str = "gcpg"
    eval_every_iteration: bool = False
    """Evaluate every checkpoint (Fig. 6) rather than only the last."""

    @property
    def trains(self) -> bool:
        return self.loss is not None


PLAN: tuple[RunSpec, ...] = (
    RunSpec("sft", "SFT", "the SFT policy every other run starts from (evaluation only)", loss=None),
    RunSpec("grape_tc", "GRAPE-TC", "TPO on R_GCPG under the task-completion objective; evaluated after every iteration",
            eval_every_iteration=True),
    RunSpec("step_dpo", "step-DPO", "per-step DPO on the same GCPG pairs (the OpenVLA-DPO baseline)", loss="dpo-step"),
    RunSpec("random_success", "Random w/ I_success", "pairs drawn at random among successes vs failures of each initial state",
            pairing="random-success"),
    RunSpec("no_r_self", "GRAPE w/o R_self", "GCPG with lambda_self = 0", lambda_self=0.0),
    RunSpec("no_r_ext", "GRAPE w/o R_ext", "GCPG with lambda_ext = 0 (no guided costs)", lambda_ext=0.0),
    RunSpec("no_success", "GRAPE w/o I_success", "GCPG with lambda_success = 0", lambda_success=0.0),
    RunSpec("grape_safety", "GRAPE-Safety", "TPO under constraints/safety.grc", objective="safety.grc"),
    RunSpec("grape_efficiency", "GRAPE-Efficiency", "TPO under constraints/efficiency.grc", objective="efficiency.grc"),
)


@dataclass(frozen=True)
class TableSpec:
    key: str
    title: str
    rows: tuple[tuple[str, str], ...]
    """(run name, row label)."""
    kind: str
    """"splits": success per split; "objectives": collision, step length, success on TABLE2_SPLIT."""


TABLES: tuple[TableSpec, ...] = (
    TableSpec("baselines", "Baselines: success rate per split",
              (("sft", "SFT"), ("step_dpo", "step-DPO"), ("grape_tc", "GRAPE-TC (TPO)")), "splits"),
    TableSpec("table1", "Table I: reward ablation, success rate per split",
              (("random_success", "Random w/ I_success"), ("no_r_self", "GRAPE w/o R_self"),
               ("no_r_ext", "GRAPE w/o R_ext"), ("no_success", "GRAPE w/o I_success"), ("grape_tc", "GRAPE (full)")),
              "splits"),
    TableSpec("table2", f"Table II: objectives ({TABLE2_SPLIT} split)",
              (("sft", "SFT"), ("grape_tc", "GRAPE-TC"), ("grape_safety", "GRAPE-Safety"),
               ("grape_efficiency", "GRAPE-Efficiency")), "objectives"),
)


def get_run(name: str) -> RunSpec:
    for run in PLAN:
        if run.name == name:
            return run
    raise ExperimentError(f"unknown run '{name}'; the plan has: {', '.join(r.name for r in PLAN)}")


def train_config(run: RunSpec, preset: Preset, out: Path, seed: int, policy_dir: str,
                 constraints_dir: Path = CONSTRAINTS_DIR) -> TrainConfig:
    """The grape-train configuration of a trained run: the preset's sizes, the run's reward."""
    from trainer.config import GcpgConfig, RolloutConfig

    if not run.trains:
        raise ValueError(f"run {run.name} is evaluation only")
    return TrainConfig(
        constraints=str(constraints_dir / run.objective),
        iterations=preset.iterations,
        seed=seed,
        output_dir=str(run_dir(out, run.name) / "train"),
        policy=PolicyConfig(base_policy=policy_dir, lora_targets=preset.lora_targets),
        rollout=RolloutConfig(tasks=list(preset.tasks), states_per_task=preset.states_per_task,
                              samples_per_state=preset.samples_per_state, max_steps=preset.max_steps),
        gcpg=GcpgConfig(lambda_self=run.lambda_self, lambda_ext=run.lambda_ext, lambda_success=run.lambda_success,
                        m=preset.m, pairing=run.pairing),
        optim=OptimConfig(loss=run.loss, epochs=preset.epochs, pairs_per_step=preset.pairs_per_step, lr=preset.lr,
                          ref_update=preset.ref_update, nll_weight=preset.nll_weight),
    )


def train_argv(config: TrainConfig) -> list[str]:
    """The grape-train flags that reproduce `config` (fields left at their default omitted)."""
    from trainer.config import _SUBCONFIGS  # the one mapping of sub-config names to classes

    default = TrainConfig().to_dict()
    current = config.to_dict()
    argv: list[str] = []

    def emit(cls: type, values: dict[str, Any], defaults: dict[str, Any]) -> None:
        for f in dataclasses.fields(cls):
            if f.name in _SUBCONFIGS or values[f.name] == defaults[f.name]:
                continue
            flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
            value = values[f.name]
            if isinstance(value, list):
                argv.extend([flag, *map(str, value)])
            else:
                argv.extend([flag, str(value)])

    emit(TrainConfig, current, default)
    for name, cls in _SUBCONFIGS.items():
        emit(cls, current[name], default[name])
    return argv


def run_dir(out: Path, name: str) -> Path:
    return Path(out) / "runs" / name


def is_done(out: Path, name: str) -> bool:
    return (run_dir(out, name) / DONE_FILE).is_file()


def evaluated_iterations(run: RunSpec, preset: Preset) -> list[int]:
    """Checkpoints evaluated: none but the policy itself for SFT; 1..K or K for trained runs.

    Iteration 0 of every trained run is the SFT policy with an identity LoRA adapter (B = 0),
    so its evaluation is the SFT run's and is not repeated.
    """
    if not run.trains:
        return [0]
    return list(range(1, preset.iterations + 1)) if run.eval_every_iteration else [preset.iterations]


# ---------------------------------------------------------------------- experiment state
@dataclass
class Experiment:
    """What an output folder is an experiment of; saved in experiment.json, checked on resume."""

    preset: Preset
    seed: int
    policy_dir: str
    splits: list[str]
    pixels: bool
    runs: list[str]
    command: str = ""
    started: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["preset"]["tasks"] = list(self.preset.tasks)
        if self.preset.sft_tasks is not None:
            data["preset"]["sft_tasks"] = list(self.preset.sft_tasks)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Experiment":
        preset = dict(data["preset"])
        preset["tasks"] = tuple(preset["tasks"])
        if preset.get("sft_tasks") is not None:
            preset["sft_tasks"] = tuple(preset["sft_tasks"])
        return cls(**{**data, "preset": Preset(**preset)})


def load_experiment(out: Path) -> Experiment:
    path = Path(out) / EXPERIMENT_FILE
    if not path.is_file():
        raise ExperimentError(f"{out} is not an experiment folder (no {EXPERIMENT_FILE}); run `grape-experiment paper --out {out}` first")
    try:
        return Experiment.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ExperimentError(f"{path}: unreadable ({error})") from None


def _experiment_differences(saved: Experiment, current: Experiment) -> list[str]:
    a, b = saved.to_dict(), current.to_dict()
    keys = ("preset", "seed", "policy_dir", "splits")
    return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in keys if a[k] != b[k]]


def open_experiment(out: Path, current: Experiment) -> Experiment:
    """Create the folder's experiment.json, or check the saved one matches (resume)."""
    out = Path(out)
    path = out / EXPERIMENT_FILE
    if path.is_file():
        saved = load_experiment(out)
        differences = _experiment_differences(saved, current)
        if differences:
            raise ExperimentError(
                f"{out} holds an experiment made with other settings; resume it with the same options or choose "
                "another --out. Differences (saved -> now):\n  " + "\n  ".join(differences))
        saved.runs = list(dict.fromkeys([*saved.runs, *current.runs]))
        atomic_write_text(path, json.dumps(saved.to_dict(), indent=2) + "\n")
        return saved
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ExperimentError(f"--out {out} exists and is not an experiment folder (no {EXPERIMENT_FILE}); choose an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(current.to_dict(), indent=2) + "\n")
    return current


def commands_script(exp: Experiment, out: Path) -> str:
    """Shell lines equivalent to the experiment, run by run (for the record and by hand)."""
    lines = ["#!/bin/sh", "# Written by grape-experiment; the same runs by hand, one grape-train / grape-eval per run.",
             f"# {exp.command}", "set -e"]
    splits = " ".join(exp.splits)
    tasks = " ".join(exp.preset.tasks)
    for name in exp.runs:
        run = get_run(name)
        lines.append(f"\n# {run.name}: {run.description}")
        eval_common = (f"--splits {splits} --tasks {tasks} --episodes {exp.preset.eval_episodes} --gifs 0"
                       + (f" --max-steps {exp.preset.max_steps}" if exp.preset.max_steps else "")
                       + (f" --temperature {exp.preset.eval_temperature:g} --seed {EVAL_SAMPLE_SEED}"
                          if exp.preset.eval_temperature is not None else ""))
        if run.trains:
            config = train_config(run, exp.preset, out, exp.seed, exp.policy_dir)
            lines.append(shlex.join(["grape-train", *train_argv(config)]))
            iterations = " ".join(map(str, evaluated_iterations(run, exp.preset)))
            lines.append(f"grape-eval --policy {shlex.quote(config.output_dir)} --iterations {iterations} {eval_common} "
                         f"--output-dir {shlex.quote(str(run_dir(out, name) / 'eval'))}")
        else:
            lines.append(f"grape-eval --policy {shlex.quote(exp.policy_dir)} {eval_common} "
                         f"--output-dir {shlex.quote(str(run_dir(out, name) / 'eval'))}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- running
def resolve_policy(preset: Preset, policy: str | None, sft_cache: str, progress: bool) -> str:
    """The one SFT policy folder of the experiment: --policy, else the cached default SFT."""
    from trainer.policy import CheckpointError, load_policy

    if policy:
        try:
            load_policy(policy)
        except (CheckpointError, OSError, ValueError) as error:
            raise ExperimentError(f"--policy {policy}: cannot load the policy: {error}") from None
        return str(Path(policy))
    from trainer.sft import SFTConfig, SFTError, ensure_default_sft_policy

    recipe = SFTConfig() if preset.sft_tasks is None else SFTConfig(tasks=preset.sft_tasks)
    if preset.sft_demos is not None:
        recipe.demos_per_task = preset.sft_demos
    if preset.sft_steps is not None:
        recipe.steps = preset.sft_steps
    try:
        return str(ensure_default_sft_policy(sft_cache, recipe, progress=progress))
    except SFTError as error:
        raise ExperimentError(f"training the SFT policy failed: {error}") from None


def evaluate_checkpoints(run: RunSpec, exp: Experiment, out: Path, progress: bool,
                         echo: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    """Evaluate each wanted checkpoint once; summaries already written are reused (resume)."""
    from trainer.eval import evaluate_policy, summarize
    from trainer.loop import POLICY_DIR, checkpoint_dir
    from trainer.policy import load_policy

    folder = run_dir(out, run.name)
    per_iteration: dict[int, dict[str, Any]] = {}
    for k in evaluated_iterations(run, exp.preset):
        path = folder / "eval" / f"iter_{k:04d}.json"
        if path.is_file():
            per_iteration[k] = json.loads(path.read_text())["metrics"]
            continue
        policy_path = checkpoint_dir(folder / "train", k) / POLICY_DIR if run.trains else Path(exp.policy_dir)
        policy = load_policy(policy_path)
        started, cpu_started = time.perf_counter(), time.process_time()
        outcomes, _ = evaluate_policy(policy, list(exp.preset.tasks), exp.splits, exp.preset.eval_episodes,
                                      max_steps=exp.preset.max_steps, progress=progress,
                                      desc=f"{run.name} eval iter {k}", temperature=exp.preset.eval_temperature,
                                      sample_seed=EVAL_SAMPLE_SEED)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        per_iteration[k] = summarize(outcomes)
        atomic_write_text(path, json.dumps({"iteration": k, "policy": str(policy_path), "seconds": seconds,
                                            "cpu_seconds": cpu_seconds, "episodes": len(outcomes),
                                            "steps": sum(o.length for o in outcomes), "metrics": per_iteration[k]},
                                           indent=2) + "\n")
        cells = ", ".join(f"{s} {100 * per_iteration[k][s]['all']['success']['rate']:.0f}%" for s in exp.splits)
        echo(f"  {run.name} iteration {k}: success {cells} ({len(outcomes)} episodes, {seconds:.0f} s)")
    return per_iteration


def execute_run(run: RunSpec, exp: Experiment, out: Path, progress: bool, echo: Callable[[str], None]) -> dict[str, Any]:
    """Train (or resume) and evaluate one run, then mark it done atomically; return done.json."""
    from trainer.eval import EVAL_INFO_FILE, write_eval_info
    from trainer.loop import TrainError, train

    folder = run_dir(out, run.name)
    started, cpu_started = time.perf_counter(), time.process_time()
    config = None
    if run.trains:
        config = train_config(run, exp.preset, out, exp.seed, exp.policy_dir)
        try:
            train(config, progress=progress, echo=echo)
        except TrainError as error:
            raise ExperimentError(f"run {run.name}: {error}") from None
    train_cpu_seconds = time.process_time() - cpu_started
    per_iteration = evaluate_checkpoints(run, exp, out, progress, echo)
    info = {
        "policy": config.output_dir if config else exp.policy_dir,
        "run": run.name,
        "label": run.label,
        "tasks": list(exp.preset.tasks),
        "splits": exp.splits,
        "episodes_per_task_and_split": exp.preset.eval_episodes,
        "seed_offset": 0,
        "greedy": exp.preset.eval_temperature is None,
        "temperature": exp.preset.eval_temperature,
        "sample_seed": EVAL_SAMPLE_SEED if exp.preset.eval_temperature is not None else None,
        "iterations": {str(k): v for k, v in per_iteration.items()},
    }
    write_eval_info(info, folder / EVAL_INFO_FILE)
    done = {
        "run": run.name,
        "train_seconds": _measured_train_seconds(folder / "train") if run.trains else 0.0,
        "eval_seconds": sum(json.loads((folder / "eval" / f"iter_{k:04d}.json").read_text())["seconds"]
                            for k in per_iteration),
        "wall_seconds_this_process": time.perf_counter() - started,
        # CPU time tells the run's cost apart from the CPU share it got on a shared machine.
        "train_cpu_seconds_this_process": train_cpu_seconds,
        "eval_cpu_seconds": sum(json.loads((folder / "eval" / f"iter_{k:04d}.json").read_text()).get("cpu_seconds", math.nan)
                                for k in per_iteration),
        "grape_train": shlex.join(["grape-train", *train_argv(config)]) if config else None,
        "train_seed": exp.seed if run.trains else None,
    }
    atomic_write_text(folder / DONE_FILE, json.dumps(done, indent=2) + "\n")
    return done


def _measured_train_seconds(train_dir: Path) -> float:
    """Sum of the loop's own per-iteration timings (so a resumed run counts each iteration once)."""
    from trainer.loop import METRICS_FILE

    total = 0.0
    path = train_dir / METRICS_FILE
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if "perf/iteration_seconds" in record and "rollout/success_rate" in record:
                total += float(record["perf/iteration_seconds"])
    return total


def run_experiment(out: Path, preset: Preset, *, seed: int = 0, policy: str | None = None, sft_cache: str = "cache/sft",
                   only: Sequence[str] | None = None, progress: bool = True, command: str = "",
                   echo: Callable[[str], None] = print) -> Experiment:
    """Run every run of the plan not yet done (or only those named), in plan order; resumable."""
    import datetime as dt

    import torch

    from trainer.policy import load_policy

    # One thread, as the loop does: the policy is small, and on the shared CPU two threads waiting
    # on each other made evaluation many times slower (8 episodes: 251 s with two, 18 s with one).
    torch.set_num_threads(1)
    names = [r.name for r in PLAN] if not only else [get_run(n).name for n in only]
    policy_dir = resolve_policy(preset, policy, sft_cache, progress)
    pixels = load_policy(policy_dir).image_size is not None
    splits = [*STATE_SPLITS, "visual"] if pixels else list(STATE_SPLITS)
    exp = open_experiment(Path(out), Experiment(preset, seed, policy_dir, splits, pixels, names, command,
                                               dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    if not pixels:
        echo("the policy reads the state vector only (no camera), so the visual split, which changes only colours, "
             "is not evaluated: it would repeat in_domain")
    atomic_write_text(Path(out) / "commands.sh", commands_script(exp, Path(out)))
    todo = [n for n in names if not is_done(Path(out), n)]
    echo(f"experiment {out}: preset {preset.name}, seed {seed}, {len(names) - len(todo)} of {len(names)} runs already done")
    started = time.perf_counter()
    for i, name in enumerate(todo, 1):
        run = get_run(name)
        elapsed = time.perf_counter() - started
        echo(f"[{i}/{len(todo)}] {run.name}: {run.description} (elapsed {elapsed / 60:.1f} min)")
        done = execute_run(run, exp, Path(out), progress, echo)
        echo(f"[{i}/{len(todo)}] {run.name} done: train {done['train_seconds']:.0f} s, eval {done['eval_seconds']:.0f} s")
        write_report(Path(out))
    write_report(Path(out))
    return exp


# ---------------------------------------------------------------------- results
@dataclass
class Cell:
    """One rate or mean with its 95% interval, as read from eval_info.json."""

    value: float
    low: float
    high: float
    count: int | None = None
    n: int | None = None


def load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """{run: {iteration: summary}} for every completed run (and partial evaluations of others)."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for run in PLAN:
        folder = run_dir(out, run.name)
        info = folder / "eval_info.json"
        if info.is_file():
            data = json.loads(info.read_text())
            results[run.name] = {int(k): v for k, v in data["iterations"].items()}
        elif (folder / "eval").is_dir():
            partial = {}
            for path in sorted((folder / "eval").glob("iter_*.json")):
                record = json.loads(path.read_text())
                partial[int(record["iteration"])] = record["metrics"]
            if partial:
                results[run.name] = partial
    return results


def final_summary(results: dict[str, dict[int, dict[str, Any]]], name: str, preset: Preset) -> dict[str, Any] | None:
    """The run's summary at its last iteration (the SFT policy's own for sft), if evaluated."""
    per_iteration = results.get(name)
    if not per_iteration:
        return None
    want = 0 if name == "sft" else preset.iterations
    return per_iteration.get(want)


def rate_cell(summary: dict[str, Any] | None, split: str, metric: str) -> Cell | None:
    if summary is None or split not in summary:
        return None
    block = summary[split]["all"]
    if metric == "step_length":
        m = block["step_length"]
        return Cell(m["mean"], m["ci95"][0], m["ci95"][1], None, block["episodes"])
    m = block[metric]
    return Cell(m["rate"], m["ci95"][0], m["ci95"][1], m.get("count"), block["episodes"])


def pooled_cell(summary: dict[str, Any] | None, splits: Sequence[str], metric: str) -> Cell | None:
    """A rate pooled over splits (counts summed, Wilson interval of the pooled proportion)."""
    from trainer.eval import wilson_interval

    if summary is None or any(s not in summary for s in splits):
        return None
    count = sum(summary[s]["all"][metric]["count"] for s in splits)
    n = sum(summary[s]["all"]["episodes"] for s in splits)
    low, high = wilson_interval(count, n)
    return Cell(count / n, low, high, count, n)


def format_cell(cell: Cell | None, percent: bool = True) -> str:
    if cell is None:
        return "—"
    if percent:
        return f"{100 * cell.value:.1f} [{100 * cell.low:.1f}, {100 * cell.high:.1f}]"
    return f"{cell.value:.1f} [{cell.low:.1f}, {cell.high:.1f}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_table(table: TableSpec, results: dict[str, dict[int, dict[str, Any]]], exp: Experiment) -> str:
    """One table in the paper's shape; cells are % (or steps) with the 95% interval in brackets."""
    if table.kind == "splits":
        header = ["variant", *exp.splits, "all splits"]
        rows = []
        for name, label in table.rows:
            summary = final_summary(results, name, exp.preset)
            rows.append([label, *(format_cell(rate_cell(summary, s, "success")) for s in exp.splits),
                         format_cell(pooled_cell(summary, exp.splits, "success"))])
        return markdown_table(header, rows)
    header = ["objective", "collision rate %", "step length", "success %"]
    rows = []
    for name, label in table.rows:
        summary = final_summary(results, name, exp.preset)
        rows.append([label, format_cell(rate_cell(summary, TABLE2_SPLIT, "collision")),
                     format_cell(rate_cell(summary, TABLE2_SPLIT, "step_length"), percent=False),
                     format_cell(rate_cell(summary, TABLE2_SPLIT, "success"))])
    return markdown_table(header, rows)


@dataclass
class TargetCheck:
    target: str
    measured: str
    met: bool | None
    """None: not measurable (a run is missing, or the SFT baseline is 0 so there is no ratio)."""


def check_targets(results: dict[str, dict[int, dict[str, Any]]], exp: Experiment) -> list[TargetCheck]:
    """The paper's claims, measured on this experiment (see docs/experiments.md for the rules)."""
    preset = exp.preset
    sft, tc = final_summary(results, "sft", preset), final_summary(results, "grape_tc", preset)
    checks = []
    for split in exp.splits:
        a, b = rate_cell(tc, split, "success"), rate_cell(sft, split, "success")
        if a is None or b is None:
            checks.append(TargetCheck(f"GRAPE-TC success >= 1.5x SFT ({split})", "—", None))
            continue
        if b.value == 0:  # no ratio to a zero baseline
            checks.append(TargetCheck(f"GRAPE-TC success >= 1.5x SFT ({split})",
                                      f"{100 * a.value:.1f}% vs SFT 0% (no ratio)", None))
            continue
        r = a.value / b.value
        checks.append(TargetCheck(f"GRAPE-TC success >= 1.5x SFT ({split})",
                                  f"{100 * a.value:.1f}% vs {100 * b.value:.1f}% = {r:.2f}x", r >= 1.5))
    dpo = final_summary(results, "step_dpo", preset)
    a, b = pooled_cell(tc, exp.splits, "success"), pooled_cell(dpo, exp.splits, "success")
    checks.append(TargetCheck("TPO > step-DPO (success, all splits pooled)",
                              "—" if a is None or b is None else f"{format_cell(a)} vs {format_cell(b)}",
                              None if a is None or b is None else a.value > b.value))
    for name in ("random_success", "no_r_self", "no_r_ext", "no_success"):
        c = pooled_cell(final_summary(results, name, preset), exp.splits, "success")
        label = get_run(name).label
        checks.append(TargetCheck(f"full GRAPE >= {label} (success, all splits pooled)",
                                  "—" if a is None or c is None else f"{format_cell(a)} vs {format_cell(c)}",
                                  None if a is None or c is None else a.value >= c.value))
    for name, metric, bound, what in (("grape_safety", "collision", 0.63, "collision rate"),
                                      ("grape_efficiency", "step_length", 0.89, "step length")):
        a, b = rate_cell(final_summary(results, name, preset), TABLE2_SPLIT, metric), rate_cell(sft, TABLE2_SPLIT, metric)
        title = f"{get_run(name).label} {what} <= {bound}x SFT ({TABLE2_SPLIT})"
        if a is None or b is None:
            checks.append(TargetCheck(title, "—", None))
            continue
        percent = metric != "step_length"
        if b.value == 0:
            checks.append(TargetCheck(title, f"{format_cell(a, percent)} vs SFT {format_cell(b, percent)} (no ratio to 0)", None))
            continue
        r = a.value / b.value
        checks.append(TargetCheck(title, f"{format_cell(a, percent)} vs {format_cell(b, percent)} = {r:.2f}x", r <= bound))
    return checks


def iteration_curve(results: dict[str, dict[int, dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """GRAPE-TC success per iteration, iteration 0 being the SFT policy (Fig. 6)."""
    curve = dict(results.get("grape_tc", {}))
    if "sft" in results and 0 in results["sft"]:
        curve[0] = results["sft"][0]
    return dict(sorted(curve.items()))


def plot_table(table: TableSpec, results: dict[str, dict[int, dict[str, Any]]], exp: Experiment, path: Path) -> Path | None:
    """A grouped bar chart of one table with 95% CI error bars (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(name, label, final_summary(results, name, exp.preset)) for name, label in table.rows]
    rows = [r for r in rows if r[2] is not None]
    if not rows:
        return None
    if table.kind == "splits":
        panels = [("success rate (%)", [(s, "success") for s in exp.splits], 100.0)]
    else:
        panels = [("collision rate (%)", [(TABLE2_SPLIT, "collision")], 100.0),
                  ("step length", [(TABLE2_SPLIT, "step_length")], 1.0),
                  ("success rate (%)", [(TABLE2_SPLIT, "success")], 100.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 + 2.6 * len(panels) if len(panels) > 1 else 7.0, 3.8), dpi=120,
                             squeeze=False)
    width = 0.8 / len(rows)
    for ax, (ylabel, groups, scale) in zip(axes[0], panels):
        x = np.arange(len(groups))
        for j, (_, label, summary) in enumerate(rows):
            cells = [rate_cell(summary, split, metric) for split, metric in groups]
            values = np.array([scale * c.value for c in cells])
            # Clipped at 0: Wilson bounds of 0% or 100% can sit a rounding error inside the rate.
            err = np.clip([[scale * (c.value - c.low) for c in cells], [scale * (c.high - c.value) for c in cells]], 0, None)
            ax.bar(x + (j - (len(rows) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([split if table.kind == "splits" else "" for split, _ in groups])
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        if scale == 100.0:
            ax.set_ylim(0, 100)
    axes[0][-1].legend(fontsize="small", loc="best")
    fig.suptitle(table.title, fontsize="medium")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return path


def render_report(out: Path, exp: Experiment, results: dict[str, dict[int, dict[str, Any]]],
                  plots: dict[str, Path]) -> str:
    """report.md: settings, tables, target checks, timings; paths are relative to `out`."""
    p = exp.preset
    done = {r.name: json.loads((run_dir(out, r.name) / DONE_FILE).read_text()) for r in PLAN if is_done(out, r.name)}
    lines = [
        f"# GRAPE paper experiments: preset `{p.name}`",
        "",
        f"Command: `{exp.command or 'grape-experiment paper --out ' + str(out)}` (started {exp.started}).",
        f"Runs done: {len(done)} of {len(exp.runs)} ({', '.join(n for n in exp.runs if n not in done) or 'none'} pending).",
        "",
        f"- SFT policy (shared by every run): `{exp.policy_dir}`",
        f"- Training seed {exp.seed}; tasks: {', '.join(p.tasks)}; K = {p.iterations} iterations; "
        f"{p.states_per_task} initial states per task x {p.samples_per_state} samples; m = {p.m}; "
        f"{p.epochs} epochs, {p.pairs_per_step} pairs per step" + (f"; episodes capped at {p.max_steps} steps" if p.max_steps else ""),
        f"- Optimiser: AdamW lr {p.lr:g}; reference `{p.ref_update}`; NLL weight on chosen trajectories {p.nll_weight:g}"
        + (" (0: the paper's pure TPO / step-DPO)" if p.nll_weight == 0 else " (not in the paper: RPO-style, see docs/training.md)")
        + f"; LoRA on `{p.lora_targets}` layers",
        f"- Evaluation: {decoding(p)}, the sim's fixed evaluation seeds (`EVAL_SEED_BASE + i`, i < {p.eval_episodes}) for every policy; "
        f"{p.eval_episodes} episodes per task and split = {p.episodes_per_cell} episodes per cell; "
        "95% Wilson intervals for rates, mean ± 1.96 s.e. for step length.",
        f"- Splits: {', '.join(exp.splits)}" + ("" if exp.pixels else
            " (not `visual`: the policy reads the state vector only, and `visual` changes only colours, so it would repeat in_domain)"),
        "",
    ]
    for table in TABLES:
        lines += [f"## {table.title}", "", render_table(table, results, exp), ""]
        if table.key in plots:
            lines += [f"![{table.title}]({plots[table.key].relative_to(out)})", ""]
    if "fig6" in plots:
        lines += ["## Fig. 6: GRAPE-TC success per iteration (0 = SFT)", "",
                  f"![success per iteration]({plots['fig6'].relative_to(out)})", ""]
        curve = iteration_curve(results)
        lines += [markdown_table(["iteration", *exp.splits],
                                 [[str(k), *(format_cell(rate_cell(curve[k], s, "success")) for s in exp.splits)]
                                  for k in curve]), ""]
    lines += ["## Targets from the paper", "", markdown_table(
        ["target", "measured", "met"],
        [[c.target, c.measured, "—" if c.met is None else ("yes" if c.met else "**no**")] for c in check_targets(results, exp)]), ""]
    if done:
        def cpu(d: dict[str, Any], key: str) -> str:
            value = d.get(key)
            return "—" if value is None or math.isnan(value) else f"{value:.0f}"

        lines += ["## Time per run (wall time depends on what else the machine runs; CPU time does not)", "", markdown_table(
            ["run", "train s (wall)", "train CPU s", "eval s (wall)", "eval CPU s"],
            [[n, f"{d['train_seconds']:.0f}", cpu(d, "train_cpu_seconds_this_process"), f"{d['eval_seconds']:.0f}",
              cpu(d, "eval_cpu_seconds")] for n, d in done.items()]), ""]
        wall = sum(d["train_seconds"] + d["eval_seconds"] for d in done.values())
        cpu_total = sum(d.get("train_cpu_seconds_this_process", math.nan) + d.get("eval_cpu_seconds", math.nan)
                        for d in done.values())
        cpu_text = "" if math.isnan(cpu_total) else f", {cpu_total / 60:.1f} CPU-minutes"
        lines += [f"Total: {wall / 60:.1f} min wall (summed over runs, which may have run in parallel){cpu_text}.", ""]
    lines += ["Raw results: `runs/<run>/eval_info.json`; equivalent commands: `commands.sh`.", ""]
    return "\n".join(lines)


def write_report(out: Path) -> Path:
    """Re-render report.md and the plots from whatever the run folders hold."""
    from trainer.eval import plot_iterations

    out = Path(out)
    exp = load_experiment(out)
    results = load_results(out)
    plots: dict[str, Path] = {}
    for table in TABLES:
        path = plot_table(table, results, exp, out / "plots" / f"{table.key}.png")
        if path is not None:
            plots[table.key] = path
    curve = iteration_curve(results)
    if len(curve) > 1:
        plots["fig6"] = plot_iterations(curve, out / "plots" / "fig6_success_per_iteration.png",
                                        title="GRAPE-TC: success per iteration")
    path = out / REPORT_FILE
    atomic_write_text(path, render_report(out, exp, results, plots))
    return path


# ---------------------------------------------------------------------- CLI
EXAMPLES = """\
examples:
  grape-experiment paper --out runs/paper
      every run of the plan with the full preset (SFT, step-DPO, GRAPE-TC K=3, Table I ablations,
      Table II objectives), then runs/paper/report.md and runs/paper/plots/
  grape-experiment paper --out runs/paper
      the same command again after a kill: completed runs are skipped, a half-trained run resumes
  grape-experiment paper --out runs/smoke --quick
      tiny sizes (one task, K=2, 2 episodes per cell): a smoke test of the whole pipeline
  grape-experiment paper --out runs/paper --only sft grape_tc step_dpo
      only the baselines (more runs can be added to the same folder later)
  grape-experiment report --out runs/paper
      re-render report.md and the plots from the run folders
  grape-experiment plan --quick
      list the runs, their grape-train flags and the episode counts without running anything
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grape-experiment",
        description="Reproduce the GRAPE paper's experiments (Fig. 6, Table I, Table II, baselines) on the pybullet suite, "
                    "from one SFT policy, resumable after a kill.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{paper,report,plan}")

    def sizes(p: argparse.ArgumentParser) -> None:
        p.add_argument("--quick", action="store_true", help="the quick preset (smoke tests); same as --preset quick")
        p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sizes of every run (default: full)")
        group = p.add_argument_group("preset overrides (the report lists the sizes used)")
        for name, kind, what in SIZE_FLAGS:
            group.add_argument("--" + name.replace("_", "-"), type=kind, default=None, metavar="N",
                               help=f"{what} (default: the preset's)")
        group.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="tasks (default: the preset's)")
        group.add_argument("--lr", type=float, default=None, metavar="LR", help="learning rate of every trained run (default: the preset's)")
        group.add_argument("--nll-weight", type=float, default=None, metavar="W",
                           help="NLL on the chosen trajectories added to TPO / step-DPO; 0 = the paper's pure losses (default: the preset's)")
        group.add_argument("--ref-update", choices=["fixed", "iteration"], default=None, help="reference policy of the preference losses (default: the preset's)")
        group.add_argument("--eval-temperature", type=float, default=None, metavar="T",
                           help="evaluate by sampling at temperature T (seeded alike for every policy); 0 = greedy (default: the preset's)")
        group.add_argument("--lora-targets", choices=["attention", "all-linear"], default=None, help="layers the LoRA adapter adapts (default: the preset's)")

    paper = sub.add_parser("paper", help="run (or resume) the experiments", epilog=EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    paper.add_argument("--out", required=True, help="experiment folder (created, or resumed if it holds one)")
    sizes(paper)
    paper.add_argument("--seed", type=int, default=0, help="training seed of every run (default: 0)")
    paper.add_argument("--policy", default=None, help="SFT policy folder to start from (default: the cached default SFT policy)")
    paper.add_argument("--sft-cache", default="cache/sft", help="where the default SFT policy is trained once and cached")
    paper.add_argument("--only", nargs="+", metavar="RUN", default=None,
                       help=f"only these runs, in plan order: {' '.join(r.name for r in PLAN)}")
    paper.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    paper.add_argument("--json", action="store_true", help="print a JSON summary (folder, report, runs done) when finished")
    report = sub.add_parser("report", help="re-render report.md and plots from an experiment folder")
    report.add_argument("--out", required=True, help="experiment folder")
    report.add_argument("--json", action="store_true", help="print the target checks as JSON")
    plan = sub.add_parser("plan", help="show the runs and their settings without running anything")
    sizes(plan)
    plan.add_argument("--json", action="store_true", help="machine-readable plan")
    return parser


SIZE_FLAGS = (
    ("iterations", int, "GRAPE iterations K of every trained run"),
    ("states_per_task", int, "initial states per task and iteration"),
    ("samples_per_state", int, "rollouts per initial state"),
    ("m", int, "top m x bottom m pairing"),
    ("epochs", int, "passes over each iteration's pairs"),
    ("eval_episodes", int, "evaluation episodes per task and split"),
)


def _preset_from(args: argparse.Namespace) -> Preset:
    """The named preset with any size flags applied; bad values are usage errors."""
    from trainer.sim.tasks import TASKS

    if args.quick and args.preset not in (None, "quick"):
        raise UsageError(f"--quick contradicts --preset {args.preset}")
    preset = PRESETS["quick" if args.quick else (args.preset or "full")]
    changes: dict[str, Any] = {}
    for name, _, _ in SIZE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            changes[name] = value
    problems = namespace_problems({name: getattr(args, name, None) for name in ("eval_temperature", "seed")}, {"seed": SEED})
    if problems:
        raise UsageError("; ".join(problems))
    for name in ("lr", "nll_weight", "ref_update", "lora_targets", "eval_temperature"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if changes.get("eval_temperature") == 0:
        changes["eval_temperature"] = None
    if args.tasks:
        unknown = [t for t in args.tasks if t not in TASKS]
        if unknown:
            raise UsageError(f"--tasks: unknown task(s) {unknown}; known tasks: {', '.join(TASKS)}")
        changes["tasks"] = tuple(args.tasks)
    if changes:  # the name says the sizes are not the preset's own
        described = ", ".join(f"{k}={' '.join(v) if isinstance(v, tuple) else v}" for k, v in changes.items())
        preset = dataclasses.replace(preset, name=f"{preset.name} ({described})", **changes)
    # The training settings are grape-train's: its own checks, with its flag names, judge them.
    problems = validate(train_config(get_run("grape_tc"), preset, Path("."), 0, "policy"))
    if problems:
        raise UsageError("; ".join(problems))
    return preset


def decoding(preset: Preset) -> str:
    if preset.eval_temperature is None:
        return "greedy"
    return f"sampled at temperature {preset.eval_temperature:g} (generator seed {EVAL_SAMPLE_SEED}, the same for every policy)"


class UsageError(Exception):
    """A flag value out of range (exit 2)."""


def describe_plan(preset: Preset) -> list[dict[str, Any]]:
    out = Path("<out>")
    rows = []
    for run in PLAN:
        iterations = evaluated_iterations(run, preset)
        episodes = len(iterations) * preset.eval_episodes * len(preset.tasks) * len(STATE_SPLITS)
        rows.append({
            "run": run.name, "label": run.label, "description": run.description,
            "grape_train": train_argv(train_config(run, preset, out, 0, "<sft policy>")) if run.trains else None,
            "train_episodes": preset.iterations * len(preset.tasks) * preset.states_per_task * preset.samples_per_state if run.trains else 0,
            "eval_iterations": iterations, "eval_episodes": episodes,
        })
    return rows


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "plan":
            preset = _preset_from(args)
            rows = describe_plan(preset)
            if args.json:
                print(json.dumps({"preset": dataclasses.asdict(preset), "runs": rows}, indent=2))
            else:
                print(f"preset {preset.name}: {dataclasses.asdict(preset)}")
                for row in rows:
                    flags = shlex.join(row["grape_train"]) if row["grape_train"] else "(evaluation only)"
                    print(f"- {row['run']:17} {row['label']:20} train {row['train_episodes']:4} ep, "
                          f"eval {row['eval_episodes']:5} ep (state splits) at iterations {row['eval_iterations']}\n    {flags}")
            return 0
        if args.command == "report":
            path = write_report(Path(args.out))
            if args.json:
                checks = check_targets(load_results(Path(args.out)), load_experiment(Path(args.out)))
                print(json.dumps({"report": str(path), "targets": [dataclasses.asdict(c) for c in checks]}, indent=2))
            else:
                print(f"wrote {path}")
            return 0
        preset = _preset_from(args)
        if args.only:
            for name in args.only:
                get_run(name)
        from tqdm.auto import tqdm

        def echo(line: str) -> None:
            tqdm.write(line, file=sys.stderr)

        command = shlex.join(["grape-experiment", *(sys.argv[1:] if argv is None else argv)])
        exp = run_experiment(Path(args.out), preset, seed=args.seed, policy=args.policy, sft_cache=args.sft_cache,
                             only=args.only, progress=not args.no_progress, command=command, echo=echo)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        return _fail(str(error), 2)
    except ExperimentError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume (completed runs are kept)", 130)
    except OSError as error:
        return _fail(f"{error}; completed runs are kept, run the same command again to resume")
    report = Path(args.out) / REPORT_FILE
    if args.json:
        print(json.dumps({"out": args.out, "report": str(report), "runs_done": [n for n in exp.runs if is_done(Path(args.out), n)]}))
    else:
        print(f"done: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
