"""A learner over several processes: `--learner-processes N` (torch.distributed; gloo on CPU, nccl on GPUs).

Design: rollouts, scoring, pairing, logging and checkpoints stay in the training process (rank
0). Only the optimizer steps are shared. Ranks 1..N-1 are helper processes started once per run
(spawned on this machine; on GPUs rank r uses cuda:r). For each iteration's training phase rank 0
saves its current policy to a scratch folder and broadcasts one job: that folder, the optimizer
state, the iteration's steps and units. Every rank then runs the same `train_on_units` (the same
batches in the same order, seeded by (seed, k)), and the ranks' parameters stay identical step
after step, because every rank applies the same summed gradient. Helpers rebuild their copy from
rank 0's each iteration, so merging adapters, resuming and the reference policy need nothing
more; what they compute after the phase is dropped.

The gradient of one batch is shared exactly, whatever the loss: the loss depends on the
parameters only through the per-step log-probs, so rank r computes (with gradient) the log-probs
of its share of the batch's steps, all ranks gather every share's values, each evaluates the
loss on the whole batch with its own share carrying the gradient, and back-propagates. Rank r's
gradient is then sum over its steps of dL/dlogp_s * dlogp_s/dtheta, and the sum over ranks (one
all-reduce) is the one-process gradient. Non-separable batch losses (TPO's per-pair sums, the
NLL term normalised by the batch's chosen steps, GRPO's clip statistics) need no reweighting.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from trainer.loop import TrainError
from trainer.losses import Metrics

TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for a rank (a helper that died makes rank 0 fail after this)."""


class LearnerError(TrainError):
    """The learner processes cannot start (too few GPUs, no free port) or one of them failed."""


# ---------------------------------------------------------------------- the shared gradient
def distributed_backward(
    policy: torch.nn.Module,
    bank: Any,
    steps: np.ndarray,
    loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]],
    chunk_steps: int,
) -> Metrics:
    """`trainer.loop.backward_through_steps` with the batch's steps shared among the ranks;
    every rank ends with the whole batch's gradient in its LoRA parameters' .grad."""
    from trainer.loop import step_logps
    from trainer.policy import lora_parameters

    world, rank = dist.get_world_size(), dist.get_rank()
    bounds = np.linspace(0, len(steps), world + 1).round().astype(int)
    mine = steps[bounds[rank] : bounds[rank + 1]]
    device = policy.device
    chunked = len(mine) > chunk_steps
    if not len(mine):
        local = torch.zeros(0, device=device)
    elif chunked:  # as backward_through_steps: values first, then chunk by chunk with weights dL/dlogp
        local = step_logps(policy, bank, mine, chunk_steps).requires_grad_(True)
    else:
        local = bank.log_prob(policy, mine)
    width = int(np.diff(bounds).max())
    padded = torch.zeros(width, device=device, dtype=torch.float32)
    padded[: len(mine)] = local.detach().float()
    shares = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shares, padded)
    parts = [local if r == rank else shares[r][: bounds[r + 1] - bounds[r]] for r in range(world)]
    loss, metrics = loss_fn(torch.cat(parts))
    if chunked:
        (weights,) = torch.autograd.grad(loss, local)
        for i in range(0, len(mine), chunk_steps):
            (bank.log_prob(policy, mine[i : i + chunk_steps]) * weights[i : i + chunk_steps]).sum().backward()
    elif local.requires_grad:
        loss.backward()
    params = lora_parameters(policy)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    return metrics


