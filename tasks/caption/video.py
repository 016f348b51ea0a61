"""Captions of one video: the user's reference resolved, stored captions read, the rest generated.

``videobert caption VIDEO`` accepts a video id (or a unique prefix of at least 8 characters),
the path a file was ingested under, or any path to the same bytes (matched by content hash).
Captions already in ``generated_captions`` for the model are used as they are; clips without
one are captioned on the spot (not written: ``videobert caption --all`` writes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.caption_decoding import Decoding
from models.captioner import VideoCaptioner
from tasks.caption.data import ClipSet
from tasks.caption.describe import cues, describe
from tasks.shared.errors import InputError
from warehouse import queries
from warehouse.atomic import sha256_file
from warehouse.store import Warehouse


def resolve_video(wh: Warehouse, target: str) -> tuple[str, str]:
    """(video_id, a path it was ingested under) of what the user named.

    Raises:
        InputError: nothing ingested matches, or a prefix matches several videos.
    """
    p = Path(target).expanduser()
    absolute = str(p.resolve()) if p.exists() else target
    con = wh.connect()
    try:
        rows = con.execute(queries.load("video_lookup"), [target, absolute]).fetchall()
        if not rows and p.is_file():  # the same bytes under another name
            rows = con.execute(queries.load("video_lookup"), [sha256_file(p), absolute]).fetchall()
    finally:
        con.close()
    if not rows:
        hint = (f"ingest it first: `videobert ingest {target}` then `videobert tokenize`"
                if p.exists() else "give an ingested file's path or a video id "
                "(`videobert sql \"SELECT video_id, first_path FROM videos\"`)")
        raise InputError(f"no ingested video matches {target!r}: {hint}")
    if len(rows) > 1:
        raise InputError(f"{target!r} matches {len(rows)} videos: give more of the video id")
    return rows[0][0], rows[0][1] or ""


def stored(wh: Warehouse, model_run: str, clip_ids: list[str]) -> dict[str, tuple[str, float]]:
    """Stored generated captions of ``model_run`` for some clips."""
    con = wh.connect()
    try:
        rows = con.execute(queries.load("generated_captions_of"),
                           [model_run, clip_ids]).fetchall()
    finally:
        con.close()
    return {r[0]: (r[1], float(r[2]) if r[2] is not None else 0.0) for r in rows}


def video_captions(wh: Warehouse, clips: ClipSet, video_id: str, model: VideoCaptioner,
                   tokenizer: Any, model_run: str, dec: Decoding,
                   device: Any = "cpu") -> list[dict[str, Any]]:
    """One row per clip of the video, in time order: start_s, end_s, text, score, source."""
    mine = clips.where(video_id=video_id)
    if len(mine) == 0:
        raise InputError(f"video {video_id[:12]} has no tokenized clip: run `videobert "
                         "tokenize` first")
    have = stored(wh, model_run, mine.clip_ids)
    missing = [i for i, c in enumerate(mine.clip_ids) if c not in have]
    fresh = describe(model, tokenizer, mine.subset(missing), dec, device=device,
                     progress=False) if missing else []
    made = dict(zip((mine.clip_ids[i] for i in missing), fresh, strict=True))
    return [{"clip_id": c, "start_s": s, "end_s": e,
             "text": (have.get(c) or made[c])[0], "score": (have.get(c) or made[c])[1],
             "source": "warehouse" if c in have else "generated"}
            for c, s, e in zip(mine.clip_ids, mine.starts, mine.ends, strict=True)]


def video_cues(rows: list[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """Subtitle cues of :func:`video_captions` rows (equal neighbours merged)."""
    return cues([r["start_s"] for r in rows], [r["end_s"] for r in rows],
                [r["text"] for r in rows])
