"""How pretraining examples are drawn and batched: :class:`DataConfig` (read by ``data.py``).

Stored with every checkpoint, so a resumed run draws exactly the same batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class DataConfig:
    """How pretraining examples are drawn and batched (defaults follow VideoBERT/BERT)."""

    max_seq: int = 128  # longest sequence, specials included
    max_text: int = 48  # wordpieces of text per example (joined sentences are truncated)
    max_video: int = 48  # visual tokens per example (after stride subsampling)
    p_text_only: float = 0.2  # share of an epoch's examples that are text-only
    p_video_only: float = 0.2  # share that are video-only
    p_negative: float = 0.5  # share of joint examples made mismatched (alignment label 0)
    p_join: float = 0.3  # probability of joining the next sentence of the same video
    stride: tuple[int, int] = (1, 5)  # video-token subsampling stride, drawn in [lo, hi]
    mask_prob: float = 0.15  # BERT masking rate over non-special positions
    mlm_on_negatives: bool = True  # score masked tokens of mismatched joint rows too (BERT)
    mask_weighting: str = "uniform"  # "idf": rarer words are likelier to be masked
    positive_batches: int = 0  # cross-modal warm-up: at least this many first train batches
    # hold matched joint rows only, rounded up to whole epochs (PretrainData.warmup)
    batch_size: int = 32
    feature_encoder: str | None = None  # encoder of the corpus's features (export_corpus's)
    feature_input: bool = False  # give the model each clip's feature at its visual tokens
    # (unit length; none at masked positions); needs a corpus exported with features
    p_same_video: float = 0.5  # share of negatives from the same video (hard), else another
    contrastive: bool = False  # add ctr_* text/video pairs from the positive joint rows
    seed: int = 0
    neg_min_gap: int = 4  # clips between a same-video negative and the true clips, at least
    # (a shorter video: the widest gap it has; no overlap ever)
    bucket_batches: int = 50  # length bucketing groups examples within this many batches

    def __post_init__(self) -> None:
        self.stride = (int(self.stride[0]), int(self.stride[1]))
        for name in ("p_text_only", "p_video_only", "p_negative", "p_join", "mask_prob",
                     "p_same_video"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)!r} is not in [0, 1]")
        if self.p_text_only + self.p_video_only >= 1.0:
            raise ValueError(f"p_text_only + p_video_only = "
                             f"{self.p_text_only + self.p_video_only!r} leaves no joint examples")
        if not 1 <= self.stride[0] <= self.stride[1]:
            raise ValueError(f"stride={self.stride!r} must be (lo, hi) with 1 <= lo <= hi")
        if self.positive_batches < 0:
            raise ValueError(f"positive_batches must be >= 0, got {self.positive_batches}")
        if min(self.max_text, self.max_video, self.batch_size, self.bucket_batches) < 1:
            raise ValueError(f"max_text, max_video, batch_size and bucket_batches must be "
                             f">= 1: {self}")
        if self.mask_weighting not in ("uniform", "idf"):
            raise ValueError(f"mask_weighting={self.mask_weighting!r}: 'uniform' or 'idf'")
        if self.max_seq < 5:
            raise ValueError(f"max_seq={self.max_seq!r} cannot hold [CLS] text [>] video [SEP]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (checkpoints store it to resume with the same data)."""
        d = asdict(self)
        d["stride"] = list(self.stride)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DataConfig fields {sorted(unknown)}")
        return cls(**d)
