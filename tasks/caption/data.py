"""Clips as the captioner sees them: windows of visual tokens and features, and their captions.

A clip's window is its visual token with ``context`` neighbours each side (None past a video's
ends), and the same window of clip features. Its references are the texts of every text
segment overlapping it (subtitles, captions, speech). Captions become ``[CLS] words [SEP]``
WordPiece ids, cut to ``max_caption`` words.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from models.vocab import CLS, PAD, SEP
from warehouse import queries
from warehouse.store import Warehouse


@dataclass
class ClipSet:
    """Clips (in video and time order) with everything the captioner needs."""

    clip_ids: list[str]
    video_ids: list[str]
    starts: list[float]
    ends: list[float]
    splits: list[str]
    windows: list[list[int | None]]
    feats: list[list[np.ndarray | None]] | None
    refs: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, rows: Iterable[int]) -> ClipSet:
        """The clips at ``rows`` (in that order)."""
        r = list(rows)
        return ClipSet(
            clip_ids=[self.clip_ids[i] for i in r], video_ids=[self.video_ids[i] for i in r],
            starts=[self.starts[i] for i in r], ends=[self.ends[i] for i in r],
            splits=[self.splits[i] for i in r], windows=[self.windows[i] for i in r],
            feats=None if self.feats is None else [self.feats[i] for i in r],
            refs=[self.refs[i] for i in r])

    def where(self, *, split: str | None = None, captioned: bool = False,
              clip_ids: Sequence[str] | None = None, video_id: str | None = None) -> ClipSet:
        """The clips of a split / with a reference / among ``clip_ids`` / of one video."""
        wanted = None if clip_ids is None else set(clip_ids)
        return self.subset(
            i for i in range(len(self))
            if (split is None or self.splits[i] == split)
            and (not captioned or self.refs[i])
            and (wanted is None or self.clip_ids[i] in wanted)
            and (video_id is None or self.video_ids[i] == video_id))


def load_clips(wh: Warehouse, codebook_id: str, *, context: int = 0,
               features: Mapping[str, np.ndarray] | None = None) -> ClipSet:
    """Every clip with a visual token under ``codebook_id``, its window and references."""
    con = wh.connect()
    try:
        rows = con.execute(queries.load("caption_clips"), [codebook_id]).fetchall()
        refs = dict(con.execute(queries.load("caption_refs")).fetchall())
    finally:
        con.close()
    windows: list[list[int | None]] = []
    feats: list[list[np.ndarray | None]] | None = [] if features is not None else None
    by_video: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_video.setdefault(r[1], []).append(i)
    for i, r in enumerate(rows):
        order = by_video[r[1]]
        k = bisect.bisect_left(order, i)  # rows come in video order: each list is sorted
        around = [order[j] if 0 <= j < len(order) else None
                  for j in range(k - context, k + context + 1)]
        windows.append([None if j is None else int(rows[j][4]) for j in around])
        if feats is not None and features is not None:
            feats.append([None if j is None else features.get(rows[j][0]) for j in around])
    return ClipSet(clip_ids=[r[0] for r in rows], video_ids=[r[1] for r in rows],
                   starts=[float(r[2]) for r in rows], ends=[float(r[3]) for r in rows],
                   splits=[r[5] for r in rows], windows=windows, feats=feats,
                   refs=[[t for t in refs.get(r[0], []) if t.strip()] for r in rows])


def caption_ids(tokenizer: object, texts: Sequence[str], max_caption: int) -> torch.Tensor:
    """(B, L) ``[CLS] words [SEP]`` ids, padded with ``[PAD]`` to the longest."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True,  # type: ignore
                    max_length=max_caption - 1)["input_ids"]
    return pad_rows([[CLS, *e, SEP] for e in enc])


def pad_rows(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, L) long ids, rows padded with ``[PAD]`` to the longest."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out


def training_pairs(clips: ClipSet) -> list[tuple[int, str]]:
    """(clip row, caption) for every reference of every clip."""
    return [(i, t) for i in range(len(clips)) for t in clips.refs[i]]
