"""Describe clips: batched generation, words back from WordPieces, subtitle files.

Clips are decoded ``batch`` at a time (beam search folds the beams
into the batch, ``models/caption_decoding.py``). :func:`cues` merges consecutive clips with the
same caption into one cue; :func:`to_srt` and :func:`to_vtt` write what players load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.caption_decoding import Decoding, generate
from models.captioner import VideoCaptioner
from tasks.caption.data import ClipSet
from tasks.shared.progress import Progress


def words(tokenizer: Any, ids: Sequence[int]) -> str:
    """WordPiece ids -> text (``##`` pieces joined, special tokens dropped)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True,
                            clean_up_tokenization_spaces=True).strip()


@torch.no_grad()
def describe(model: VideoCaptioner, tokenizer: Any, clips: ClipSet, dec: Decoding, *,
             device: torch.device | str = "cpu", batch: int = 64,
             progress: bool = True) -> list[tuple[str, float]]:
    """(caption, score) per clip of ``clips``, in their order."""
    model.eval()
    out: list[tuple[str, float]] = [("", 0.0)] * len(clips)
    with Progress(progress and len(clips) > batch).task("describe", len(clips)) as tick:
        for s in range(0, len(clips), batch):
            sub = clips.subset(range(s, min(s + batch, len(clips))))
            ids, types, mask, feats = model.encoder_inputs(sub.windows, sub.feats, device)
            memory, mem_mask = model.encode(ids, types, mask, feats)
            toks, scores = generate(model.decoder, memory, mem_mask, dec)
            for k, (t, sc) in enumerate(zip(toks, scores, strict=True)):
                out[s + k] = (words(tokenizer, t), float(sc))
            tick(len(sub))
    return out


def cues(starts: Sequence[float], ends: Sequence[float],
         texts: Sequence[str]) -> list[tuple[float, float, str]]:
    """(start, end, text) cues in time order, consecutive equal captions merged."""
    merged: list[tuple[float, float, str]] = []
    for s, e, t in sorted(zip(starts, ends, texts, strict=True)):
        if not t:
            continue
        if merged and merged[-1][2] == t and s <= merged[-1][1] + 1e-6:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]), t)
        else:
            merged.append((s, e, t))
    return merged


def _stamp(t: float, sep: str) -> str:
    ms = int(round(max(0.0, t) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(items: Sequence[tuple[float, float, str]]) -> str:
    """SubRip text: numbered cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, blank line between."""
    return "".join(f"{i}\n{_stamp(s, ',')} --> {_stamp(e, ',')}\n{t}\n\n"
                   for i, (s, e, t) in enumerate(items, 1))


def to_vtt(items: Sequence[tuple[float, float, str]]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` cues."""
    return "WEBVTT\n\n" + "".join(f"{_stamp(s, '.')} --> {_stamp(e, '.')}\n{t}\n\n"
                                  for s, e, t in items)
