"""The plan as data: every run (`PLAN`), which runs make up which table (`TABLES`), each run's
grape-train configuration and flags, and where its folder lies.

Adding a run is one `RunSpec` in `PLAN` (and a row in a `TableSpec` to show it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import OptimConfig, PolicyConfig, TrainConfig
from trainer.experiment.presets import Preset

DONE_FILE = "done.json"
CONSTRAINTS_DIR = Path(__file__).resolve().parents[2] / "constraints"
STATE_SPLITS = ("in_domain", "subject", "physical", "semantic")
"""Splits every policy is evaluated on; `visual` is added only for policies that see pixels."""
TABLE2_SPLIT = "in_domain"


class ExperimentError(Exception):
    """A problem with the user's input or output folder, reported as one message (exit 1)."""


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
    RunSpec(
        "grape_tc",
        "GRAPE-TC",
        "TPO on R_GCPG under the task-completion objective; evaluated after every iteration",
        eval_every_iteration=True,
    ),
    RunSpec("step_dpo", "step-DPO", "per-step DPO on the same GCPG pairs (the OpenVLA-DPO baseline)", loss="dpo-step"),
    RunSpec(
        "random_success",
        "Random w/ I_success",
        "pairs drawn at random among successes vs failures of each initial state",
        pairing="random-success",
    ),
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
    TableSpec(
        "baselines",
        "Baselines: success rate per split",
        (("sft", "SFT"), ("step_dpo", "step-DPO"), ("grape_tc", "GRAPE-TC (TPO)")),
        "splits",
    ),
    TableSpec(
        "table1",
        "Table I: reward ablation, success rate per split",
        (
            ("random_success", "Random w/ I_success"),
            ("no_r_self", "GRAPE w/o R_self"),
            ("no_r_ext", "GRAPE w/o R_ext"),
            ("no_success", "GRAPE w/o I_success"),
            ("grape_tc", "GRAPE (full)"),
        ),
        "splits",
    ),
    TableSpec(
        "table2",
        f"Table II: objectives ({TABLE2_SPLIT} split)",
        (
            ("sft", "SFT"),
            ("grape_tc", "GRAPE-TC"),
            ("grape_safety", "GRAPE-Safety"),
            ("grape_efficiency", "GRAPE-Efficiency"),
        ),
        "objectives",
    ),
)


def get_run(name: str) -> RunSpec:
    for run in PLAN:
        if run.name == name:
            return run
    raise ExperimentError(f"unknown run '{name}'; the plan has: {', '.join(r.name for r in PLAN)}")


def train_config(
    run: RunSpec, preset: Preset, out: Path, seed: int, policy_dir: str, constraints_dir: Path = CONSTRAINTS_DIR
) -> TrainConfig:
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
        rollout=RolloutConfig(
            tasks=list(preset.tasks),
            states_per_task=preset.states_per_task,
            samples_per_state=preset.samples_per_state,
            max_steps=preset.max_steps,
        ),
        gcpg=GcpgConfig(
            lambda_self=run.lambda_self,
            lambda_ext=run.lambda_ext,
            lambda_success=run.lambda_success,
            m=preset.m,
            pairing=run.pairing,
        ),
        optim=OptimConfig(
            loss=run.loss,
            epochs=preset.epochs,
            pairs_per_step=preset.pairs_per_step,
            lr=preset.lr,
            ref_update=preset.ref_update,
            nll_weight=preset.nll_weight,
        ),
    )


def train_argv(config: TrainConfig) -> list[str]:
    """The grape-train flags that reproduce `config` (fields left at their default omitted)."""
    from trainer.flags import config_to_argv  # the same field -> flag rule that builds grape-train's parser

    return config_to_argv(config, TrainConfig())


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


def describe_plan(preset: Preset) -> list[dict[str, Any]]:
    out = Path("<out>")
    rows = []
    for run in PLAN:
        iterations = evaluated_iterations(run, preset)
        episodes = len(iterations) * preset.eval_episodes * len(preset.tasks) * len(STATE_SPLITS)
        rows.append(
            {
                "run": run.name,
                "label": run.label,
                "description": run.description,
                "grape_train": train_argv(train_config(run, preset, out, 0, "<sft policy>")) if run.trains else None,
                "train_episodes": preset.iterations
                * len(preset.tasks)
                * preset.states_per_task
                * preset.samples_per_state
                if run.trains
                else 0,
                "eval_iterations": iterations,
                "eval_episodes": episodes,
            }
        )
    return rows
