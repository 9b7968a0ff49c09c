"""One rollout of one task, as plain arrays (docs/architecture.md, `Episode`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Episode:
    """A recorded episode. T = length; K keypoints; S signals; D = STATE_DIM.

    states[t] is the observation the action actions[t] was taken from; keypoints[t] and
    signals[t] are measured after actions[t] ran. success/grasp/collision are episode metrics
    (defined in docs/sim.md). logprobs [T] and action_tokens [T, 7] come from policy rollouts.
    """

    task: str
    instruction: str
    seed: int
    split: str
    actions: np.ndarray
    states: np.ndarray
    keypoints: np.ndarray
    keypoint_names: list[str]
    signals: np.ndarray
    signal_names: list[str]
    success: bool
    grasp: bool
    collision: bool
    logprobs: np.ndarray | None = None
    action_tokens: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    def validate(self) -> None:
        """Raise ValueError naming the first array whose shape disagrees with the others."""
        t = self.length
        k, s = len(self.keypoint_names), len(self.signal_names)
        expected = {
            "actions": (self.actions, (t, 7)),
            "keypoints": (self.keypoints, (t, k, 3)),
            "signals": (self.signals, (t, s)),
        }
        if self.logprobs is not None:
            expected["logprobs"] = (self.logprobs, (t,))
        if self.action_tokens is not None:
            expected["action_tokens"] = (self.action_tokens, (t, 7))
        for name, (array, shape) in expected.items():
            if tuple(array.shape) != shape:
                raise ValueError(
                    f"episode {self.task}/{self.seed}: {name} has shape {tuple(array.shape)}, expected {shape}"
                )
        if self.states.ndim != 2 or self.states.shape[0] != t:
            raise ValueError(
                f"episode {self.task}/{self.seed}: states has shape {tuple(self.states.shape)}, expected ({t}, D)"
            )
