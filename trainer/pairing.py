"""Pairing rules other than GCPG's ranking, for the reward ablation (GRAPE Table I).

"Random w/ I_success": preference pairs drawn at random among the successful and the failed
trajectories of the same initial state, ignoring R_self and R_ext. It is what a practitioner
gets with only a success detector, so it measures what the guided costs add on top of it.
"""

from __future__ import annotations

import numpy as np

PAIRINGS = ("gcpg", "random-success")
"""`gcpg`: top m x bottom m by R_GCPG (trainer.gcpg.make_pairs); `random-success`: random_success_pairs."""


def random_success_pairs(success: np.ndarray, group_ids: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """(chosen, rejected) index pairs: a success against a failure of the same group, at random.

    Each group yields as many pairs as GCPG would at most (m^2), so the two rules train on the
    same number of pairs; fewer when the group has fewer distinct (success, failure)
    combinations, none when all of its trajectories succeed or all fail. Pairs are drawn
    without replacement. Returns int64 [P, 2], ordered by group.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    success = np.asarray(success, dtype=bool)
    group_ids = np.asarray(group_ids)
    if success.ndim != 1 or len(success) != len(group_ids):
        raise ValueError(
            f"random_success_pairs: success [{success.shape}] and group_ids [{len(group_ids)}] "
            "must be [N] of one length"
        )
    keys, inverse = np.unique(group_ids, return_inverse=True)
    pairs: list[np.ndarray] = []
    for g in range(len(keys)):
        members = np.flatnonzero(inverse == g)
        wins, losses = members[success[members]], members[~success[members]]
        combinations = len(wins) * len(losses)
        if combinations == 0:
            continue
        picked = rng.choice(combinations, size=min(m * m, combinations), replace=False)
        pairs.append(np.stack([wins[picked // len(losses)], losses[picked % len(losses)]], axis=1))
    return np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), dtype=np.int64)
