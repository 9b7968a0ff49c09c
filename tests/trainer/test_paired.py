import math

import numpy as np
import pytest

from trainer.eval import EpisodeOutcome
from trainer.paired import compare_outcomes, mcnemar_exact_p, paired_length_ratio, paired_rate


def test_mcnemar_exact_p_matches_the_binomial_tail():
    # 1 vs 9 discordant: 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact_p(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact_p(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0


def test_paired_rate_counts_discordant_episodes_and_brackets_the_difference():
    a = np.array([1, 1, 0, 0, 0, 1, 0, 0] * 50, dtype=bool)
    b = np.array([1, 1, 1, 1, 0, 1, 0, 1] * 50, dtype=bool)  # B adds 3 of every 8, loses none
    result = paired_rate(a, b)
    assert result["n"] == 400 and result["a_only"] == 0 and result["b_only"] == 150
    assert result["difference"] == pytest.approx(150 / 400)
    low, high = result["difference_ci95"]
    assert 0 < low < result["difference"] < high
    assert result["ratio"] == pytest.approx(6 / 3)
    assert result["mcnemar_p"] < 1e-30


def test_identical_policies_give_a_zero_difference_with_no_spread():
    a = np.random.default_rng(0).random(200) < 0.4
    result = paired_rate(a, a)
    assert result["difference"] == 0 and result["difference_ci95"] == [0.0, 0.0] and result["mcnemar_p"] == 1.0


def test_paired_interval_is_narrower_than_for_independent_samples():
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.45
    b = a.copy()
    flip = rng.choice(400, size=40, replace=False)
    b[flip[:30]] = True  # mostly gains
    b[flip[30:]] = False
    low, high = paired_rate(a, b)["difference_ci95"]
    pa, pb = a.mean(), b.mean()
    independent_half = 1.96 * math.sqrt(pa * (1 - pa) / 400 + pb * (1 - pb) / 400)
    assert (high - low) / 2 < 0.6 * independent_half


def test_length_ratio_uses_episodes_both_completed():
    result = paired_length_ratio(
        [50, 60, 70, 80], [40, 48, 100, 10], [True, True, True, False], [True, True, False, True]
    )
    assert result["n"] == 2 and result["ratio"] == pytest.approx(88 / 110)
    assert paired_length_ratio([1], [1], [False], [True])["n"] == 0


def _outcomes(successes, split="in_domain"):
    return [EpisodeOutcome("stack", split, 1000 + i, bool(s), False, False, 50 + i) for i, s in enumerate(successes)]


def test_compare_outcomes_pairs_by_episode_and_refuses_unpaired_sets():
    a = _outcomes([0, 1, 0, 0]) + _outcomes([1, 1], split="subject")
    b = _outcomes([1, 1, 1, 0]) + _outcomes([1, 0], split="subject")
    result = compare_outcomes(a, b)
    assert set(result) == {"in_domain", "subject", "all"}
    assert result["in_domain"]["success"]["difference"] == pytest.approx(0.5)
    assert result["all"]["success"]["n"] == 6
    with pytest.raises(ValueError, match="different episodes"):
        compare_outcomes(a, b[:-1])


def test_paired_mean_ratio_over_kept_episodes():
    from trainer.paired import paired_mean_ratio

    result = paired_mean_ratio([2.0, 4.0, 6.0, 100.0], [1.0, 2.0, 3.0, 0.0], [True, True, True, False])
    assert result["n"] == 3
    assert (result["a"], result["b"]) == (pytest.approx(4.0), pytest.approx(2.0))
    assert result["ratio"] == pytest.approx(0.5)
    assert result["difference"] == pytest.approx(-2.0)
    # every resample halves the mean: the interval collapses on the ratio
    assert result["ratio_ci95"] == [pytest.approx(0.5), pytest.approx(0.5)]
    low, high = result["difference_ci95"]
    assert -3.0 <= low < -2.0 < high <= -1.0
    empty = paired_mean_ratio([1.0], [1.0], [False])
    assert empty["n"] == 0 and math.isnan(empty["ratio"])


def test_compare_outcomes_reports_contact_steps_and_path_length():
    a = [EpisodeOutcome("pick_place", "in_domain", i, True, True, False, 50, 4, 1.0) for i in range(4)]
    b = [EpisodeOutcome("pick_place", "in_domain", i, i < 3, True, False, 50, 1, 0.8) for i in range(4)]
    result = compare_outcomes(a, b)["in_domain"]
    assert result["contact_steps"]["ratio"] == pytest.approx(0.25)
    assert result["path_length"]["n"] == 3
    assert result["path_length"]["ratio"] == pytest.approx(0.8)
