"""Supervised fine-tuning of the embedded VLA on scripted demonstrations (GRAPE Eq. 1).

    max_theta  sum over demonstrations, steps t:  log pi_theta(a_t | o_t, q)

with a_t the expert's action tokens (7 per step). Reads top to bottom: config, demonstrations
(recorded once into a trajectory store, reused afterwards), action/state statistics (fitted
once here and saved with the policy for every later stage), one training loop (batch -> loss
-> step -> log -> checkpoint), then optional evaluation with sampling and greedy decoding.

The default recipe deliberately under-trains: the paper's SFT baselines succeed 30-45% of the
time and the preference stage needs room to improve, so the default aims at 30-60% in-domain
success with temperature-1 sampling while finishing in a few minutes on two CPU cores.

    grape-sft --out runs/sft                      # the default recipe
    grape-sft --out runs/sft --eval-episodes 100  # ... then evaluate on 100 seeds per task
    grape-sft --out runs/hf --policy models/my-vla --action-stats stats.json   # LoRA SFT of an HF VLA

With `--policy FOLDER` the policy is not built: the folder's policy (an OpenVLA-style HF
checkpoint, or a policy folder this project wrote) is loaded frozen and a LoRA adapter is
trained on the same demonstrations with the same loss, the way grape-train trains one; the
adapter is merged into the weights before the policy folder is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from grape_dsl.util.atomic import atomic_write, atomic_write_json
from trainer import model_sizes
from trainer.bounds import AT_LEAST_ONE, POSITIVE, SEED, Bound, dataclass_problems

# torch is imported inside the functions that train or evaluate: it takes seconds, and the CLI
# checks every flag first (a bad value exits 2 at once, with nothing written).
if TYPE_CHECKING:
    import torch

SFT_RECIPE_VERSION = 1
"""Bumped when the training code changes what a given config produces (invalidates caches)."""
POLICY_DIR = "policy"
CHECKPOINT_FILE = "checkpoint.pt"
CONFIG_FILE = "sft_config.json"
EVAL_FILE = "sft_eval.json"
DEMO_DIR = "demos"
EXAMPLES = """examples:
  grape-sft --out runs/sft                                   default recipe (all tasks)
  grape-sft --out runs/sft --eval-episodes 100               ... and evaluate (sampling + greedy)
  grape-sft --out runs/pp --tasks pick_place --demos 100 --steps 3000 --lr 5e-4
  grape-sft --out runs/sft --resume --steps 3000             continue an interrupted/finished run
  grape-sft --out runs/sft --resume --eval-episodes 50 --eval-split semantic   evaluate a finished run
  grape-sim demo --out demos/ -n 50 && grape-sft --out runs/sft --demos-dir demos/
  grape-sft --config runs/sft --out runs/sft-seed1 --seed 1   the settings of an earlier run, another seed
  grape-sft --out runs/hf --policy models/my-vla --action-stats stats.json --steps 500 --lr 5e-4
                                                             LoRA SFT of a local HF VLA checkpoint
  grape-sft --out runs/ovla --policy models/openvla-7b --trust-remote-code --unnorm-key bridge_orig \\
      --device cuda --dtype bfloat16 --batch-size 16        ... OpenVLA on a GPU
"""


class SFTError(Exception):
    """A user mistake: a bad flag value (exit 2), unusable demonstrations or a mismatched resume (exit 1)."""


SFT_FIELD_BOUNDS = {
    "demos_per_task": AT_LEAST_ONE,
    "expert_noise": Bound(low=0, high=1),
    "steps": AT_LEAST_ONE,
    "batch_size": AT_LEAST_ONE,
    "lr": POSITIVE,
    "warmup_steps": Bound(low=0),
    "seed": SEED,
    "hidden_size": Bound(low=8),
    "num_layers": AT_LEAST_ONE,
    "num_heads": AT_LEAST_ONE,
    "intermediate_size": AT_LEAST_ONE,
    "max_episode_steps": AT_LEAST_ONE,
    "image_size": Bound(low=16, high=256),
}
"""SFTConfig's numeric fields and their ranges; a field not listed must be finite and >= 0."""
SFT_RUN_BOUNDS = {
    "epochs": POSITIVE,
    "workers": AT_LEAST_ONE,
    "threads": AT_LEAST_ONE,
    "eval_episodes": Bound(low=0),
    "eval_temperature": POSITIVE,
    "log_every": AT_LEAST_ONE,
    "checkpoint_every": AT_LEAST_ONE,
    "lora_rank": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
}
"""SFTRunConfig's numeric fields with a range of their own (the recipe's are SFT_FIELD_BOUNDS)."""


