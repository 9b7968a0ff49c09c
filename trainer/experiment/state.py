"""What an output folder is an experiment of (experiment.json, checked on resume) and the
equivalent grape-train / grape-eval commands (commands.sh)."""

from __future__ import annotations

import dataclasses
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grape_dsl.util.atomic import atomic_write_text
from trainer.experiment.plan import ExperimentError, evaluated_iterations, get_run, run_dir, train_argv, train_config
from trainer.experiment.presets import EVAL_SAMPLE_SEED, Preset

EXPERIMENT_FILE = "experiment.json"


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
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        preset = dict(data["preset"])
        preset["tasks"] = tuple(preset["tasks"])
        if preset.get("sft_tasks") is not None:
            preset["sft_tasks"] = tuple(preset["sft_tasks"])
        return cls(**{**data, "preset": Preset(**preset)})


def load_experiment(out: Path) -> Experiment:
    path = Path(out) / EXPERIMENT_FILE
    if not path.is_file():
        raise ExperimentError(
            f"{out} is not an experiment folder (no {EXPERIMENT_FILE}); run `grape-experiment paper --out {out}` first"
        )
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
                "another --out. Differences (saved -> now):\n  " + "\n  ".join(differences)
            )
        saved.runs = list(dict.fromkeys([*saved.runs, *current.runs]))
        atomic_write_text(path, json.dumps(saved.to_dict(), indent=2) + "\n")
        return saved
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ExperimentError(
            f"--out {out} exists and is not an experiment folder (no {EXPERIMENT_FILE}); choose an empty or new folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(current.to_dict(), indent=2) + "\n")
    return current


def commands_script(exp: Experiment, out: Path) -> str:
    """Shell lines equivalent to the experiment, run by run (for the record and by hand)."""
    lines = [
        "#!/bin/sh",
        "# Written by grape-experiment; the same runs by hand, one grape-train / grape-eval per run.",
        f"# {exp.command}",
        "set -e",
    ]
    splits = " ".join(exp.splits)
    tasks = " ".join(exp.preset.tasks)
    for name in exp.runs:
        run = get_run(name)
        lines.append(f"\n# {run.name}: {run.description}")
        eval_common = (
            f"--splits {splits} --tasks {tasks} --episodes {exp.preset.eval_episodes} --gifs 0"
            + (f" --max-steps {exp.preset.max_steps}" if exp.preset.max_steps else "")
            + (
                f" --temperature {exp.preset.eval_temperature:g} --seed {EVAL_SAMPLE_SEED}"
                if exp.preset.eval_temperature is not None
                else ""
            )
        )
        if run.trains:
            config = train_config(run, exp.preset, out, exp.seed, exp.policy_dir)
            lines.append(shlex.join(["grape-train", *train_argv(config)]))
            iterations = " ".join(map(str, evaluated_iterations(run, exp.preset)))
            lines.append(
                f"grape-eval --policy {shlex.quote(config.output_dir)} --iterations {iterations} {eval_common} "
                f"--output-dir {shlex.quote(str(run_dir(out, name) / 'eval'))}"
            )
        else:
            lines.append(
                f"grape-eval --policy {shlex.quote(exp.policy_dir)} {eval_common} "
                f"--output-dir {shlex.quote(str(run_dir(out, name) / 'eval'))}"
            )
    return "\n".join(lines) + "\n"
