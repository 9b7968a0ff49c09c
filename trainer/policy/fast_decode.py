"""Autoregressive decoding through a Llama backbone without transformers' per-call plumbing.

Sampling one environment step runs the decoder eight times (the prefix, then one position per
further action token). Through ``LlamaModel.forward`` each of those calls costs hundreds of
Python-level module calls, mask builders, cache objects and output dataclasses; for the small
embedded decoder that plumbing, not the arithmetic, was most of a rollout's sampling time.

:class:`LlamaDecoding` runs the same layers with the same weights and the same operations in
the same order as ``LlamaDecoderLayer`` (RMSNorm, rotary q/k, scaled-dot-product attention
over a key/value cache, gated MLP), so outputs equal the module path up to float rounding.
The weights are read from the model when a decoding starts (one sampling call, during which
they do not change), so a training step is seen by the next call. LoRA-wrapped projections
(peft) have their active adapters' low-rank update merged into that read, and none inside
``disable_adapter()``; a layer with a projection of another kind calls each one as a module.
The rotary tables depend on the configuration only and are kept from one decoding to the next
(under inference mode, as sampling runs). Keeping the stacked weights too was tried: at the
default size it saved nothing measurable, and it would miss weights written through ``.data``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

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


def _effective_linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight, bias) that compute ``project(module, x)`` as one ``F.linear``: an nn.Linear's own,
    or a LoRA Linear's base weight with its active adapters' B @ A * scaling added. None where that
    would not be the same computation: another kind of module, or LoRA factors in another dtype
    than the base weight (peft then computes the update in the factors' dtype)."""
    if type(module) is nn.Linear:
        return module.weight, module.bias
    terms = _peft_lora_terms(module)
    if terms is None or type(module.base_layer) is not nn.Linear:
        return None
    weight = module.base_layer.weight
    for a, b, scaling in terms:
        if a.dtype != weight.dtype or b.dtype != weight.dtype:
            return None
        weight = weight + (b @ a) * scaling
    return weight, module.base_layer.bias


