"""The embedded VLA's model-size defaults, in a module that imports nothing heavy.

trainer.policy.embedded.EmbeddedVLAConfig and grape-sft's recipe (trainer.sft.SFTConfig) both
take their defaults from here: one source, and grape-sft can build and check its flags before
torch is imported (which takes seconds), so a bad flag is refused at once.
"""

from __future__ import annotations

HIDDEN_SIZE = 128
"""Width of the decoder and of every prefix projection."""
NUM_LAYERS = 2
"""Llama decoder layers."""
NUM_HEADS = 4
"""Attention heads (HIDDEN_SIZE must divide by it)."""
INTERMEDIATE_SIZE = 256
"""Width of each layer's gated MLP."""
