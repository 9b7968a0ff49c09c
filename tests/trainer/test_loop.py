import json
import os

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.loop import (
    CONFIG_FILE,
    StepBank,
    TrainError,
    backward_through_steps,
    completed_checkpoints,
    open_run_dir,
    preference_loss_fn,
    save_checkpoint,
    sft_loss_fn,
    step_logps,
    write_run_config,
)
from trainer.policy import add_lora, load_policy, lora_parameters, make_policy

torch.set_num_threads(1)
STATE_DIM = 12


@pytest.fixture(scope="module")
def tiny_policy():
    torch.manual_seed(0)
    policy = make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    add_lora(policy, rank=4)
    # LoRA B starts at zero; give it values so gradients reach A as well and outputs differ from the base.
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return policy


def _bank(lengths, seed=0):
    rng = np.random.default_rng(seed)
    total = int(sum(lengths))
    return StepBank(
        states=rng.normal(size=(total, STATE_DIM)).astype(np.float32),
        tokens=torch.as_tensor(rng.integers(0, 256, size=(total, 7))),
        instructions=[f"put the cube {i} in the box" for i in range(len(lengths))],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )


def _grads(policy, bank, steps, loss_fn, chunk):
    policy.zero_grad(set_to_none=True)
    metrics = backward_through_steps(policy, bank, steps, loss_fn, chunk)
    return [p.grad.clone() for p in lora_parameters(policy)], metrics


@pytest.mark.parametrize("loss", ["tpo", "dpo-step", "sft"])
def test_chunked_backward_equals_whole_batch_backward(tiny_policy, loss):
    lengths = np.array([5, 9, 3, 7])
    bank = _bank(lengths)
    pairs = np.array([[0, 1], [2, 3]])
    steps = bank.steps_of(pairs.reshape(-1))
    if loss == "sft":
        loss_fn = sft_loss_fn([int(x) for x in lengths[pairs.reshape(-1)]])
    else:
        with tiny_policy.adapter_disabled():
            ref = step_logps(tiny_policy, bank, steps, 64)
        loss_fn = preference_loss_fn(loss, pairs, lengths, ref, beta=0.5)
    whole, whole_metrics = _grads(tiny_policy, bank, steps, loss_fn, chunk=1000)
    chunked, chunked_metrics = _grads(tiny_policy, bank, steps, loss_fn, chunk=4)
    assert whole_metrics == pytest.approx(chunked_metrics, rel=1e-5)
    assert any(g.abs().sum() > 0 for g in whole)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_tpo_loss_fn_uses_whole_trajectory_sums(tiny_policy):
    lengths = np.array([4, 6])
    bank = _bank(lengths, seed=1)
    steps = bank.steps_of([0, 1])
    logps = step_logps(tiny_policy, bank, steps, 64)
    ref = torch.zeros_like(logps)
    _, metrics = preference_loss_fn("tpo", np.array([[0, 1]]), lengths, ref, beta=1.0)(logps)
    assert metrics["logps/chosen"] == pytest.approx(float(logps[:4].sum()), rel=1e-5)
    assert metrics["logps/rejected"] == pytest.approx(float(logps[4:].sum()), rel=1e-5)


@pytest.mark.parametrize("loss", ["tpo", "dpo-step"])
def test_nll_weight_adds_the_chosen_trajectories_mean_step_nll(tiny_policy, loss):
    lengths = np.array([4, 6, 3, 5])
    bank = _bank(lengths, seed=2)
    pairs = np.array([[0, 1], [2, 3]])
    steps = bank.steps_of(pairs.reshape(-1))
    logps = step_logps(tiny_policy, bank, steps, 64)
    ref = logps - 0.1
    plain, _ = preference_loss_fn(loss, pairs, lengths, ref, beta=0.5)(logps)
    combined, metrics = preference_loss_fn(loss, pairs, lengths, ref, beta=0.5, nll_weight=0.3)(logps)
    # chosen trajectories 0 (steps 0-3) and 2 (steps 10-12) of the concatenation [0, 1, 2, 3]
    chosen_nll = -(logps[0:4].sum() + logps[10:13].sum()) / 7
    assert float(combined) == pytest.approx(float(plain + 0.3 * chosen_nll), rel=1e-6)
    assert metrics["nll/chosen"] == pytest.approx(float(chosen_nll), rel=1e-6)
    assert metrics["loss/preference"] == pytest.approx(float(plain), rel=1e-6)