# ---------------------------------------------------------------------- rank 0
class LearnerGroup:
    """Rank 0's side: starts the helpers, hands each training phase to them, stops them."""

    def __init__(self, processes: int, device: torch.device) -> None:
        if processes < 2:
            raise LearnerError(f"--learner-processes {processes}: a group needs at least 2 processes")
        if device.type == "cuda" and torch.cuda.device_count() < processes:
            raise LearnerError(
                f"--learner-processes {processes} on cuda needs one GPU per process; "
                f"{torch.cuda.device_count()} visible"
            )
        if dist.is_initialized():
            raise LearnerError(
                "torch.distributed is already initialised in this process; --learner-processes starts its own group"
            )
        self.processes = processes
        self.device = torch.device("cuda", 0) if device.type == "cuda" else device
        backend = "nccl" if device.type == "cuda" else "gloo"
        address = f"tcp://127.0.0.1:{_free_port()}"
        context = torch.multiprocessing.get_context("spawn")
        self.helpers = [
            context.Process(
                target=_helper_main,
                args=(rank, processes, address, backend, device.type),
                daemon=True,
                name=f"grape-learner-{rank}",
            )
            for rank in range(1, processes)
        ]
        for helper in self.helpers:
            helper.start()
        try:
            dist.init_process_group(backend, init_method=address, rank=0, world_size=processes, timeout=TIMEOUT)
        except Exception as error:  # whatever stopped the rendezvous, the helpers must not linger
            self._kill()
            raise LearnerError(
                f"--learner-processes {processes}: the processes could not form a group: {error}"
            ) from None

    def train_on_units(
        self,
        config: Any,
        k: int,
        policy: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        bank: Any,
        units: np.ndarray,
        logger: Any,
        global_step: int,
        progress: bool,
        *,
        advantages: np.ndarray | None = None,
        held_out: np.ndarray | None = None,
    ) -> int:
        from trainer.loop import train_on_units

        dead = [helper.name for helper in self.helpers if not helper.is_alive()]
        if dead:
            raise LearnerError(
                f"learner process(es) {', '.join(dead)} exited; the run resumes from its last checkpoint"
            )
        with tempfile.TemporaryDirectory(prefix="grape-learner-") as scratch:
            policy.save_pretrained(Path(scratch) / "policy")
            job = {
                "policy_dir": str(Path(scratch) / "policy"),
                "optimizer": _to_cpu(optimizer.state_dict()),
                "config": config.to_dict(),
                "k": k,
                "bank": bank,
                "units": units,
                "global_step": global_step,
                "advantages": advantages,
                "held_out": held_out,
            }
            dist.broadcast_object_list([job], src=0)
            # The scratch folder outlives the helpers' loading: they read it before the first collective.
            return train_on_units(
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
                backward=distributed_backward,
            )

    def close(self) -> None:
        if dist.is_initialized():
            if all(helper.is_alive() for helper in self.helpers):
                dist.broadcast_object_list([None], src=0)
            dist.destroy_process_group()
        for helper in self.helpers:
            helper.join(timeout=30)
        self._kill()

    def _kill(self) -> None:
        for helper in self.helpers:
            if helper.is_alive():
                helper.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_cpu(item) for item in value]
    return value


# ---------------------------------------------------------------------- ranks 1..N-1
class _QuietLogger:
    """Helpers log nothing: rank 0 writes the run's metrics."""

    def log(self, step: int, metrics: dict[str, float], line: str | None = None) -> None:
        pass

    def echo(self, line: str) -> None:
        pass


def _helper_main(rank: int, world: int, address: str, backend: str, device_type: str) -> None:
    from trainer.config import TrainConfig
    from trainer.loop import train_on_units
    from trainer.policy import lora_parameters
    from trainer.policy.source import open_policy, options_from_config

    torch.set_num_threads(1)  # as the training process: small matrices, a shared CPU
    device = torch.device("cuda", rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world, timeout=TIMEOUT)
    try:
        while True:
            box: list[Any] = [None]
            dist.broadcast_object_list(box, src=0)
            job = box[0]
            if job is None:
                break
            config = TrainConfig.from_dict(job["config"])
            options = {**options_from_config(config.policy), "device": device, "policy_type": "auto"}
            policy = open_policy(job["policy_dir"], is_trainable=True, **options)
            optimizer = torch.optim.AdamW(
                lora_parameters(policy), lr=config.optim.lr, weight_decay=config.optim.weight_decay
            )
            optimizer.load_state_dict(job["optimizer"])
            train_on_units(
                config,
                job["k"],
                policy,
                optimizer,
                job["bank"],
                job["units"],
                _QuietLogger(),
                job["global_step"],
                False,
                advantages=job["advantages"],
                held_out=job["held_out"],
                backward=distributed_backward,
            )
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------- the loop's entry
_group: LearnerGroup | None = None


def train_units(
    config: Any,
    k: int,
    policy: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    bank: Any,
    units: np.ndarray,
    logger: Any,
    global_step: int,
    progress: bool,
    *,
    advantages: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
) -> int:
    """`trainer.loop.train_on_units` in this process, or shared by config.optim.learner_processes
    processes (started on first use, kept for the rest of the run; `close_learners` stops them)."""
    global _group
    from trainer.loop import train_on_units

    processes = config.optim.learner_processes
    if processes <= 1:
        return train_on_units(
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
    if _group is not None and _group.processes != processes:
        close_learners()
    if _group is None:
        _group = LearnerGroup(processes, policy.device)
    return _group.train_on_units(
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


def close_learners() -> None:
    global _group
    if _group is not None:
        _group.close()
        _group = None
