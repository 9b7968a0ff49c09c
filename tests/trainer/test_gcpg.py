import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer.gcpg import (
    GcpgWeights,
    gcpg_reward,
    make_pairs,
    rank_within_groups,
    score_columns,
    self_reward,
    write_parquet,
)


def test_self_reward_is_length_normalised_geometric_mean_token_probability():
    # every token has probability 0.5, so R_self = 0.5 whatever the length
    logp_per_step = 7 * math.log(0.5)
    lengths = np.array([3, 30])
    r = self_reward(lengths * logp_per_step, lengths)
    assert r == pytest.approx([0.5, 0.5])


def test_self_reward_does_not_prefer_short_trajectories():
    # the long trajectory has a worse raw sum but better per-step likelihood
    r = self_reward(np.array([-10.0, -40.0]), np.array([5, 40]))
    assert r[1] > r[0]


def test_gcpg_reward_is_eq9():
    r = gcpg_reward(np.array([0.5]), np.array([0.25]), np.array([True]), GcpgWeights(self_=2.0, ext=4.0, success=8.0))
    assert r == pytest.approx([2 * 0.5 + 4 * 0.25 + 8])


def test_make_pairs_gives_m_squared_pairs_from_the_same_initial_state():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.array(["pick_place/1", "pick_place/2", "stack/1"]), 6)
    scores = rng.normal(size=len(groups))
    pairs = make_pairs(scores, groups, m=2)
    assert len(pairs) == 3 * 2 * 2
    assert all(groups[c] == groups[r] for c, r in pairs)
    assert all(scores[c] > scores[r] for c, r in pairs)
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        order = members[np.argsort(-scores[members])]
        in_group = {tuple(p) for p in pairs if groups[p[0]] == g}
        assert in_group == {(c, r) for c in order[:2] for r in order[-2:]}


def test_make_pairs_small_group_uses_half_and_singletons_give_none():
    scores = np.array([3.0, 2.0, 1.0, 9.0])
    groups = np.array([0, 0, 0, 1])
    pairs = make_pairs(scores, groups, m=4)
    # group 0 has 3 members -> m' = 1: best against worst; group 1 alone -> nothing
    assert pairs.tolist() == [[0, 2]]


def test_make_pairs_skips_ties_and_degenerate_groups():
    scores = np.array([1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 0.0])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pairs = make_pairs(scores, groups, m=2)
    # group 0: all tie -> none; group 1: top {4, 5}, bottom {6, 7}; 5 vs 6 ties -> skipped
    assert sorted(map(tuple, pairs.tolist())) == [(4, 6), (4, 7), (5, 7)]


def test_ranking_honours_the_lambdas():
    # trajectory 0 succeeds with a poor constraint cost; trajectory 1 fails with a good one
    r_self = np.array([0.2, 0.2])
    r_ext = np.array([0.1, 0.9])
    success = np.array([True, False])
    groups = np.array([0, 0])
    by_success = gcpg_reward(r_self, r_ext, success, GcpgWeights(self_=0.0, ext=1.0, success=1.0))
    by_cost = gcpg_reward(r_self, r_ext, success, GcpgWeights(self_=0.0, ext=1.0, success=0.0))
    assert make_pairs(by_success, groups, 1).tolist() == [[0, 1]]
    assert make_pairs(by_cost, groups, 1).tolist() == [[1, 0]]
    assert rank_within_groups(by_cost, groups).tolist() == [1, 0]
    # R_self alone decides when it is the only weight
    only_self = gcpg_reward(np.array([0.3, 0.6]), r_ext, success, GcpgWeights(self_=1.0, ext=0.0, success=0.0))
    assert make_pairs(only_self, groups, 1).tolist() == [[1, 0]]


