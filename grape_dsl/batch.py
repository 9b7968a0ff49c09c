"""The trajectory batch that cost kernels score (its .npz form: docs/scoring.md)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrajectoryBatch:
    """N trajectories padded to T steps.

    keypoints: float32 [N, T, K, 3]; signals: float32 [N, T, S]; lengths: int64 [N], the valid
    steps of each trajectory (steps past it are padding and never read); success: bool [N] or None.
    """

    keypoints: np.ndarray
    keypoint_names: list[str]
    signals: np.ndarray
    signal_names: list[str]
    lengths: np.ndarray
    success: np.ndarray | None = None