def _stacked_linear(modules: list[nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One (weight, bias) computing the given projections of one input side by side."""
    parts = [_effective_linear(module) for module in modules]
    if any(part is None for part in parts):
        return None
    weights = [weight for weight, _ in parts]  # type: ignore[misc]
    biases = [bias for _, bias in parts]  # type: ignore[misc]
    weight = torch.cat(weights) if len(weights) > 1 else weights[0]
    if all(bias is None for bias in biases):
        return weight, None
    bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in zip(weights, biases)])
    return weight, bias


@dataclass(frozen=True)
class _FusedLayer:
    """A decoder layer's weights for one decoding: q, k and v as one matrix, gate and up as one."""

    input_norm: tuple[torch.Tensor, float]
    qkv: tuple[torch.Tensor, torch.Tensor | None]
    output: tuple[torch.Tensor, torch.Tensor | None]
    post_norm: tuple[torch.Tensor, float]
    gate_up: tuple[torch.Tensor, torch.Tensor | None]
    down: tuple[torch.Tensor, torch.Tensor | None]
    act_fn: Callable[[torch.Tensor], torch.Tensor]


def _fused_layer(layer: nn.Module) -> _FusedLayer | None:
    attention, mlp = layer.self_attn, layer.mlp
    qkv = _stacked_linear([attention.q_proj, attention.k_proj, attention.v_proj])
    output = _stacked_linear([attention.o_proj])
    gate_up = _stacked_linear([mlp.gate_proj, mlp.up_proj])
    down = _stacked_linear([mlp.down_proj])
    if qkv is None or output is None or gate_up is None or down is None:
        return None
    # Tensors and functions, not modules: a module's attribute lookup and call cost more than
    # the small ops they lead to.
    act_fn = F.silu if _is_plain_silu(mlp.act_fn) else mlp.act_fn
    return _FusedLayer(
        _norm_terms(layer.input_layernorm),
        qkv,
        output,
        _norm_terms(layer.post_attention_layernorm),
        gate_up,
        down,
        act_fn,
    )


def _is_plain_silu(module: nn.Module) -> bool:
    """torch's SiLU, or transformers' SiLUActivation with its own forward (``F.silu``; a kernel
    swapped in for it, by class or by instance, is kept as the module)."""
    if type(module) is nn.SiLU:
        return True
    return (
        type(module).__name__ == "SiLUActivation"
        and type(module).__module__ == "transformers.activations"
        and type(module).forward.__qualname__ == "SiLUActivation.forward"
        and "forward" not in vars(module)
    )


def _norm_terms(norm: nn.Module) -> tuple[torch.Tensor, float]:
    """A LlamaRMSNorm's (weight, epsilon)."""
    return norm.weight, norm.variance_epsilon


def _rms_norm(terms: tuple[torch.Tensor, float], x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm with ``terms`` = (weight, epsilon): normalized in float32, scaled in the input's dtype."""
    weight, eps = terms
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


# rotary module -> (what its tables were computed for, the tables); see LlamaDecoding._rotary_tables
_kept_rotary_tables: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class LlamaDecoding:
    """One batch's decoding state: fill with :meth:`prefill`, then :meth:`step` one position at a time.

    ``backbone`` is a transformers ``LlamaModel`` (or a model with the same layer layout);
    ``max_length`` bounds prefix plus decoded positions (the key/value cache is preallocated).
    The layers' weights are read once, when the decoding starts: q/k/v and gate/up are stacked
    into one matrix each and active LoRA updates merged into them, so a position costs four
    matrix products per layer instead of seven (or twenty-one with LoRA on every projection).
    A decoding spans one sampling call, during which the weights do not change.
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
        self.cos, self.sin, self.stacked_cos, self.stacked_sin = self._rotary_tables(max_length, device, dtype)
        # keys then values of each layer: [layers, B, 2 * kv_heads, max_length, head_dim]
        shape = (len(backbone.layers), batch, 2 * self.kv_heads, max_length, self.head_dim)
        self.cache = torch.empty(shape, device=device, dtype=dtype)
        # Per layer: (its keys and values, its keys, its values), views made once per decoding.
        layer_caches = [self.cache[index] for index in range(len(backbone.layers))]  # not unbind: written in place
        self.layer_caches = [(kv, kv[:, : self.kv_heads], kv[:, self.kv_heads :]) for kv in layer_caches]
        self.length = 0
        self.layer_modules = list(backbone.layers)
        self.layers = [_fused_layer(layer) for layer in self.layer_modules]
        self.final_norm = _norm_terms(backbone.norm)

    def _rotary_tables(self, max_length: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """(cos, signed sin) [max_length, d] and the same per head of a stacked q/k/v [heads, max_length, d].

        They depend on the configuration only (the rotary module's frequencies), so under inference
        mode, where they cannot end up in an autograd graph, they are kept for the next decoding.
        """
        rotary = self.backbone.rotary_emb
        frequencies = getattr(rotary, "inv_freq", None)
        key = None
        if (
            torch.is_inference_mode_enabled()
            and isinstance(frequencies, torch.Tensor)
            and not frequencies.is_inference()
        ):
            shape = (max_length, self.heads, self.kv_heads, self.head_dim)
            key = (
                shape,
                device,
                dtype,
                frequencies.data_ptr(),
                frequencies._version,
                getattr(rotary, "attention_scaling", None),
            )
            kept = _kept_rotary_tables.get(rotary)
            if kept is not None and kept[0] == key:
                return kept[1]
        positions = torch.arange(max_length, device=device).unsqueeze(0)
        probe = torch.zeros((), device=device, dtype=dtype)
        cos, sin = rotary(probe, positions)  # [1, max_length, head_dim]
        # rotate_half(x) * sin == roll(x, half) * signed_sin, bit for bit (only signs move), in
        # one roll instead of two slices, a negation and a cat.
        half = self.head_dim // 2
        signed_sin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        # The same tables per head of a stacked q/k/v projection, with the identity rotation
        # (cos 1, sin 0) on the v heads: one rotary pass over q, k and v together leaves v's
        # values as they are, and k and v come out side by side for one cache write.
        rotated, plain = self.heads + self.kv_heads, self.kv_heads
        identity_cos, identity_sin = torch.ones_like(cos[0]), torch.zeros_like(signed_sin)
        stacked_cos = torch.cat((cos[0].expand(rotated, -1, -1), identity_cos.expand(plain, -1, -1)))
        stacked_sin = torch.cat((signed_sin.expand(rotated, -1, -1), identity_sin.expand(plain, -1, -1)))
        tables = (cos[0], signed_sin, stacked_cos, stacked_sin)
        if key is not None:
            _kept_rotary_tables[rotary] = (key, tables)
        return tables

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
        batch, new, width = hidden.shape
        start, end = self.length, self.length + new
        cos, sin = self.stacked_cos[:, start:end], self.stacked_sin[:, start:end]  # once for every layer
        # Positions as rows of one matrix between the attention steps: the projections are then
        # plain 2-D matrix products (the same products a 3-D input is flattened to, fewer ops).
        rows = hidden.reshape(batch * new, width)
        for index, (layer, fused) in enumerate(zip(self.layer_modules, self.layers)):
            if fused is None:
                rows = self._module_layer(index, layer, rows, batch, start, end)
            else:
                rows = self._fused_layer(index, fused, rows, batch, start, end, cos, sin)
        self.length = end
        return _rms_norm(self.final_norm, rows).view(batch, new, width)

    def _rotary(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotary embedding with tables already sliced to the new positions (sin signed, see __init__)."""
        return x * cos + x.roll(self.head_dim // 2, dims=-1) * sin

    def _attend(self, index: int, q: torch.Tensor, keys_values: torch.Tensor, start: int, end: int):
        """Cache the new positions' keys and values ([B, 2 * kv_heads, new, d], rotary already
        applied to the keys), attend; return rows [B * new, heads * d]."""
        cache, keys, values = self.layer_caches[index]
        cache[:, :, start:end] = keys_values
        # Causal within a prefill (which starts at 0); a single new position sees everything.
        attended = F.scaled_dot_product_attention(
            q,
            keys[:, :, :end],
            values[:, :, :end],
            is_causal=end - start > 1,
            scale=self.scaling,
            enable_gqa=self.kv_heads != self.heads,
        )
        return attended.transpose(1, 2).reshape(q.shape[0] * (end - start), -1)

    def _fused_layer(
        self,
        index: int,
        layer: _FusedLayer,
        hidden: torch.Tensor,
        batch: int,
        start: int,
        end: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ):
        """``hidden``: rows [batch * new, H]; ``cos``/``sin``: the stacked q/k/v tables at the new positions."""
        new = end - start
        qkv = F.linear(_rms_norm(layer.input_norm, hidden), *layer.qkv)
        qkv = qkv.view(batch, new, self.heads + 2 * self.kv_heads, self.head_dim).transpose(1, 2)
        qkv = self._rotary(qkv, cos, sin)
        attended = self._attend(index, qkv[:, : self.heads], qkv[:, self.heads :], start, end)
        hidden = hidden + F.linear(attended, *layer.output)
        gate, up = F.linear(_rms_norm(layer.post_norm, hidden), *layer.gate_up).chunk(2, dim=-1)
        return hidden + F.linear(layer.act_fn(gate) * up, *layer.down)

    def _module_layer(self, index: int, layer: nn.Module, hidden: torch.Tensor, batch: int, start: int, end: int):
        """A layer whose projections cannot be stacked (another module kind): each one called.
        ``hidden``: rows [batch * new, H]."""
        new = end - start
        attention = layer.self_attn
        normed = _rms_norm(_norm_terms(layer.input_layernorm), hidden)
        q = project(attention.q_proj, normed).view(batch, new, self.heads, self.head_dim).transpose(1, 2)
        k = project(attention.k_proj, normed).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
        v = project(attention.v_proj, normed).view(batch, new, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.cos[start:end], self.sin[start:end]
        q, k = self._rotary(q, cos, sin), self._rotary(k, cos, sin)
        attended = self._attend(index, q, torch.cat((k, v), dim=1), start, end)
        hidden = hidden + project(attention.o_proj, attended)
        normed = _rms_norm(_norm_terms(layer.post_attention_layernorm), hidden)
        mlp = layer.mlp
        return hidden + project(
            mlp.down_proj, mlp.act_fn(project(mlp.gate_proj, normed)) * project(mlp.up_proj, normed)
        )
