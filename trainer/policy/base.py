"""The policy contract every later stage (rollouts, GCPG, TPO, eval) relies on.

A policy maps a batch of observations plus instruction strings to 7 action tokens per step,
emitted autoregressively, and can score given tokens. Log-probs are per step: the sum over
the step's action tokens of log pi(token | observation, instruction, earlier tokens).

Temperature only changes *how* ``sample`` draws tokens (logits / temperature). The log-prob it
reports is always that of the drawn tokens under the untempered policy (temperature 1), the
quantity TPO and R_self (Eq. 5, 6, 10) need; so ``sample(...).logprobs`` equals
``log_prob(obs, instructions, sample(...).tokens)`` whatever the temperature.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.policy.tokenizer import ActionTokenizer

POLICY_META_FILE = "grape_policy.json"
"""File in every saved policy folder naming the policy type, read by ``load_policy``."""
ACTION_STATS_FILE = "action_stats.json"
ADAPTER_DIR = "adapter"


class PolicyInputError(ValueError):
    """An observation, instruction list or token tensor that does not fit the policy."""


class CheckpointError(ValueError):
    """A policy folder that does not exist, lacks files or does not match the policy."""


@dataclass
class SampleOutput:
    """What :meth:`Policy.sample` returns for a batch of B steps."""

    actions: np.ndarray
    """float32 [B, action_dim]: detokenized continuous actions, ready for ``env.step``."""
    tokens: torch.LongTensor
    """int64 [B, action_dim]: the sampled action tokens (bins in [0, n_bins))."""
    logprobs: torch.Tensor
    """float32 [B]: per-step log pi(tokens | obs, instruction) under the untempered policy."""


class Policy(torch.nn.Module, abc.ABC):
    """Base class of all policies; see the module docstring for the log-prob semantics."""

    action_tokenizer: ActionTokenizer

    @abc.abstractmethod
    def sample(
        self,
        obs: Mapping[str, Any],
        instructions: list[str],
        temperature: float = 1.0,
        greedy: bool = False,
        generator: torch.Generator | None = None,
        *,
        uniforms: torch.Tensor | None = None,
    ) -> SampleOutput:
        """Draw action tokens for B steps (no gradient; eval mode).

        ``obs["state"]``: float [B, state_dim]; ``obs["image"]`` (optional): uint8 [B, H, W, 3];
        ``instructions``: B strings. ``greedy`` takes the arg-max token of every dimension.
        ``uniforms`` (float [B, action_dim] in [0, 1), keyword, optional): draw token d of row i
        at ``uniforms[i, d]`` (see :func:`sample_from_logits`) instead of from ``generator``.
        """

    @abc.abstractmethod
    def log_prob(self, obs: Mapping[str, Any], instructions: list[str], tokens: torch.Tensor) -> torch.Tensor:
        """Differentiable per-step log-probs [B] of ``tokens`` [B, action_dim] (teacher forcing)."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config, weights (safetensors), action statistics and any adapter, atomically."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs: Any) -> Policy:
        """Load what :meth:`save_pretrained` wrote; raise CheckpointError on a bad folder."""

    # ------------------------------------------------------------------ LoRA hooks
    def lora_target(self) -> tuple[torch.nn.Module, str, list[str] | str]:
        """(the module to wrap with peft, its attribute name on self, target module names)."""
        raise NotImplementedError(f"{type(self).__name__} does not support LoRA")

    @property
    def has_adapter(self) -> bool:
        from peft import PeftModel

        return any(isinstance(module, PeftModel) for module in self.children())

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator[Policy]:
        """The reference policy: this same model with its LoRA adapter switched off.

        No copy is made; inside the block every forward pass skips the adapter weights.
        """
        if not self.has_adapter:
            raise RuntimeError(
                "adapter_disabled() needs a LoRA adapter; call trainer.policy.add_lora(policy, ...) first"
            )
        wrapped, _, _ = self.lora_target()
        # peft marks the LoRA factors trainable when it re-enables them; keep the caller's choice.
        trainable = {name: parameter.requires_grad for name, parameter in self.named_parameters()}
        try:
            with wrapped.disable_adapter():
                yield self
        finally:
            for name, parameter in self.named_parameters():
                parameter.requires_grad_(trainable[name])

    @property
    def image_size(self) -> int | None:
        """Side of the square camera image the policy wants in ``obs["image"]``; None: state only."""
        return None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


