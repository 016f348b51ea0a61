"""The NumPy query encoders (models/text_numpy.py) give the torch models' vectors: VideoBERT's
text tower for random and MiniLM-initialised weights, and the MiniLM sentence encoder of the
concepts baseline (the real pip-shipped weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest

TEXTS = ["a man talking in a car", "the red ball slides left across the grass", "x", "",
         "Ünïcode, PUNCTUATION!? and numbers 1234.5", "word " * 300]


@pytest.mark.parametrize("preset", ["tiny", "mini"])
def test_videobert_text_tower_matches_torch(preset, tmp_path):
    import torch

    from models.text_numpy import VideoBertTextTower
    from models.videobert import build_model, text_tokenizer
    from tasks.retrieval.finetune import embed_texts

    torch.manual_seed(0)
    model = build_model(preset, n_visual=37, codebook_id="cb")
    with torch.no_grad():  # the projection is new in both presets: make it non-trivial
        model.text_proj.weight.normal_(0, 0.2)
        model.text_proj.bias.normal_(0, 0.2)
    model.save_pretrained(tmp_path / "ckpt")
    ref = embed_texts(model, text_tokenizer(), TEXTS)
    ours = VideoBertTextTower(tmp_path / "ckpt").embed(TEXTS)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_videobert_text_tower_refuses_a_swapped_config(tmp_path):
    from models.text_numpy import VideoBertTextTower
    from models.videobert import build_model

    build_model("tiny", n_visual=5).save_pretrained(tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["layers"] += 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match"):
        VideoBertTextTower(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        VideoBertTextTower(tmp_path / "ckpt")


def test_minilm_sentence_encoder_matches_the_torch_text_encoder():
    from models.concepts import TextEncoder
    from models.text_numpy import MiniLMSentenceEncoder

    ref = TextEncoder(device="cpu").encode(TEXTS)
    ours = MiniLMSentenceEncoder().encode(TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    assert np.abs(ours - ref).max() < 1e-5


def test_gelu_and_layer_norm_match_torch():
    import torch

    from models.text_numpy import gelu, layer_norm

    x = np.linspace(-8, 8, 4001, dtype=np.float32).reshape(1, -1)
    # erf to 1.5e-7 (Abramowitz-Stegun 7.1.26), scaled by x / 2: ~1e-6 at x = 3, float32 ulps
    ref = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    assert np.abs(gelu(x) - ref).max() < 2e-6
    w, b = np.float32(1.5), np.float32(-0.25)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x), (x.shape[1],),
                                         torch.full((x.shape[1],), 1.5),
                                         torch.full((x.shape[1],), -0.25), 1e-12).numpy()
    assert np.abs(layer_norm(x, w, b, 1e-12) - ref).max() < 1e-5