def test_reference_is_the_adapter_free_base(tiny_policy):
    bank = _bank([3])
    steps = bank.steps_of([0])
    adapted = step_logps(tiny_policy, bank, steps, 64)
    with tiny_policy.adapter_disabled():
        reference = step_logps(tiny_policy, bank, steps, 64)
    assert not torch.allclose(adapted, reference)


def test_tpo_steps_raise_the_margin():
    torch.manual_seed(1)
    policy = make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    add_lora(policy, rank=4)
    lengths = np.array([6, 6, 5, 8])
    bank = _bank(lengths, seed=2)
    pairs = np.array([[0, 1], [2, 3]])
    steps = bank.steps_of(pairs.reshape(-1))
    with policy.adapter_disabled():
        ref = step_logps(policy, bank, steps, 64)
    loss_fn = preference_loss_fn("tpo", pairs, lengths, ref, beta=0.1)
    optimizer = torch.optim.AdamW(lora_parameters(policy), lr=1e-2)
    margins = []
    for _ in range(8):
        optimizer.zero_grad()
        margins.append(backward_through_steps(policy, bank, steps, loss_fn, 64)["rewards/margins"])
        optimizer.step()
    assert margins[0] == pytest.approx(0.0, abs=1e-6)  # LoRA starts as the identity
    assert margins[-1] > 0.5


def test_resume_with_a_different_config_is_a_clear_error(tmp_path):
    config = TrainConfig(constraints="constraints/safety.grc", output_dir=str(tmp_path / "run"))
    run_dir, last = open_run_dir(config)
    assert last == -1 and not run_dir.exists()  # opening writes nothing
    write_run_config(run_dir, config)
    (run_dir / "checkpoints" / "iter_0000").mkdir(parents=True)  # the run has started: its config binds
    (run_dir / "checkpoints" / "iter_0000" / "trainer_state.pt").write_bytes(b"state")
    again, _ = open_run_dir(
        TrainConfig(constraints="constraints/safety.grc", output_dir=str(tmp_path / "run"), iterations=5)
    )
    assert again == run_dir  # more iterations extend a run
    other = TrainConfig(constraints="constraints/safety.grc", output_dir=str(tmp_path / "run"))
    other.optim.beta = 0.5
    other.rollout.tasks = ["stack"]
    with pytest.raises(TrainError) as info:
        open_run_dir(other)
    message = str(info.value)
    assert "beta: 0.1 -> 0.5" in message and "tasks:" in message and "different configuration" in message
    assert json.loads((run_dir / CONFIG_FILE).read_text())["optim"]["beta"] == 0.1
    # the same constraint file spelled as an absolute path is the same setting
    absolute = TrainConfig(constraints=os.path.abspath("constraints/safety.grc"), output_dir=str(tmp_path / "run"))
    assert open_run_dir(absolute)[0] == run_dir


def test_a_run_saved_before_the_nll_and_lora_target_fields_resumes_only_with_its_old_behaviour():
    from trainer.config import config_differences

    saved = TrainConfig(constraints="constraints/safety.grc").to_dict()
    for section, name in (("optim", "nll_weight"), ("policy", "lora_targets"), ("optim", "ref_update")):
        del saved[section][name]  # what an older grape-train wrote
    today = TrainConfig(constraints="constraints/safety.grc")
    assert config_differences(saved, today.to_dict()) == [
        "lora_targets: 'attention' -> 'all-linear'",
        "nll_weight: 0.0 -> 1.0",
        "ref_update: 'fixed' -> 'iteration'",
    ]
    today.optim.nll_weight, today.policy.lora_targets, today.optim.ref_update = 0.0, "attention", "fixed"
    assert config_differences(saved, today.to_dict()) == []