def test_make_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match="m must be"):
        make_pairs(np.zeros(2), np.zeros(2), 0)
    with pytest.raises(ValueError, match="NaN"):
        make_pairs(np.array([np.nan, 1.0]), np.zeros(2), 1)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    m=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_make_pairs_invariants(sizes, m, seed):
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
    scores = rng.integers(0, 4, size=len(groups)).astype(float)  # many ties on purpose
    pairs = make_pairs(scores, groups, m)
    expected_max = sum(min(m, n // 2) ** 2 for n in sizes)
    assert len(pairs) <= expected_max
    assert len({tuple(p) for p in pairs.tolist()}) == len(pairs)
    for c, r in pairs:
        assert groups[c] == groups[r]
        assert scores[c] > scores[r]
    ranks = rank_within_groups(scores, groups)
    for g, n in enumerate(sizes):
        assert sorted(ranks[groups == g].tolist()) == list(range(n))


def test_score_columns_and_parquet_round_trip(tmp_path):
    cols = score_columns(
        logp_sums=np.array([-7.0, -14.0, -70.0]),
        lengths=np.array([1, 2, 2]),
        r_ext=np.array([0.5, 0.5, 0.9]),
        success=np.array([False, True, True]),
        group_ids=np.array(["a", "a", "a"]),
        weights=GcpgWeights(),
    )
    assert cols["r_self"] == pytest.approx([math.exp(-1), math.exp(-1), math.exp(-5)])
    assert cols["rank"].tolist() == [2, 1, 0]
    path = write_parquet({"group": np.array(["a", "a", "a"], dtype=object), **cols}, tmp_path / "scores.parquet")
    table = pq.read_table(path).to_pydict()
    assert table["r_gcpg"] == pytest.approx(cols["r_gcpg"].tolist())
    assert table["group"] == ["a", "a", "a"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- outcome gap, pair kinds, advantages
from trainer.gcpg import count_pair_kinds, group_advantages, informative_groups, outcome_score, pair_kinds  # noqa: E402


def test_outcome_score_leaves_r_self_out():
    weights = GcpgWeights(self_=0.1, ext=2.0, success=3.0)
    assert outcome_score(np.array([0.5, 1.0]), np.array([True, False]), weights) == pytest.approx([2 * 0.5 + 3, 2.0])


def test_r_self_breaks_ties_but_makes_no_pair_by_itself():
    # Two successes with R_ext 1.0 differing only in R_self, and a failure.
    weights = GcpgWeights()
    r_self = np.array([0.300, 0.303, 0.310])
    r_ext = np.array([1.0, 1.0, 0.0])
    success = np.array([True, True, False])
    scores = gcpg_reward(r_self, r_ext, success, weights)
    outcome = outcome_score(r_ext, success, weights)
    groups = np.zeros(3)
    # The paper's rule pairs the two successes by their likelihood ...
    assert make_pairs(scores[:2], groups[:2], m=1).tolist() == [[1, 0]]
    # ... ranking by outcome with the outcome gap does not.
    assert make_pairs(outcome[:2], groups[:2], m=1, tie_break=scores[:2], min_gap=0.01).tolist() == []
    # R_self still orders the tie: the likelier success is the one paired against the failure.
    assert make_pairs(outcome, groups, m=1, tie_break=scores, min_gap=0.01).tolist() == [[1, 2]]
    # An outcome preference is never overturned by R_self: the more likely failure stays rejected.
    r_self = np.array([0.1, 0.9])
    assert make_pairs(
        outcome_score(np.array([0.6, 0.5]), np.zeros(2, bool), weights),
        np.zeros(2),
        m=1,
        tie_break=r_self,
        min_gap=0.05,
    ).tolist() == [[0, 1]]


def test_min_gap_drops_pairs_closer_than_the_gap():
    scores = np.array([1.50, 1.45, 1.2, 0.2])
    # top 2 = {0, 1}, bottom 2 = {2, 3}; gaps 0.30 and 0.25 to index 2 are within 0.4
    pairs = make_pairs(scores, np.zeros(4), m=2, min_gap=0.4)
    assert pairs.tolist() == [[0, 3], [1, 3]]
    assert make_pairs(scores, np.zeros(4), m=2).tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]
    with pytest.raises(ValueError, match="min_gap"):
        make_pairs(scores, np.zeros(4), m=1, min_gap=float("nan"))


def test_pair_kinds_name_what_each_pair_contrasts():
    success = np.array([True, True, False, False])
    pairs = np.array([[0, 2], [0, 1], [2, 3], [3, 0]])
    kinds = pair_kinds(success, pairs)
    assert kinds == ["success-vs-failure", "success-vs-success", "failure-vs-failure", "failure-vs-success"]
    assert count_pair_kinds(kinds) == {kind: 1 for kind in kinds}
    assert count_pair_kinds([]) == dict.fromkeys(kinds, 0)


def test_rloo_advantage_is_score_minus_mean_of_the_others():
    scores = np.array([1.0, 0.0, 0.5, 2.0, 2.0, 7.0])
    groups = np.array(["a", "a", "a", "b", "b", "c"])
    advantages = group_advantages(scores, groups)
    assert advantages[:3] == pytest.approx([1.0 - 0.25, 0.0 - 0.75, 0.5 - 0.5])
    assert advantages[3:] == pytest.approx([0.0, 0.0, 0.0])  # a tied group and a singleton say nothing


def test_grpo_advantage_is_standardised_within_the_group():
    scores = np.array([1.0, 0.0, 0.5, 3.0, 1.0])
    groups = np.array([0, 0, 0, 1, 1])
    advantages = group_advantages(scores, groups, normalize=True)
    first = scores[:3]
    assert advantages[:3] == pytest.approx((first - first.mean()) / (first.std() + 1e-6))
    assert advantages[3:] == pytest.approx([1.0, -1.0], rel=1e-5)
    assert advantages[:3].sum() == pytest.approx(0.0, abs=1e-12)


def test_informative_groups_are_those_whose_outcomes_spread_beyond_the_gap():
    outcome = np.array([2.0, 2.0, 1.0, 1.005, 0.0, 2.0])
    groups = np.array(["tied", "tied", "close", "close", "mixed", "mixed"])
    assert informative_groups(outcome, groups, min_gap=0.01) == {"mixed"}
    assert informative_groups(outcome, groups, min_gap=0.001) == {"close", "mixed"}


from trainer.gcpg import merge_pairs, success_pairs  # noqa: E402


def test_success_pairs_contrast_successes_only_best_against_worst():
    # One group of 8: five successes graded by R_ext (contacts, travel), three failures.
    outcome = np.array([1.9, 1.5, 1.8, 0.3, 1.2, 0.1, 1.6, 0.2])
    success = np.array([True, True, True, False, True, False, True, False])
    groups = np.zeros(8, dtype=int)
    top_bottom = make_pairs(outcome, groups, m=2)
    assert all(success[c] and not success[r] for c, r in top_bottom)  # the usual pairs: success vs failure only
    among = success_pairs(outcome, success, groups, m=2)
    # successes by score: 0 (1.9), 2 (1.8), 6 (1.6), 1 (1.5), 4 (1.2) -> best two against worst two
    assert {tuple(p) for p in among.tolist()} == {(0, 1), (0, 4), (2, 1), (2, 4)}
    assert all(success[c] and success[r] for c, r in among)


def test_success_pairs_respect_groups_gap_and_small_groups():
    outcome = np.array([1.90, 1.895, 1.2, 1.7, 0.0, 1.0])
    success = np.array([True, True, True, True, False, True])
    groups = np.array([0, 0, 0, 1, 1, 1])
    pairs = success_pairs(outcome, success, groups, m=2, min_gap=0.01)
    # group 0: three successes -> m' = 1, best (0) against worst (2); group 1: successes 3 and 5 -> (3, 5)
    assert pairs.tolist() == [[0, 2], [3, 5]]
    assert success_pairs(outcome, np.zeros(6, dtype=bool), groups, m=2).shape == (0, 2)
    with pytest.raises(ValueError, match="success"):
        success_pairs(outcome, success[:3], groups, m=2)


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4), m=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_success_pairs_invariants(sizes, m, seed):
    rng = np.random.default_rng(seed)
    groups = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
    success = rng.random(len(groups)) < 0.6
    outcome = rng.random(len(groups)) + success
    pairs = success_pairs(outcome, success, groups, m)
    for c, r in pairs:
        assert success[c] and success[r] and groups[c] == groups[r] and outcome[c] > outcome[r]
    merged = merge_pairs(make_pairs(outcome, groups, m), pairs)
    assert len({tuple(p) for p in merged.tolist()}) == len(merged)
    assert {tuple(p) for p in merged.tolist()} == {tuple(p) for p in make_pairs(outcome, groups, m).tolist()} | {
        tuple(p) for p in pairs.tolist()
    }


def test_success_advantages_normalise_among_each_groups_successes():
    from trainer.gcpg import success_advantages

    scores = np.array([1.9, 1.7, 0.2, 1.5, 1.5, 1.8, 0.3])
    success = np.array([True, True, False, True, True, True, False])
    groups = np.array(["a", "a", "a", "b", "b", "c", "c"])
    adv = success_advantages(scores, success, groups, min_gap=0.01)
    np.testing.assert_allclose(adv[:2], [1.0, -1.0], atol=1e-4)  # two successes, unit spread
    assert adv[2] == 0 and adv[6] == 0  # failures
    assert adv[3] == adv[4] == 0  # tied successes
    assert adv[5] == 0  # a lone success
    assert not success_advantages(scores, success, groups, min_gap=0.5).any()  # 0.2 apart is within the gap
    with pytest.raises(ValueError, match="one length"):
        success_advantages(scores, success[:3], groups)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5), st.integers(0, 2**31 - 1))
def test_success_advantages_sum_to_zero_per_group_and_spare_failures(sizes, seed):
    from trainer.gcpg import success_advantages

    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(len(sizes)), sizes)
    success = rng.random(len(groups)) < 0.6
    scores = success + rng.random(len(groups))
    adv = success_advantages(scores, success, groups)
    assert not adv[~success].any()
    for g in range(len(sizes)):
        mine = adv[(groups == g) & success]
        assert abs(mine.sum()) < 1e-6
        assert not len(mine) or np.all(np.diff(mine[np.argsort(scores[(groups == g) & success])]) >= -1e-9)
