"""Open the policy a command names, of whichever kind, on the chosen device and dtype.

`grape-train --policy`, `grape-eval --policy` and the loop's resume all come here. The kind is
read from the folder (`--policy-type auto`): a folder written by `save_pretrained` names it in
grape_policy.json; a folder with only a config.json is an OpenVLA-style HF checkpoint. The HF
options (`trust_remote_code`, `action_stats`, `unnorm_key`) apply to HF checkpoints only, and
giving one for an embedded policy is an error rather than silently ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from trainer.device import place_policy
from trainer.policy.base import POLICY_META_FILE, CheckpointError, Policy

POLICY_TYPES = ("auto", "embedded", "hf")
"""`--policy-type` choices; "hf" is the registry's "hf_vla"."""

CPU = torch.device("cpu")
"""The default device policies are opened on."""


@dataclass(frozen=True)
class HFOptions:
    """How to read an HF checkpoint (ignored by nothing: an embedded folder refuses them)."""

    trust_remote_code: bool = False
    action_stats: str | None = None
    unnorm_key: str | None = None

    @property
    def given(self) -> list[str]:
        flags = {
            "--trust-remote-code": self.trust_remote_code,
            "--action-stats": self.action_stats,
            "--unnorm-key": self.unnorm_key,
        }
        return [flag for flag, value in flags.items() if value]


def folder_kind(folder: Path) -> str:
    """ "embedded" or "hf_vla" (a saved policy's own record, else a raw HF checkpoint)."""
    meta = folder / POLICY_META_FILE
    if meta.is_file():
        try:
            return str(json.loads(meta.read_text())["policy_type"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{meta}: expected a JSON object with a 'policy_type' field") from None
    if (folder / "config.json").is_file():
        return "hf_vla"
    raise CheckpointError(f"{folder} is not a policy folder: it lacks {POLICY_META_FILE} and config.json")


def open_policy(
    path: str | os.PathLike,
    *,
    policy_type: str = "auto",
    hf: HFOptions = HFOptions(),
    device: torch.device = CPU,
    dtype: torch.dtype = torch.float32,
    is_trainable: bool = False,
) -> Policy:
    """The policy in `path`, placed on `device` in `dtype`; CheckpointError names any problem."""
    from trainer.policy import load_policy

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"policy folder not found: {folder}")
    if policy_type not in POLICY_TYPES:
        raise CheckpointError(f"unknown --policy-type {policy_type!r}; known: {', '.join(POLICY_TYPES)}")
    kind = folder_kind(folder)
    wanted = {"embedded": "embedded", "hf": "hf_vla"}.get(policy_type, kind)
    if wanted != kind:
        raise CheckpointError(f"--policy-type {policy_type}: {folder} holds a {kind} policy")
    if kind == "hf_vla":
        from trainer.policy.hf_adapter import HFVLAPolicy

        # Loaded straight in the target dtype: a 7B checkpoint never exists in float32 in memory.
        policy = HFVLAPolicy.from_pretrained(
            folder,
            action_stats=hf.action_stats,
            trust_remote_code=hf.trust_remote_code,
            unnorm_key=hf.unnorm_key,
            torch_dtype=dtype,
            is_trainable=is_trainable,
        )
    else:
        if hf.given:
            raise CheckpointError(f"{', '.join(hf.given)}: only for HF checkpoints, and {folder} holds a {kind} policy")
        policy = load_policy(folder, is_trainable=is_trainable)
    return place_policy(policy, device, dtype)


def options_from_config(policy_config) -> dict:
    """open_policy's keywords from a run's PolicyConfig (trainer.config): kind, HF options, device, dtype."""
    from trainer.device import resolve

    device, dtype = resolve(policy_config.device, policy_config.dtype)
    hf = HFOptions(policy_config.trust_remote_code, policy_config.action_stats, policy_config.unnorm_key)
    return {"policy_type": policy_config.policy_type, "hf": hf, "device": device, "dtype": dtype}
