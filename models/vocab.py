"""VideoBERT's single vocabulary: BERT's uncased WordPiece ids, then ``[>]``, then visual tokens.

Text keeps BERT's ids (so a MiniLM/BERT checkpoint's word embeddings load unchanged, including its
``[PAD]``, ``[CLS]``, ``[SEP]`` and ``[MASK]``); one new special token ``[>]`` separates text
from video; visual token ``t`` of a codebook with ``n_visual`` leaves has id ``VIS_OFFSET + t``.
"""

from __future__ import annotations

TEXT_VOCAB = 30522
"""Size of BERT's uncased WordPiece vocabulary (the MiniLM package's ``vocab.txt``)."""
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
"""BERT's special-token ids."""
VSEP = TEXT_VOCAB
"""``[>]``: between the text and the video part of a sequence."""
VIS_OFFSET = TEXT_VOCAB + 1
"""Id of visual token 0."""
TEXT_SEGMENT, VIDEO_SEGMENT = 0, 1
"""Segment (token type) ids per modality."""


def vocab_size(n_visual: int) -> int:
    """Total vocabulary size for a codebook of ``n_visual`` visual tokens."""
    return VIS_OFFSET + n_visual


def visual_id(token: int) -> int:
    """Vocabulary id of visual token ``token``."""
    return VIS_OFFSET + token


def is_visual(token_id: int) -> bool:
    """Whether a vocabulary id is a visual token."""
    return token_id >= VIS_OFFSET
