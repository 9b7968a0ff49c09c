"""The sizes and training settings of an experiment: `Preset` and the named `PRESETS`.

Adding a preset is one entry in `PRESETS`; `grape-experiment --preset NAME` offers every key.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.config import STOCK_TASKS, OptimConfig, PolicyConfig

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
    "full": Preset(
        "full",
        iterations=3,
        states_per_task=8,
        samples_per_state=8,
        m=2,
        epochs=2,
        pairs_per_step=8,
        eval_episodes=25,
        eval_temperature=1.0,
    ),
    "quick": Preset(
        "quick",
        iterations=2,
        states_per_task=2,
        samples_per_state=4,
        m=1,
        epochs=1,
        pairs_per_step=4,
        eval_episodes=2,
        tasks=("pick_place",),
        sft_demos=6,
        sft_steps=60,
        sft_tasks=("pick_place",),
        max_steps=60,
    ),
}


def decoding(preset: Preset) -> str:
    if preset.eval_temperature is None:
        return "greedy"
    return (
        f"sampled at temperature {preset.eval_temperature:g} "
        f"(generator seed {EVAL_SAMPLE_SEED}, the same for every policy)"
    )
