"""A tiny randomly initialised OpenVLA-style Llava checkpoint, built and saved locally (no download).

Tests and bench/gpu_check.py use it to run the HF VLA adapter end to end (processor, image
tokens, the action vocabulary as the last 256 ids of the LM head) in seconds on any machine.
"""

from __future__ import annotations

import os

import torch

ACTION_IDS = 256
"""Extra vocabulary rows past the words: the action ids (256 bins)."""


def build_tiny_llava(folder: str | os.PathLike) -> torch.nn.Module:
    """Save a tiny Llava (CLIP vision tower, 2-layer Llama) and its processor in ``folder``; return the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    corpus = [
        "In: What action should the robot take to pick up the red cube?",
        "Out:",
        "push the block to the target",
        "stack the cube on the base",
    ]
    word_level = Tokenizer(models.WordLevel(unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        # Action ids are the last 256 rows of the LM head, past the word vocabulary.
        text_config=LlamaConfig(
            vocab_size=len(tokenizer) + ACTION_IDS,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    # Sharpen the action-id rows so the policy is far from uniform and mistakes show.
    with torch.no_grad():
        model.lm_head.weight[-256:] *= 40
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model
