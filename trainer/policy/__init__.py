"""Policies: the action tokenizer, the embedded CPU VLA, the HF VLA adapter and LoRA.

    make_policy("embedded", state_dim=...)   a fresh embedded VLA (config fields as keywords)
    make_policy("hf_vla", path=...)          a local HF VLA checkpoint (OpenVLA-style)
    load_policy(folder)                      whatever ``save_pretrained`` wrote there

Every policy implements :class:`trainer.policy.base.Policy` (sample / log_prob /
save_pretrained / from_pretrained / adapter_disabled).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.policy.base import POLICY_META_FILE, CheckpointError, Policy, PolicyInputError, SampleOutput
from trainer.policy.lora import add_lora, lora_parameters, merge_lora
from trainer.policy.tokenizer import ActionStatsError, ActionTokenizer


def _build_embedded(**config: Any) -> Policy:
    from trainer.policy.embedded import build_embedded

    return build_embedded(**config)


def _load_embedded(path: Path, **kwargs: Any) -> Policy:
    from trainer.policy.embedded import load_embedded

    return load_embedded(path, **kwargs)


def _build_hf(**config: Any) -> Policy:
    from trainer.policy.hf_adapter import HFVLAPolicy

    if "path" not in config:
        raise TypeError("make_policy('hf_vla', path=...) needs the local checkpoint folder")
    return HFVLAPolicy.from_pretrained(config.pop("path"), **config)


def _load_hf(path: Path, **kwargs: Any) -> Policy:
    from trainer.policy.hf_adapter import HFVLAPolicy

    return HFVLAPolicy.from_pretrained(path, **kwargs)


POLICY_BUILDERS: dict[str, Callable[..., Policy]] = {"embedded": _build_embedded, "hf_vla": _build_hf}
POLICY_LOADERS: dict[str, Callable[..., Policy]] = {"embedded": _load_embedded, "hf_vla": _load_hf}


def make_policy(name: str, **config: Any) -> Policy:
    """A new policy of a registered kind; an unknown name lists the known ones."""
    if name not in POLICY_BUILDERS:
        raise KeyError(f"unknown policy {name!r}; known policies: {', '.join(sorted(POLICY_BUILDERS))}")
    return POLICY_BUILDERS[name](**config)


def load_policy(path: str | os.PathLike, **kwargs: Any) -> Policy:
    """Load a saved policy folder; its grape_policy.json names the kind.

    A folder without grape_policy.json but with a config.json is treated as a raw HF VLA
    checkpoint (pass ``action_stats=...`` and, if needed, ``trust_remote_code=True``).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"policy folder not found: {folder}")
    meta_file = folder / POLICY_META_FILE
    if not meta_file.is_file():
        if (folder / "config.json").is_file():
            return POLICY_LOADERS["hf_vla"](folder, **kwargs)
        raise CheckpointError(f"{folder} is not a policy folder: it lacks {POLICY_META_FILE} and config.json")
    try:
        kind = json.loads(meta_file.read_text())["policy_type"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{meta_file}: expected a JSON object with a 'policy_type' field") from None
    if kind not in POLICY_LOADERS:
        raise CheckpointError(f"{meta_file}: unknown policy_type {kind!r}; known: {', '.join(sorted(POLICY_LOADERS))}")
    return POLICY_LOADERS[kind](folder, **kwargs)


__all__ = [
    "ActionStatsError",
    "ActionTokenizer",
    "CheckpointError",
    "Policy",
    "PolicyInputError",
    "SampleOutput",
    "add_lora",
    "load_policy",
    "lora_parameters",
    "make_policy",
    "merge_lora",
]