# ---------------------------------------------------------------------- helpers
def check_batch(
    obs: Mapping[str, Any], instructions: list[str], state_dim: int | None, image_size: int | None, needs_image: bool
) -> int:
    """Validate an observation batch against the policy's expected shapes; return B."""
    if not isinstance(obs, Mapping):
        raise PolicyInputError(f"obs must be a dict with 'state' (and optionally 'image'), got {type(obs).__name__}")
    if isinstance(instructions, str) or not isinstance(instructions, (list, tuple)):
        raise PolicyInputError("instructions must be a list of strings, one per observation")
    batch = len(instructions)
    if state_dim is not None:
        if "state" not in obs:
            raise PolicyInputError("obs lacks 'state' (float [B, state_dim])")
        shape = tuple(obs["state"].shape)
        if len(shape) != 2 or shape[1] != state_dim:
            raise PolicyInputError(f"obs['state'] has shape {shape}; expected [B, {state_dim}]")
        if shape[0] != batch:
            raise PolicyInputError(f"obs['state'] has batch {shape[0]} but {batch} instructions were given")
    image = obs.get("image")
    if needs_image and image is None:
        raise PolicyInputError("this policy sees pixels: obs needs 'image' uint8 [B, H, W, 3]")
    if image is not None and needs_image:
        shape = tuple(image.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise PolicyInputError(f"obs['image'] has shape {shape}; expected [B, H, W, 3]")
        if image_size is not None and shape[1:3] != (image_size, image_size):
            raise PolicyInputError(f"obs['image'] has shape {shape}; expected [B, {image_size}, {image_size}, 3]")
        if shape[0] != batch:
            raise PolicyInputError(f"obs['image'] has batch {shape[0]} but {batch} instructions were given")
    if batch == 0:
        raise PolicyInputError("empty batch: no instructions given")
    return batch


def check_tokens(tokens: torch.Tensor, batch: int, action_dim: int, n_bins: int) -> torch.Tensor:
    tokens = torch.as_tensor(tokens)
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise PolicyInputError(f"tokens must be an integer tensor, got {tokens.dtype}")
    if tuple(tokens.shape) != (batch, action_dim):
        raise PolicyInputError(f"tokens has shape {tuple(tokens.shape)}; expected [{batch}, {action_dim}]")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= n_bins):
        raise PolicyInputError(
            f"tokens must lie in [0, {n_bins}), got range [{int(tokens.min())}, {int(tokens.max())}]"
        )
    return tokens.long()


def as_float_tensor(array: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array, device=device).float()


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float,
    greedy: bool,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (token [B], its untempered log-prob [B]).

    ``uniforms`` (float [B] in [0, 1), optional) draws row i's token by inverting the tempered
    distribution's CDF at ``uniforms[i]`` instead of drawing from ``generator``: the same law,
    but each row's randomness comes from its caller (one stream per episode, whatever batch
    the row happens to share).
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    if greedy:
        token = logits.argmax(dim=-1)
    else:
        if temperature <= 0:
            raise PolicyInputError(f"temperature must be > 0 (use greedy=True for arg-max), got {temperature}")
        tempered = torch.softmax(logits.float() / temperature if temperature != 1 else logits.float(), dim=-1)
        if uniforms is None:
            token = torch.multinomial(tempered, 1, generator=generator).squeeze(-1)
        else:
            token = inverse_cdf(tempered, uniforms)
    return token, log_probs.gather(-1, token.unsqueeze(-1)).squeeze(-1)


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Token i of each row with cdf[i-1] <= u * total < cdf[i]: a zero-probability token has an
    empty interval and is never drawn; rounding at the top end is clamped to the last token
    whose interval is not empty."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:].contiguous()
    token = torch.searchsorted(cdf, uniforms.to(cdf.device, cdf.dtype).unsqueeze(-1) * total, right=True)
    # The first token whose cdf reaches the total is the last one with a non-empty interval.
    last_positive = torch.searchsorted(cdf, total)
    return torch.minimum(token, last_positive).squeeze(-1)


def require_files(directory: str | os.PathLike, names: list[str], what: str) -> Path:
    path = Path(directory)
    if not path.exists():
        raise CheckpointError(f"{what}: folder not found: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{what}: not a folder: {path}")
    missing = [name for name in names if not (path / name).exists()]
    if missing:
        raise CheckpointError(f"{what}: {path} lacks {', '.join(missing)}")
    return path
