"""trainer/headroom.py (within-state variance, best of group, rank correlations) and its driver
bench/headroom.py, on real simulator episodes of the scripted expert."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.headroom import (
    average_ranks,
    best_of_group,
    objective_ranking,
    rank_correlation,
    success_headroom,
    variance_split,
)
from trainer.rollout import EpisodeSpec, Rollout

REPO = Path(__file__).resolve().parents[2]

small_floats = st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda x: round(x, 3))
groups_of_values = st.lists(st.lists(small_floats, min_size=2, max_size=6), min_size=1, max_size=5)


@given(groups_of_values)
@settings(max_examples=60, deadline=None)
def test_within_and_between_add_up_to_the_pooled_variance(groups):
    split = variance_split([np.array(g) for g in groups])
    pooled = np.concatenate([np.array(g) for g in groups])
    assert split["groups"] == len(groups)
    assert split["within"] + split["between"] == pytest.approx(pooled.var(), abs=1e-6)
    if pooled.var() > 1e-9:
        assert 0.0 <= split["within_share"] <= 1.0 + 1e-12


def test_variance_split_by_hand_and_lone_values_ignored():
    split = variance_split([np.array([1.0, 3.0]), np.array([5.0, 7.0]), np.array([100.0])])
    assert split["groups"] == 2
    assert split["within"] == pytest.approx(1.0)  # every value 1 from its group's mean
    assert split["between"] == pytest.approx(4.0)  # group means 2 and 6 around 4
    assert split["within_share"] == pytest.approx(0.2)
    assert np.isnan(variance_split([np.array([1.0])])["within_share"])


def test_best_of_group_by_hand():
    assert best_of_group([np.array([40, 60]), np.array([50, 50])]) == pytest.approx((0.8 + 1.0) / 2)
    assert np.isnan(best_of_group([np.array([3.0])]))
    assert np.isnan(best_of_group([np.array([0, 0])]))  # no contacts at all: nothing to improve on


def test_average_ranks_share_ties():
    assert average_ranks(np.array([10, 30, 20, 30])).tolist() == [0.0, 2.5, 1.0, 2.5]


@given(st.lists(small_floats, min_size=3, max_size=12, unique=True))
@settings(max_examples=60, deadline=None)
def test_rank_correlation_ignores_monotone_maps_and_flips_with_order(xs):
    x = np.array(xs)
    assert rank_correlation(x, np.exp(x / 50)) == pytest.approx(1.0)
    assert rank_correlation(x, -(x**3)) == pytest.approx(-1.0)


def test_rank_correlation_of_a_constant_is_nan_and_lengths_must_match():
    assert np.isnan(rank_correlation(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))
    with pytest.raises(ValueError, match="x has 2 values, y 3"):
        rank_correlation(np.array([1.0, 2.0]), np.array([1.0, 2.0, 3.0]))


@pytest.fixture(scope="module")
def expert_rollouts():
    """Two initial states of pick_place, four expert episodes each at different speeds (so their
    lengths differ within a state), as the rollouts of one task."""
    from trainer.sim.env import make_env
    from trainer.sim.expert import Expert, run_expert

    env = make_env("pick_place", seed=0)
    rollouts = []
    try:
        for seed in (11, 12):
            for sample, speed in enumerate((1.0, 0.8, 0.6, 0.45)):
                episode = run_expert(env, Expert("pick_place", speed=speed, seed=seed), seed=seed)
                rollouts.append(Rollout(EpisodeSpec("pick_place", "in_domain", seed, sample), episode))
    finally:
        env.close()
    assert all(r.episode.success for r in rollouts)
    return rollouts


def test_a_score_that_prefers_short_successes_ranks_length_at_minus_one(expert_rollouts):
    lengths = np.array([r.episode.length for r in expert_rollouts], dtype=float)
    assert len(set(lengths[:4])) == 4  # slower experts take longer
    ranking = objective_ranking(expert_rollouts, np.exp(-lengths / 100))
    assert ranking["states_ranked"] == 2
    assert ranking["r_ext_length_rho"] == pytest.approx(-1.0)
    assert objective_ranking(expert_rollouts, lengths)["r_ext_length_rho"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="8 rollouts but 3 scores"):
        objective_ranking(expert_rollouts, lengths[:3])


def test_success_headroom_of_experts_at_several_speeds(expert_rollouts):
    fastest = {r.spec.group: r.episode.length for r in expert_rollouts if r.spec.sample == 0}
    report = success_headroom(expert_rollouts, expert_lengths=fastest)
    lengths = [np.array([r.episode.length for r in expert_rollouts if r.spec.seed == s]) for s in (11, 12)]
    assert report["success"] == 1.0 and report["states_with_2_successes"] == 2
    assert report["length_best_of_group"] == pytest.approx(np.mean([g.min() / g.mean() for g in lengths]))
    assert report["success_length_over_expert"] == pytest.approx(np.mean([g.mean() / g[0] for g in lengths]))
    assert report["length"]["within_share"] > 0.5  # speed, not the scene, sets these lengths
    assert report["speed_length_rho_within_state"] == pytest.approx(-1.0)  # slower steps, longer episodes
    assert 0 < report["step_over_axis_limit"] <= 1


def _bench(*args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "headroom.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )


def test_the_bench_runs_a_policy_and_reports_json(tmp_path):
    done = _bench(
        "--sft-cache", str(tmp_path / "none"), "--tasks", "pick_place", "--states", "1", "--samples", "2",
        "--constraints", str(REPO / "constraints" / "efficiency.grc"), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    task = report["tasks"]["pick_place"]
    assert report["samples"] == 2 and task["episodes"] == 2
    assert set(task["objectives"]) == {"efficiency.grc"}


def test_the_bench_names_an_unknown_task():
    done = _bench("--tasks", "pick_plcae", "--states", "1", "--samples", "2")
    assert done.returncode == 2
    assert "unknown task(s) pick_plcae" in done.stderr and "Traceback" not in done.stderr


def test_the_bench_names_a_missing_objective_file(tmp_path):
    done = _bench("--constraints", str(tmp_path / "nope.grc"), "--states", "1", "--samples", "2")
    assert done.returncode == 1
    assert "nope.grc" in done.stderr and "Traceback" not in done.stderr