@dataclass
class SFTConfig:
    """One SFT recipe. Every field except the run-time ones below enters the cache hash."""

    tasks: tuple[str, ...] = ("pick_place", "pick_place_obstacle", "push_to_target", "stack")
    """Tasks to learn (`a b`; `a,b` and 'all' work too); one policy serves them all, told apart by the instruction."""
    demos_per_task: int = field(default=50, metadata={"aliases": ("--demos",)})
    """Scripted-expert demonstrations per task (successful episodes on training seeds)."""
    expert_noise: float = field(default=0.0, metadata={"aliases": ("--noise",)})
    """Translation noise of the expert when recording, as a fraction of the step limit (state coverage)."""
    steps: int = 1600
    """Optimizer steps."""
    batch_size: int = 64
    """Steps (observation, action) per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 50
    """Linear warm-up length."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds model init and batch order (demonstration seeds are the sim's training seeds)."""
    # The model sizes are the embedded VLA's own defaults (one source: trainer.model_sizes).
    hidden_size: int = model_sizes.HIDDEN_SIZE
    """Width of the embedded VLA."""
    num_layers: int = field(default=model_sizes.NUM_LAYERS, metadata={"aliases": ("--layers",)})
    """Decoder layers of the embedded VLA."""
    num_heads: int = field(default=model_sizes.NUM_HEADS, metadata={"aliases": ("--heads",)})
    """Attention heads of the embedded VLA."""
    intermediate_size: int = model_sizes.INTERMEDIATE_SIZE
    """MLP width of the embedded VLA."""
    max_episode_steps: int = 120
    """Episode step limit for demonstrations (and evaluation)."""
    image_size: int | None = None
    """Camera side in pixels for a policy that also sees an image (default: state only). The
    demonstrations are replayed with the camera on to get their frames (~1-2 s per episode)."""

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)

    def validate(self) -> None:
        from trainer.sim.tasks import TASKS

        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or not self.tasks:
            raise SFTError(f"--tasks: unknown task(s) {unknown or '(none given)'}; known tasks: {', '.join(TASKS)}")
        problems = dataclass_problems(self, SFT_FIELD_BOUNDS)
        if problems:
            raise SFTError("; ".join(problems))
        if self.hidden_size % self.num_heads:
            raise SFTError(f"--hidden-size {self.hidden_size} must be divisible by --num-heads {self.num_heads}")

    def cache_key(self) -> str:
        payload = json.dumps({"recipe": SFT_RECIPE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Demonstrations:
    """Every demonstrated step, flattened: what SFT trains on."""

    states: np.ndarray
    """float32 [N, state_dim]"""
    actions: np.ndarray
    """float32 [N, 7]"""
    instructions: np.ndarray
    """object [N]: the instruction of each step's episode"""
    tasks: np.ndarray
    """object [N]: the task of each step's episode"""
    episodes: int = 0
    per_task: dict[str, int] = field(default_factory=dict)
    """steps per task"""
    episodes_per_task: dict[str, int] = field(default_factory=dict)
    sources: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(task, split, seed, length) of each episode, in the order of the flattened steps"""
    images: np.ndarray | None = None
    """uint8 [N, S, S, 3] camera frames of the steps (only for pixel policies)"""


@dataclass
class SFTBase:
    """A policy to fine-tune instead of the embedded one grape-sft builds: frozen, through a LoRA
    adapter (as grape-train trains), which is merged into its weights when the policy is saved."""

    policy: Any
    """The opened policy (trainer.policy.source.open_policy), on its device and in its dtype."""
    source: str
    """The folder it came from; a resumed run must name the same one."""
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = "all-linear"

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps to check a resume against (plain data)."""
        return {
            "policy": str(Path(self.source).resolve()),
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": self.lora_targets,
        }


# ---------------------------------------------------------------------- demonstrations
def record_demonstrations(config: SFTConfig, store: Path, workers: int = 1, progress: bool = True) -> None:
    """Run the scripted expert on training seeds until each task has enough successful episodes
    in ``store`` (episodes already there count, so a re-run records only what is missing)."""
    from tqdm.auto import tqdm

    from trainer.sim.splits import Split
    from trainer.sim.vector import ExpertJob, collect_expert_episodes
    from trainer.store import read_episodes, write_episode

    stored = {task: read_episodes(store, task) if store.is_dir() else [] for task in config.tasks}
    missing = {task: max(0, config.demos_per_task - sum(e.success for e in eps)) for task, eps in stored.items()}
    next_seed = {task: 1 + max((e.seed for e in eps), default=-1) for task, eps in stored.items()}
    total = sum(missing.values())
    if total == 0:
        return
    with tqdm(total=total, desc="demos", unit="ep", disable=not progress, leave=False) as bar:
        for _ in range(20):
            if not any(missing.values()):
                return
            # The expert rarely fails: ask for 10% more episodes than missing, then top up.
            jobs = []
            for task, need in missing.items():
                count = need + math.ceil(need / 10) if need else 0
                jobs += [
                    ExpertJob(task, "in_domain", seed, noise=config.expert_noise, max_steps=config.max_episode_steps)
                    for seed in Split.train_seeds(count, start=next_seed[task])
                ]
                next_seed[task] += count
            for episode in collect_expert_episodes(jobs, workers=workers):
                if episode.success and missing[episode.task] > 0:
                    write_episode(store, episode, extra={"source": "expert", "noise": config.expert_noise})
                    missing[episode.task] -= 1
                    bar.update(1)
    if any(missing.values()):
        raise SFTError(f"the scripted expert keeps failing: still missing demonstrations {missing}")


def load_demonstrations(store: Path, tasks: Sequence[str], per_task: int) -> Demonstrations:
    """The first ``per_task`` successful episodes of each task in ``store``, flattened to steps."""
    from trainer.store import StoreError, read_episodes

    states, actions, instructions, task_names, per_task_steps, per_task_episodes, sources = [], [], [], [], {}, {}, []
    for task in tasks:
        try:
            episodes = [e for e in read_episodes(store, task) if e.success][:per_task]
        except StoreError as error:
            raise SFTError(str(error)) from None
        if not episodes:
            raise SFTError(f"{store}: no successful demonstration of task {task!r} (record some with grape-sim demo)")
        for episode in episodes:
            states.append(episode.states)
            actions.append(episode.actions)
            instructions += [episode.instruction] * episode.length
            task_names += [task] * episode.length
            sources.append((task, episode.split, int(episode.seed), episode.length))
        per_task_steps[task] = sum(e.length for e in episodes)
        per_task_episodes[task] = len(episodes)
    state_dims = {s.shape[1] for s in states}
    if len(state_dims) != 1:
        raise SFTError(f"{store}: episodes disagree on the state size {sorted(state_dims)}")
    return Demonstrations(
        states=np.concatenate(states).astype(np.float32),
        actions=np.concatenate(actions).astype(np.float32),
        instructions=np.asarray(instructions, dtype=object),
        tasks=np.asarray(task_names, dtype=object),
        episodes=sum(per_task_episodes.values()),
        per_task=per_task_steps,
        episodes_per_task=per_task_episodes,
        sources=sources,
    )


def render_demonstration_images(
    demos: Demonstrations, size: int, cache: Path, max_steps: int, progress: bool = True
) -> np.ndarray:
    """Camera frames for every demonstrated step, by replaying each episode's actions.

    The sim is deterministic, so a replay reproduces the recorded states exactly; a replay
    that drifts (another sim version recorded the store) is an error rather than frames that
    silently disagree with their states. Frames are cached in ``cache`` (.npy plus the list of
    episodes they belong to) so a resumed run does not render again.
    """
    from tqdm.auto import tqdm

    from trainer.sim.env import make_env

    key = {"size": size, "sources": [list(source) for source in demos.sources]}
    index_file = cache.with_suffix(".json")
    if cache.is_file() and index_file.is_file() and json.loads(index_file.read_text()) == key:
        return np.load(cache)
    frames = np.empty((len(demos.states), size, size, 3), dtype=np.uint8)
    offset = 0
    for task, split, seed, length in tqdm(
        demos.sources, desc="render demos", unit="ep", disable=not progress, leave=False
    ):
        env = make_env(task, split, seed, image_size=size, max_steps=max_steps)
        try:
            obs, _ = env.reset(seed=seed)
            for t in range(length):
                drift = float(np.abs(obs["state"] - demos.states[offset + t]).max())
                if drift > 1e-4:
                    raise SFTError(
                        f"replaying demonstration {task}/{split}/{seed} diverged at step {t} "
                        f"(state differs by {drift:.3g}); "
                        "was the store recorded with another version of the simulator?"
                    )
                frames[offset + t] = obs["image"]
                obs, *_ = env.step(demos.actions[offset + t])
        finally:
            env.close()
        offset += length
    with atomic_write(cache, "wb") as stream:
        np.save(stream, frames)
    atomic_write_json(index_file, key)
    return frames


# ---------------------------------------------------------------------- training
def _learning_rate(config: SFTConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save_checkpoint(
    path: Path,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    config: SFTConfig,
    step: int,
    generator: torch.Generator,
    base: SFTBase | None = None,
) -> None:
    import torch

    state = {
        "model": policy.state_dict() if base is None else _trainable_state(policy),
        "optimizer": optimizer.state_dict(),
        "config": dataclasses.asdict(config),
        "step": step,
        "generator": generator.get_state(),
        "action_stats": policy.action_tokenizer.to_dict(),
        "recipe": SFT_RECIPE_VERSION,
    }
    if base is not None:
        state["base"] = base.record()
    with atomic_write(path, "wb") as stream:
        torch.save(state, stream)


def _trainable_state(policy: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights only: the frozen base is the --policy folder, not worth a copy per checkpoint."""
    trainable = {name for name, parameter in policy.named_parameters() if parameter.requires_grad}
    return {name: tensor for name, tensor in policy.state_dict().items() if name in trainable}


def _attach_adapter(base: SFTBase, device: torch.device, dtype: torch.dtype) -> Any:
    """A fresh LoRA adapter on the base policy, as grape-train attaches one (trainer.loop.attach_adapter)."""
    from trainer.device import place_policy
    from trainer.policy import add_lora

    targets = "all-linear" if base.lora_targets == "all-linear" else None
    add_lora(base.policy, rank=base.lora_rank, alpha=base.lora_alpha, target_modules=targets)
    return place_policy(base.policy, device, dtype)  # the new factors: on the device, float32


def _resume_base(saved: dict, checkpoint_path: Path, policy: Any, base: SFTBase) -> None:
    """Load the adapter of a checkpoint made from the same base policy, adapter and statistics."""
    before, now = saved.get("base"), base.record()
    if before != now:
        was = "the embedded policy grape-sft builds" if before is None else f"{before}"
        raise SFTError(f"--resume: {checkpoint_path} was trained from {was}, not from {now}")
    if json.dumps(saved["action_stats"], sort_keys=True) != json.dumps(
        policy.action_tokenizer.to_dict(), sort_keys=True
    ):
        raise SFTError(f"--resume: {checkpoint_path} was trained with other action statistics than --policy gives now")
    wanted = set(_trainable_state(policy))
    if set(saved["model"]) != wanted:
        raise SFTError(f"--resume: the adapter in {checkpoint_path} does not fit the one attached to {base.source}")
    policy.load_state_dict(saved["model"], strict=False)


def _comparable(config_dict: dict) -> dict:
    """What must agree to resume: everything but the step budget."""
    return {
        key: (tuple(value) if isinstance(value, list) else value)
        for key, value in config_dict.items()
        if key != "steps"
    }


def train_sft(
    config: SFTConfig,
    out_dir: str | os.PathLike,
    demos_dir: str | os.PathLike | None = None,
    resume: bool = False,
    workers: int = 1,
    progress: bool = True,
    log_every: int = 100,
    checkpoint_every: int = 500,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    base: SFTBase | None = None,
) -> Path:
    """Train and save the SFT policy; return its folder (``out_dir/policy``).

    ``device`` (default cpu) runs the training there; ``dtype`` (default float32) bfloat16
    computes the forward passes in bfloat16 (autocast) over float32 weights, which the optimizer updates; log-probs
    and the loss are float32 either way.

    ``base``: fine-tune that policy through a LoRA adapter (only the adapter trains; the base
    keeps the dtype it was opened in) instead of building the embedded policy of ``config``;
    the recipe's model sizes and image size then do not apply (the base has its own). The
    adapter is merged into the base before the policy folder is written.
    """
    import torch
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    from trainer.losses import sft_loss
    from trainer.policy import lora_parameters, merge_lora
    from trainer.policy.embedded import EmbeddedVLA, EmbeddedVLAConfig
    from trainer.policy.tokenizer import ActionTokenizer

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / CHECKPOINT_FILE
    if checkpoint_path.exists() and not resume:
        raise SFTError(
            f"{out} already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it or choose another --out"
        )
    if resume and not checkpoint_path.exists():
        raise SFTError(f"--resume: {checkpoint_path} does not exist")

    store = Path(demos_dir) if demos_dir is not None else out / DEMO_DIR
    if demos_dir is None:
        record_demonstrations(config, store, workers=workers, progress=progress)
    demos = load_demonstrations(store, config.tasks, config.demos_per_task)
    _log(
        f"demonstrations: {demos.episodes} episodes, {len(demos.actions)} steps "
        + ", ".join(f"{task} {steps}" for task, steps in demos.per_task.items()),
        progress,
    )
    short = {task: n for task, n in demos.episodes_per_task.items() if n < config.demos_per_task}
    if short:
        _log(
            f"warning: {store} holds fewer successful demonstrations than --demos {config.demos_per_task}: {short}",
            True,
        )

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = device or torch.device("cpu")
    dtype = dtype or torch.float32
    if base is None:
        policy_config = EmbeddedVLAConfig(
            state_dim=demos.states.shape[1],
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            num_heads=config.num_heads,
            intermediate_size=config.intermediate_size,
            use_image=config.image_size is not None,
            image_size=config.image_size or 64,
        )
        if config.image_size is not None:
            demos.images = render_demonstration_images(
                demos,
                config.image_size,
                out / f"demo_images_{config.image_size}.npy",
                config.max_episode_steps,
                progress,
            )
        policy = EmbeddedVLA(policy_config, ActionTokenizer.fit(demos.actions))
        policy.set_state_statistics(demos.states)
        policy.to(device)
        trained = list(policy.parameters())
    else:
        policy = _attach_adapter(base, device, dtype)
        if policy.image_size is not None:  # the base's own camera size (an HF VLA: its processor's)
            demos.images = render_demonstration_images(
                demos,
                policy.image_size,
                out / f"demo_images_{policy.image_size}.npy",
                config.max_episode_steps,
                progress,
            )
        _check_base_fits(policy, base.source, demos)
        trained = lora_parameters(policy)
    optimizer = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
    start_step = 0
    if resume:
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        before, now = _comparable(saved["config"]), _comparable(dataclasses.asdict(config))
        if before != now:
            changed = sorted(key for key in before.keys() | now.keys() if before.get(key) != now.get(key))
            raise SFTError(f"--resume: {checkpoint_path} was trained with a different recipe (differs in {changed})")
        if base is None:
            if "base" in saved:
                raise SFTError(
                    f"--resume: {checkpoint_path} fine-tuned --policy {saved['base']['policy']}; pass that --policy"
                )
            # Statistics come from the checkpoint, never refitted: tokens must keep their meaning.
            policy.set_action_tokenizer(ActionTokenizer.from_dict(saved["action_stats"], expected_action_dim=7))
            policy.load_state_dict(saved["model"])
        else:
            _resume_base(saved, checkpoint_path, policy, base)
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        start_step = int(saved["step"])
    # The cache key names an embedded recipe; a fine-tuned --policy is named by its base instead.
    identity = {"cache_key": config.cache_key()} if base is None else {"base": base.record()}
    atomic_write_json(out / CONFIG_FILE, dataclasses.asdict(config) | {"recipe": SFT_RECIPE_VERSION} | identity)

    tokens = torch.as_tensor(policy.action_tokenizer.tokenize(demos.actions))
    writer = SummaryWriter(str(out / "tensorboard"))
    policy.train()
    order, cursor = torch.randperm(len(tokens), generator=generator), 0
    started = time.perf_counter()
    with tqdm(
        total=config.steps, initial=min(start_step, config.steps), desc="sft", unit="step", disable=not progress
    ) as bar:
        for step in range(start_step, config.steps):
            if cursor + config.batch_size > len(order):
                order, cursor = torch.randperm(len(tokens), generator=generator), 0
            rows = order[cursor : cursor + config.batch_size].numpy()
            cursor += config.batch_size
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step)
            obs = {"state": demos.states[rows]}
            if demos.images is not None:
                obs["image"] = demos.images[rows]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                logps = policy.log_prob(obs, list(demos.instructions[rows]), tokens[rows])
            loss, metrics = sft_loss(logps.unsqueeze(1), torch.ones_like(logps, dtype=torch.bool).unsqueeze(1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            bar.update(1)
            if (step + 1) % log_every == 0 or step + 1 == config.steps:
                per_token_nll = metrics["loss"] / policy.action_tokenizer.action_dim
                writer.add_scalar("losses/sft", metrics["loss"], step + 1)
                writer.add_scalar("losses/per_token_nll", per_token_nll, step + 1)
                writer.add_scalar("charts/lr", optimizer.param_groups[0]["lr"], step + 1)
                writer.add_scalar("charts/grad_norm", float(grad_norm), step + 1)
                writer.add_scalar(
                    "perf/steps_per_second", (step + 1 - start_step) / (time.perf_counter() - started), step + 1
                )
                bar.set_postfix(loss=f"{metrics['loss']:.2f}")
                _log(
                    f"step {step + 1}/{config.steps}  loss {metrics['loss']:.3f}  nll/token {per_token_nll:.3f}  "
                    f"lr {optimizer.param_groups[0]['lr']:.2e}",
                    progress,
                )
            if (step + 1) % checkpoint_every == 0:
                _save_checkpoint(checkpoint_path, policy, optimizer, config, step + 1, generator, base)
    writer.close()
    _save_checkpoint(checkpoint_path, policy, optimizer, config, max(start_step, config.steps), generator, base)
    policy.eval()
    if base is not None:
        # One plain policy folder: grape-train attaches its own fresh adapter to it, with this
        # fine-tuned policy as the reference.
        merge_lora(policy)
    policy.save_pretrained(out / POLICY_DIR)
    _log(f"policy saved to {out / POLICY_DIR}", progress)
    return out / POLICY_DIR


def _check_base_fits(policy: Any, source: str, demos: Demonstrations) -> None:
    """One demonstrated step through the base policy: a mismatch is one message before training."""
    import torch

    from trainer.policy import ActionStatsError, PolicyInputError

    action_dim = policy.action_tokenizer.action_dim
    if action_dim != demos.actions.shape[1]:
        raise SFTError(
            f"--policy {source}: its action statistics have {action_dim} dimensions, "
            f"the demonstrations' actions {demos.actions.shape[1]}"
        )
    obs = {"state": demos.states[:1]}
    if demos.images is not None:
        obs["image"] = demos.images[:1]
    try:
        tokens = torch.as_tensor(policy.action_tokenizer.tokenize(demos.actions[:1]))
        with torch.no_grad():
            policy.log_prob(obs, list(demos.instructions[:1]), tokens)
    except (PolicyInputError, ActionStatsError) as error:
        raise SFTError(f"--policy {source} does not fit the demonstrations: {error}") from None


def _log(message: str, progress: bool) -> None:
    from tqdm.auto import tqdm

    if progress:
        tqdm.write(message, file=sys.stderr)


# ---------------------------------------------------------------------- evaluation
def evaluate_sft(
    policy: Any,
    tasks: Sequence[str],
    episodes: int,
    greedy: bool,
    temperature: float = 1.0,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
    split: str = "in_domain",
) -> dict[str, Any]:
    """Success per task on the sim's fixed evaluation seeds of ``split`` (never training seeds)."""
    import torch
    from tqdm.auto import tqdm

    from trainer.eval import evaluation_specs, wilson_interval
    from trainer.rollout import collect_rollouts

    specs = evaluation_specs(list(tasks), [split], episodes)
    mode = "greedy" if greedy else f"sampling T={temperature:g}"
    with tqdm(total=len(specs), desc=f"eval ({mode})", unit="ep", disable=not progress, leave=False) as bar:
        rollouts, _ = collect_rollouts(
            policy,
            specs,
            greedy=greedy,
            temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
            max_steps=max_steps,
            on_episode=lambda _: bar.update(1),
        )
    result: dict[str, Any] = {"mode": mode, "split": split, "episodes_per_task": episodes, "tasks": {}}
    for task in tasks:
        outcomes = [r.episode for r in rollouts if r.spec.task == task]
        wins = sum(bool(e.success) for e in outcomes)
        low, high = wilson_interval(wins, len(outcomes))
        result["tasks"][task] = {
            "success": wins / len(outcomes),
            "ci95": [low, high],
            "n": len(outcomes),
            "grasp": float(np.mean([e.grasp for e in outcomes])),
            "collision": float(np.mean([e.collision for e in outcomes])),
            "mean_length": float(np.mean([e.length for e in outcomes])),
        }
    all_wins = sum(bool(r.episode.success) for r in rollouts)
    low, high = wilson_interval(all_wins, len(rollouts))
    result["overall"] = {"success": all_wins / len(rollouts), "ci95": [low, high], "n": len(rollouts)}
    return result


# ---------------------------------------------------------------------- the cached default
def ensure_default_sft_policy(
    cache_dir: str | os.PathLike, config: SFTConfig | None = None, progress: bool = True
) -> Path:
    """The default SFT policy folder, trained once and cached under ``cache_dir`` by recipe hash.

    Concurrent callers wait on a lock file instead of training twice; the policy folder appears
    atomically, so a reader never sees a partial one.
    """
    import fcntl

    from trainer.policy.base import POLICY_META_FILE

    config = config or SFTConfig()
    run_dir = Path(cache_dir) / f"sft-{config.cache_key()}"
    policy_dir = run_dir / POLICY_DIR
    if (policy_dir / POLICY_META_FILE).is_file():
        return policy_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (policy_dir / POLICY_META_FILE).is_file():
            return policy_dir
        _log(f"training the default SFT policy once (cached in {run_dir})", progress)
        return train_sft(config, run_dir, resume=(run_dir / CHECKPOINT_FILE).exists(), progress=progress)


# ---------------------------------------------------------------------- CLI
@dataclass
class SFTPolicySource:
    """`grape-sft --policy`: fine-tune a given policy; the flags are spelled as grape-train's."""

    base_policy: str | None = field(default=None, metadata={"flag": "--policy", "metavar": "DIR"})
    """Fine-tune this policy folder (a local OpenVLA-style HF checkpoint, or a policy folder this project wrote)
    through a LoRA adapter instead of building the embedded policy (default: build it from the recipe)."""
    policy_type: Literal["auto", "embedded", "hf"] = "auto"
    """Kind of the --policy folder: embedded, hf (an OpenVLA-style HF checkpoint: config.json, weights, processor),
    or auto (a folder written by this project names its kind; one with only a config.json is an HF checkpoint)."""
    trust_remote_code: bool = False
    """Let an HF checkpoint whose config.json names its own model code (auto_map, as OpenVLA's does) run that code
    from the --policy folder."""
    action_stats: str | None = None
    """Action statistics of an HF checkpoint (JSON with per-dimension q01/q99; default: the folder's
    action_stats.json, else --unnorm-key's entry of the config's norm_stats)."""
    unnorm_key: str | None = None
    """Which dataset's action statistics of an OpenVLA config.json (norm_stats) to use."""
    lora_rank: int = 8
    """Rank of the LoRA adapter trained on the frozen --policy."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator (the adapter's update is scaled by alpha / rank)."""
    lora_targets: Literal["attention", "all-linear"] = "all-linear"
    """Layers the LoRA adapter adapts: attention (q/k/v/o projections) or all-linear (also the MLP projections, as
    OpenVLA's LoRA fine-tuning does; not the output head)."""

    def problems(self, recipe: SFTConfig) -> list[str]:
        """Flags that contradict each other, each named (the folder itself is judged when opened)."""
        if self.base_policy is None:
            if self.policy_type == "hf":
                return ["--policy-type hf needs --policy <folder of the HF checkpoint>"]
            default = SFTPolicySource()
            given = [flag for flag, name in _SOURCE_FLAGS.items() if getattr(self, name) != getattr(default, name)]
            if given:
                return [f"{', '.join(given)}: only with --policy (the embedded policy trains all its weights)"]
            return []
        built = SFTConfig()
        given = [flag for flag, name in _MODEL_FLAGS.items() if getattr(recipe, name) != getattr(built, name)]
        if given:
            return [f"{', '.join(given)}: describe the embedded policy grape-sft builds; --policy brings its own"]
        return []


_SOURCE_FLAGS = {
    "--policy-type": "policy_type",
    "--trust-remote-code": "trust_remote_code",
    "--action-stats": "action_stats",
    "--unnorm-key": "unnorm_key",
    "--lora-rank": "lora_rank",
    "--lora-alpha": "lora_alpha",
    "--lora-targets": "lora_targets",
}
"""The flags of SFTPolicySource that mean something only with --policy."""
_MODEL_FLAGS = {
    "--hidden-size": "hidden_size",
    "--num-layers": "num_layers",
    "--num-heads": "num_heads",
    "--intermediate-size": "intermediate_size",
    "--image-size": "image_size",
}
"""The recipe's flags that size the embedded policy (a --policy brings its own sizes)."""


@dataclass
class SFTRunConfig:
    """Every setting of `grape-sft`: how this run goes, and the recipe (what the policy is).

    One flag per field (trainer.flags; the docstrings are the --help). Only `recipe` enters the
    cache hash; the run-time fields here change how the policy is made, not what it is.
    """

    out: str = field(default="", metadata={"required": True, "metavar": "DIR"})
    """Run folder: demos/, checkpoint.pt, tensorboard/, policy/ (and the config it ran with, for --config)."""
    demos_dir: str | None = None
    """Use this trajectory store (grape-sim demo) instead of recording."""
    epochs: float | None = None
    """Train this many passes over the demonstrations instead of --steps."""
    resume: bool = False
    """Continue the run in --out from its checkpoint."""
    workers: int = 1
    """Processes recording demonstrations."""
    threads: int = 1
    """Torch CPU threads (on a shared CPU a second thread mostly waits)."""
    eval_episodes: int = 0
    """After training, evaluate this many seeds per task (0: skip)."""
    eval_split: str = "in_domain"
    """Split of the evaluation seeds."""
    eval_temperature: float = 1.0
    """Sampling temperature of the evaluation."""
    log_every: int = 100
    """Log every N steps."""
    checkpoint_every: int = 500
    """Checkpoint every N steps."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the policy trains: cuda (a GPU; an error if none is visible), cpu, or auto (cuda when available)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Precision of the forward passes: bfloat16 computes them in bfloat16 (autocast) over float32 weights (with
    --policy the base's weights are bfloat16 and the LoRA factors float32); log-probs and the loss stay float32."""
    policy: SFTPolicySource = field(default_factory=SFTPolicySource)
    recipe: SFTConfig = field(default_factory=SFTConfig)

    def check(self) -> None:
        """Raise SFTError naming the flag of the first value out of range."""
        from trainer.sim.splits import SPLITS

        problems = dataclass_problems(self, {**SFT_FIELD_BOUNDS, **SFT_RUN_BOUNDS})
        problems += self.policy.problems(self.recipe)
        if problems:
            raise SFTError("; ".join(problems))
        if self.eval_split not in SPLITS:
            raise SFTError(f"--eval-split: unknown split {self.eval_split!r}; known splits: {', '.join(SPLITS)}")
        if self.demos_dir is not None and not Path(self.demos_dir).is_dir():
            raise SFTError(f"--demos-dir {self.demos_dir}: no such directory")
        if self.device == "cuda" or self.dtype != "float32":  # the defaults need no torch to check
            from trainer.device import DeviceError, resolve

            try:
                resolve(self.device, self.dtype)
            except DeviceError as error:
                raise SFTError(str(error)) from None
        self.recipe.validate()


RUN_CONFIG_FILE = "sft_run_config.json"
"""The SFTRunConfig grape-sft ran with, saved in --out when training finished (`--config` replays it)."""


def build_parser() -> argparse.ArgumentParser:
    from trainer.envs import add_env_arguments
    from trainer.flags import add_config_arguments, add_config_file_argument

    parser = argparse.ArgumentParser(
        prog="grape-sft",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser, SFTRunConfig, title="run")
    add_config_file_argument(parser, RUN_CONFIG_FILE)
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or log lines")
    add_env_arguments(parser)  # with --env: --demos-dir holds that env's demonstrations (no scripted expert)
    return parser


def _checked_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[SFTRunConfig, argparse.Namespace]:
    """The run's config from the flags (over a --config file); a bad value raises SFTError (a usage error)."""
    from trainer.envs import EnvError, register_from_args
    from trainer.flags import parse_config
    from trainer.sim.tasks import task_names

    run, rest = parse_config(parser, SFTRunConfig, argv, RUN_CONFIG_FILE)
    try:
        own_task = register_from_args(rest)
    except EnvError as error:
        raise SFTError(str(error)) from None
    if own_task is not None:
        if run.demos_dir is None:
            raise SFTError(
                "--env needs --demos-dir: a trajectory store of that environment's demonstrations "
                "(the scripted experts know only the stock tasks)"
            )
        if run.recipe.tasks == SFTConfig().tasks:  # no --tasks given: the env's own task
            run.recipe.tasks = (own_task,)
    run.recipe.tasks = tuple(task_names(list(run.recipe.tasks)))
    run.check()
    return run, rest


def open_base(run: SFTRunConfig) -> SFTBase | None:
    """The --policy to fine-tune, opened on --device in --dtype (None without --policy).

    Raises SFTError naming the problem: a missing folder, one that holds no policy, an HF
    checkpoint without weights or action statistics, a kind other than --policy-type asked for.
    """
    from trainer.device import resolve
    from trainer.policy import CheckpointError
    from trainer.policy.source import HFOptions, open_policy

    source = run.policy
    if source.base_policy is None:
        return None
    device, dtype = resolve(run.device, run.dtype)
    try:
        policy = open_policy(
            source.base_policy,
            policy_type=source.policy_type,
            hf=HFOptions(source.trust_remote_code, source.action_stats, source.unnorm_key),
            device=device,
            dtype=dtype,
        )
    except (CheckpointError, OSError, ValueError) as error:
        raise SFTError(f"--policy {source.base_policy}: cannot load the policy: {error}") from None
    if policy.has_adapter:  # a grape-train checkpoint: its adapter is its own, not one to extend
        from trainer.policy import merge_lora

        merge_lora(policy)
    return SFTBase(policy, source.base_policy, source.lora_rank, source.lora_alpha, source.lora_targets)


def _run(run: SFTRunConfig, progress: bool, base: SFTBase | None = None) -> dict[str, Any]:
    """Train (or resume) and optionally evaluate; the summary printed at the end."""
    import torch

    from trainer.device import resolve
    from trainer.flags import save_config

    config, out = run.recipe, Path(run.out)
    demos_dir = Path(run.demos_dir) if run.demos_dir is not None else None
    torch.set_num_threads(run.threads)
    if run.epochs is not None:
        store = demos_dir or out / DEMO_DIR
        if demos_dir is None:
            record_demonstrations(config, store, workers=run.workers, progress=progress)
        total = len(load_demonstrations(store, config.tasks, config.demos_per_task).actions)
        config.steps = max(1, math.ceil(run.epochs * total / config.batch_size))
    started = time.perf_counter()
    device, dtype = resolve(run.device, run.dtype)
    policy_dir = train_sft(
        config,
        out,
        demos_dir=demos_dir,
        resume=run.resume,
        workers=run.workers,
        progress=progress,
        log_every=run.log_every,
        checkpoint_every=run.checkpoint_every,
        device=device,
        dtype=dtype,
        base=base,
    )
    save_config(run, out / RUN_CONFIG_FILE)
    summary: dict[str, Any] = {
        "policy": str(policy_dir),
        "train_seconds": round(time.perf_counter() - started, 1),
        "config": dataclasses.asdict(config),
    }
    if run.eval_episodes:
        from trainer.policy import CheckpointError
        from trainer.policy.source import HFOptions, open_policy

        # The saved folder holds its statistics; remote model code still needs the user's trust.
        hf = HFOptions(trust_remote_code=True) if run.policy.trust_remote_code else HFOptions()
        try:
            policy = open_policy(policy_dir, hf=hf, device=device, dtype=dtype)
        except (CheckpointError, OSError, ValueError) as error:
            raise SFTError(f"evaluating {policy_dir}: cannot load the policy: {error}") from None
        summary["eval"] = {
            "sampling": evaluate_sft(
                policy,
                config.tasks,
                run.eval_episodes,
                greedy=False,
                temperature=run.eval_temperature,
                seed=config.seed,
                progress=progress,
                split=run.eval_split,
            ),
            "greedy": evaluate_sft(
                policy, config.tasks, run.eval_episodes, greedy=True, progress=progress, split=run.eval_split
            ),
        }
        eval_file = (
            EVAL_FILE if run.eval_split == "in_domain" else EVAL_FILE.replace(".json", f"_{run.eval_split}.json")
        )
        atomic_write_json(out / eval_file, summary["eval"])
    return summary


def main(argv: list[str] | None = None) -> int:
    """Exit status (trainer.command): 0 ok, 1 failure (unusable demonstrations, mismatched resume),
    2 usage, 130 interrupted."""
    from trainer.command import run_command

    parser = build_parser()
    return run_command(
        "grape-sft",
        lambda: _main(parser, argv),
        parser=parser,
        failures=(SFTError,),
        interrupted="interrupted; continue with --resume",
    )


def _main(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    from trainer.command import UsageError

    try:
        run, rest = _checked_config(parser, argv)
        base = open_base(run)  # before anything is written: a bad --policy leaves nothing
    except SFTError as error:
        raise UsageError(str(error)) from None
    summary = _run(run, progress=not rest.quiet, base=base)
    if rest.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"policy: {summary['policy']}  ({summary['train_seconds']} s)")
        for mode, result in summary.get("eval", {}).items():
            cells = "  ".join(f"{task} {info['success']:.0%}" for task, info in result["tasks"].items())
            print(f"{mode:<9} success {result['overall']['success']:.1%}  ({cells})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
