"""The GRAPE loop (Algorithm 1), the only stateful orchestrator of the trainer.

    for k in 1..K:
        rollouts   sample `samples_per_state` trajectories from each (task, initial state)
        score      R_ext from each task's compiled .grc, R_self, I_success -> R_GCPG
        rank, pair top-m x bottom-m within each initial state
        reference  log pi_ref of every paired step, once, with the LoRA adapter disabled
                   (--ref-update iteration: for k > 1 the adapter is first merged into the base
                   weights and a fresh one attached, so pi_ref is iteration k-1's policy)
        train      TPO over the pairs (or step-DPO, or SFT on the successful rollouts)
        checkpoint LoRA adapter + optimizer + config + iteration + RNG state, atomically

Run folder layout:

    config.json                 the TrainConfig (compared on resume)
    metrics.jsonl               one JSON line per optimizer step and per iteration
    tb/                         tensorboard event files
    iterations/iter_000k/       rollouts/ (trajectory store), scores.parquet, pairs.parquet
    checkpoints/iter_000k/      policy/ (base weights + adapter, loadable by load_policy; with
                                --ref-update iteration the base holds iterations < k merged),
                                trainer_state.pt (optimizer, iteration, RNG states)

Every folder is written under a temporary name and renamed into place when complete, so a
killed run leaves only complete checkpoints behind; resuming starts after the newest one.
Everything random in iteration k is seeded from (seed, k), so a resumed run samples exactly
what the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grape_dsl.util.atomic import atomic_directory, atomic_write_text
from trainer.config import RUN_CONFIG_FILE, TrainConfig, config_differences, parse_overrides
from trainer.gcpg import (
    GcpgWeights,
    count_pair_kinds,
    group_advantages,
    make_pairs,
    merge_pairs,
    pair_kinds,
    score_columns,
    success_advantages,
    success_pairs,
    write_parquet,
)
from trainer.losses import Metrics, group_policy_gradient_loss, sft_loss, step_dpo_loss, tpo_loss
from trainer.policy.base import Policy
from trainer.rollout import Rollout
from trainer.runfolder import (
    RunFolderError,
    RunLock,
    count_lines,
    keep_metrics,
    save_torch,
    select_checkpoint,
    verify_checkpoint,
    write_manifest,
    writing,
)
from trainer.sampling import TRAIN_SPLIT

CONFIG_FILE = RUN_CONFIG_FILE
METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_FILE = "trainer_state.pt"
POLICY_DIR = "policy"


class TrainError(Exception):
    """A problem with the user's input or run folder, reported as one clear message (exit 1)."""


# ---------------------------------------------------------------------- constraints
@dataclass
class TaskProgram:
    """A task's compiled constraints under the run's objective."""

    task: str
    path: Path
    program: Any  # grape_dsl CompiledProgram


def _format_grc_error(error: Exception) -> str:
    from grape_dsl.diagnostics import render

    sources = getattr(error, "sources", {})
    rendered = [render(d, sources.get(d.path)) for d in getattr(error, "diagnostics", [])]
    return "\n".join(rendered) or str(error)


def stock_task_dir(constraints_file: Path) -> Path:
    """Where an objective's task files live: constraints/tasks next to it, else the repo's."""
    beside = constraints_file.resolve().parent / "tasks"
    if beside.is_dir():
        return beside
    return Path(__file__).resolve().parents[1] / "constraints" / "tasks"


def resolve_constraints(constraints: str, tasks: Sequence[str], overrides: dict[str, float]) -> list[TaskProgram]:
    """Compile each task's constraints; every problem is found before any rollout runs.

    An objective file applies to each task's stock file; a task file trains that task only.
    Each task file is checked against the task's environment schema, so a constraint reading a
    keypoint or signal the task does not report is an error naming it (file:line:col).
    """
    import grape_dsl
    from grape_dsl.compiler import compile_checked
    from grape_dsl.diagnostics import GrcError
    from trainer.sim.tasks import TASKS, UnknownNameError, get_task

    path = Path(constraints)
    if not path.is_file():
        raise TrainError(f"--constraints: file not found: {path}")
    try:
        module = grape_dsl.parse(path.read_text(encoding="utf-8"), str(path))
    except GrcError as error:
        raise TrainError(f"--constraints: {path} does not parse:\n{_format_grc_error(error)}") from None
    except UnicodeDecodeError:
        raise TrainError(f"--constraints: {path} is not UTF-8 text") from None
    from grape_dsl import ast

    if isinstance(module, ast.TaskFile):
        if module.name not in TASKS:
            raise TrainError(
                f"--constraints: {path} is a task file for '{module.name}', which the simulator does not have "
                f"(known tasks: {', '.join(TASKS)})"
            )
        jobs = [(module.name, path, ())]
    else:
        task_dir = stock_task_dir(path)
        jobs = []
        for task in tasks:
            try:
                get_task(task)
            except UnknownNameError as error:
                raise TrainError(f"--tasks: {error}") from None
            task_file = task_dir / f"{task}.grc"
            if not task_file.is_file():
                raise TrainError(f"--tasks: no constraint file for task '{task}' at {task_file}")
            jobs.append((task, task_file, (str(path),)))

    programs, problems = [], []
    for task, task_file, objectives in jobs:
        spec = TASKS[task]
        schema = (list(spec.keypoint_names), list(spec.signal_names))
        try:
            # Loading with the task's schema rejects keypoints/signals the environment lacks.
            program = compile_checked(grape_dsl.load_task(str(task_file), objectives, overrides, schema=schema))
        except GrcError as error:
            problems.append(f"task '{task}' ({task_file}):\n{_format_grc_error(error)}")
            continue
        programs.append(TaskProgram(task, task_file, program))
    if problems:
        raise TrainError("constraints do not fit the tasks:\n" + "\n".join(problems))
    return programs


