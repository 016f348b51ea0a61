"""A picture of the visual vocabulary (VideoBERT's figure of visual words).

For a sample of tokens (the most used first), the clips whose features lie nearest the
token's leaf centroid are shown by their middle frame: one row per token.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tasks.shared import media
from tasks.shared.errors import InputError
from tasks.tokens import cluster
from warehouse.store import Warehouse

THUMB = 112


def _middle_frame(path: str, start: float, end: float) -> np.ndarray:
    mid = (start + end) / 2
    try:
        frames, _ = media.decode_frames(Path(path), mid, mid + 0.5, 2.0, THUMB)
    except Exception:  # noqa: BLE001 - a missing/broken file shows as a grey tile
        frames = np.empty((0,))
    if len(frames) == 0:
        return np.full((THUMB, THUMB, 3), 96, np.uint8)
    return frames[0]


def codebook_gallery(wh: Warehouse, out: Path, codebook_id: str | None = None,
                     n_tokens: int = 12, per_token: int = 6) -> tuple[Path, str]:
    """Write the gallery PNG; returns (path, codebook id).

    Raises:
        ValueError: when the warehouse has no codebook (run ``videobert tokenize``).
    """
    con = wh.connect()
    where = "WHERE codebook_id = ?" if codebook_id else ""
    books = con.execute(f"SELECT codebook_id, path, encoder, encoder_version FROM codebooks "
                        f"{where} ORDER BY created_at DESC LIMIT 1",
                        [codebook_id] if codebook_id else []).fetchall()
    if not books:
        raise InputError("no codebook in this warehouse: run `videobert tokenize` first")
    cb_id, rel, encoder, version = books[0]
    tree = cluster.load_tree(wh.home / rel)
    rows = con.execute(
        "SELECT t.token, c.clip_id, c.start_s, c.end_s, f.vector, "
        "(SELECT min(abs_path) FROM video_files vf WHERE vf.video_id = c.video_id) "
        "FROM visual_tokens t JOIN clips c USING (clip_id) "
        "JOIN clip_features f ON f.clip_id = t.clip_id AND f.encoder = ? "
        "AND f.encoder_version = ? WHERE t.codebook_id = ?",
        [encoder, version, cb_id]).fetchall()
    con.close()
    by_token: dict[int, list] = {}
    for r in rows:
        by_token.setdefault(int(r[0]), []).append(r)
    chosen = sorted(by_token, key=lambda t: (-len(by_token[t]), t))[:n_tokens]
    leaves = tree.centroids[-1]
    label_w = 90
    canvas = Image.new("RGB", (label_w + per_token * (THUMB + 4), max(1, len(chosen)) *
                               (THUMB + 4)), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for row_i, tok in enumerate(chosen):
        members = by_token[tok]
        x = np.asarray([m[4] for m in members], np.float32)
        dist = ((x - leaves[tok]) ** 2).sum(1)
        y = row_i * (THUMB + 4)
        draw.text((4, y + THUMB // 2 - 12), f"token {tok}\n{len(members)} clips",
                  fill=(230, 230, 230))
        for col, k in enumerate(np.argsort(dist)[:per_token]):
            _, _, start, end, _, path = members[int(k)]
            tile = Image.fromarray(_middle_frame(path, start, end))
            canvas.paste(tile, (label_w + col * (THUMB + 4), y))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out, cb_id
