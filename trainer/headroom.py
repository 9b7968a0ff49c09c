"""What an objective can teach a policy: how much a success's length and contacts vary between
the samples of one initial state, and how an objective's R_ext orders those samples.

Every GRAPE update compares trajectories drawn from the same initial state, so a policy can only
learn from its file what (a) varies within a state, not only between states, and (b) the file's
score actually orders. These are plain statistics over rollouts grouped by state; the driver
that draws the rollouts is bench/headroom.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trainer.eval import contact_steps


def variance_split(groups: Sequence[np.ndarray]) -> dict[str, float]:
    """Within-group and between-group variance of values grouped by initial state.

    Only groups of two or more count (a lone value says nothing about the spread within its
    state). within + between is the pooled values' variance; `within_share` is within / total.
    """
    kept = [np.asarray(g, dtype=np.float64) for g in groups if len(g) >= 2]
    if not kept:
        return {"groups": 0, "within": float("nan"), "between": float("nan"), "within_share": float("nan")}
    n = sum(len(g) for g in kept)
    grand = np.concatenate(kept).mean()
    within = sum(((g - g.mean()) ** 2).sum() for g in kept) / n
    between = sum(len(g) * (g.mean() - grand) ** 2 for g in kept) / n
    total = within + between
    return {
        "groups": len(kept),
        "within": float(within),
        "between": float(between),
        "within_share": float(within / total) if total > 0 else float("nan"),
    }


def best_of_group(groups: Sequence[np.ndarray]) -> float:
    """Mean over groups (two or more values, positive mean) of min / mean: what always keeping
    each state's lowest sample would give, relative to its average sample (NaN if no group counts)."""
    ratios = [np.min(g) / np.mean(g) for g in groups if len(g) >= 2 and np.mean(g) > 0]
    return float(np.mean(ratios)) if ratios else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of `values`, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); NaN where either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"rank_correlation: x has {len(x)} values, y {len(y)}")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def _mean_of_finite(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _successes_by_state(rollouts: Sequence[Any]) -> dict[object, list[int]]:
    by_state: dict[object, list[int]] = {}
    for i, r in enumerate(rollouts):
        if r.episode.success:
            by_state.setdefault(r.spec.group, []).append(i)
    return by_state


def objective_ranking(rollouts: Sequence[Any], r_ext: np.ndarray, min_successes: int = 3) -> dict[str, float]:
    """How an objective orders each state's successes: the mean over states with at least
    `min_successes` successes of the rank correlation of R_ext with length and with contact steps.
    Strongly negative means the file prefers the shorter (or cleaner) success of a state."""
    r_ext = np.asarray(r_ext, dtype=np.float64)
    if len(r_ext) != len(rollouts):
        raise ValueError(f"objective_ranking: {len(rollouts)} rollouts but {len(r_ext)} scores")
    with_length, with_contacts = [], []
    for members in _successes_by_state(rollouts).values():
        if len(members) < min_successes:
            continue
        score = r_ext[members]
        with_length.append(rank_correlation(score, np.array([rollouts[i].episode.length for i in members])))
        with_contacts.append(rank_correlation(score, np.array([contact_steps(rollouts[i].episode) for i in members])))
    return {
        "r_ext_length_rho": _mean_of_finite(with_length),
        "r_ext_contact_rho": _mean_of_finite(with_contacts),
        "states_ranked": len(with_length),
    }


def success_headroom(rollouts: Sequence[Any], expert_lengths: dict[object, int] | None = None) -> dict[str, Any]:
    """Length and contact steps of the successes of one task's rollouts, split by initial state.

    `expert_lengths` maps a state's group to the scripted expert's episode length there (states
    where it failed left out): the policy's mean success length over the expert's.
    """
    from trainer.sim.env import MAX_TRANSLATION

    by_state = _successes_by_state(rollouts)
    lengths = [np.array([rollouts[i].episode.length for i in m]) for m in by_state.values()]
    contacts = [np.array([contact_steps(rollouts[i].episode) for i in m]) for m in by_state.values()]
    clean_and_touching = sum(len(c) >= 2 and c.min() == 0 < c.max() for c in contacts)
    speed_length = []
    for members, length in zip(by_state.values(), lengths, strict=True):
        if len(members) >= 3:
            speeds = np.array([np.linalg.norm(rollouts[i].episode.actions[:, :3], axis=1).mean() for i in members])
            speed_length.append(rank_correlation(speeds, length))
    wins = [rollouts[i].episode for m in by_state.values() for i in m]
    steps = np.concatenate([np.linalg.norm(e.actions[:, :3], axis=1) for e in wins]) if wins else np.zeros(0)
    over_expert = [
        float(length.mean()) / expert_lengths[state]
        for state, length in zip(by_state, lengths, strict=True)
        if expert_lengths and expert_lengths.get(state)
    ]
    return {
        "episodes": len(rollouts),
        "success": len(wins) / len(rollouts) if rollouts else float("nan"),
        "states_with_2_successes": sum(len(g) >= 2 for g in lengths),
        "success_length_mean": float(np.mean([e.length for e in wins])) if wins else float("nan"),
        "length": variance_split(lengths),
        "length_best_of_group": best_of_group(lengths),
        "contact_steps": variance_split(contacts),
        "contact_best_of_group": best_of_group(contacts),
        "states_with_clean_and_touching_successes": int(clean_and_touching),
        "success_length_over_expert": float(np.mean(over_expert)) if over_expert else float("nan"),
        "step_over_axis_limit": float(steps.mean() / MAX_TRANSLATION) if len(steps) else float("nan"),
        "speed_length_rho_within_state": _mean_of_finite(speed_length),
    }
