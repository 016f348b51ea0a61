"""A tiny, randomly initialised CLIP saved locally (no hub): for CLIP-path tests."""

from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_clip(root: Path) -> Path:
    """A tiny CLIP (hidden 32, 2 layers, 32 px, patch 8) + tokenizer + image config on disk."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte-level symbols
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>")]
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16).save_pretrained(root)
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={**tower, **special, "vocab_size": len(vocab), "max_position_embeddings": 16},
        vision_config={**tower, "image_size": 32, "patch_size": 8}, projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(root)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 36},
                                      crop_size={"height": 32, "width": 32},
                                      image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3])
    processor.save_pretrained(root)
    return root