# ---------------------------------------------------------------------- step data
@dataclass
class StepBank:
    """The steps of a set of trajectories, flattened for batched log-prob evaluation.

    Trajectory n owns steps offsets[n] .. offsets[n+1]-1 of states, tokens and images.
    """

    states: np.ndarray  # float32 [S, D]
    tokens: torch.Tensor  # int64 [S, 7]
    instructions: list[str]  # [N]
    offsets: np.ndarray  # int64 [N + 1]
    images: np.ndarray | None = None  # uint8 [S, H, W, 3]
    step_owner: np.ndarray = field(init=False)  # int64 [S]

    def __post_init__(self) -> None:
        self.step_owner = np.repeat(np.arange(len(self.instructions)), np.diff(self.offsets))

    @classmethod
    def from_rollouts(cls, rollouts: Sequence[Rollout]) -> StepBank:
        lengths = [r.episode.length for r in rollouts]
        images = [r.images for r in rollouts]
        return cls(
            states=np.concatenate([r.episode.states for r in rollouts]).astype(np.float32),
            tokens=torch.as_tensor(np.concatenate([r.episode.action_tokens for r in rollouts]), dtype=torch.long),
            instructions=[r.episode.instruction for r in rollouts],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            images=np.concatenate(images) if images and images[0] is not None else None,
        )

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def steps_of(self, trajectories: Sequence[int]) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[n], self.offsets[n + 1]) for n in trajectories])

    def log_prob(self, policy: Policy, steps: np.ndarray) -> torch.Tensor:
        obs = {"state": self.states[steps]}
        if self.images is not None:
            obs["image"] = self.images[steps]
        instructions = [self.instructions[n] for n in self.step_owner[steps]]
        return policy.log_prob(obs, instructions, self.tokens[steps])


def step_logps(policy: Policy, bank: StepBank, steps: np.ndarray, chunk_steps: int) -> torch.Tensor:
    """Per-step log-probs [len(steps)] without gradient, in chunks of at most chunk_steps."""
    with torch.no_grad():
        parts = [bank.log_prob(policy, steps[i : i + chunk_steps]) for i in range(0, len(steps), chunk_steps)]
    return torch.cat(parts)


def backward_through_steps(
    policy: Policy,
    bank: StepBank,
    steps: np.ndarray,
    loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]],
    chunk_steps: int,
) -> Metrics:
    """Accumulate d loss / d params, where loss_fn maps the per-step log-probs of `steps` to a loss.

    When all steps fit one forward pass this is plain autograd. Otherwise the loss still sees
    every step (so TPO gets whole-trajectory sums): a no-grad pass computes all log-probs, the
    loss is differentiated with respect to them (g = dL/dlogp), then each chunk is re-run with
    gradient and back-propagated with weights g. Since the loss depends on the parameters only
    through the log-probs, sum_chunks g . dlogp/dtheta is exactly dL/dtheta, at the memory of
    one chunk.
    """
    if len(steps) <= chunk_steps:
        loss, metrics = loss_fn(bank.log_prob(policy, steps))
        loss.backward()
        return metrics
    logps = step_logps(policy, bank, steps, chunk_steps).requires_grad_(True)
    loss, metrics = loss_fn(logps)
    (weights,) = torch.autograd.grad(loss, logps)
    for i in range(0, len(steps), chunk_steps):
        chunk = steps[i : i + chunk_steps]
        (bank.log_prob(policy, chunk) * weights[i : i + chunk_steps]).sum().backward()
    return metrics


