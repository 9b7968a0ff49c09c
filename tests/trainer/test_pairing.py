import numpy as np
import pytest

from trainer.pairing import random_success_pairs


def test_pairs_are_successes_against_failures_of_the_same_group():
    success = np.array([1, 0, 0, 1, 1, 0, 1, 0], dtype=bool)
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    pairs = random_success_pairs(success, groups, m=2, rng=np.random.default_rng(0))
    # group a: 2 wins x 2 losses = 4 combinations, m^2 = 4 -> all of them; group b: 2 x 2 -> 4
    assert pairs.shape == (8, 2) and pairs.dtype == np.int64
    assert np.all(success[pairs[:, 0]]) and not np.any(success[pairs[:, 1]])
    assert np.all(groups[pairs[:, 0]] == groups[pairs[:, 1]])
    assert len({tuple(p) for p in pairs.tolist()}) == 8  # without replacement


def test_at_most_m_squared_pairs_drawn_at_random():
    success = np.array([1] * 5 + [0] * 5, dtype=bool)
    groups = np.zeros(10, dtype=int)
    draws = {
        tuple(map(tuple, random_success_pairs(success, groups, m=1, rng=np.random.default_rng(s)).tolist()))
        for s in range(30)
    }
    assert all(len(d) == 1 for d in draws)
    assert len(draws) > 5  # random, not always the same pair
    same = random_success_pairs(success, groups, m=2, rng=np.random.default_rng(7))
    assert np.array_equal(same, random_success_pairs(success, groups, m=2, rng=np.random.default_rng(7)))
    assert len(same) == 4


def test_groups_without_both_outcomes_give_no_pairs():
    success = np.array([1, 1, 0, 0, 1], dtype=bool)
    groups = np.array([0, 0, 1, 1, 2])
    assert random_success_pairs(success, groups, m=2, rng=np.random.default_rng(0)).shape == (0, 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="m must be"):
        random_success_pairs(np.array([True, False]), np.array([0, 0]), m=0, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="one length"):
        random_success_pairs(np.array([True, False]), np.array([0]), m=1, rng=np.random.default_rng(0))
