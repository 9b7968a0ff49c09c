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
        raise ValueError(
            f"sft_loss expects two [N, T] tensors of one shape, got {tuple(step_logps.shape)} and {tuple(mask.shape)}"
        )
    valid = mask.bool()
    if not bool(valid.any()):
        raise ValueError("sft_loss: mask selects no step")
    logps = step_logps[valid]
    loss = -logps.mean()
    return loss, {"loss": float(loss.detach()), "logps/mean": float(logps.detach().mean())}


def group_policy_gradient_loss(
    policy_step_logps: torch.Tensor,
    old_step_logps: torch.Tensor,
    step_advantages: torch.Tensor,
    clip_eps: float,
    ref_step_logps: torch.Tensor | None = None,
    kl_coef: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Clipped-ratio policy gradient with group-relative advantages (RLOO / GRPO, PPO's clip).

    Every argument is [S], one entry per action step of the trajectories in the batch: the
    step's log-prob under the policy being trained, under the policy that sampled it (fixed
    during the iteration), and the advantage of the trajectory the step belongs to (every step
    of a trajectory carries its trajectory's advantage). A step's log-prob is the sum over its
    action tokens, so the ratio is that of the whole action.

        rho_s = exp(logp_s - old_s)
        L = -mean_s min(rho_s A_s, clip(rho_s, 1 - eps, 1 + eps) A_s) + kl_coef * mean_s KL_s

    The mean runs over steps, not trajectories, so a long trajectory weighs by its length (the
    token-level average of DAPO). KL_s = exp(ref_s - logp_s) - (ref_s - logp_s) - 1 is the
    non-negative unbiased estimator of KL(pi || pi_ref) (Schulman's k3), used only when
    `kl_coef` > 0.
    """
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    tensors = [policy_step_logps, old_step_logps, step_advantages] + (
        [ref_step_logps] if ref_step_logps is not None else []
    )
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1 or policy_step_logps.dim() != 1 or policy_step_logps.numel() == 0:
        raise ValueError(
            f"group_policy_gradient_loss expects non-empty [S] tensors of one shape, got {sorted(map(tuple, shapes))}"
        )
    if kl_coef > 0 and ref_step_logps is None:
        raise ValueError("group_policy_gradient_loss: kl_coef > 0 needs ref_step_logps")
    log_ratio = policy_step_logps - old_step_logps
    ratio = torch.exp(log_ratio)
    unclipped = ratio * step_advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * step_advantages
    policy_loss = -torch.minimum(unclipped, clipped).mean()
    loss = policy_loss
    metrics: Metrics = {}
    if kl_coef > 0:
        delta = ref_step_logps - policy_step_logps
        kl = (torch.exp(delta) - delta - 1).mean()
        loss = loss + kl_coef * kl
        metrics["objective/kl"] = float(kl.detach())
    with torch.no_grad():
        clipped_steps = ((ratio < 1 - clip_eps) & (step_advantages < 0)) | (
            (ratio > 1 + clip_eps) & (step_advantages > 0)
        )
        metrics.update(
            {
                "loss": float(loss.detach()),
                "loss/policy": float(policy_loss.detach()),
                "policy/clip_fraction": float(clipped_steps.float().mean()),
                "policy/approx_kl": float(((ratio - 1) - log_ratio).mean()),
                "policy/ratio_mean": float(ratio.mean()),
                "advantages/mean": float(step_advantages.mean()),
                "advantages/abs_mean": float(step_advantages.abs().mean()),
            }
        )
    return loss, metrics