def _segment_sums(values: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    device = values.device  # the policy's: log-probs stay where they were computed
    owner = torch.repeat_interleave(
        torch.arange(len(lengths), device=device), torch.as_tensor(list(lengths), device=device)
    )
    return torch.zeros(len(lengths), dtype=values.dtype, device=device).index_add(0, owner, values)


def _padded(values: torch.Tensor, lengths: Sequence[int], width: int) -> torch.Tensor:
    """[sum(lengths)] -> [N, width], each trajectory's first `width` steps (zero padded)."""
    lengths_t = torch.as_tensor(list(lengths), device=values.device)
    starts = torch.cumsum(lengths_t, 0) - lengths_t
    t = torch.arange(width, device=values.device)[None, :]
    valid = t < lengths_t[:, None]
    index = torch.where(valid, starts[:, None] + t, torch.zeros_like(t))
    return values[index].masked_fill(~valid, 0.0)


def preference_loss_fn(
    loss: str,
    pairs: np.ndarray,
    lengths: np.ndarray,
    ref_step_logps: torch.Tensor,
    beta: float,
    nll_weight: float = 0.0,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]:
    """The loss over the concatenated steps of trajectories [c_0, r_0, c_1, r_1, ...].

    `pairs` [P, 2] index into `lengths` (per-trajectory step counts); `ref_step_logps` are the
    reference log-probs of the same concatenated steps. With `nll_weight` > 0 the mean per-step
    negative log-likelihood of the chosen trajectories is added, times the weight.
    """
    order = pairs.reshape(-1)
    seg_lengths = [int(lengths[n]) for n in order]
    chosen, rejected = slice(0, None, 2), slice(1, None, 2)
    chosen_steps = sum(seg_lengths[0::2])
    if loss == "tpo":
        ref_sums = _segment_sums(ref_step_logps, seg_lengths)

        def preference(policy_step_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
            sums = _segment_sums(policy_step_logps, seg_lengths)
            return tpo_loss(sums[chosen], sums[rejected], ref_sums[chosen], ref_sums[rejected], beta)

    elif loss == "dpo-step":
        width = max(seg_lengths)
        device = ref_step_logps.device
        overlap = torch.as_tensor(
            [min(seg_lengths[2 * p], seg_lengths[2 * p + 1]) for p in range(len(pairs))], device=device
        )
        mask = torch.arange(width, device=device)[None, :] < overlap[:, None]
        ref = _padded(ref_step_logps, seg_lengths, width)

        def preference(policy_step_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
            padded = _padded(policy_step_logps, seg_lengths, width)
            return step_dpo_loss(padded[chosen], padded[rejected], ref[chosen], ref[rejected], mask, beta)

    else:
        raise ValueError(f"unknown preference loss {loss!r}")
    if nll_weight == 0:
        return preference

    def preference_with_nll(policy_step_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss_value, metrics = preference(policy_step_logps)
        chosen_nll = -_segment_sums(policy_step_logps, seg_lengths)[chosen].sum() / chosen_steps
        total = loss_value + nll_weight * chosen_nll
        return total, {
            **metrics,
            "loss": float(total.detach()),
            "loss/preference": metrics["loss"],
            "nll/chosen": float(chosen_nll.detach()),
        }

    return preference_with_nll


def sft_loss_fn(lengths: Sequence[int]) -> Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]:
    width = max(lengths)
    mask = torch.arange(width)[None, :] < torch.as_tensor(list(lengths))[:, None]

    def sft(policy_step_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return sft_loss(_padded(policy_step_logps, list(lengths), width), mask.to(policy_step_logps.device))

    return sft


def group_policy_gradient_loss_fn(
    lengths: Sequence[int],
    old_step_logps: torch.Tensor,
    advantages: Sequence[float],
    clip_eps: float,
    ref_step_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]:
    """The clipped group-relative policy-gradient loss over the concatenated steps of trajectories
    with per-step lengths `lengths`; each step carries its trajectory's advantage."""
    step_advantages = torch.repeat_interleave(
        torch.as_tensor(list(advantages), dtype=torch.float32), torch.as_tensor(list(lengths))
    )

    def group_pg(policy_step_logps: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return group_policy_gradient_loss(
            policy_step_logps,
            old_step_logps,
            step_advantages.to(policy_step_logps.device),
            clip_eps,
            ref_step_logps,
            kl_coef,
        )

    return group_pg


GROUP_LOSSES = ("grpo", "rloo")
"""Losses that train on single trajectories weighted by group-relative advantages."""


# ---------------------------------------------------------------------- run folder
def _set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"iter_{iteration:04d}"


def completed_checkpoints(run_dir: Path) -> dict[int, Path]:
    """Iteration -> checkpoint folder, for every complete checkpoint (temp folders skipped)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return {}
    found = {}
    for folder in root.iterdir():
        if folder.name.startswith("iter_") and (folder / TRAINER_STATE_FILE).is_file():
            try:
                found[int(folder.name[len("iter_") :])] = folder
            except ValueError:
                continue
    return dict(sorted(found.items()))


def open_run_dir(config: TrainConfig, resume_from: str = "latest") -> tuple[Path, int]:
    """The run folder and its last completed iteration (-1: a new run); writes nothing.

    An existing folder is resumed only if its saved config matches (fields that may change on
    resume aside); otherwise a TrainError lists every difference, before anything is touched.
    A saved config without any checkpoint binds nothing: that run never started. An unreadable
    one is an error, or with resume_from "previous" is taken from the newest checkpoint.
    """
    run_dir = Path(config.output_dir) if config.output_dir else config.default_output_dir()
    saved_path = run_dir / CONFIG_FILE
    if saved_path.is_file() and completed_checkpoints(run_dir):
        try:
            saved = json.loads(saved_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            saved = _config_from_checkpoints(run_dir) if resume_from == "previous" else None
            if saved is None:
                raise TrainError(
                    f"{saved_path} is corrupt ({error}); each checkpoint holds the run's settings too: "
                    "add --resume-from previous to take them from the newest checkpoint that verifies"
                ) from None
        differences = config_differences(saved, config.to_dict())
        if differences:
            raise TrainError(
                f"{run_dir} holds a run made with a different configuration; resume it with the same "
                "options or choose another --output-dir. Differences (saved -> now):\n  " + "\n  ".join(differences)
            )
    elif (
        not saved_path.is_file()
        and run_dir.exists()
        and any(p for p in run_dir.iterdir() if not p.name.startswith("."))
    ):
        raise TrainError(
            f"--output-dir {run_dir} exists and is not a grape-train run folder (no {CONFIG_FILE}); "
            "choose an empty or new folder"
        )
    done = completed_checkpoints(run_dir)
    return run_dir, max(done) if done else -1


def _config_from_checkpoints(run_dir: Path) -> dict[str, Any] | None:
    """The run config saved in the newest checkpoint that verifies and loads, if any."""
    for folder in reversed(completed_checkpoints(run_dir).values()):
        if verify_checkpoint(folder, (TRAINER_STATE_FILE,)) is None:
            try:
                return torch.load(folder / TRAINER_STATE_FILE, weights_only=False)["config"]
            except Exception:  # an unloadable state is one more corrupt checkpoint: try the one before
                continue
    return None


def _checkpoint_loads(folder: Path) -> str | None:
    """None if a checkpoint without a manifest (written before manifests existed) loads, else why not."""
    from trainer.policy import load_policy

    try:
        torch.load(folder / TRAINER_STATE_FILE, weights_only=False)
        load_policy(folder / POLICY_DIR)
    except Exception as error:  # whatever stops it loading makes it unusable; the message says what
        return f"it does not load ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    return None


def write_run_config(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config.to_dict(), indent=2) + "\n")


def save_checkpoint(
    run_dir: Path,
    iteration: int,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    global_step: int,
    summary: dict[str, Any],
    metrics_lines: int | None = None,
) -> Path:
    """Write checkpoint `iteration` atomically, with a manifest of its files' digests.

    `metrics_lines`: how many metrics.jsonl lines the run has written up to this checkpoint
    (a resume from it cuts the file back to them).
    """
    target = checkpoint_dir(run_dir, iteration)
    with writing(target), atomic_directory(target) as staging:
        policy.save_pretrained(staging / POLICY_DIR)
        _write_model_card(staging / POLICY_DIR, run_dir, iteration, config, summary)
        save_torch(
            {
                "iteration": iteration,
                "global_step": global_step,
                "optimizer": optimizer.state_dict(),
                "config": config.to_dict(),
                "rng": _rng_state(),
                "summary": summary,
                "metrics_lines": metrics_lines,
            },
            staging / TRAINER_STATE_FILE,
        )
        write_manifest(staging)
    return target


def _write_model_card(
    folder: Path, run_dir: Path, iteration: int, config: TrainConfig, summary: dict[str, Any]
) -> None:
    from trainer.modelcard import CARD_FILE, render_card

    metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    text = render_card(
        title=f"{run_dir.name} iteration {iteration}",
        base_policy=config.policy.base_policy,
        tasks=list(config.rollout.tasks),
        constraints=config.constraints,
        iteration=iteration,
        metrics=metrics,
        settings=config.to_dict(),
    )
    (folder / CARD_FILE).write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------- policy setup
def attach_adapter(policy: Policy, config: TrainConfig) -> Policy:
    """A fresh LoRA adapter as the config describes; the policy without it is the reference."""
    from trainer.device import place_policy, resolve
    from trainer.policy import add_lora

    targets = "all-linear" if config.policy.lora_targets == "all-linear" else None
    add_lora(policy, rank=config.policy.lora_rank, alpha=config.policy.lora_alpha, target_modules=targets)
    return place_policy(
        policy, *resolve(config.policy.device, config.policy.dtype)
    )  # the new factors: on the device, float32


def sft_recipe_tasks(run_tasks: Sequence[str], default: tuple[str, ...]) -> tuple[str, ...]:
    """The tasks the default SFT policy learns for a run on `run_tasks`: the default recipe's
    (so its cache is shared) unless the run names a different set of stock tasks, then those,
    in the default's order (so one set in any order shares one cached policy)."""
    stock = {task for task in run_tasks if task in default}
    if not stock or stock == set(default):
        return default
    return tuple(task for task in default if task in stock)


def load_base_policy(config: TrainConfig, progress: bool) -> tuple[Policy, str]:
    """The policy to align and where it came from (trains the default SFT policy if needed)."""
    from trainer.policy import CheckpointError
    from trainer.policy.source import open_policy, options_from_config

    options = options_from_config(config.policy)
    if config.policy.base_policy:
        try:
            return open_policy(config.policy.base_policy, **options), config.policy.base_policy
        except (CheckpointError, OSError, ValueError) as error:
            raise TrainError(f"--policy {config.policy.base_policy}: cannot load the policy: {error}") from None
    from trainer.sft import SFTConfig, SFTError, ensure_default_sft_policy

    recipe = SFTConfig()
    recipe.tasks = sft_recipe_tasks(config.rollout.tasks, recipe.tasks)
    if config.policy.sft_demos is not None:
        recipe.demos_per_task = config.policy.sft_demos
    if config.policy.sft_steps is not None:
        recipe.steps = config.policy.sft_steps
    try:
        folder = ensure_default_sft_policy(config.policy.sft_cache, recipe, progress=progress)
    except SFTError as error:
        raise TrainError(f"training the default SFT policy failed: {error}") from None
    return open_policy(folder, **{**options, "policy_type": "auto"}), str(folder)


# ---------------------------------------------------------------------- the loop
class MetricLogger:
    """metrics.jsonl + tensorboard + one console line per optimizer step."""

    def __init__(self, run_dir: Path, echo: Callable[[str], None], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / METRICS_FILE
        # purge_step: TensorBoard drops what a killed process logged at or after it
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step)
        self.echo = echo
        self.lines = count_lines(self.path)

    def log(self, step: int, metrics: dict[str, float], line: str | None = None) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        with writing(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.lines += 1
        if line is not None:
            self.echo(line)

    def close(self) -> None:
        self.writer.close()


def score_rollouts(
    rollouts: list[Rollout], programs: dict[str, TaskProgram], weights: GcpgWeights
) -> dict[str, np.ndarray | list]:
    """Every component of R_GCPG plus the compiler's per-stage and per-constraint costs."""
    from trainer.store import episodes_to_batch

    n = len(rollouts)
    r_ext = np.zeros(n)
    extra: dict[str, np.ndarray] = {}
    for task, tp in programs.items():
        members = [i for i, r in enumerate(rollouts) if r.spec.task == task]
        if not members:
            continue
        table = tp.program.score(episodes_to_batch([rollouts[i].episode for i in members]))
        r_ext[members] = table.r_ext
        for j, stage in enumerate(table.stage_names):
            column = extra.setdefault(f"stage_cost/{stage}", np.full(n, np.nan))
            column[members] = table.stage_costs[:, j]
        for j, name in enumerate(table.constraint_names):
            column = extra.setdefault(f"constraint_cost/{name}", np.full(n, np.nan))
            column[members] = table.constraint_costs[:, j]
    groups = np.array([r.spec.group for r in rollouts])
    columns = score_columns(
        logp_sums=np.array([float(r.episode.logprobs.sum()) for r in rollouts]),
        lengths=np.array([r.episode.length for r in rollouts]),
        r_ext=r_ext,
        success=np.array([r.episode.success for r in rollouts]),
        group_ids=groups,
        weights=weights,
        tokens_per_step=int(rollouts[0].episode.action_tokens.shape[1]),
    )
    return {
        "task": [r.spec.task for r in rollouts],
        "split": [r.spec.split for r in rollouts],
        "seed": np.array([r.spec.seed for r in rollouts]),
        "sample": np.array([r.spec.sample for r in rollouts]),
        "group": groups.tolist(),
        "instruction": [r.episode.instruction for r in rollouts],
        **columns,
        "grasp": np.array([r.episode.grasp for r in rollouts]),
        "collision": np.array([r.episode.collision for r in rollouts]),
        **extra,
    }


@dataclass
class IterationResult:
    iteration: int
    metrics: dict[str, float]
    global_step: int


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    stop_after: int | None = None,
    resume_from: str = "latest",
) -> Path:
    """Run (or resume) GRAPE per `config`; return the run folder.

    `stop_after` ends the process's work after that iteration's checkpoint (tests use it to
    simulate a run killed between iterations). `resume_from`: "latest" (a corrupt newest
    checkpoint is an error naming it) or "previous" (corrupt checkpoints are set aside and the
    newest one that verifies is resumed). One process at a time writes a run folder; another
    one gets a TrainError at once.
    """
    run_dir, _ = open_run_dir(
        config, resume_from
    )  # a foreign or differently configured folder: refused before any write
    if not config.output_dir:  # the default name holds the time: fix it once
        config = dataclasses.replace(config, output_dir=str(run_dir))
    try:
        with RunLock(run_dir, echo):
            return _train(config, progress=progress, echo=echo, stop_after=stop_after, resume_from=resume_from)
    except RunFolderError as error:
        raise TrainError(str(error)) from error


def _train(
    config: TrainConfig, *, progress: bool, echo: Callable[[str], None], stop_after: int | None, resume_from: str
) -> Path:
    from trainer.policy import lora_parameters, merge_lora

    # One thread: the policy's matrices are small, so a second thread gains little, and when the
    # CPU is shared (pybullet, other jobs) threads that wait on each other make every call slower.
    torch.set_num_threads(1)
    overrides = parse_overrides(config.overrides)
    programs = {tp.task: tp for tp in resolve_constraints(config.constraints, config.rollout.tasks, overrides)}
    run_dir, _ = open_run_dir(config, resume_from)  # again, now that this process holds the folder
    last_done = select_checkpoint(
        run_dir, completed_checkpoints(run_dir), resume_from, (TRAINER_STATE_FILE,), _checkpoint_loads, echo
    )
    if resume_from == "previous" and last_done >= 0:
        write_run_config(run_dir, config)  # restores a corrupt config.json (the settings matched the checkpoint's)
    if last_done >= config.iterations:
        echo(f"{run_dir}: all {config.iterations} iterations already done")
        return run_dir

    if last_done < 0:
        policy, source = load_base_policy(
            config, progress
        )  # before the run folder exists: a bad --policy leaves nothing
        # Seeded after loading: training the default SFT policy first (a cold cache) draws random
        # numbers, and the LoRA init and every later stream must not depend on whether it ran.
        _set_seeds(config.seed)
        attach_adapter(policy, config)
        optimizer = torch.optim.AdamW(
            lora_parameters(policy), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        global_step = 0
        metrics_lines = 0
        write_run_config(run_dir, config)  # only now has the run started
        atomic_write_text(run_dir / "base_policy.txt", source + "\n")
        save_checkpoint(run_dir, 0, policy, optimizer, config, global_step, {"base_policy": source}, metrics_lines)
        last_done = 0
    else:
        folder = checkpoint_dir(run_dir, last_done)
        from trainer.policy.source import open_policy, options_from_config

        policy = open_policy(folder / POLICY_DIR, is_trainable=True, **options_from_config(config.policy))
        optimizer = torch.optim.AdamW(
            lora_parameters(policy), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        state = torch.load(folder / TRAINER_STATE_FILE, weights_only=False, map_location="cpu")
        optimizer.load_state_dict(state["optimizer"])
        _restore_rng(state["rng"])
        global_step = int(state["global_step"])
        metrics_lines = state.get("metrics_lines")
        write_run_config(run_dir, config)  # records a changed --iterations
        echo(f"resuming {run_dir} after iteration {last_done} (step {global_step})")

    keep_metrics(
        run_dir / METRICS_FILE, metrics_lines, global_step
    )  # what a killed process logged after the checkpoint goes
    logger = MetricLogger(run_dir, echo, purge_step=global_step + 1)
    weights = GcpgWeights(config.gcpg.lambda_self, config.gcpg.lambda_ext, config.gcpg.lambda_success)
    try:
        for k in range(last_done + 1, config.iterations + 1):
            if config.optim.ref_update == "iteration" and k > 1:
                # The policy so far becomes the base (and so the reference); the fresh adapter's
                # factors are new parameters, hence a new optimizer. Checkpoint k saves the merged
                # base, so a resumed run merges exactly what the uninterrupted one did.
                attach_adapter(merge_lora(policy), config)
                optimizer = torch.optim.AdamW(
                    lora_parameters(policy), lr=config.optim.lr, weight_decay=config.optim.weight_decay
                )
            result = run_iteration(
                config, k, policy, optimizer, programs, weights, run_dir, logger, global_step, progress
            )
            global_step = result.global_step
            logger.log(global_step, result.metrics)  # first, so the checkpoint's line count includes it
            save_checkpoint(run_dir, k, policy, optimizer, config, global_step, result.metrics, logger.lines)
            echo(
                f"iteration {k}/{config.iterations} done: "
                + ", ".join(f"{name}={value:.3g}" for name, value in result.metrics.items() if name.count("/") == 1)
            )
            if stop_after is not None and k >= stop_after:
                break
    finally:
        logger.close()
        if config.optim.learner_processes > 1:
            from trainer.learner import close_learners

            close_learners()
    return run_dir


def run_iteration(
    config: TrainConfig,
    k: int,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    programs: dict[str, TaskProgram],
    weights: GcpgWeights,
    run_dir: Path,
    logger: MetricLogger,
    global_step: int,
    progress: bool,
) -> IterationResult:
    from trainer.sampling import gather_rollouts
    from trainer.store import write_episode

    started = time.perf_counter()
    policy.eval()
    gathered = gather_rollouts(
        config, k, policy, list(programs), lambda rollouts: score_rollouts(rollouts, programs, weights), progress
    )
    rollouts, columns = gathered.rollouts, gathered.columns
    rollout_seconds = time.perf_counter() - started

    groups = np.asarray(columns["group"])
    kept = np.isin(groups, list(gathered.kept_groups))
    columns["kept"] = kept
    pairs = choose_pairs(config, k, columns, kept)
    kinds = pair_kinds(columns["success"], pairs)
    iteration_dir = run_dir / "iterations" / f"iter_{k:04d}"
    with writing(iteration_dir), atomic_directory(iteration_dir) as staging:
        for i, r in enumerate(rollouts):
            write_episode(
                staging / "rollouts", r.episode, extra={"sample": r.spec.sample, "group": r.spec.group, "index": i}
            )
        write_parquet(columns, staging / "scores.parquet")
        write_parquet(
            {
                "chosen": pairs[:, 0],
                "rejected": pairs[:, 1],
                "group": groups[pairs[:, 0]].tolist(),
                "kind": kinds,
                "chosen_r_gcpg": columns["r_gcpg"][pairs[:, 0]],
                "rejected_r_gcpg": columns["r_gcpg"][pairs[:, 1]],
                "chosen_outcome": columns["outcome"][pairs[:, 0]],
                "rejected_outcome": columns["outcome"][pairs[:, 1]],
            },
            staging / "pairs.parquet",
        )

    success = np.asarray(columns["success"])
    lengths = np.asarray(columns["length"])
    kept_groups = len(gathered.kept_groups)
    metrics: dict[str, float] = {
        "rollout/success_rate": float(success.mean()),
        "rollout/grasp_rate": float(np.mean(columns["grasp"])),
        "rollout/collision_rate": float(np.mean(columns["collision"])),
        "rollout/r_ext_mean": float(np.mean(columns["r_ext"])),
        "rollout/r_self_mean": float(np.mean(columns["r_self"])),
        "rollout/r_gcpg_mean": float(np.mean(columns["r_gcpg"])),
        "rollout/episode_length": float(lengths.mean()),
        "rollout/episodes": float(len(rollouts)),
        "rollout/groups": float(len(np.unique(groups))),
        "rollout/informative_groups": float(kept_groups),
        "rollout/sampling_rounds": float(gathered.rounds),
        "rollout/rollouts_per_informative_group": float(len(rollouts) / kept_groups) if kept_groups else float("nan"),
        "rollout/pairs": float(len(pairs)),
        "rollout/rollouts_per_pair": float(len(rollouts) / len(pairs)) if len(pairs) else float("nan"),
        **{f"pairs/{kind}": float(count) for kind, count in count_pair_kinds(kinds).items()},
        **{
            f"rollout/{task}/success_rate": float(success[np.asarray(columns["task"]) == task].mean())
            for task in programs
        },
        "perf/rollout_seconds": rollout_seconds,
        "perf/env_steps_per_second": float(lengths.sum() / max(rollout_seconds, 1e-9)),
    }
    by_kind = ", ".join(f"{count} {kind}" for kind, count in count_pair_kinds(kinds).items() if count)
    logger.echo(
        f"iteration {k}: {len(rollouts)} rollouts, {kept_groups} informative initial states, {len(pairs)} pairs"
        + (f" ({by_kind})" if by_kind else "")
    )

    bank = StepBank.from_rollouts(rollouts)
    train_started = time.perf_counter()
    units, advantages = training_units(config, columns, pairs, kept)
    if len(units) == 0:
        reason = {"sft": "no successful rollout"}.get(config.optim.loss, "no pair with a preference")
        if config.optim.loss in GROUP_LOSSES:
            reason = "no initial state whose samples differ in R_GCPG"
        logger.echo(f"iteration {k}: nothing to train on ({reason}); policy unchanged")
    else:
        held_out = held_out_units(config, k, units, groups)
        from trainer.learner import train_units

        global_step = train_units(
            config,
            k,
            policy,
            optimizer,
            bank,
            units,
            logger,
            global_step,
            progress,
            advantages=advantages,
            held_out=held_out,
        )
    metrics["perf/train_seconds"] = time.perf_counter() - train_started
    if config.eval_episodes:
        metrics.update(quick_eval(config, policy, list(programs), progress))
    metrics["perf/iteration_seconds"] = time.perf_counter() - started
    return IterationResult(k, metrics, global_step)


def choose_pairs(config: TrainConfig, k: int, columns: dict[str, Any], kept: np.ndarray) -> np.ndarray:
    """The iteration's (chosen, rejected) pairs, from the informative initial states only."""
    groups = np.asarray(columns["group"])
    if config.gcpg.pairing == "random-success":
        from trainer.pairing import random_success_pairs

        pairs = random_success_pairs(
            columns["success"], groups, config.gcpg.m, np.random.default_rng([config.seed, k, 13])
        )
    else:
        if config.gcpg.self_pairs:  # the paper's rule: any R_GCPG difference is a preference
            pairs = make_pairs(columns["r_gcpg"], groups, config.gcpg.m, min_gap=config.gcpg.min_gap)
        else:  # rank by outcome, R_self only orders equal outcomes
            pairs = make_pairs(
                columns["outcome"], groups, config.gcpg.m, tie_break=columns["r_gcpg"], min_gap=config.gcpg.min_gap
            )
        if config.gcpg.success_pairs:
            among_successes = success_pairs(
                columns["outcome"],
                columns["success"],
                groups,
                config.gcpg.success_pairs,
                tie_break=columns["r_gcpg"],
                min_gap=config.gcpg.min_gap,
            )
            pairs = merge_pairs(pairs, among_successes)
    return pairs[kept[pairs[:, 0]]] if len(pairs) else pairs


def training_units(
    config: TrainConfig, columns: dict[str, Any], pairs: np.ndarray, kept: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """What one optimizer step draws from: pairs [P, 2], or trajectories [N, 1] with their advantages."""
    loss = config.optim.loss
    if loss == "sft":
        return np.flatnonzero(columns["success"])[:, None], None
    if loss in GROUP_LOSSES:
        advantages = group_advantages(columns["r_gcpg"], columns["group"], normalize=loss == "grpo")
        if config.gcpg.success_advantage:
            advantages = advantages + config.gcpg.success_advantage * success_advantages(
                columns["outcome"], columns["success"], columns["group"], min_gap=config.gcpg.min_gap
            )
        chosen = np.flatnonzero(kept & (advantages != 0))
        return chosen[:, None], advantages[chosen]
    return pairs, None


def held_out_units(config: TrainConfig, k: int, units: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Boolean [len(units)]: units whose initial state is held out of training (whole groups, so a
    held-out unit shares no initial state with a trained one)."""
    fraction = config.optim.holdout_fraction
    unit_groups = groups[units[:, 0]]
    names = sorted(set(unit_groups.tolist()))
    if fraction <= 0 or len(names) < 2:
        return np.zeros(len(units), dtype=bool)
    count = min(len(names) - 1, max(1, round(fraction * len(names))))
    chosen = np.random.default_rng([config.seed, k, 17]).choice(len(names), size=count, replace=False)
    return np.isin(unit_groups, [names[i] for i in chosen])


def quick_eval(config: TrainConfig, policy: Policy, tasks: list[str], progress: bool) -> dict[str, float]:
    """In-domain success, grasp and collision rates on the fixed evaluation seeds (eval/ metrics)."""
    from trainer.eval import evaluate_policy, summarize

    outcomes, _ = evaluate_policy(
        policy,
        tasks,
        [TRAIN_SPLIT],
        config.eval_episodes,
        max_steps=config.rollout.max_steps,
        progress=progress,
        desc="eval",
    )
    summary = summarize(outcomes)[TRAIN_SPLIT]
    metrics = {f"eval/{name}_rate": summary["all"][name]["rate"] for name in ("success", "grasp", "collision")}
    metrics["eval/step_length"] = summary["all"]["step_length"]["mean"]
    for task in tasks:
        metrics[f"eval/{task}/success_rate"] = summary[task]["success"]["rate"]
    return metrics


def train_on_units(
    config: TrainConfig,
    k: int,
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    bank: StepBank,
    units: np.ndarray,
    logger: MetricLogger,
    global_step: int,
    progress: bool,
    advantages: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
    backward: Callable[..., Metrics] = backward_through_steps,
) -> int:
    """Optimise over `units` (pairs [P, 2] or single trajectories [N, 1]) for config.optim.epochs.

    Units flagged in `held_out` are never trained on; their loss is logged (heldout/loss) after
    every epoch. grpo/rloo units carry `advantages`, one per trajectory. `backward` accumulates
    one batch's gradient (trainer.learner's shares it among processes).
    """
    from tqdm.auto import tqdm

    from trainer.policy import lora_parameters

    opt = config.optim
    lengths = bank.lengths
    held_out = np.zeros(len(units), dtype=bool) if held_out is None else held_out
    train_index, held_index = np.flatnonzero(~held_out), np.flatnonzero(held_out)
    # Reference (adapter off) and, for the group losses, the sampling policy's log-probs: both are
    # fixed for the iteration, so they are computed once for every step a unit touches.
    needs_ref = opt.loss in ("tpo", "dpo-step") or (opt.loss in GROUP_LOSSES and opt.kl_coef > 0)
    ref_step = old_step = None
    touched = bank.steps_of(np.unique(units))
    policy.eval()
    if needs_ref:
        with policy.adapter_disabled():
            ref_step = torch.zeros(len(bank.step_owner), device=policy.device)
            ref_step[torch.as_tensor(touched, device=policy.device)] = step_logps(
                policy, bank, touched, opt.chunk_steps
            )
    if opt.loss in GROUP_LOSSES:
        old_step = torch.zeros(len(bank.step_owner), device=policy.device)
        old_step[torch.as_tensor(touched, device=policy.device)] = step_logps(policy, bank, touched, opt.chunk_steps)

    def loss_fn_for(
        batch_rows: np.ndarray,
    ) -> tuple[Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]], np.ndarray]:
        batch = units[batch_rows]
        trajectories = batch.reshape(-1)
        steps = bank.steps_of(trajectories)
        index = torch.as_tensor(steps, device=policy.device)
        if opt.loss == "sft":
            return sft_loss_fn([int(lengths[n]) for n in trajectories]), steps
        if opt.loss in GROUP_LOSSES:
            return group_policy_gradient_loss_fn(
                [int(lengths[n]) for n in trajectories],
                old_step[index],
                advantages[batch_rows],
                opt.clip_eps,
                ref_step[index] if ref_step is not None else None,
                opt.kl_coef,
            ), steps
        return preference_loss_fn(opt.loss, batch, lengths, ref_step[index], opt.beta, opt.nll_weight), steps

    def held_out_loss() -> float:
        total, weight = 0.0, 0
        with torch.no_grad():
            for b in range(0, len(held_index), opt.pairs_per_step):
                rows = held_index[b : b + opt.pairs_per_step]
                loss_fn, steps = loss_fn_for(rows)
                loss, _ = loss_fn(step_logps(policy, bank, steps, opt.chunk_steps))
                total, weight = total + float(loss) * len(rows), weight + len(rows)
        return total / weight

    rng = np.random.default_rng([config.seed, k, 11])
    batches_per_epoch = -(-len(train_index) // opt.pairs_per_step)
    total_steps = opt.epochs * batches_per_epoch
    params = lora_parameters(policy)
    best: tuple[float, int, list[torch.Tensor]] | None = None  # (held-out loss, epoch, adapter weights)
    early_stopping = opt.early_stopping and len(held_index) > 0
    if len(held_index):
        value = held_out_loss()
        logger.log(
            global_step,
            {"heldout/loss": value, "epoch": 0.0, "iteration": float(k)},
            f"iter {k} held-out loss {value:.4f} over {len(held_index)} units before training",
        )
        if early_stopping:
            best = (value, 0, [p.detach().clone() for p in params])
    policy.train()
    unit_name = "perf/pairs_per_second" if units.shape[1] == 2 else "perf/trajectories_per_second"
    with tqdm(total=total_steps, desc=f"iter {k} {opt.loss}", unit="step", disable=not progress, leave=False) as bar:
        for epoch in range(opt.epochs):
            order = train_index[rng.permutation(len(train_index))]
            for b in range(batches_per_epoch):
                rows = order[b * opt.pairs_per_step : (b + 1) * opt.pairs_per_step]
                loss_fn, steps = loss_fn_for(rows)
                done = epoch * batches_per_epoch + b
                lr = opt.lr * (
                    0.5 * (1 + math.cos(math.pi * done / total_steps)) if opt.lr_schedule == "cosine" else 1.0
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                metrics = backward(policy, bank, steps, loss_fn, opt.chunk_steps)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, opt.grad_clip if opt.grad_clip > 0 else float("inf"))
                optimizer.step()
                global_step += 1
                seconds = time.perf_counter() - step_started
                metrics = {
                    **metrics,
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "epoch": epoch + (b + 1) / batches_per_epoch,
                    "iteration": float(k),
                    "perf/step_seconds": seconds,
                    unit_name: len(rows) / seconds,
                }
                line = f"iter {k} step {global_step} loss {metrics['loss']:.4f}"
                if "nll/chosen" in metrics:
                    line += (
                        f" (preference {metrics['loss/preference']:.4f} "
                        f"+ nll {metrics['nll/chosen']:.3f} x {opt.nll_weight:g})"
                    )
                if "rewards/margins" in metrics:
                    line += f" margin {metrics['rewards/margins']:.4f} acc {metrics['rewards/accuracies']:.2f}"
                if "policy/clip_fraction" in metrics:
                    line += f" clipped {metrics['policy/clip_fraction']:.2f} kl {metrics['policy/approx_kl']:.4f}"
                bar.update(1)
                logger.log(global_step, metrics, line)
            if len(held_index):
                policy.eval()
                value = held_out_loss()
                logger.log(
                    global_step,
                    {"heldout/loss": value, "epoch": float(epoch + 1), "iteration": float(k)},
                    f"iter {k} epoch {epoch + 1} held-out loss {value:.4f}",
                )
                policy.train()
                if early_stopping and best is not None:
                    if value < best[0]:
                        best = (value, epoch + 1, [p.detach().clone() for p in params])
                    else:
                        break
    if best is not None:
        with torch.no_grad():
            for parameter, kept in zip(params, best[2]):
                parameter.copy_(kept)
        policy.eval()
        kept_loss = held_out_loss()  # the restored adapter's, which must be the best epoch's
        logger.log(
            global_step,
            {"heldout/best_epoch": float(best[1]), "heldout/loss_kept": kept_loss, "iteration": float(k)},
            f"iter {k} early stopping: kept the adapter of epoch {best[1]} (held-out loss {kept_loss:.4f})",
        )
    for group in optimizer.param_groups:
        group["lr"] = opt.lr
    policy.eval()
    return global_step