def test_a_resumed_run_may_step_more_or_fewer_envs_together_but_not_draw_other_episodes():
    from trainer.config import config_differences

    saved = TrainConfig(constraints="constraints/safety.grc").to_dict()
    del saved["rollout"]["batch_envs"]  # a run saved before the field existed
    today = TrainConfig(constraints="constraints/safety.grc")
    today.rollout.batch_envs = 48
    assert config_differences(saved, today.to_dict()) == []
    today.rollout.samples_per_state = 4
    assert config_differences(saved, today.to_dict()) == ["samples_per_state: 6 -> 4"]


def test_foreign_output_dir_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(TrainError, match="not a grape-train run folder"):
        open_run_dir(TrainConfig(constraints="x.grc", output_dir=str(tmp_path)))


def test_checkpoint_round_trip_and_failed_write_leaves_nothing(tmp_path, tiny_policy, monkeypatch):
    config = TrainConfig(constraints="constraints/safety.grc", output_dir=str(tmp_path))
    optimizer = torch.optim.AdamW(lora_parameters(tiny_policy), lr=1e-3)
    save_checkpoint(tmp_path, 1, tiny_policy, optimizer, config, 7, {"a": 1.0})
    assert list(completed_checkpoints(tmp_path)) == [1]
    loaded = load_policy(tmp_path / "checkpoints" / "iter_0001" / "policy", is_trainable=True)
    bank = _bank([4])
    torch.testing.assert_close(
        step_logps(loaded, bank, bank.steps_of([0]), 64), step_logps(tiny_policy, bank, bank.steps_of([0]), 64)
    )

    # A full disk at the final rename of iteration 2's checkpoint: the error propagates,
    # iteration 1 stays the newest complete checkpoint, and no partial folder is left.
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("iter_0002"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(tmp_path, 2, tiny_policy, optimizer, config, 9, {})
    monkeypatch.undo()
    assert list(completed_checkpoints(tmp_path)) == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_0001"]


# ---------------------------------------------------------------------- the whole loop
def _tiny_config(tmp_path, policy_dir, name, **changes):
    config = TrainConfig(constraints="constraints/safety.grc", iterations=2, output_dir=str(tmp_path / name))
    config.policy.base_policy = str(policy_dir)
    config.policy.lora_rank = 2
    config.rollout.tasks = ["stack"]
    config.rollout.states_per_task = 2
    config.rollout.samples_per_state = 3
    config.rollout.max_steps = 8
    config.gcpg.m = 1
    # An untrained policy only fails: its trajectories differ in R_ext by far less than the
    # default outcome gap, so the tiny runs pair on any difference.
    config.gcpg.min_gap = 0.0
    config.optim.lr = 1e-2
    config.optim.pairs_per_step = 2
    config.optim.chunk_steps = 10  # forces the chunked exact-gradient path
    for key, value in changes.items():
        for part in (config.optim, config.rollout, config.gcpg):
            if hasattr(part, key):
                setattr(part, key, value)
                break
        else:
            raise AttributeError(key)
    return config


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from trainer.sim.env import STATE_DIM as SIM_STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("policy") / "tiny"
    make_policy(
        "embedded", state_dim=SIM_STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    return folder


def _adapter(run_dir, iteration):
    from safetensors.torch import load_file

    return load_file(
        str(run_dir / "checkpoints" / f"iter_{iteration:04d}" / "policy" / "adapter" / "adapter_model.safetensors")
    )


def test_killed_run_resumes_where_it_stopped_and_matches_the_uninterrupted_run(tmp_path, tiny_policy_dir):
    import pyarrow.parquet as pq

    from trainer.loop import train

    whole = train(_tiny_config(tmp_path, tiny_policy_dir, "whole"), progress=False, echo=lambda _: None)
    config = _tiny_config(tmp_path, tiny_policy_dir, "resumed")
    run = train(config, progress=False, echo=lambda _: None, stop_after=1)  # "killed" after iteration 1
    assert list(completed_checkpoints(run)) == [0, 1]
    first_iteration = _adapter(run, 1)
    lines = []
    train(config, progress=False, echo=lines.append)
    assert any("resuming" in line and "after iteration 1" in line for line in lines)
    assert list(completed_checkpoints(run)) == [0, 1, 2]
    for name, tensor in _adapter(run, 1).items():  # iteration 1's results are intact
        torch.testing.assert_close(tensor, first_iteration[name])
    for name, tensor in _adapter(whole, 2).items():  # and the continuation is what the whole run computed
        torch.testing.assert_close(tensor, _adapter(run, 2)[name])
    a = pq.read_table(whole / "iterations" / "iter_0002" / "scores.parquet").to_pydict()
    b = pq.read_table(run / "iterations" / "iter_0002" / "scores.parquet").to_pydict()
    assert a["r_gcpg"] == b["r_gcpg"] and a["seed"] == b["seed"]
    # the score table holds every component and the compiler's costs; pairs share an initial state
    assert {"r_self", "r_ext", "success", "r_gcpg", "rank", "logp_sum"} <= set(a)
    assert any(name.startswith("stage_cost/") for name in a) and any(name.startswith("constraint_cost/") for name in a)
    pairs = pq.read_table(run / "iterations" / "iter_0002" / "pairs.parquet").to_pydict()
    assert len(pairs["chosen"]) >= 1
    for c, r in zip(pairs["chosen"], pairs["rejected"]):
        assert a["group"][c] == a["group"][r] and a["outcome"][c] > a["outcome"][r]
    # nothing half-written anywhere
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    # a finished run is not retrained
    lines.clear()
    train(config, progress=False, echo=lines.append)
    assert any("already done" in line for line in lines)


def train_quietly(config, **kwargs):
    from trainer.loop import train

    return train(config, progress=False, echo=lambda _: None, **kwargs)


def _base_weights(run_dir, iteration):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / f"iter_{iteration:04d}" / "policy" / "model.safetensors"))


