import math

import pytest
import torch

from trainer.losses import sft_loss, step_dpo_loss, tpo_loss

torch.set_num_threads(1)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_tpo_loss_matches_hand_computed_value():
    # pair 0: chosen ratio -10 - (-12) = 2, rejected ratio -9 - (-8) = -1 -> logit 0.5 * 3 = 1.5
    # pair 1: chosen ratio -20 - (-19) = -1, rejected ratio -15 - (-16) = 1 -> logit 0.5 * -2 = -1
    pc = torch.tensor([-10.0, -20.0])
    pr = torch.tensor([-9.0, -15.0])
    rc = torch.tensor([-12.0, -19.0])
    rr = torch.tensor([-8.0, -16.0])
    loss, metrics = tpo_loss(pc, pr, rc, rr, beta=0.5)
    expected = -(_log_sigmoid(1.5) + _log_sigmoid(-1.0)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6)
    assert metrics["rewards/chosen"] == pytest.approx((0.5 * 2 + 0.5 * -1) / 2)
    assert metrics["rewards/rejected"] == pytest.approx((0.5 * -1 + 0.5 * 1) / 2)
    assert metrics["rewards/accuracies"] == pytest.approx(0.5)
    assert metrics["rewards/margins"] == pytest.approx((1.5 + -1.0) / 2)
    assert metrics["logps/chosen"] == pytest.approx(-15.0)
    assert metrics["logps/rejected"] == pytest.approx(-12.0)


def test_tpo_gradient_pushes_chosen_up_and_rejected_down():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    loss, _ = tpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    loss.backward()
    # at logit 0 the gradient of -log sigmoid is -0.5 * beta for chosen, +0.5 * beta for rejected
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)


def test_tpo_equals_dpo_for_one_step_trajectories():
    torch.manual_seed(0)
    step = [torch.randn(6, 1) for _ in range(4)]  # [P, T=1] per-step log-probs
    traj = [s.sum(dim=1) for s in step]  # whole-trajectory sums of one step
    tpo, tpo_metrics = tpo_loss(*traj, beta=0.3)
    dpo, dpo_metrics = step_dpo_loss(*step, mask=torch.ones(6, 1, dtype=torch.bool), beta=0.3)
    assert tpo.item() == pytest.approx(dpo.item(), rel=1e-6)
    assert tpo_metrics == pytest.approx(dpo_metrics)


def test_tpo_sees_whole_trajectory_sums_not_step_means():
    # Two steps per trajectory: TPO on the sums differs from step-DPO averaged over the steps.
    pc = torch.tensor([[-1.0, -3.0]])
    pr = torch.tensor([[-2.0, -2.0]])
    zero = torch.zeros(1, 2)
    tpo, _ = tpo_loss(pc.sum(1), pr.sum(1), zero.sum(1), zero.sum(1), beta=1.0)
    dpo, _ = step_dpo_loss(pc, pr, zero, zero, torch.ones(1, 2, dtype=torch.bool), beta=1.0)
    assert tpo.item() == pytest.approx(-_log_sigmoid(0.0))
    assert dpo.item() == pytest.approx(-(_log_sigmoid(1.0) + _log_sigmoid(-1.0)) / 2)


def test_step_dpo_ignores_masked_steps():
    pc = torch.tensor([[-1.0, 100.0]])
    pr = torch.tensor([[-2.0, -100.0]])
    zero = torch.zeros(1, 2)
    mask = torch.tensor([[True, False]])
    loss, metrics = step_dpo_loss(pc, pr, zero, zero, mask, beta=2.0)
    assert loss.item() == pytest.approx(-_log_sigmoid(2.0))
    assert metrics["logps/chosen"] == pytest.approx(-1.0)


def test_sft_loss_is_negative_mean_over_valid_steps():
    logps = torch.tensor([[-1.0, -2.0, -50.0], [-3.0, -4.0, -5.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, metrics = sft_loss(logps, mask)
    assert loss.item() == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)
    assert metrics["logps/mean"] == pytest.approx(-3.0)
    loss.backward()
    assert logps.grad[0, 2].item() == 0.0
    assert logps.grad[1, 0].item() == pytest.approx(-1 / 5)


@pytest.mark.parametrize("beta", [0.0, -1.0])
def test_losses_reject_nonpositive_beta(beta):
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        tpo_loss(x, x, x, x, beta=beta)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        tpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), beta=0.1)
    with pytest.raises(ValueError, match="no step"):
        sft_loss(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))


# ---------------------------------------------------------------------- group-relative policy gradient
from trainer.losses import group_policy_gradient_loss  # noqa: E402


def test_group_policy_gradient_loss_matches_hand_computed_clipping():
    # ratios e^0.1 = 1.105 (A=+1, inside the clip), e^0.5 = 1.649 (A=+2, clipped at 1.2),
    # e^-0.5 = 0.607 (A=-1, clipped at 0.8: min(-0.607, -0.8) = -0.8), e^0 = 1 (A=0)
    new = torch.tensor([-1.0, -1.0, -2.0, -3.0])
    old = torch.tensor([-1.1, -1.5, -1.5, -3.0])
    advantages = torch.tensor([1.0, 2.0, -1.0, 0.0])
    loss, metrics = group_policy_gradient_loss(new, old, advantages, clip_eps=0.2)
    expected = -(math.exp(0.1) * 1 + 1.2 * 2 + -0.8 + 0.0) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert metrics["policy/clip_fraction"] == pytest.approx(0.5)  # the A=+2 and the A=-1 step get no gradient
    assert metrics["advantages/mean"] == pytest.approx(0.5)


def test_group_policy_gradient_gradient_raises_good_steps_and_stops_at_the_clip():
    new = torch.tensor([-1.0, -1.0, -1.0], requires_grad=True)
    old = torch.tensor([-1.0, -1.0, -1.5])
    advantages = torch.tensor([1.0, -1.0, 1.0])
    loss, _ = group_policy_gradient_loss(new, old, advantages, clip_eps=0.2)
    loss.backward()
    # d/dlogp of -ratio*A/3 at ratio 1 is -A/3; the third step's ratio e^0.5 is past 1 + eps: no gradient
    assert new.grad.tolist() == pytest.approx([-1 / 3, 1 / 3, 0.0])


def test_group_policy_gradient_kl_term_is_k3_and_zero_at_the_reference():
    logps = torch.tensor([-1.0, -2.0])
    zero_adv = torch.zeros(2)
    loss, metrics = group_policy_gradient_loss(logps, logps, zero_adv, clip_eps=0.2, ref_step_logps=logps, kl_coef=0.5)
    assert loss.item() == pytest.approx(0.0) and metrics["objective/kl"] == pytest.approx(0.0)
    ref = torch.tensor([-1.5, -1.0])
    loss, metrics = group_policy_gradient_loss(logps, logps, zero_adv, clip_eps=0.2, ref_step_logps=ref, kl_coef=0.5)
    d = ref - logps
    expected_kl = float((torch.exp(d) - d - 1).mean())
    assert metrics["objective/kl"] == pytest.approx(expected_kl) and loss.item() == pytest.approx(0.5 * expected_kl)
    with pytest.raises(ValueError, match="ref_step_logps"):
        group_policy_gradient_loss(logps, logps, zero_adv, clip_eps=0.2, kl_coef=0.1)
    with pytest.raises(ValueError, match="clip_eps"):
        group_policy_gradient_loss(logps, logps, zero_adv, clip_eps=0.0)
