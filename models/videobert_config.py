"""VideoBERT's config (:class:`VideoBertConfig`) and the named presets (:data:`PRESETS`).

Split out of ``models/videobert.py`` (the model itself); import either from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from models.vocab import TEXT_VOCAB


# ----------------------------------------------------------------------------- config
@dataclass(kw_only=True)
class VideoBertConfig:
    """Everything needed to rebuild a VideoBert; saved as ``config.json`` beside the weights.

    Attributes:
        preset: the named preset this config started from (``tiny``, ``mini``, ``base``, ``large``).
        text_vocab_size: WordPiece vocabulary size; must be BERT's 30522 (``models/vocab.py``).
        n_visual: visual tokens in the codebook (leaves of the hierarchical k-means).
        hidden, layers, heads, intermediate: BERT sizes (D, number of layers, attention heads, FFN).
        max_position: longest sequence (learned absolute positions).
        type_vocab: token types (0 text, 1 video).
        dropout: dropout on embeddings, attention probabilities and residual branches.
        layer_norm_eps: LayerNorm epsilon (BERT: 1e-12).
        feature_dim: backbone feature size for masked-feature regression; 0 disables that head.
        feature_input: add ``Linear(feature_dim, D)`` of each clip's backbone feature to its
            visual-token embedding where a feature is given (retrieval fine-tuning turns it on:
            the token alone cannot tell apart the clips of one cluster); zero-initialised, so
            turning it on leaves a pretrained model's outputs unchanged.
        feature_encoder: the clip-feature encoder (``clip_features.encoder``) it reads.
        proj_dim: size of the text/video embeddings used for retrieval and the contrastive term.
        w_text, w_video, w_align, w_feature, w_contrastive: loss weights per objective.
        align_head: ``"cls"``: the paper's alignment head, BERT's pooler on ``[CLS]`` then
            ``Linear(D, 2)``; ``"cls+bilinear"`` (new models): the same plus a bilinear score
            of the mean input embeddings of the text part and of the video part, which gives
            the head a first-order signal from step one (the ``[CLS]`` head alone sits at
            chance for hundreds to thousands of steps; README, "Why the alignment head
            learns"). Configs saved before it existed read as ``"cls"``.
        rerank_weight: weight of the alignment log-odds added to the dual-encoder similarity
            when re-ranking (tuned on validation by retrieval fine-tuning; None: not tuned).
        codebook_id: the codebook whose visual tokens this model reads (None: not yet bound).
        init_from: where the text weights came from (``"minilm"`` or a BERT checkpoint path).
    """

    preset: str = "tiny"
    text_vocab_size: int = TEXT_VOCAB
    n_visual: int
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    intermediate: int = 64
    max_position: int = 512
    type_vocab: int = 2
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    feature_dim: int = 0
    feature_input: bool = False
    feature_encoder: str | None = None
    proj_dim: int = 256
    w_text: float = 1.0
    w_video: float = 1.0
    w_align: float = 1.0
    w_feature: float = 0.0
    w_contrastive: float = 0.0
    align_head: str = "cls"
    rerank_weight: float | None = None
    codebook_id: str | None = None
    init_from: str | None = None

    def __post_init__(self) -> None:
        if self.text_vocab_size != TEXT_VOCAB:
            raise ValueError(f"text_vocab_size {self.text_vocab_size} != {TEXT_VOCAB}: the id "
                             "layout in models/vocab.py is BERT's uncased WordPiece vocabulary")
        for name in ("n_visual", "hidden", "layers", "heads", "intermediate", "max_position",
                     "proj_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.type_vocab < 2:
            raise ValueError(f"type_vocab must be >= 2 (text and video), got {self.type_vocab}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("w_text", "w_video", "w_align", "w_feature", "w_contrastive"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"loss weight {name} must be >= 0, got {getattr(self, name)!r}")
        if self.w_feature > 0 and self.feature_dim <= 0:
            raise ValueError(f"w_feature={self.w_feature} needs feature_dim > 0")
        if self.align_head not in ("cls", "cls+bilinear"):
            raise ValueError(f"align_head={self.align_head!r}: 'cls' or 'cls+bilinear'")
        if self.feature_input and self.feature_dim <= 0:
            raise ValueError("feature_input needs feature_dim > 0")

    @property
    def vis_offset(self) -> int:
        """Id of visual token 0 (after the text vocabulary and ``[>]``)."""
        return self.text_vocab_size + 1

    @property
    def vocab_size(self) -> int:
        """Rows of the word-embedding table: text, ``[>]``, visual tokens."""
        return self.vis_offset + self.n_visual

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VideoBertConfig:
        """Rebuild from :meth:`to_dict` output.

        Args:
            data: field name -> value.

        Returns:
            The config.

        Raises:
            ValueError: unknown or missing fields, or values the config refuses.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown VideoBertConfig fields {unknown}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"invalid VideoBertConfig {dict(data)!r}: {e}") from e


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"hidden": 32, "layers": 2, "heads": 2, "intermediate": 64},
    # Trains from scratch on a 2-core CPU in minutes (the probe figures in the README).
    "small": {"hidden": 128, "layers": 4, "heads": 4, "intermediate": 512},
    # MiniLM-L6-H384 (all-MiniLM-L6-v2): text embeddings and encoder layers from the pip package.
    "mini": {"hidden": 384, "layers": 6, "heads": 12, "intermediate": 1536, "init_from": "minilm"},
    "base": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072},
    "large": {"hidden": 1024, "layers": 24, "heads": 16, "intermediate": 4096},  # the paper's
}


def config_for(preset: str, n_visual: int, **overrides: Any) -> VideoBertConfig:
    """The config of a named preset, with field overrides.

    Args:
        preset: a key of :data:`PRESETS`.
        n_visual: visual tokens in the codebook.
        **overrides: any :class:`VideoBertConfig` field.

    Returns:
        The config.

    Raises:
        ValueError: unknown preset or field, or an invalid value.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return VideoBertConfig.from_dict(
        {"preset": preset, "n_visual": n_visual, "align_head": "cls+bilinear", **PRESETS[preset],
         **overrides})
