"""OpenVLA-style action tokenizer: one token per action dimension, 256 uniform bins.

Each continuous dimension is normalized with the SFT dataset's 1st/99th percentiles to
[-1, 1] (values outside are clipped), then cut into ``n_bins`` equal bins; a token is the bin
index in ``[0, n_bins)``. Detokenizing returns the bin centre mapped back through the same
statistics, so the round-trip error of an in-range value is at most half a bin width.

The gripper dimension is binary: any value > 0 means "close". It is tokenized to the two
extreme bins (``n_bins - 1`` for close, ``0`` for open) and detokenized by the bin's half
(upper half -> +1, lower half -> -1), so a sampled gripper token always decodes to exactly
+1 or -1, which is what the environment contract expects.

The statistics are computed once from the SFT demonstrations (:meth:`ActionTokenizer.fit`),
saved with the policy and reused by every later stage: chosen and rejected actions of a
preference pair must land in the same bins, which per-dataset recomputation would break.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from grape_dsl.util.atomic import atomic_write_json

ACTION_DIM = 7
GRIPPER_DIM = 6
N_BINS = 256
# A dimension the demonstrations never move (q01 == q99) still needs a usable range;
# this half-width keeps its normalization finite while decoding to (almost) zero motion.
_MIN_HALF_RANGE = 1e-6


class ActionStatsError(ValueError):
    """Action statistics that do not fit the actions they are asked to encode."""


@dataclass(frozen=True)
class ActionTokenizer:
    """Maps continuous actions ``[..., action_dim]`` to tokens ``[..., action_dim]`` and back."""

    q01: np.ndarray
    """Per-dimension 1st percentile of the SFT actions (float64 ``[action_dim]``)."""
    q99: np.ndarray
    """Per-dimension 99th percentile of the SFT actions (float64 ``[action_dim]``)."""
    gripper_dim: int | None = GRIPPER_DIM
    """Index of the binary gripper dimension, or None when every dimension is continuous."""
    n_bins: int = N_BINS
    """Number of uniform bins per dimension (the per-dimension token vocabulary)."""

    def __post_init__(self) -> None:
        q01 = np.asarray(self.q01, dtype=np.float64).reshape(-1)
        q99 = np.asarray(self.q99, dtype=np.float64).reshape(-1)
        if q01.shape != q99.shape:
            raise ActionStatsError(f"action statistics: q01 has {q01.size} dims but q99 has {q99.size}")
        if not (np.all(np.isfinite(q01)) and np.all(np.isfinite(q99))):
            raise ActionStatsError("action statistics: q01/q99 contain NaN or inf")
        if np.any(q99 < q01):
            bad = int(np.argmax(q99 < q01))
            raise ActionStatsError(f"action statistics: q99 < q01 in dimension {bad}")
        if self.gripper_dim is not None and not 0 <= self.gripper_dim < q01.size:
            raise ActionStatsError(f"gripper_dim {self.gripper_dim} outside the {q01.size} action dims")
        if self.n_bins < 2:
            raise ActionStatsError(f"n_bins must be >= 2, got {self.n_bins}")
        object.__setattr__(self, "q01", q01)
        object.__setattr__(self, "q99", q99)

    # ---------------------------------------------------------------- construction
    @classmethod
    def fit(cls, actions: np.ndarray, gripper_dim: int | None = GRIPPER_DIM, n_bins: int = N_BINS) -> ActionTokenizer:
        """Statistics from a dataset of actions ``[N, action_dim]`` (call once, on the SFT data)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ActionStatsError(f"fit needs actions of shape [N, action_dim] with N > 0, got {actions.shape}")
        q01 = np.quantile(actions, 0.01, axis=0)
        q99 = np.quantile(actions, 0.99, axis=0)
        if gripper_dim is not None:
            q01[gripper_dim], q99[gripper_dim] = -1.0, 1.0
        return cls(q01=q01, q99=q99, gripper_dim=gripper_dim, n_bins=n_bins)

    @property
    def action_dim(self) -> int:
        return int(self.q01.size)

    @property
    def bin_width(self) -> np.ndarray:
        """Width of one bin per dimension, in action units."""
        return 2.0 * self._half_range / self.n_bins

    @property
    def _centre(self) -> np.ndarray:
        return 0.5 * (self.q01 + self.q99)

    @property
    def _half_range(self) -> np.ndarray:
        return np.maximum(0.5 * (self.q99 - self.q01), _MIN_HALF_RANGE)

    # ---------------------------------------------------------------- mapping
    def _check_dim(self, array: np.ndarray, name: str) -> None:
        if array.ndim == 0 or array.shape[-1] != self.action_dim:
            raise ActionStatsError(
                f"{name} has shape {tuple(array.shape)}; the action statistics describe "
                f"{self.action_dim}-D actions (last axis must be {self.action_dim})"
            )

    def normalize(self, actions: np.ndarray) -> np.ndarray:
        """Actions -> [-1, 1] per dimension (clipped); the gripper becomes exactly -1 or +1."""
        actions = np.asarray(actions, dtype=np.float64)
        self._check_dim(actions, "actions")
        normalized = np.clip((actions - self._centre) / self._half_range, -1.0, 1.0)
        if self.gripper_dim is not None:
            normalized[..., self.gripper_dim] = np.where(actions[..., self.gripper_dim] > 0, 1.0, -1.0)
        return normalized

    def tokenize(self, actions: np.ndarray) -> np.ndarray:
        """Actions ``[..., action_dim]`` -> int64 tokens in ``[0, n_bins)``."""
        normalized = self.normalize(actions)
        tokens = np.floor((normalized + 1.0) * 0.5 * self.n_bins).astype(np.int64)
        return np.clip(tokens, 0, self.n_bins - 1)

    def detokenize(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens ``[..., action_dim]`` -> float32 actions (bin centres; gripper as +-1)."""
        tokens = np.asarray(tokens)
        self._check_dim(tokens, "tokens")
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.n_bins):
            raise ActionStatsError(f"tokens must lie in [0, {self.n_bins}), got range [{tokens.min()}, {tokens.max()}]")
        normalized = (tokens.astype(np.float64) + 0.5) * (2.0 / self.n_bins) - 1.0
        actions = normalized * self._half_range + self._centre
        if self.gripper_dim is not None:
            actions[..., self.gripper_dim] = np.where(tokens[..., self.gripper_dim] >= self.n_bins // 2, 1.0, -1.0)
        return actions.astype(np.float32)

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict:
        return {
            "q01": self.q01.tolist(),
            "q99": self.q99.tolist(),
            "gripper_dim": self.gripper_dim,
            "n_bins": self.n_bins,
        }

    @classmethod
    def from_dict(
        cls, data: dict, expected_action_dim: int | None = None, source: str = "action statistics"
    ) -> ActionTokenizer:
        missing = [key for key in ("q01", "q99") if key not in data]
        if missing:
            raise ActionStatsError(f"{source}: missing field(s) {missing}")
        size = np.asarray(data["q01"]).size
        if expected_action_dim is not None and size != expected_action_dim:
            raise ActionStatsError(
                f"{source}: statistics describe {size}-D actions but the policy emits {expected_action_dim}-D actions"
            )
        try:
            tokenizer = cls(
                q01=np.asarray(data["q01"], dtype=np.float64),
                q99=np.asarray(data["q99"], dtype=np.float64),
                gripper_dim=data.get("gripper_dim", GRIPPER_DIM),
                n_bins=int(data.get("n_bins", N_BINS)),
            )
        except (TypeError, ValueError) as error:
            raise ActionStatsError(f"{source}: {error}") from None
        return tokenizer

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, expected_action_dim: int | None = None) -> ActionTokenizer:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"action statistics file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ActionStatsError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from None
        return cls.from_dict(data, expected_action_dim, source=str(path))