def test_per_iteration_reference_resumes_like_the_uninterrupted_run(tmp_path, tiny_policy_dir):
    whole = train_quietly(_tiny_config(tmp_path, tiny_policy_dir, "whole", ref_update="iteration"))
    config = _tiny_config(tmp_path, tiny_policy_dir, "resumed", ref_update="iteration")
    run = train_quietly(config, stop_after=1)
    train_quietly(config)
    assert list(completed_checkpoints(run)) == [0, 1, 2]
    # Iteration 2 trained on top of iteration 1's merged policy: its saved base weights changed
    # (they hold iteration 1's adapter), identically in the whole and the resumed run.
    assert any(
        not torch.equal(tensor, _base_weights(whole, 1)[name]) for name, tensor in _base_weights(whole, 2).items()
    )
    for name, tensor in _base_weights(whole, 2).items():
        torch.testing.assert_close(tensor, _base_weights(run, 2)[name])
    for name, tensor in _adapter(whole, 2).items():
        torch.testing.assert_close(tensor, _adapter(run, 2)[name])
    # With the default (fixed) reference the base weights never change.
    fixed = train_quietly(_tiny_config(tmp_path, tiny_policy_dir, "fixed", ref_update="fixed"))
    for name, tensor in _base_weights(fixed, 2).items():
        torch.testing.assert_close(tensor, _base_weights(fixed, 0)[name])


def test_all_linear_adapter_with_per_iteration_reference_resumes(tmp_path, tiny_policy_dir):
    config = _tiny_config(tmp_path, tiny_policy_dir, "all_linear", ref_update="iteration")
    config.policy.lora_targets = "all-linear"
    whole = train_quietly(config)
    resumed = _tiny_config(tmp_path, tiny_policy_dir, "all_linear_resumed", ref_update="iteration")
    resumed.policy.lora_targets = "all-linear"
    run = train_quietly(resumed, stop_after=1)
    train_quietly(resumed)
    adapter = _adapter(whole, 2)
    assert any("mlp.down_proj.lora_A" in name for name in adapter)
    for name, tensor in adapter.items():
        torch.testing.assert_close(tensor, _adapter(run, 2)[name])


