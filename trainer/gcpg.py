"""Guided-Cost Preference Generation (GRAPE Eq. 9-10): scores, ranking and preference pairs.

    R_GCPG = l_self * R_self + l_ext * R_ext + l_success * I_success            (Eq. 9)

R_ext comes from the compiled .grc (the loop passes it in); I_success from the simulator.
R_self is the trajectory's likelihood under the policy that sampled it (Eq. 10), normalised
here by length (see `self_reward` and docs/training.md for why).

Trajectories are ranked within a group, one group per (task, initial state): only trajectories
that started from the same state are compared, so a pair never rewards an easy start. The top m
of each group are paired with its bottom m, up to m^2 (chosen, rejected) pairs per group.

A pair must state a real preference: the chosen trajectory's *outcome score*
(l_ext * R_ext + l_success * I_success, the part of R_GCPG that judges what happened) must beat
the rejected one's by more than a minimum gap. R_self, the policy's own likelihood of what it
did, orders trajectories whose outcomes tie but makes no pair by itself unless asked to
(`self_pairs`, the paper's rule): differences of a few thousandths in R_self are sampling noise,
and a loss pushes on them as hard as on a success against a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grape_dsl.util.atomic import atomic_write

TIE_TOLERANCE = 1e-9
"""Two scores closer than this are a tie: no preference, so the pair is skipped."""


@dataclass(frozen=True)
class GcpgWeights:
    """The lambdas of Eq. 9."""

    self_: float = 0.1
    ext: float = 1.0
    success: float = 1.0


def self_reward(logp_sums: np.ndarray, lengths: np.ndarray, tokens_per_step: int = 7) -> np.ndarray:
    """R_self in (0, 1]: the geometric mean probability of the trajectory's action tokens.

    `logp_sums[n]` is log pi(zeta_n) summed over all steps (each step's log-prob is the sum over
    its `tokens_per_step` action tokens). A raw sum grows more negative with every step, so it
    would rank a short failing episode above a long successful one; dividing by the token count
    removes the length, and the exponential maps it to (0, 1], the same range as R_ext and
    I_success, so the lambdas weigh comparable quantities. It is exp(-cross-entropy), i.e. one
    over the per-token perplexity, and monotone in the mean per-step log-prob.
    """
    lengths = np.asarray(lengths)
    if np.any(lengths < 1):
        raise ValueError("self_reward: every trajectory needs at least one step")
    return np.exp(np.asarray(logp_sums, dtype=np.float64) / (lengths * tokens_per_step))


def gcpg_reward(r_self: np.ndarray, r_ext: np.ndarray, success: np.ndarray, weights: GcpgWeights) -> np.ndarray:
    """Eq. 9, elementwise over trajectories."""
    return (
        weights.self_ * np.asarray(r_self, dtype=np.float64)
        + weights.ext * np.asarray(r_ext, dtype=np.float64)
        + weights.success * np.asarray(success, dtype=np.float64)
    )


def outcome_score(r_ext: np.ndarray, success: np.ndarray, weights: GcpgWeights) -> np.ndarray:
    """The part of R_GCPG that judges the outcome: l_ext * R_ext + l_success * I_success."""
    return weights.ext * np.asarray(r_ext, dtype=np.float64) + weights.success * np.asarray(success, dtype=np.float64)


def _group_members(group_ids: np.ndarray) -> dict[object, np.ndarray]:
    group_ids = np.asarray(group_ids)
    keys, inverse = np.unique(group_ids, return_inverse=True)
    return {keys[g].item(): np.flatnonzero(inverse == g) for g in range(len(keys))}


def rank_within_groups(scores: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """Rank of each trajectory in its group, 0 = best; ties keep the earlier index first."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.empty(len(scores), dtype=np.int64)
    for members in _group_members(group_ids).values():
        order = members[np.argsort(-scores[members], kind="stable")]
        ranks[order] = np.arange(len(order))
    return ranks


