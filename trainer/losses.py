"""Preference and imitation losses as pure tensor functions: inputs in, (loss, metrics) out.

Nothing here touches a model. The loop computes log-probabilities and hands them over; the
functions below only combine them, so each is checked against hand-computed values.

Metric names follow TRL's DPOTrainer (`rewards/chosen`, `rewards/margins`, ...) so curves from
this trainer and from TRL read the same. Metric values are Python floats (detached).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Metrics = dict[str, float]


def _preference_metrics(
    loss: torch.Tensor,
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> Metrics:
    return {
        "loss": float(loss.detach()),
        "rewards/chosen": float(chosen_rewards.mean()),
        "rewards/rejected": float(rejected_rewards.mean()),
        "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
        "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
        "logps/chosen": float(policy_chosen_logps.detach().mean()),
        "logps/rejected": float(policy_rejected_logps.detach().mean()),
    }


def tpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """Trajectory-wise preference loss, GRAPE Eq. 5-6.

    Every argument is [P], one entry per (chosen, rejected) pair: log pi(zeta), the sum of the
    per-step action log-probabilities over ALL steps of the trajectory (not a window).

        L = -mean_p log sigmoid(beta * [(pi_w - ref_w) - (pi_l - ref_l)])

    The implicit rewards beta * (log pi - log pi_ref) are reported as rewards/chosen|rejected.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {t.shape for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)}
    if len(shapes) != 1 or policy_chosen_logps.dim() != 1:
        raise ValueError(f"tpo_loss expects four [P] tensors of one shape, got shapes {sorted(map(tuple, shapes))}")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratio - rejected_logratio)
    loss = -F.logsigmoid(logits).mean()
    chosen_rewards = beta * chosen_logratio.detach()
    rejected_rewards = beta * rejected_logratio.detach()
    metrics = _preference_metrics(loss, chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)
    return loss, metrics


def step_dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, Metrics]:
    """Step-wise DPO, the paper's OpenVLA-DPO baseline: each step is its own preference pair.

    Every tensor is [P, T]: the per-step log-probabilities of the chosen and rejected trajectory
    of pair p aligned by step index t; `mask[p, t]` is True where both trajectories have a step t
    (t < min(len_w, len_l)). The loss is DPO averaged over all valid step pairs, so unlike TPO it
    never sees a whole trajectory's likelihood.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    tensors = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, mask)
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1 or mask.dim() != 2:
        raise ValueError(f"step_dpo_loss expects five [P, T] tensors of one shape, got {sorted(map(tuple, shapes))}")
    valid = mask.bool()
    if not bool(valid.any()):
        raise ValueError("step_dpo_loss: mask selects no step pair")
    chosen_logratio = (policy_chosen_logps - ref_chosen_logps)[valid]
    rejected_logratio = (policy_rejected_logps - ref_rejected_logps)[valid]
    logits = beta * (chosen_logratio - rejected_logratio)
    loss = -F.logsigmoid(logits).mean()
    metrics = _preference_metrics(
        loss,
        beta * chosen_logratio.detach(),
        beta * rejected_logratio.detach(),
        policy_chosen_logps[valid],
        policy_rejected_logps[valid],
    )
    return loss, metrics


def sft_loss(step_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """Behaviour cloning on given trajectories: the negative mean per-step log-likelihood.

    `step_logps` and `mask` are [N, T] (log pi(a_t | o_t, q) of each step; mask True on valid
    steps). Averaging over steps, not trajectories, weights every demonstrated action equally.
    """
    if step_logps.shape != mask.shape or step_logps.dim() != 2:
        raise ValueError(f"sft_loss expects two [N, T] tensors of one shape, got {tuple(step_logps.shape)} and {tuple(mask.shape)}")
    valid = mask.bool()
    if not bool(valid.any()):
        raise ValueError("sft_loss: mask selects no step")
    logps = step_logps[valid]
    loss = -logps.mean()
    return loss, {"loss": float(loss.detach()), "logps/mean": float(logps.detach().mean())}
