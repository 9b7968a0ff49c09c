"""Autoregressive decoding through a Llama backbone without transformers' per-call plumbing.

Sampling one environment step runs the decoder eight times (the prefix, then one position per
further action token). Through ``LlamaModel.forward`` each of those calls costs hundreds of
Python-level module calls, mask builders, cache objects and output dataclasses; for the small
embedded decoder that plumbing, not the arithmetic, was most of a rollout's sampling time.

:class:`LlamaDecoding` runs the same layers with the same weights and the same operations in
the same order as ``LlamaDecoderLayer`` (RMSNorm, rotary q/k, scaled-dot-product attention
over a key/value cache, gated MLP), reading the weights from the model at each call, so
outputs equal the module path up to float rounding and a training step is always seen.
LoRA-wrapped projections (peft) add their active adapters' low-rank update as peft does,
and skip it inside ``disable_adapter()``; any projection of another kind is called as a module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _peft_lora_terms(module: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, float]] | None:
    """(A, B, scaling) of each active adapter of a peft LoRA Linear; None for any other module
    or for LoRA variants this file does not compute (DoRA, merged adapters)."""
    try:
        from peft.tuners.lora import Linear as LoraLinear
    except ImportError:  # peft is a dependency, but plain models need none of it
        return None
    if type(module) is not LoraLinear or module.merged or module.fan_in_fan_out:
        return None
    if module.disable_adapters:
        return []
    terms = []
    for name in module.active_adapters:
        if name not in module.lora_A:
            continue
        if module.use_dora.get(name, False):
            return None
        terms.append((module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]))
    return terms


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for an nn.Linear or a peft LoRA Linear, computed with plain tensor ops."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    terms = _peft_lora_terms(module)
    if terms is None or type(module.base_layer) is not nn.Linear:
        return module(x)
    result = F.linear(x, module.base_layer.weight, module.base_layer.bias)
    dtype = result.dtype
    for a, b, scaling in terms:  # as peft: the input in the factors' dtype (float32 over bfloat16 weights)
        result = result + F.linear(F.linear(x.to(a.dtype), a), b) * scaling
    return result.to(dtype)


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    variance = x.float().pow(2).mean(-1, keepdim=True)
    return norm.weight * (x.float() * torch.rsqrt(variance + norm.variance_epsilon)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaDecoding:
    """One batch's decoding state: fill with :meth:`prefill`, then :meth:`step` one position at a time.

    ``backbone`` is a transformers ``LlamaModel`` (or a model with the same layer layout);
    ``max_length`` bounds prefix plus decoded positions (the key/value cache is preallocated).
    """

    def __init__(
        self, backbone: nn.Module, batch: int, max_length: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        config = backbone.config
        self.backbone = backbone
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.scaling = self.head_dim**-0.5
        positions = torch.arange(max_length, device=device).unsqueeze(0)
        probe = torch.zeros((), device=device, dtype=dtype)
        cos, sin = backbone.rotary_emb(probe, positions)  # [1, max_length, head_dim]
        self.cos, self.sin = cos[0], sin[0]
        shape = (len(backbone.layers), batch, self.kv_heads, max_length, self.head_dim)
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def prefill(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run the prefix [B, P, H] (causal attention); return the last position's output [B, H]."""
        if self.length:
            raise RuntimeError("prefill() starts a decoding; this one already holds positions")
        return self._forward(embeddings)[:, -1]

    def step(self, embedding: torch.Tensor) -> torch.Tensor:
        """Append one position [B, 1, H] after everything so far; return its output [B, H]."""
        if embedding.shape[1] != 1 or not self.length:
            raise RuntimeError("step() appends one position after prefill()")
        return self._forward(embedding)[:, -1]

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, new, _ = hidden.shape
        start, end = self.length, self.length + new
        cos, sin = self.cos[start:end], self.sin[start:end]
        for index, layer in enumerate(self.backbone.layers):
            attention = layer.self_attn
            normed = _rms_norm(layer.input_layernorm, hidden)
            q = project(attention.q_proj, normed).view(batch, new, self.heads, self.head_dim).transpose(1, 2)
            k = project(attention.k_proj, normed).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            v = project(attention.v_proj, normed).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.keys[index, :, :, start:end] = k
            self.values[index, :, :, start:end] = v
            keys, values = self.keys[index, :, :, :end], self.values[index, :, :, :end]
            # Causal within a prefill (which starts at 0); a single new position sees everything.
            attended = F.scaled_dot_product_attention(
                q, keys, values, is_causal=new > 1, scale=self.scaling, enable_gqa=self.kv_heads != self.heads
            )
            attended = attended.transpose(1, 2).reshape(batch, new, -1)
            hidden = hidden + project(attention.o_proj, attended)
            normed = _rms_norm(layer.post_attention_layernorm, hidden)
            mlp = layer.mlp
            hidden = hidden + project(
                mlp.down_proj, mlp.act_fn(project(mlp.gate_proj, normed)) * project(mlp.up_proj, normed)
            )
        self.length = end
        return _rms_norm(self.backbone.norm, hidden)
