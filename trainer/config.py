"""`TrainConfig`: every knob of a GRAPE run, which is also the `grape-train` command line.

Small dataclasses, one per component, composed into `TrainConfig`. Each field is one flag and
its docstring is the flag's `--help` text (trainer.flags turns any config dataclass into a
command line, the same way for every trainer command). Field names are unique across the
components and become flags with dashes (`samples_per_state` -> `--samples-per-state`).

The full config is saved as JSON with every checkpoint; `config_differences` tells a resume
into a run directory made with another configuration apart from a genuine resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainer.bounds import AT_LEAST_ONE, POSITIVE, SEED, Bound, dataclass_problems

RUN_CONFIG_FILE = "config.json"
"""The TrainConfig a run folder holds (trainer.loop writes it; `grape-train --config RUN` replays it)."""
STOCK_TASKS = ("pick_place", "pick_place_obstacle", "push_to_target", "stack")
LOSSES = ("tpo", "dpo-step", "sft", "grpo", "rloo")


@dataclass
class PolicyConfig:
    base_policy: str | None = field(default=None, metadata={"flag": "--policy"})
    """Base policy folder (written by grape-sft or a previous run's checkpoint). Default: the embedded SFT policy,
    trained on scripted demonstrations and cached in --sft-cache first."""
    sft_cache: str = "cache/sft"
    """Folder where the default embedded SFT policy is trained once and cached."""
    sft_demos: int | None = None
    """Demonstrations per task for the default SFT policy (default: grape-sft's recipe). Ignored with --policy."""
    sft_steps: int | None = None
    """Optimizer steps of the default SFT policy (default: grape-sft's recipe). Ignored with --policy."""
    policy_type: Literal["auto", "embedded", "hf"] = "auto"
    """Kind of the --policy folder: embedded, hf (an OpenVLA-style HF checkpoint: config.json, weights, processor),
    or auto (a folder written by this project names its kind; one with only a config.json is an HF checkpoint)."""
    trust_remote_code: bool = False
    """Let an HF checkpoint whose config.json names its own model code (auto_map, as OpenVLA's does) run that code
    from the --policy folder."""
    action_stats: str | None = None
    """Action statistics of an HF checkpoint (JSON with per-dimension q01/q99, as the SFT data's; default: the
    folder's action_stats.json, else --unnorm-key's entry of the config's norm_stats)."""
    unnorm_key: str | None = None
    """Which dataset's action statistics of an OpenVLA config.json (norm_stats) to use."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the policy samples, scores and trains: cuda (a GPU; an error if none is visible), cpu, or auto (cuda
    when available). Rollout workers (--rollout-workers) always sample on CPU."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the policy's weights; with bfloat16 the LoRA factors, log-probs and losses stay float32."""
    lora_rank: int = 8
    """Rank of the LoRA adapter trained on top of the frozen base policy."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the adapter's update is scaled by alpha / rank)."""
    lora_targets: Literal["attention", "all-linear"] = "all-linear"
    """Layers the LoRA adapter adapts: attention (q/k/v/o projections) or all-linear (also the MLP projections, as
    OpenVLA's LoRA fine-tuning does; not the output head)."""


@dataclass
class RolloutConfig:
    tasks: list[str] = field(default_factory=lambda: list(STOCK_TASKS))
    """Tasks to train on (default: the four stock tasks). With a task .grc as --constraints, only that task."""
    states_per_task: int = 4
    """Initial states (environment seeds) per task and iteration."""
    samples_per_state: int = 6
    """Stochastic rollouts sampled from each initial state (the group ranked and paired)."""
    temperature: float = 1.0
    """Sampling temperature of the policy during rollouts (1 = the policy's own distribution)."""
    max_steps: int | None = None
    """Cap on steps per episode (default: each task's own limit)."""
    rollout_workers: int = 0
    """Ray worker processes for rollouts, each with its own envs and policy copy (0: in the training process; needs
    Ray). Episodes do not depend on the count."""
    ray_address: str | None = None
    """Run the rollout workers on this Ray cluster (e.g. ray://head:10001 or auto) instead of a local one."""
    dynamic_sampling: bool = False
    """Dynamic sampling: keep only initial states whose samples differ in outcome score by more than --min-gap, and
    draw further initial states until each task has --states-per-task of them (or --max-rollouts is reached).
    Without it every drawn state is used."""
    max_rollouts: int | None = None
    """With --dynamic-sampling, the most rollouts one iteration may draw (default: 4 x tasks x states-per-task x
    samples-per-state)."""
    batch_envs: int = 32
    """Environments stepped in lockstep (the policy samples every live one's action in one call; each holds a
    pybullet world of about 90 MB); with --rollout-workers, episodes per work item. Episodes do not depend on it."""


@dataclass
class GcpgConfig:
    lambda_self: float = 0.1
    """Weight of R_self, the length-normalised trajectory likelihood (Eq. 9-10)."""
    lambda_ext: float = 1.0
    """Weight of R_ext, exp(-total stage cost) from the compiled constraints (Eq. 8)."""
    lambda_success: float = 1.0
    """Weight of I_success, the task-success indicator."""
    m: int = 2
    """Pair the top m with the bottom m trajectories of each initial state (m^2 pairs per state)."""
    pairing: Literal["gcpg", "random-success"] = "gcpg"
    """How pairs are chosen within an initial state: gcpg (top m x bottom m by R_GCPG) or random-success (up to m^2
    random success-vs-failure pairs, the paper's Table I ablation)."""
    min_gap: float = 0.01
    """A pair is made only when the chosen trajectory's outcome score (lambda-ext * R_ext + lambda-success *
    I_success) beats the rejected one's by more than this; R_self only breaks ties among outcomes. Also the spread
    an initial state needs to count as informative under --dynamic-sampling."""
    self_pairs: bool = False
    """Let R_self differences alone make a pair (the paper's rule: any R_GCPG difference counts, so two equally good
    successes are paired by their likelihood)."""
    success_pairs: int = 0
    """Also pair the best N successes of each initial state against its worst N successes (outcome gap > --min-gap),
    so what the objective says about how to succeed (fewer contacts, shorter paths) is learnt from contrasts where
    both trajectories finish the task; top-m-against-bottom-m pairs are mostly success against failure. 0: off.
    Preference losses only (tpo, dpo-step)."""
    success_advantage: float = 0.0
    """With --loss rloo or grpo: add W x each success's outcome score normalised among the successes of its initial
    state (minus their mean, over their standard deviation), so what the objective grades among successes (fewer
    contacts, shorter paths) is learnt at a scale of its own rather than as a share of the success contrast, which
    sets the spread of any group that mixes successes and failures. 0: off."""


@dataclass
class OptimConfig:
    loss: Literal["tpo", "dpo-step", "sft", "grpo", "rloo"] = "tpo"
    """Training loss: tpo (trajectory-wise, GRAPE), dpo-step (per-step DPO, the OpenVLA-DPO baseline), sft
    (imitation of the successful rollouts), or a group-relative policy gradient with a clipped ratio: rloo
    (advantage = R_GCPG minus the mean of the other samples of the same initial state) or grpo (advantage = R_GCPG
    minus the group mean, divided by the group's standard deviation)."""
    beta: float = 0.1
    """Inverse temperature of the preference loss (TPO, step-DPO)."""
    lr: float = 5e-4
    """AdamW learning rate of the LoRA parameters."""
    nll_weight: float = 1.0
    """Weight of a negative log-likelihood term on the chosen trajectories (mean per step) added to the preference
    loss, as in RPO; it keeps the chosen actions likely while the rejected ones are pushed down (without it, TPO at
    lr 5e-4 collapsed greedy success: docs/results.md). 0 = the paper's pure TPO."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epochs: int = 2
    """Passes over the iteration's pairs (or trajectories, for sft, grpo and rloo) per iteration; the optimizer
    steps of an iteration scale with its data."""
    pairs_per_step: int = 8
    """Preference pairs (or trajectories, for sft, grpo and rloo) per optimizer step."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """Learning rate within each iteration: constant, or cosine (decays from --lr to 0 over the iteration's
    optimizer steps)."""
    clip_eps: float = 0.2
    """grpo/rloo: the policy ratio of each action step is clipped to [1 - eps, 1 + eps] (PPO)."""
    kl_coef: float = 0.0
    """grpo/rloo: weight of a KL(policy || reference) penalty per step (0 = none)."""
    holdout_fraction: float = 0.0
    """Fraction of each iteration's initial states whose pairs (or trajectories) are held out of training; their
    loss is logged as heldout/loss after every epoch, so over-fitting shows (0 = none)."""
    early_stopping: bool = False
    """Stop an iteration's epochs at the first one that does not lower the held-out loss and keep the
    adapter of the epoch that had the lowest (needs --holdout-fraction > 0)."""
    chunk_steps: int = 2048
    """Most trajectory steps in one forward pass; longer batches are processed in chunks with the exact
    whole-trajectory gradient."""
    grad_clip: float = 1.0
    """Clip the gradient's global norm to this value (0 = no clipping)."""
    learner_processes: int = 1
    """Processes computing each optimizer step's gradient (torch.distributed: gloo on CPU, nccl with one GPU per
    process): each takes an equal share of the batch's steps and the gradients are summed, so the update equals one
    process's. Rollouts stay in the main process."""
    ref_update: Literal["fixed", "iteration"] = "iteration"
    """Reference policy of the preference loss: fixed (the starting policy in every iteration) or iteration
    (iterative-DPO style: before each iteration after the first, the LoRA adapter is merged into the base weights
    and a fresh one attached, so the reference is the previous iteration's policy; the default, since a fixed
    reference let later iterations start far from it and collapse: docs/results.md)."""


@dataclass
class TrainConfig:
    constraints: str = ""
    """Objective .grc (applied to every task's stock file in constraints/tasks/) or a task .grc (then only that
    task)."""
    overrides: list[str] = field(default_factory=list, metadata={"flag": "--set", "repeatable": True})
    """Override constraint params of every task file, NAME=VALUE (as grapec --set); repeatable."""
    iterations: int = 3
    """Number of GRAPE iterations K (sample -> score -> rank -> pair -> train)."""
    seed: int = 0
    """Seed of everything random: initial states, sampling, LoRA init, shuffling."""
    output_dir: str | None = None
    """Run folder (default runs/<objective>__<loss>__seed<seed>__<time>). An existing run folder is resumed if its
    saved config matches."""
    eval_episodes: int = 0
    """Evaluation episodes per task after each iteration on the validation seeds (0 = none; use grape-eval for the
    full evaluation)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    gcpg: GcpgConfig = field(default_factory=GcpgConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """From `to_dict`'s form; unknown keys are errors (trainer.flags.ConfigFileError)."""
        from trainer.flags import config_from_dict

        return config_from_dict(cls, data)

    def default_output_dir(self, now: dt.datetime | None = None) -> Path:
        stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        return Path("runs") / f"{Path(self.constraints).stem}__{self.optim.loss}__seed{self.seed}__{stamp}"


_SUBCONFIGS = {"policy": PolicyConfig, "rollout": RolloutConfig, "gcpg": GcpgConfig, "optim": OptimConfig}

LEGACY_DEFAULTS = {
    "nll_weight": 0.0,
    "lora_targets": "attention",
    "ref_update": "fixed",
    "min_gap": 1e-9,
    "self_pairs": True,
}
"""What a run saved before these fields existed did: a resume compares against these, not today's defaults."""

PATH_FIELDS = {"constraints", "base_policy", "sft_cache", "action_stats"}
"""Fields naming files: a relative and an absolute spelling of one path are the same setting."""

RESUMABLE_FIELDS = {
    "iterations",
    "output_dir",
    "eval_episodes",
    "device",
    "learner_processes",
    "trust_remote_code",
    "batch_envs",
}
"""Fields a resumed run may change: running more iterations extends a run; where it lives, how
much it evaluates and how many environments step together change no result already computed."""


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human-readable `name: saved -> current` lines for every field that may not change on resume."""

    def flat(d: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in d.items():
            if key in _SUBCONFIGS and isinstance(value, dict):
                out.update(value)
            else:
                out[key] = value
        return out

    def same(name: str, x: Any, y: Any) -> bool:
        if name in PATH_FIELDS and isinstance(x, str) and isinstance(y, str):
            return os.path.realpath(x) == os.path.realpath(y)  # one file, spelled two ways
        return x == y

    # A field added since the run was saved takes the value that reproduces the old behaviour.
    a, b = {**flat(TrainConfig().to_dict()), **LEGACY_DEFAULTS, **flat(saved)}, flat(current)
    return [
        f"{name}: {a.get(name)!r} -> {b.get(name)!r}"
        for name in sorted(set(a) | set(b))
        if name not in RESUMABLE_FIELDS and not same(name, a.get(name), b.get(name))
    ]


TRAIN_DESCRIPTION = (
    "Align a policy with an objective by GRAPE (Algorithm 1): sample, score with the compiled .grc, rank, pair, "
    "train with TPO, repeat."
)


def build_parser(prog: str = "grape-train", epilog: str | None = None) -> argparse.ArgumentParser:
    """grape-train's flags, one per TrainConfig field (trainer.flags); unset flags keep the dataclass default."""
    from trainer.flags import add_config_arguments

    parser = argparse.ArgumentParser(
        prog=prog, description=TRAIN_DESCRIPTION, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, TrainConfig, title="run")
    return parser


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> TrainConfig:
    """Place parsed flags into the nested dataclasses over `base` (a saved config) or the defaults."""
    from trainer import flags

    return flags.config_from_args(TrainConfig, args, base)


FIELD_BOUNDS: dict[str, Bound] = {
    "iterations": AT_LEAST_ONE,
    "seed": SEED,
    "eval_episodes": Bound(low=0),
    "sft_demos": AT_LEAST_ONE,
    "sft_steps": AT_LEAST_ONE,
    "lora_rank": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
    "states_per_task": AT_LEAST_ONE,
    "samples_per_state": Bound(low=2, note="to form pairs"),
    "temperature": POSITIVE,
    "max_steps": AT_LEAST_ONE,
    "m": AT_LEAST_ONE,
    "learner_processes": AT_LEAST_ONE,
    "beta": POSITIVE,
    "lr": POSITIVE,
    "epochs": AT_LEAST_ONE,
    "pairs_per_step": AT_LEAST_ONE,
    "chunk_steps": AT_LEAST_ONE,
    "clip_eps": Bound(low=0, high=1, low_open=True, high_open=True),
    "holdout_fraction": Bound(low=0, high=1, high_open=True),
    "max_rollouts": AT_LEAST_ONE,
    "batch_envs": AT_LEAST_ONE,
    "success_advantage": Bound(low=0),
}
"""Each numeric field's accepted range (trainer.bounds). A field not listed here (and without a
"bounds" entry in its metadata) must be a finite number >= 0: lambdas, weights, grad clip, ..."""


def validate(config: TrainConfig) -> list[str]:
    """Problems with values that argparse cannot see; each names its flag."""
    problems = [] if config.constraints else ["--constraints is required (an objective or task .grc)"]
    problems += dataclass_problems(config, FIELD_BOUNDS)
    if config.rollout.ray_address is not None and not config.rollout.rollout_workers:
        problems.append("--ray-address needs --rollout-workers N (N >= 1)")
    if config.optim.early_stopping and config.optim.holdout_fraction <= 0:
        problems.append("--early-stopping needs --holdout-fraction > 0 (the held-out loss decides when to stop)")
    if config.policy.policy_type == "hf" and not config.policy.base_policy:
        problems.append("--policy-type hf needs --policy <folder of the HF checkpoint>")
    if config.policy.device == "cuda" or config.policy.dtype != "float32":  # the defaults need no torch to check
        from trainer.device import DeviceError, resolve

        try:
            resolve(config.policy.device, config.policy.dtype)
        except DeviceError as error:
            problems.append(str(error))
    if config.gcpg.m * 2 > config.rollout.samples_per_state:
        problems.append(
            f"--m {config.gcpg.m} needs --samples-per-state >= {2 * config.gcpg.m} "
            "(top m and bottom m must not overlap)"
        )
    if config.gcpg.success_pairs and (config.optim.loss not in ("tpo", "dpo-step") or config.gcpg.pairing != "gcpg"):
        problems.append(
            f"--success-pairs pairs trajectories for a preference loss with --pairing gcpg; "
            f"--loss {config.optim.loss} --pairing {config.gcpg.pairing} does not use such pairs"
        )
    if config.gcpg.success_advantage and config.optim.loss not in ("rloo", "grpo"):
        problems.append(
            f"--success-advantage adds to group-relative advantages (--loss rloo or grpo); --loss {config.optim.loss} "
            "has none (for preference losses, --success-pairs contrasts successes)"
        )
    for item in config.overrides:
        name, sep, value = item.partition("=")
        try:
            finite = math.isfinite(float(value))
        except ValueError:
            finite, sep = True, ""
        if not finite:
            problems.append(f"--set {item!r}: the value must be a finite number")
            continue
        if not sep or not name:
            problems.append(f"--set {item!r}: expected NAME=NUMBER")
    return problems


def parse_overrides(items: list[str]) -> dict[str, float]:
    return {name: float(value) for name, _, value in (item.partition("=") for item in items)}