@pytest.mark.parametrize("loss", ["dpo-step", "sft", "grpo", "rloo"])
def test_baseline_losses_run(tmp_path, tiny_policy_dir, loss):
    from trainer.loop import train

    config = _tiny_config(tmp_path, tiny_policy_dir, loss, loss=loss)
    config.iterations = 1
    config.eval_episodes = 1
    lines = []
    run = train(config, progress=False, echo=lines.append)
    assert list(completed_checkpoints(run)) == [0, 1]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"eval/success_rate", "eval/stack/success_rate", "rollout/stack/success_rate"} <= set(logged[-1])
    if loss == "sft":  # an untrained policy never succeeds: nothing to imitate, said so
        assert any("no successful rollout" in line for line in lines)
    else:
        assert any(line.startswith("iter 1 step") for line in lines)


def test_constraints_objective_applies_to_each_task_and_task_file_selects_its_task():
    from trainer.loop import resolve_constraints

    both = resolve_constraints("constraints/safety.grc", ["stack", "push_to_target"], {})
    assert [p.task for p in both] == ["stack", "push_to_target"]
    assert all(p.path.name == f"{p.task}.grc" for p in both)
    (one,) = resolve_constraints("constraints/tasks/stack.grc", ["pick_place", "push_to_target"], {})
    assert one.task == "stack"
    with pytest.raises(TrainError, match="unknown param|no param|nope"):
        resolve_constraints("constraints/tasks/stack.grc", [], {"nope": 1.0})


