"""Paired comparison of two policies evaluated on the same episodes.

Two policies run on the same initial states (task, split, seed), with the same sampling seed,
give paired outcomes: the episodes where both succeed or both fail say nothing about which
policy is better, and the spread of the difference comes only from the discordant episodes.
That is far tighter than comparing two independent rates, each with its own interval, which
is why headline comparisons here are paired.

For a binary outcome (success, collision) the difference of rates carries a 95% interval from
a paired bootstrap over episodes (resampling episodes, each with both of its outcomes) and an
exact McNemar p-value (a two-sided binomial test on the discordant episodes). The ratio of
rates (the paper states its targets as ratios, e.g. 1.5x SFT success) gets a bootstrap interval
too. Step length and the gripper's path length compare the episodes both policies completed
successfully, contact steps compare every episode, each as a difference and a ratio of means
with bootstrap intervals.

The bootstrap is seeded: the same outcomes always give the same intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (episodes only A, only B got)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _bootstrap_indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def _interval(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]


def paired_rate(
    a: Sequence[bool], b: Sequence[bool], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """Compare a binary outcome of policy B against policy A on the same episodes.

    Returns n, both rates, difference b - a with its paired 95% bootstrap interval, the ratio
    b / a with its interval (inf/nan where A's rate is 0), the discordant counts and McNemar's
    exact p-value.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired_rate needs two non-empty [n] outcome arrays of one length, got {a.shape} and {b.shape}"
        )
    n = a.size
    index = _bootstrap_indices(n, samples, seed)
    rate_a, rate_b = a[index].mean(1), b[index].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = rate_b / rate_a
        ratio = float(b.mean() / a.mean()) if a.any() else float("inf") if b.any() else float("nan")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    return {
        "n": n,
        "a": float(a.mean()),
        "b": float(b.mean()),
        "difference": float(b.mean() - a.mean()),
        "difference_ci95": _interval(rate_b - rate_a),
        "ratio": ratio,
        "ratio_ci95": _interval(ratios),
        "a_only": a_only,
        "b_only": b_only,
        "mcnemar_p": mcnemar_exact_p(a_only, b_only),
    }


def paired_mean_ratio(
    values_a: Sequence[float],
    values_b: Sequence[float],
    keep: Sequence[bool] | None = None,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """A per-episode quantity of B against A over the kept episodes (default all): both means,
    the difference and the ratio of means, each with a paired 95% bootstrap interval."""
    va = np.asarray(values_a, dtype=np.float64)
    vb = np.asarray(values_b, dtype=np.float64)
    if keep is not None:
        mask = np.asarray(keep, dtype=bool)
        va, vb = va[mask], vb[mask]
    if va.size == 0:
        nan = float("nan")
        return {
            "n": 0,
            "a": nan,
            "b": nan,
            "difference": nan,
            "difference_ci95": [nan, nan],
            "ratio": nan,
            "ratio_ci95": [nan, nan],
        }
    index = _bootstrap_indices(va.size, samples, seed)
    mean_a, mean_b = va[index].mean(1), vb[index].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = mean_b / mean_a
        ratio = float(vb.mean() / va.mean()) if va.mean() else float("nan")
    return {
        "n": int(va.size),
        "a": float(va.mean()),
        "b": float(vb.mean()),
        "difference": float(vb.mean() - va.mean()),
        "difference_ci95": _interval(mean_b - mean_a),
        "ratio": ratio,
        "ratio_ci95": _interval(ratios),
    }


def paired_length_ratio(
    length_a: Sequence[float],
    length_b: Sequence[float],
    success_a: Sequence[bool],
    success_b: Sequence[bool],
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Step length of B against A over the episodes both completed: ratio of means, 95% bootstrap interval."""
    both = np.asarray(success_a, dtype=bool) & np.asarray(success_b, dtype=bool)
    return paired_mean_ratio(length_a, length_b, both, samples=samples, seed=seed)


def episode_key(outcome: Any) -> tuple[str, str, int]:
    return (outcome.task, outcome.split, int(outcome.seed))


def compare_outcomes(baseline: Sequence[Any], candidate: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Paired comparison per split (and over all splits, "all") of two lists of EpisodeOutcome.

    Both lists must hold the same episodes (task, split, seed); anything else is an error, since
    an unpaired episode would bias the difference.
    """
    by_key = {episode_key(o): o for o in baseline}
    other = {episode_key(o): o for o in candidate}
    if len(by_key) != len(baseline) or len(other) != len(candidate):
        raise ValueError("compare_outcomes: an episode (task, split, seed) appears twice")
    if by_key.keys() != other.keys():
        missing = sorted(by_key.keys() ^ other.keys())[:3]
        raise ValueError(f"compare_outcomes: the two evaluations ran different episodes, e.g. {missing}")
    keys = sorted(by_key)
    splits = sorted({k[1] for k in keys})
    result = {}
    for split in [*splits, "all"]:
        chosen = [k for k in keys if split == "all" or k[1] == split]
        a = [by_key[k] for k in chosen]
        b = [other[k] for k in chosen]
        result[split] = {
            "success": paired_rate([o.success for o in a], [o.success for o in b]),
            "collision": paired_rate([o.collision for o in a], [o.collision for o in b]),
            "step_length": paired_length_ratio(
                [o.length for o in a], [o.length for o in b], [o.success for o in a], [o.success for o in b]
            ),
            # What the objectives' collision terms count, over every episode.
            "contact_steps": paired_mean_ratio([o.contact_steps for o in a], [o.contact_steps for o in b]),
            # What their path terms count, over the episodes both completed (as step length).
            "path_length": paired_mean_ratio(
                [o.path_length for o in a],
                [o.path_length for o in b],
                [x.success and y.success for x, y in zip(a, b)],
            ),
        }
    return result