def make_pairs(
    scores: np.ndarray,
    group_ids: np.ndarray,
    m: int,
    *,
    tie_break: np.ndarray | None = None,
    min_gap: float = TIE_TOLERANCE,
) -> np.ndarray:
    """(chosen, rejected) index pairs: the top m of each group against its bottom m.

    Trajectories are ranked by `scores`, equal scores by `tie_break` (higher first; default:
    the earlier index first); a pair is kept only when the chosen trajectory's score exceeds
    the rejected one's by more than `min_gap`.
    Rule for small and degenerate groups (documented in docs/training.md):
    - a group of n trajectories uses m' = min(m, n // 2), so top and bottom never overlap;
      a group with fewer than two trajectories gives no pair;
    - a pair whose gap is at most `min_gap` is skipped: it states no preference. A group where
      all scores tie therefore gives none.
    A full group with distinct scores gives at most m^2 pairs. Returns int64 [P, 2], ordered by
    group, then chosen rank, then rejected rank.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    if not (min_gap >= 0 and np.isfinite(min_gap)):
        raise ValueError(f"min_gap must be a finite number >= 0, got {min_gap}")
    scores = np.asarray(scores, dtype=np.float64)
    tie_break = np.zeros_like(scores) if tie_break is None else np.asarray(tie_break, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != len(group_ids) or tie_break.shape != scores.shape:
        raise ValueError(
            f"make_pairs: scores [{scores.shape}], tie_break [{tie_break.shape}] and group_ids [{len(group_ids)}] "
            "must be [N] of one length"
        )
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(tie_break))):
        raise ValueError("make_pairs: scores contain NaN or infinity")
    pairs: list[tuple[int, int]] = []
    for members in _group_members(group_ids).values():
        m_group = min(m, len(members) // 2)
        if m_group == 0:
            continue
        order = members[np.lexsort((-tie_break[members], -scores[members]))]  # stable: index breaks full ties
        top, bottom = order[:m_group], order[len(order) - m_group :]
        for chosen in top:
            for rejected in bottom:
                if scores[chosen] - scores[rejected] > min_gap:
                    pairs.append((int(chosen), int(rejected)))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def success_pairs(
    scores: np.ndarray,
    success: np.ndarray,
    group_ids: np.ndarray,
    m: int,
    *,
    tie_break: np.ndarray | None = None,
    min_gap: float = TIE_TOLERANCE,
) -> np.ndarray:
    """(chosen, rejected) pairs among the successes alone: each group's best m successes
    against its worst m successes, by the rule of `make_pairs`.

    Top-m-against-bottom-m pairs mostly set a success against a failure; they teach finishing
    the task. What an objective says about *how* to finish it (fewer contacts, shorter paths)
    sits in the differences between successes, which such pairs rarely contrast. Returns
    indices into the full arrays, int64 [P, 2].
    """
    success = np.asarray(success, dtype=bool)
    if success.shape != np.shape(scores):
        raise ValueError(f"success_pairs: success [{success.shape}] and scores [{np.shape(scores)}] must match")
    members = np.flatnonzero(success)
    if len(members) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tie = None if tie_break is None else np.asarray(tie_break)[members]
    local = make_pairs(np.asarray(scores)[members], np.asarray(group_ids)[members], m, tie_break=tie, min_gap=min_gap)
    return members[local].reshape(-1, 2).astype(np.int64)


def merge_pairs(*pair_sets: np.ndarray) -> np.ndarray:
    """The union of (chosen, rejected) pair arrays, first occurrence kept, order preserved."""
    seen: set[tuple[int, int]] = set()
    merged: list[tuple[int, int]] = []
    for pairs in pair_sets:
        for chosen, rejected in np.asarray(pairs, dtype=np.int64).reshape(-1, 2).tolist():
            if (chosen, rejected) not in seen:
                seen.add((chosen, rejected))
                merged.append((chosen, rejected))
    return np.asarray(merged, dtype=np.int64).reshape(-1, 2)


PAIR_KINDS = ("success-vs-failure", "success-vs-success", "failure-vs-failure", "failure-vs-success")
"""What a pair contrasts, by the outcome of its chosen and its rejected trajectory."""


def pair_kinds(success: np.ndarray, pairs: np.ndarray) -> list[str]:
    """The kind of each (chosen, rejected) pair, one of PAIR_KINDS."""
    success = np.asarray(success, dtype=bool)
    name = {True: "success", False: "failure"}
    return [f"{name[bool(success[c])]}-vs-{name[bool(success[r])]}" for c, r in np.asarray(pairs).reshape(-1, 2)]


def count_pair_kinds(kinds: list[str]) -> dict[str, int]:
    """How many pairs of each kind (every kind present, zeros included)."""
    return {kind: sum(k == kind for k in kinds) for kind in PAIR_KINDS}


def group_advantages(
    scores: np.ndarray,
    group_ids: np.ndarray,
    normalize: bool = False,
    eps: float = 1e-6,
    min_spread: float = TIE_TOLERANCE,
) -> np.ndarray:
    """Group-relative advantages of each trajectory over the other samples of its initial state.

    `normalize=False` (RLOO): A_i = r_i - mean of the other members of i's group.
    `normalize=True` (GRPO): A_i = (r_i - group mean) / (group standard deviation + eps).
    A group of one trajectory, or one whose scores differ by no more than `min_spread` (by
    default: all tie), gives advantages of zero: it says nothing about which action was better.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != len(group_ids):
        raise ValueError(
            f"group_advantages: scores [{scores.shape}] and group_ids [{len(group_ids)}] must be [N] of one length"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("group_advantages: scores contain NaN or infinity")
    advantages = np.zeros(len(scores))
    for members in _group_members(group_ids).values():
        n = len(members)
        values = scores[members]
        if n < 2 or np.ptp(values) <= min_spread:
            continue
        if normalize:
            advantages[members] = (values - values.mean()) / (values.std() + eps)
        else:
            advantages[members] = values - (values.sum() - values) / (n - 1)
    return advantages


def success_advantages(
    scores: np.ndarray, success: np.ndarray, group_ids: np.ndarray, min_gap: float = TIE_TOLERANCE, eps: float = 1e-6
) -> np.ndarray:
    """Advantages among the successes alone: each success's score minus the mean of its group's
    successes, divided by their standard deviation; zero for failures and for a group whose
    successes number fewer than two or differ by no more than `min_gap`.

    In a group that mixes successes and failures, success sets the spread of R_GCPG, and what the
    objective grades among successes (contacts, travel, time) is a small share of any advantage
    computed over the whole group; here it has a scale of its own.
    """
    success = np.asarray(success, dtype=bool)
    if success.shape != np.shape(scores) or len(success) != len(group_ids):
        raise ValueError(
            f"success_advantages: scores [{np.shape(scores)}], success [{success.shape}] and group_ids "
            f"[{len(group_ids)}] must be [N] of one length"
        )
    advantages = np.zeros(len(success))
    members = np.flatnonzero(success)
    advantages[members] = group_advantages(
        np.asarray(scores)[members], np.asarray(group_ids)[members], normalize=True, eps=eps, min_spread=min_gap
    )
    return advantages


def informative_groups(gap_scores: np.ndarray, group_ids: np.ndarray, min_gap: float) -> set:
    """Groups whose best and worst trajectory differ by more than `min_gap` (dynamic sampling keeps these)."""
    gap_scores = np.asarray(gap_scores, dtype=np.float64)
    return {key for key, members in _group_members(group_ids).items() if np.ptp(gap_scores[members]) > min_gap}


def score_columns(
    *,
    logp_sums: np.ndarray,
    lengths: np.ndarray,
    r_ext: np.ndarray,
    success: np.ndarray,
    group_ids: np.ndarray,
    weights: GcpgWeights,
    tokens_per_step: int = 7,
) -> dict[str, np.ndarray]:
    """Every component of R_GCPG per trajectory, plus its rank in its group."""
    r_self = self_reward(logp_sums, lengths, tokens_per_step)
    r_gcpg = gcpg_reward(r_self, r_ext, success, weights)
    return {
        "length": np.asarray(lengths, dtype=np.int64),
        "logp_sum": np.asarray(logp_sums, dtype=np.float64),
        "logp_mean_step": np.asarray(logp_sums, dtype=np.float64) / np.asarray(lengths),
        "r_self": r_self,
        "r_ext": np.asarray(r_ext, dtype=np.float64),
        "success": np.asarray(success, dtype=bool),
        "r_gcpg": r_gcpg,
        "outcome": outcome_score(r_ext, success, weights),
        "rank": rank_within_groups(r_gcpg, group_ids),
    }


def write_parquet(columns: dict[str, np.ndarray | list], path: str | os.PathLike) -> Path:
    """Write equal-length columns as one parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            name: (values.tolist() if isinstance(values, np.ndarray) and values.dtype == object else values)
            for name, values in columns.items()
        }
    )
    with atomic_write(path, "wb") as f:
        pq.write_table(table, f)
    return Path(path)
