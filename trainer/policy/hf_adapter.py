"""Adapter for real HF vision-language-action checkpoints (OpenVLA-style) from a local folder.

Loading: ``config.json`` decides the model class. When its ``auto_map`` names remote code
(OpenVLA registers ``AutoModelForVision2Seq``, which transformers 5 no longer has) the class is
resolved from that entry, but only when the caller passes ``trust_remote_code=True``; without
``auto_map`` the native ``AutoModelForImageTextToText`` loads it. The processor comes from
``AutoProcessor``. Nothing downloads (``local_files_only``), and a checkpoint whose weights do
not cover the model is refused rather than silently filled with random values.

Prompt (OpenVLA): ``"In: What action should the robot take to {instruction}?\\nOut:"``, with
the processor's image token in front when it has one (Llava-style processors need it).

Action tokens: the ``n_bins`` ids just below ``action_token_end`` are the action vocabulary,
bin b <-> id ``action_token_end - 1 - b`` (OpenVLA's convention: the most negative bin is the
last id). ``action_token_end`` defaults to ``tokenizer.vocab_size`` for OpenVLA checkpoints
(their config has ``n_action_bins``) and to the language model's vocabulary size otherwise.
The 7 tokens are decoded autoregressively. The policy is the model's next-token distribution
restricted to the action ids (renormalized over those ``n_bins`` ids): sampling and
``log_prob`` use that same distribution, so their log-probs agree.

The robot state is not an input (OpenVLA sees only the image and the instruction); an image
``obs["image"]`` uint8 [B, H, W, 3] is required.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grape_dsl.util.atomic import atomic_directory, atomic_write_json
from trainer.policy.base import (
    ACTION_STATS_FILE,
    ADAPTER_DIR,
    POLICY_META_FILE,
    CheckpointError,
    Policy,
    SampleOutput,
    check_batch,
    check_tokens,
    require_files,
)
from trainer.policy.tokenizer import ActionTokenizer

POLICY_TYPE = "hf_vla"
PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_REMOTE_CLASS_KEYS = ("AutoModelForVision2Seq", "AutoModelForImageTextToText", "AutoModelForCausalLM")


def resolve_model_class(folder: Path, config: dict, trust_remote_code: bool) -> type:
    """The model class for a checkpoint: remote code from auto_map, or the native class."""
    auto_map = config.get("auto_map") or {}
    remote_key = next((key for key in _REMOTE_CLASS_KEYS if key in auto_map), None)
    if remote_key is not None and trust_remote_code:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        reference = auto_map[remote_key]
        try:
            return get_class_from_dynamic_module(reference, str(folder), local_files_only=True)
        except (OSError, ImportError, AttributeError, ValueError) as error:
            raise CheckpointError(
                f"{folder / 'config.json'}: auto_map[{remote_key!r}] = {reference!r} cannot be imported: {error}"
            ) from None
    from transformers import AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return AutoModelForImageTextToText
    if remote_key is not None:
        raise CheckpointError(
            f"{folder / 'config.json'}: the model class comes from remote code (auto_map[{remote_key!r}] = "
            f"{auto_map[remote_key]!r}); pass trust_remote_code=True if you trust the code in {folder}"
        )
    raise CheckpointError(
        f"{folder / 'config.json'}: model_type {model_type!r} is not a vision-language model transformers knows, "
        "and the config has no auto_map"
    )


class HFVLAPolicy(Policy):
    """An OpenVLA-style HF checkpoint behind the :class:`Policy` interface."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        action_tokenizer: ActionTokenizer,
        action_token_end: int,
        source: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.processor = processor
        self.action_tokenizer = action_tokenizer
        self.action_token_end = int(action_token_end)
        self.source = source
        n_bins = action_tokenizer.n_bins
        lm_vocab = self._lm_vocab_size()
        if not n_bins <= self.action_token_end <= lm_vocab:
            raise CheckpointError(
                f"{source}: action ids [{self.action_token_end - n_bins}, {self.action_token_end}) do not fit the "
                f"language model's {lm_vocab}-id vocabulary"
            )
        tokenizer = getattr(processor, "tokenizer", processor)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.eval()

    @property
    def image_size(self) -> int | None:
        # The processor resizes whatever it gets; ask the env for its native input size.
        processor = getattr(self.processor, "image_processor", None)
        for size in (getattr(processor, "crop_size", None), getattr(processor, "size", None)):
            # dict in older transformers, SizeDict (attribute access) in transformers 5
            for key in ("height", "shortest_edge"):
                side = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
                if side:
                    return int(side)
        return 224

    def _lm_vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        action_stats: str | os.PathLike | ActionTokenizer | None = None,
        trust_remote_code: bool = False,
        unnorm_key: str | None = None,
        action_token_end: int | None = None,
        torch_dtype: torch.dtype = torch.float32,
        is_trainable: bool = False,
        **kwargs: Any,
    ) -> HFVLAPolicy:
        """Load a local checkpoint folder.

        Action statistics, first found wins: ``action_stats`` (a json path or tokenizer), the
        folder's action_stats.json, or OpenVLA's ``norm_stats[unnorm_key]`` in config.json.
        """
        from transformers import AutoProcessor

        folder = require_files(directory, ["config.json"], "HF VLA checkpoint")
        if not any((folder / name).exists() for name in _WEIGHT_FILES):
            raise CheckpointError(
                f"HF VLA checkpoint: {folder} has no weights (expected one of {', '.join(_WEIGHT_FILES)})"
            )
        try:
            config = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(
                f"{folder / 'config.json'}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}"
            ) from None
        meta = json.loads((folder / POLICY_META_FILE).read_text()) if (folder / POLICY_META_FILE).is_file() else {}
        tokenizer = cls._action_statistics(folder, config, action_stats, unnorm_key)

        model_class = resolve_model_class(folder, config, trust_remote_code)
        try:
            model, info = model_class.from_pretrained(
                str(folder),
                trust_remote_code=trust_remote_code,
                local_files_only=True,
                output_loading_info=True,
                dtype=torch_dtype,
            )
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"HF VLA checkpoint {folder}: cannot load the model: {error}") from None
        missing = list(info.get("missing_keys", []))
        if missing:
            raise CheckpointError(
                f"HF VLA checkpoint {folder}: the weights lack {len(missing)} tensors the model needs "
                f"(e.g. {sorted(missing)[:3]}); refusing to run with random weights"
            )
        try:
            processor = AutoProcessor.from_pretrained(
                str(folder), trust_remote_code=trust_remote_code, local_files_only=True
            )
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"HF VLA checkpoint {folder}: cannot load the processor/tokenizer: {error}") from None

        if action_token_end is None:
            action_token_end = meta.get("action_token_end")
        if action_token_end is None:
            text_tokenizer = getattr(processor, "tokenizer", processor)
            action_token_end = (
                text_tokenizer.vocab_size
                if "n_action_bins" in config
                else int(model.get_output_embeddings().weight.shape[0])
            )
        policy = cls(model.eval(), processor, tokenizer, action_token_end, source=str(folder))
        if (folder / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            from trainer.policy.lora import quiet_peft

            policy.requires_grad_(False)  # as after add_lora: only LoRA factors may train
            with quiet_peft():
                policy.model = PeftModel.from_pretrained(
                    policy.model, str(folder / ADAPTER_DIR), is_trainable=is_trainable
                )
        return policy

    @staticmethod
    def _action_statistics(folder: Path, config: dict, action_stats: Any, unnorm_key: str | None) -> ActionTokenizer:
        if isinstance(action_stats, ActionTokenizer):
            return action_stats
        if action_stats is not None:
            return ActionTokenizer.load(action_stats)
        if (folder / ACTION_STATS_FILE).is_file():
            return ActionTokenizer.load(folder / ACTION_STATS_FILE)
        norm_stats = config.get("norm_stats")
        if norm_stats:
            if unnorm_key is None:
                raise CheckpointError(
                    f"{folder / 'config.json'} holds action statistics for several datasets; "
                    f"pass unnorm_key= one of {sorted(norm_stats)}"
                )
            if unnorm_key not in norm_stats:
                raise CheckpointError(
                    f"{folder / 'config.json'}: unnorm_key {unnorm_key!r} not in norm_stats; "
                    f"known: {sorted(norm_stats)}"
                )
            stats = norm_stats[unnorm_key].get("action", {})
            # OpenVLA leaves the gripper (last dim) un-normalized and binary, as we do.
            return ActionTokenizer.from_dict(
                {"q01": stats.get("q01"), "q99": stats.get("q99"), "gripper_dim": len(stats.get("q01") or [0]) - 1}
                if "q01" in stats
                else {},
                source=f"{folder / 'config.json'}: norm_stats[{unnorm_key!r}]['action']",
            )
        raise CheckpointError(
            f"HF VLA checkpoint {folder}: no action statistics; pass --action-stats FILE (action_stats= in Python: "
            f"a JSON of per-dimension q01/q99 from the SFT data), put {ACTION_STATS_FILE} in the folder, "
            "or give --unnorm-key for an OpenVLA config.json's norm_stats"
        )

    # ------------------------------------------------------------------ inputs
    def _prompts(self, instructions: list[str]) -> list[str]:
        image_token = getattr(self.processor, "image_token", None)
        prefix = f"{image_token}\n" if image_token else ""
        return [prefix + PROMPT.format(instruction=text.strip().rstrip(".").lower()) for text in instructions]

    def _encode(self, obs: Mapping[str, Any], instructions: list[str]) -> dict[str, torch.Tensor]:
        check_batch(obs, instructions, state_dim=None, image_size=None, needs_image=True)
        images = [np.asarray(image, dtype=np.uint8) for image in np.asarray(obs["image"])]
        batch = self.processor(text=self._prompts(instructions), images=images, return_tensors="pt", padding=True)
        device = self.device
        encoded = {key: value.to(device) for key, value in batch.items()}
        if "pixel_values" in encoded:
            encoded["pixel_values"] = encoded["pixel_values"].to(next(self.model.parameters()).dtype)
        # Left padding: positions count only real tokens, so a padded prompt sees the same
        # positions as it would alone.
        encoded["position_ids"] = (encoded["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return encoded

    def _action_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits [..., V] -> action logits [..., n_bins] indexed by bin."""
        end, n_bins = self.action_token_end, self.action_tokenizer.n_bins
        return logits[..., end - n_bins : end].flip(-1).float()

    def bins_to_ids(self, bins: torch.Tensor) -> torch.Tensor:
        return self.action_token_end - 1 - bins

    # ------------------------------------------------------------------ Policy API
    @torch.no_grad()
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
        from trainer.policy.base import sample_from_logits

        was_training = self.training
        self.eval()
        try:
            inputs = self._encode(obs, instructions)
            attention_mask, positions = inputs["attention_mask"], inputs["position_ids"]
            output = self.model(**inputs, use_cache=True, logits_to_keep=1)
            bins, total = [], torch.zeros(attention_mask.shape[0], device=attention_mask.device)
            next_position = positions[:, -1:] + 1
            for dim in range(self.action_tokenizer.action_dim):
                token, logprob = sample_from_logits(
                    self._action_logits(output.logits[:, -1]),
                    temperature,
                    greedy,
                    generator,
                    None if uniforms is None else uniforms[:, dim],
                )
                bins.append(token)
                total += logprob
                if dim + 1 < self.action_tokenizer.action_dim:
                    attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
                    output = self.model(
                        input_ids=self.bins_to_ids(token).unsqueeze(1),
                        attention_mask=attention_mask,
                        position_ids=next_position,
                        cache=output.cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    next_position = next_position + 1
        finally:
            self.train(was_training)
        tokens = torch.stack(bins, dim=1)
        return SampleOutput(
            actions=self.action_tokenizer.detokenize(tokens.cpu().numpy()), tokens=tokens, logprobs=total
        )

    def log_prob(self, obs: Mapping[str, Any], instructions: list[str], tokens: torch.Tensor) -> torch.Tensor:
        inputs = self._encode(obs, instructions)
        batch, prompt_length = inputs["input_ids"].shape
        action_dim = self.action_tokenizer.action_dim
        tokens = check_tokens(tokens, batch, action_dim, self.action_tokenizer.n_bins).to(inputs["input_ids"].device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], self.bins_to_ids(tokens[:, :-1])], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(tokens[:, :-1])], dim=1)
        last = inputs["position_ids"][:, -1:]
        inputs["position_ids"] = torch.cat(
            [inputs["position_ids"], last + torch.arange(1, action_dim, device=last.device)], dim=1
        )
        logits = self.model(**inputs, use_cache=False, logits_to_keep=action_dim).logits
        log_probs = torch.log_softmax(self._action_logits(logits), dim=-1)
        return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)

    # ------------------------------------------------------------------ LoRA
    def lora_target(self) -> tuple[torch.nn.Module, str, str]:
        # Only the language model's attention; the vision tower and projector stay frozen.
        return self.model, "model", r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"

    # ------------------------------------------------------------------ saving
    def _copy_model_code(self, staging: Path) -> None:
        """The checkpoint's own model/processor code (auto_map's modules, e.g. OpenVLA's *_prismatic.py):
        transformers does not copy it for a class loaded from a folder, and without it the saved
        policy could not be opened again."""
        import shutil

        source = Path(self.source)
        if not self.source or not source.is_dir():  # built in memory: no folder holds code of its own
            return
        for code in sorted(source.glob("*.py")):
            if not (staging / code.name).exists():
                shutil.copy2(code, staging / code.name)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from peft import PeftModel

        with atomic_directory(directory) as staging:
            if isinstance(self.model, PeftModel):
                base = self.model.get_base_model()
                state = {
                    name.replace(".base_layer.", "."): tensor
                    for name, tensor in base.state_dict().items()
                    if "lora_" not in name
                }
                base.save_pretrained(str(staging), state_dict=state)
                self.model.save_pretrained(str(staging / ADAPTER_DIR))
            else:
                self.model.save_pretrained(str(staging))
            self.processor.save_pretrained(str(staging))
            self._copy_model_code(staging)
            self.action_tokenizer.save(staging / ACTION_STATS_FILE)
            atomic_write_json(
                staging / POLICY_META_FILE, {"policy_type": POLICY_TYPE, "action_token_end": self.action_token_end}
            )