def _logged(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dynamic_sampling_draws_fresh_states_until_the_rollout_cap(tmp_path, tiny_policy_dir):
    import pyarrow.parquet as pq

    # No untrained trajectory beats another by 0.5 in outcome: no state is informative, so rounds
    # of fresh states are drawn until the cap, and nothing is trained, said so.
    config = _tiny_config(
        tmp_path, tiny_policy_dir, "dynamic", loss="rloo", dynamic_sampling=True, max_rollouts=12, min_gap=0.5
    )
    config.iterations = 1
    lines = []
    from trainer.loop import train

    run = train(config, progress=False, echo=lines.append)
    scores = pq.read_table(run / "iterations" / "iter_0001" / "scores.parquet").to_pydict()
    assert len(scores["seed"]) == 12 and len(set(scores["seed"])) == 4  # 2 rounds x 2 states x 3 samples
    assert not any(scores["kept"])
    final = _logged(run)[-1]
    assert final["rollout/episodes"] == 12 and final["rollout/informative_groups"] == 0
    assert final["rollout/sampling_rounds"] == 2
    assert any("nothing to train on" in line for line in lines)
    # Round 0 is the plain draw: the same first states as a run without dynamic sampling.
    plain = train_quietly(_tiny_config(tmp_path, tiny_policy_dir, "plain", loss="rloo"), stop_after=1)
    plain_seeds = pq.read_table(plain / "iterations" / "iter_0001" / "scores.parquet").to_pydict()["seed"]
    assert sorted(set(plain_seeds)) == sorted(set(scores["seed"][:6]))


def test_group_loss_logs_pair_kinds_clip_statistics_and_held_out_loss(tmp_path, tiny_policy_dir):
    config = _tiny_config(
        tmp_path, tiny_policy_dir, "grpo_holdout", loss="grpo", holdout_fraction=0.5, lr_schedule="cosine"
    )
    config.iterations = 1
    run = train_quietly(config)
    logged = _logged(run)
    steps = [row for row in logged if "policy/clip_fraction" in row]
    assert steps and all(0 <= row["policy/clip_fraction"] <= 1 for row in steps)
    assert steps[0]["lr"] == pytest.approx(config.optim.lr)  # cosine starts at --lr and decays
    assert all(a["lr"] >= b["lr"] for a, b in zip(steps, steps[1:]))
    held = [row["heldout/loss"] for row in logged if "heldout/loss" in row]
    assert len(held) == config.optim.epochs + 1  # before training and after every epoch
    final = logged[-1]
    assert {"pairs/success-vs-failure", "pairs/success-vs-success", "pairs/failure-vs-failure"} <= set(final)


def test_early_stopping_keeps_the_adapter_of_the_best_held_out_epoch(tmp_path, tiny_policy_dir):
    # A learning rate far too high for the tiny policy: the held-out loss soon rises.
    config = _tiny_config(
        tmp_path, tiny_policy_dir, "early", loss="tpo", holdout_fraction=0.5, early_stopping=True, epochs=6, lr=0.3
    )
    config.iterations = 1
    run = train_quietly(config)
    logged = _logged(run)
    held = [row["heldout/loss"] for row in logged if "heldout/loss" in row]
    (kept,) = [row for row in logged if "heldout/best_epoch" in row]
    best = int(kept["heldout/best_epoch"])
    assert held[best] == min(held)
    # it stops at the first epoch that does not improve on the best so far (or runs them all)
    assert len(held) == config.optim.epochs + 1 or (len(held) == best + 2 and held[-1] >= held[best])
    assert kept["heldout/loss_kept"] == pytest.approx(held[best], abs=1e-5)


def test_early_stopping_needs_a_held_out_slice(tmp_path, tiny_policy_dir):
    from trainer.config import validate

    config = _tiny_config(tmp_path, tiny_policy_dir, "early_bad", loss="tpo", early_stopping=True)
    assert any("--early-stopping needs --holdout-fraction" in problem for problem in validate(config))


def test_success_pairs_add_contrasts_among_successes(tmp_path, tiny_policy_dir):
    from trainer.config import validate
    from trainer.loop import choose_pairs

    config = _tiny_config(tmp_path, tiny_policy_dir, "success_pairs", loss="tpo")
    config.gcpg.m, config.rollout.samples_per_state = 2, 8
    # one initial state, eight samples: six graded successes, two failures
    columns = {
        "group": np.array(["stack/7"] * 8),
        "outcome": np.array([1.9, 1.8, 1.7, 1.6, 1.5, 1.4, 0.2, 0.1]),
        "r_gcpg": np.zeros(8),
        "success": np.array([True] * 6 + [False] * 2),
    }
    kept = np.ones(8, dtype=bool)
    plain = choose_pairs(config, 1, columns, kept)
    config.gcpg.success_pairs = 2
    both = choose_pairs(config, 1, columns, kept)
    assert {tuple(p) for p in plain.tolist()} == {(0, 6), (0, 7), (1, 6), (1, 7)}
    assert {tuple(p) for p in both.tolist()} == {tuple(p) for p in plain.tolist()} | {(0, 4), (0, 5), (1, 4), (1, 5)}
    assert validate(config) == []
    config.optim.loss = "rloo"
    assert any("--success-pairs" in problem for problem in validate(config))


def test_success_advantage_grades_successes_on_top_of_the_group_advantage(tmp_path, tiny_policy_dir):
    from trainer.config import validate
    from trainer.gcpg import group_advantages
    from trainer.loop import training_units

    config = _tiny_config(tmp_path, tiny_policy_dir, "success_advantage", loss="grpo")
    # one initial state: three graded successes and a failure; R_GCPG is dominated by success
    columns = {
        "group": np.array(["stack/7"] * 4),
        "outcome": np.array([1.9, 1.8, 1.7, 0.1]),
        "r_gcpg": np.array([1.9, 1.8, 1.7, 0.1]),
        "success": np.array([True, True, True, False]),
    }
    kept = np.ones(4, dtype=bool)
    units, plain = training_units(config, columns, np.zeros((0, 2), dtype=np.int64), kept)
    np.testing.assert_allclose(plain, group_advantages(columns["r_gcpg"], columns["group"], normalize=True))
    config.gcpg.success_advantage = 0.5
    units, graded = training_units(config, columns, np.zeros((0, 2), dtype=np.int64), kept)
    among = np.array([1.0, 0.0, -1.0]) / np.std([1.9, 1.8, 1.7]) * 0.1  # (x - mean) / std of the successes
    np.testing.assert_allclose(graded - plain, 0.5 * np.append(among, 0.0), atol=1e-4)
    assert validate(config) == []
    config.optim.loss = "tpo"
    assert any("--success-advantage" in problem for problem in validate(config))
