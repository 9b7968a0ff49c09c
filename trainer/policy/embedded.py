"""The embedded small VLA: a tiny Llama decoder over a continuous prefix and 7 action tokens.

Sequence layout for one step (P prefix positions, then the action tokens)::

    [instruction] [state] [image patch x g*g (optional)] [a_0] [a_1] ... [a_5]
         |           |                                    logits at position P-1+d predict a_d

The prefix vectors are projections of the frozen MiniLM instruction embedding, of the
normalized robot/object state and (optionally) of a small CNN over the camera image. The
decoder is a ``LlamaForCausalLM`` built from a config (no download) whose vocabulary holds one
block of ``n_bins`` ids per action dimension (id = d * n_bins + bin): dimension d only ever
reads and emits ids of its own block, so each dimension has its own token embeddings and
output logits while sharing the transformer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from grape_dsl.util.atomic import atomic_directory, atomic_write_json
from trainer import model_sizes
from trainer.policy.base import (
    ACTION_STATS_FILE,
    ADAPTER_DIR,
    POLICY_META_FILE,
    CheckpointError,
    Policy,
    PolicyInputError,
    SampleOutput,
    as_float_tensor,
    check_batch,
    check_tokens,
    require_files,
    sample_from_logits,
)
from trainer.policy.instruction import EMBEDDING_DIM, shared_instruction_encoder
from trainer.policy.tokenizer import ActionTokenizer

CONFIG_FILE = "config.json"
MODEL_TYPE = "grape_embedded_vla"  # config.json's model_type: what a model hub reads to tell the architecture
WEIGHTS_FILE = "model.safetensors"
POLICY_TYPE = "embedded"


@dataclass
class EmbeddedVLAConfig:
    """Everything needed to rebuild an :class:`EmbeddedVLA` (saved as config.json)."""

    state_dim: int
    """Length of ``obs["state"]`` (the sim's STATE_DIM)."""
    action_dim: int = 7
    """Action tokens per step: dx, dy, dz, droll, dpitch, dyaw, gripper."""
    n_bins: int = 256
    """Bins (tokens) per action dimension, as in OpenVLA."""
    # The one set of model-size defaults, shared with grape-sft's recipe (trainer.model_sizes).
    hidden_size: int = model_sizes.HIDDEN_SIZE
    """Width of the decoder and of every prefix projection."""
    num_layers: int = model_sizes.NUM_LAYERS
    """Llama decoder layers."""
    num_heads: int = model_sizes.NUM_HEADS
    """Attention heads (hidden_size must divide by it)."""
    intermediate_size: int = model_sizes.INTERMEDIATE_SIZE
    """Width of each layer's gated MLP."""
    instruction_dim: int = EMBEDDING_DIM
    """Size of the frozen sentence embedding (384 for all-MiniLM-L6-v2)."""
    use_image: bool = False
    """Feed a camera image through a small CNN as extra prefix tokens."""
    image_size: int = 64
    """Expected square image side in pixels (only when use_image)."""
    image_grid: int = 2
    """The CNN's feature map is pooled to image_grid x image_grid prefix tokens."""

    def __post_init__(self) -> None:
        if self.state_dim <= 0:
            raise ValueError(f"state_dim must be positive, got {self.state_dim}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @property
    def prefix_length(self) -> int:
        return 2 + (self.image_grid**2 if self.use_image else 0)


class ImageEncoder(nn.Module):
    """uint8 [B, H, W, 3] -> [B, grid*grid, hidden]: three strided convs, then average pooling."""

    def __init__(self, hidden_size: int, grid: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2),
            nn.GELU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(32, hidden_size, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(grid),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = (image.float().permute(0, 3, 1, 2) / 255.0 - 0.5).to(self.convs[0].weight.dtype)
        return self.convs(pixels).flatten(2).transpose(1, 2)


class EmbeddedVLA(Policy):
    """Small CPU VLA implementing :class:`trainer.policy.base.Policy`."""

    def __init__(self, config: EmbeddedVLAConfig, action_tokenizer: ActionTokenizer | None = None) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        if action_tokenizer is None:
            # Placeholder range (+-1) until SFT fits statistics on its demonstrations.
            action_tokenizer = ActionTokenizer(
                q01=-np.ones(config.action_dim), q99=np.ones(config.action_dim), n_bins=config.n_bins
            )
        self.set_action_tokenizer(action_tokenizer)
        hidden = config.hidden_size
        self.instruction_proj = nn.Sequential(
            nn.Linear(config.instruction_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.state_proj = nn.Sequential(nn.Linear(config.state_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.image_encoder = ImageEncoder(hidden, config.image_grid) if config.use_image else None
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        decoder_config = LlamaConfig(
            vocab_size=config.action_dim * config.n_bins,
            hidden_size=hidden,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.prefix_length + config.action_dim,
            attention_dropout=0.0,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
        )
        self.decoder = LlamaForCausalLM(decoder_config)
        self.eval()

    @property
    def image_size(self) -> int | None:
        return self.config.image_size if self.config.use_image else None

    # ------------------------------------------------------------------ statistics
    def set_action_tokenizer(self, action_tokenizer: ActionTokenizer) -> None:
        if action_tokenizer.action_dim != self.config.action_dim or action_tokenizer.n_bins != self.config.n_bins:
            raise CheckpointError(
                f"action statistics describe {action_tokenizer.action_dim}-D actions "
                f"with {action_tokenizer.n_bins} bins; "
                f"the policy emits {self.config.action_dim}-D actions with {self.config.n_bins} bins"
            )
        self.action_tokenizer = action_tokenizer

    def set_state_statistics(self, states: np.ndarray) -> None:
        """Normalize states with the SFT data's mean/std (fixed afterwards, like the action stats)."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[1] != self.config.state_dim:
            raise PolicyInputError(f"states has shape {states.shape}; expected [N, {self.config.state_dim}]")
        self.state_mean.copy_(torch.as_tensor(states.mean(0), dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(np.maximum(states.std(0), 1e-3), dtype=torch.float32))

    # ------------------------------------------------------------------ forward pieces
    def _prefix(self, obs: Mapping[str, Any], instructions: list[str]) -> torch.Tensor:
        config = self.config
        check_batch(obs, instructions, config.state_dim, config.image_size, needs_image=config.use_image)
        device = self.device
        dtype = self.instruction_proj[0].weight.dtype  # inputs in the weights' dtype (bfloat16 with --dtype bfloat16)
        instruction = shared_instruction_encoder().encode(list(instructions)).to(device, dtype)
        state = ((as_float_tensor(obs["state"], device) - self.state_mean) / self.state_std).to(dtype)
        parts = [self.instruction_proj(instruction).unsqueeze(1), self.state_proj(state).unsqueeze(1)]
        if self.image_encoder is not None:
            parts.append(self.image_encoder(torch.as_tensor(np.asarray(obs["image"]), device=device)))
        return torch.cat(parts, dim=1)

    def _token_embeddings(self, tokens: torch.Tensor, first_dim: int) -> torch.Tensor:
        """Embed bins of dimensions first_dim, first_dim+1, ... (each in its own id block)."""
        offsets = (torch.arange(tokens.shape[1], device=tokens.device) + first_dim) * self.config.n_bins
        return self.decoder.get_input_embeddings()(tokens + offsets)

    def _causal_lm(self) -> nn.Module:
        """The LlamaForCausalLM, whether or not peft wraps it (LoRA layers live inside it)."""
        from peft import PeftModel

        return self.decoder.get_base_model() if isinstance(self.decoder, PeftModel) else self.decoder

    def _head(self, hidden: torch.Tensor, first_dim: int) -> torch.Tensor:
        """Hidden states [B, k, H] of positions predicting dims first_dim.. -> logits [B, k, n_bins].

        Each position needs only its own dimension's block of the output matrix, so the head
        costs k x n_bins instead of k x (action_dim * n_bins) products per row.
        """
        n_bins, k = self.config.n_bins, hidden.shape[1]
        blocks = self._causal_lm().lm_head.weight[first_dim * n_bins : (first_dim + k) * n_bins].view(k, n_bins, -1)
        return torch.einsum("bkh,kvh->bkv", hidden, blocks).float()

    # ------------------------------------------------------------------ Policy API
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
        # Sampling's tensors never meet autograd, and inference mode skips the version and view
        # bookkeeping of its several hundred small ops per call (about 15% of sampling time, measured).
        # Outside it, clone makes ordinary tensors of the results: callers may use them with autograd.
        with torch.inference_mode():
            out = self._sample(obs, instructions, temperature, greedy, generator, uniforms)
        return SampleOutput(actions=out.actions, tokens=out.tokens.clone(), logprobs=out.logprobs.clone())

    def _sample(
        self,
        obs: Mapping[str, Any],
        instructions: list[str],
        temperature: float,
        greedy: bool,
        generator: torch.Generator | None,
        uniforms: torch.Tensor | None,
    ) -> SampleOutput:
        from trainer.policy.fast_decode import LlamaDecoding

        config = self.config
        was_training = self.training
        if was_training:  # eval() walks every submodule: skip it when already in eval mode
            self.eval()
        try:
            prefix = self._prefix(obs, instructions)
            batch = prefix.shape[0]
            if uniforms is not None:
                if tuple(uniforms.shape) != (batch, config.action_dim):
                    raise PolicyInputError(
                        f"uniforms has shape {tuple(uniforms.shape)}; expected [{batch}, {config.action_dim}]"
                    )
                uniforms = uniforms.to(prefix.device, torch.float32)  # once, not once per token (inverse_cdf's dtype)
            causal_lm = self._causal_lm()
            decoding = LlamaDecoding(
                causal_lm.model, batch, config.prefix_length + config.action_dim, prefix.device, prefix.dtype
            )
            hidden = decoding.prefill(prefix)
            heads = causal_lm.lm_head.weight.view(config.action_dim, config.n_bins, -1).unbind(0)
            tokens, logprob_sum = [], torch.zeros(batch, device=prefix.device)
            for dim in range(config.action_dim):
                logits = torch.nn.functional.linear(hidden, heads[dim]).float()  # as _head, for one position
                token, logprob = sample_from_logits(
                    logits, temperature, greedy, generator, None if uniforms is None else uniforms[:, dim]
                )
                tokens.append(token)
                logprob_sum += logprob
                if dim + 1 < config.action_dim:
                    hidden = decoding.step(self._token_embeddings(token.unsqueeze(1), first_dim=dim))
        finally:
            if was_training:
                self.train()
        token_tensor = torch.stack(tokens, dim=1)
        actions = self.action_tokenizer.detokenize(token_tensor.cpu().numpy())
        return SampleOutput(actions=actions, tokens=token_tensor, logprobs=logprob_sum)

    def log_prob(self, obs: Mapping[str, Any], instructions: list[str], tokens: torch.Tensor) -> torch.Tensor:
        prefix = self._prefix(obs, instructions)
        action_dim = self.config.action_dim
        tokens = check_tokens(tokens, prefix.shape[0], action_dim, self.config.n_bins).to(prefix.device)
        inputs = torch.cat([prefix, self._token_embeddings(tokens[:, :-1], first_dim=0)], dim=1)
        hidden = self._causal_lm().model(inputs_embeds=inputs, use_cache=False).last_hidden_state
        log_probs = torch.log_softmax(self._head(hidden[:, -action_dim:], first_dim=0), dim=-1)
        return log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1).sum(-1)

    # ------------------------------------------------------------------ LoRA
    def lora_target(self) -> tuple[nn.Module, str, list[str]]:
        return self.decoder, "decoder", ["q_proj", "k_proj", "v_proj", "o_proj"]

    # ------------------------------------------------------------------ persistence
    def _base_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights without any LoRA factors, under the names a fresh model uses."""
        from peft import PeftModel

        state = {}
        for name, tensor in self.state_dict().items():
            if not name.startswith("decoder."):
                state[name] = tensor
        decoder = self.decoder.get_base_model() if isinstance(self.decoder, PeftModel) else self.decoder
        for name, tensor in decoder.state_dict().items():
            if "lora_" in name:
                continue
            state["decoder." + name.replace(".base_layer.", ".")] = tensor
        return {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()}

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        with atomic_directory(directory) as staging:
            atomic_write_json(staging / POLICY_META_FILE, {"policy_type": POLICY_TYPE})
            atomic_write_json(staging / CONFIG_FILE, {"model_type": MODEL_TYPE, **dataclasses.asdict(self.config)})
            self.action_tokenizer.save(staging / ACTION_STATS_FILE)
            save_file(self._base_state_dict(), str(staging / WEIGHTS_FILE))
            if self.has_adapter:
                self.decoder.save_pretrained(str(staging / ADAPTER_DIR))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, is_trainable: bool = False, **kwargs: Any) -> EmbeddedVLA:
        """Load a saved policy; ``is_trainable`` keeps a saved LoRA adapter trainable."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = require_files(directory, [CONFIG_FILE, WEIGHTS_FILE, ACTION_STATS_FILE], "embedded policy")
        try:
            fields = json.loads((path / CONFIG_FILE).read_text())
            fields.pop("model_type", None)  # for hub tools; folders saved before it lack it
            config = EmbeddedVLAConfig(**fields)
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path / CONFIG_FILE}: not a valid EmbeddedVLAConfig: {error}") from None
        tokenizer = ActionTokenizer.load(path / ACTION_STATS_FILE, expected_action_dim=config.action_dim)
        policy = cls(config, tokenizer)
        try:
            weights = load_file(str(path / WEIGHTS_FILE))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: unreadable weights: {error}") from None
        expected = policy.state_dict()
        missing = sorted(set(expected) - set(weights))
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{path / WEIGHTS_FILE} does not match config.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        wrong_shapes = [name for name in expected if expected[name].shape != weights[name].shape]
        if wrong_shapes:
            raise CheckpointError(f"{path / WEIGHTS_FILE}: shapes differ from config.json for {wrong_shapes[:5]}")
        policy.load_state_dict(weights, strict=True)
        if (path / ADAPTER_DIR).is_dir():
            from peft import PeftModel

            from trainer.policy.lora import quiet_peft

            policy.requires_grad_(False)  # as after add_lora: only LoRA factors may train
            with quiet_peft():
                policy.decoder = PeftModel.from_pretrained(
                    policy.decoder, str(path / ADAPTER_DIR), is_trainable=is_trainable
                )
        return policy.eval()


def build_embedded(state_dim: int, **config: Any) -> EmbeddedVLA:
    """Registry entry: ``make_policy("embedded", state_dim=..., hidden_size=..., ...)``."""
    field_names = {field.name for field in dataclasses.fields(EmbeddedVLAConfig)}
    unknown = sorted(set(config) - field_names)
    if unknown:
        raise TypeError(f"unknown EmbeddedVLAConfig field(s) {unknown}; known: {sorted(field_names)}")
    return EmbeddedVLA(EmbeddedVLAConfig(state_dim=state_dim, **config))


def load_embedded(directory: str | os.PathLike, **kwargs: Any) -> EmbeddedVLA:
    return EmbeddedVLA.from_pretrained(Path(directory), **kwargs)
