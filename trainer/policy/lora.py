"""LoRA through peft for preference tuning.

``add_lora`` wraps the policy's language decoder in a peft model in place. Afterwards only the
LoRA factors train; the reference policy pi_ref of TPO is the same object inside
``with policy.adapter_disabled():`` (peft's ``disable_adapter``), so no second copy of the
weights ever sits in memory.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

from trainer.policy.base import Policy


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """peft 0.21 calls a transformers method deprecated in v5; the warning is not ours to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_lora(
    policy: Policy,
    rank: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: list[str] | str | None = None,
) -> Policy:
    """Attach a fresh LoRA adapter to ``policy``'s decoder and freeze everything else.

    ``target_modules`` defaults to the policy's attention projections (q/k/v/o). ``dropout``
    applies in train mode only; keep it 0 when TPO log-probs must match sampled log-probs.
    The new LoRA B factors start at zero, so the adapted policy equals the base at first.
    """
    from peft import LoraConfig, get_peft_model

    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must lie in [0, 1), got {dropout}")
    if policy.has_adapter:
        raise RuntimeError("the policy already carries a LoRA adapter")
    module, attribute, default_targets = policy.lora_target()
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules or default_targets,
        bias="none",
    )
    policy.requires_grad_(False)
    with quiet_peft():
        setattr(policy, attribute, get_peft_model(module, config))
    return policy


def merge_lora(policy: Policy) -> Policy:
    """Fold the adapter's update into the base weights and remove the adapter.

    The policy computes the same outputs as before, now without an adapter, so ``add_lora`` can
    attach a fresh one: the new adapter-disabled reference is then the policy as merged here.
    """
    if not policy.has_adapter:
        raise RuntimeError("merge_lora() needs a LoRA adapter to merge; the policy has none")
    wrapped, attribute, _ = policy.lora_target()
    with quiet_peft():
        setattr(policy, attribute, wrapped.merge_and_unload())
    return policy


def lora_parameters(policy: Policy) -> list:
    """The trainable LoRA factors (what the TPO optimizer should own)."""
    return [parameter for name, parameter in policy.named_parameters() if "lora_" in name and parameter.requires_grad]
