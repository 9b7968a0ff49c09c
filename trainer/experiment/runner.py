"""Running the plan: resolve the SFT policy, train (or resume) and evaluate each run not yet done,
mark it done atomically, and re-render the report after every run."""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from grape_dsl.util.atomic import atomic_write_text
from trainer.experiment.plan import (
    DONE_FILE,
    PLAN,
    STATE_SPLITS,
    ExperimentError,
    RunSpec,
    evaluated_iterations,
    get_run,
    is_done,
    run_dir,
    train_argv,
    train_config,
    train_failure,
)
from trainer.experiment.presets import EVAL_SAMPLE_SEED, Preset
from trainer.experiment.report import write_report
from trainer.experiment.state import Experiment, commands_script, open_experiment


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


def evaluate_checkpoints(
    run: RunSpec, exp: Experiment, out: Path, progress: bool, echo: Callable[[str], None]
) -> dict[int, dict[str, Any]]:
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
        outcomes, _ = evaluate_policy(
            policy,
            list(exp.preset.tasks),
            exp.splits,
            exp.preset.eval_episodes,
            max_steps=exp.preset.max_steps,
            progress=progress,
            desc=f"{run.name} eval iter {k}",
            temperature=exp.preset.eval_temperature,
            sample_seed=EVAL_SAMPLE_SEED,
        )
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        per_iteration[k] = summarize(outcomes)
        atomic_write_text(
            path,
            json.dumps(
                {
                    "iteration": k,
                    "policy": str(policy_path),
                    "seconds": seconds,
                    "cpu_seconds": cpu_seconds,
                    "episodes": len(outcomes),
                    "steps": sum(o.length for o in outcomes),
                    "metrics": per_iteration[k],
                },
                indent=2,
            )
            + "\n",
        )
        cells = ", ".join(f"{s} {100 * per_iteration[k][s]['all']['success']['rate']:.0f}%" for s in exp.splits)
        echo(f"  {run.name} iteration {k}: success {cells} ({len(outcomes)} episodes, {seconds:.0f} s)")
    return per_iteration


def execute_run(
    run: RunSpec, exp: Experiment, out: Path, progress: bool, echo: Callable[[str], None]
) -> dict[str, Any]:
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
            raise ExperimentError(f"run {run.name}: {train_failure(error, config)}") from None
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
        "eval_seconds": sum(
            json.loads((folder / "eval" / f"iter_{k:04d}.json").read_text())["seconds"] for k in per_iteration
        ),
        "wall_seconds_this_process": time.perf_counter() - started,
        # CPU time tells the run's cost apart from the CPU share it got on a shared machine.
        "train_cpu_seconds_this_process": train_cpu_seconds,
        "eval_cpu_seconds": sum(
            json.loads((folder / "eval" / f"iter_{k:04d}.json").read_text()).get("cpu_seconds", math.nan)
            for k in per_iteration
        ),
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


def run_experiment(
    out: Path,
    preset: Preset,
    *,
    seed: int = 0,
    policy: str | None = None,
    sft_cache: str = "cache/sft",
    only: Sequence[str] | None = None,
    progress: bool = True,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> Experiment:
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
    exp = open_experiment(
        Path(out),
        Experiment(
            preset,
            seed,
            policy_dir,
            splits,
            pixels,
            names,
            command,
            dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        ),
    )
    if not pixels:
        echo(
            "the policy reads the state vector only (no camera), so the visual split, which changes only colours, "
            "is not evaluated: it would repeat in_domain"
        )
    atomic_write_text(Path(out) / "commands.sh", commands_script(exp, Path(out)))
    todo = [n for n in names if not is_done(Path(out), n)]
    echo(
        f"experiment {out}: preset {preset.name}, seed {seed}, "
        f"{len(names) - len(todo)} of {len(names)} runs already done"
    )
    started = time.perf_counter()
    for i, name in enumerate(todo, 1):
        run = get_run(name)
        elapsed = time.perf_counter() - started
        echo(f"[{i}/{len(todo)}] {run.name}: {run.description} (elapsed {elapsed / 60:.1f} min)")
        done = execute_run(run, exp, Path(out), progress, echo)
        echo(
            f"[{i}/{len(todo)}] {run.name} done: train {done['train_seconds']:.0f} s, eval {done['eval_seconds']:.0f} s"
        )
        write_report(Path(out))
    write_report(Path(out))
    return exp
