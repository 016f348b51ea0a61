"""Retrieval embeddings into the warehouse: clips, text segments and videos per encoder.

One row per (item, kind, encoder, model_run) in ``embeddings``, unit length, ``FLOAT[]``:

- ``videobert``: a fine-tuned run's ``embed_video`` of each clip's visual token (with the
  clip's feature when the run reads features) and ``embed_text`` of each segment
  (``model_run`` = the fine-tune run);
- ``concepts`` / ``clip``: the clip vectors already in ``clip_features`` and the encoder's own
  text tower for segments (``model_run`` = the feature version, as these are not trained here).

A video's embedding is the normalised mean of its clip embeddings. Incremental: only items
without a row for (encoder, model_run) are computed; a video gets its row once, when its clips
arrive (clips of a video never change after ingest).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from warehouse import queries
from warehouse.store import Warehouse, Writer, utcnow

TextEncodeFn = Callable[[Sequence[str]], np.ndarray]


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def present(wh: Warehouse, encoder: str, model_run: str) -> dict[str, set[str]]:
    """Item ids already embedded for (encoder, model_run), per kind."""
    con = wh.connect()
    rows = con.execute(queries.load("embedded_items"), [encoder, model_run]).fetchall()
    con.close()
    out: dict[str, set[str]] = {"clip": set(), "text": set(), "video": set()}
    for item, kind in rows:
        out.setdefault(kind, set()).add(item)
    return out


def rows(kind: str, encoder: str, model_run: str, item_ids: Sequence[str],
         video_ids: Sequence[str], vectors: np.ndarray) -> list[dict[str, Any]]:
    """``embeddings`` rows for one kind (vectors are normalised here)."""
    v = _normalise(vectors)
    now = utcnow()
    return [{"item_id": i, "kind": kind, "encoder": encoder, "model_run": model_run,
             "video_id": vid, "dim": int(v.shape[1]), "vector": v[k].tolist(), "created_at": now}
            for k, (i, vid) in enumerate(zip(item_ids, video_ids, strict=True))]


def pending_texts(wh: Warehouse, done: set[str]) -> tuple[list[str], list[str], list[str]]:
    """Segments without an embedding yet: ids, video ids, texts."""
    con = wh.connect()
    got = [r for r in con.execute(queries.load("text_items")).fetchall() if r[0] not in done]
    con.close()
    return [r[0] for r in got], [r[1] for r in got], [r[2] for r in got]


def commit_embeddings(w: Writer, encoder: str, model_run: str,
                      clips: tuple[Sequence[str], Sequence[str], np.ndarray],
                      texts: tuple[Sequence[str], Sequence[str], np.ndarray],
                      done_videos: set[str], message: str) -> dict[str, int]:
    """Commit new clip and text rows, then video rows for videos that have none yet."""
    parts = []
    new_clips = rows("clip", encoder, model_run, *clips) if len(clips[0]) else []
    new_texts = rows("text", encoder, model_run, *texts) if len(texts[0]) else []
    if new_clips:
        parts.append(w.stage("embeddings", new_clips))
    if new_texts:
        parts.append(w.stage("embeddings", new_texts))
    if parts:
        w.commit(parts, message=message)
    con = w.wh.connect()
    got = con.execute(queries.load("clip_embeddings_of_videos"), [encoder, model_run]).fetchall()
    con.close()
    by_video: dict[str, list[list[float]]] = {}
    for vid, vec in got:
        if vid not in done_videos:
            by_video.setdefault(vid, []).append(vec)
    if by_video:
        vids = sorted(by_video)
        means = np.stack([np.mean(np.asarray(by_video[v], np.float32), axis=0) for v in vids])
        w.commit([w.stage("embeddings", rows("video", encoder, model_run, vids, vids, means))],
                 message=message + " (videos)")
    return {"clip": len(new_clips), "text": len(new_texts), "video": len(by_video)}


def feature_encoder_embeddings(w: Writer, encoder: str, encode_text: TextEncodeFn
                               ) -> dict[str, Any]:
    """Embeddings of an encoder whose clip vectors are in ``clip_features`` (concepts, clip).

    Args:
        w: the warehouse writer.
        encoder: ``concepts`` or ``clip``.
        encode_text: the encoder's text tower (texts -> (N, d) vectors in the clip space).

    Returns:
        ``{"encoder", "model_run", "added": {kind: rows}}``; ``model_run`` is the feature
        version. No features for that encoder -> ``added`` is empty.
    """
    con = w.wh.connect()
    ver = con.execute(queries.load("latest_feature_version"), [encoder]).fetchall()
    if not ver:
        con.close()
        return {"encoder": encoder, "model_run": None, "added": {}}
    version = ver[0][0]
    feats = con.execute(queries.load("features_of_encoder"), [encoder, version]).fetchall()
    con.close()
    done = present(w.wh, encoder, version)
    feats = [f for f in feats if f[0] not in done["clip"]]
    clip_ids, clip_vids = [f[0] for f in feats], [f[1] for f in feats]
    cvec = (np.asarray([f[2] for f in feats], np.float32) if feats
            else np.zeros((0, 1), np.float32))
    tids, tvids, texts = pending_texts(w.wh, done["text"])
    tvec = encode_text(texts) if texts else np.zeros((0, 1), np.float32)
    added = commit_embeddings(w, encoder, version, (clip_ids, clip_vids, cvec),
                              (tids, tvids, tvec), done["video"], f"embeddings {encoder}")
    return {"encoder": encoder, "model_run": version, "added": added}


def videobert_embeddings(w: Writer, model: Any, tokenizer: Any, model_run: str,
                         codebook_id: str, *, device: Any = "cpu",
                         max_text: int = 48) -> dict[str, Any]:
    """Embeddings of a fine-tuned VideoBERT run: each clip's token, each segment's text.

    Args:
        w: the warehouse writer.
        model: the fine-tuned VideoBert, on ``device``.
        tokenizer: its WordPiece tokenizer.
        model_run: the fine-tune run id (``model_run`` of the rows).
        codebook_id: the codebook the model reads (clips without a token are skipped).
        device: the model's device.
        max_text: WordPieces kept per segment.

    Returns:
        ``{"encoder": "videobert", "model_run", "added": {kind: rows}}``.
    """
    from tasks.retrieval.finetune import clip_features, embed_texts, embed_token_seqs

    done = present(w.wh, "videobert", model_run)
    con = w.wh.connect()
    clips = [r for r in con.execute(queries.load("retrieval_clips"), [codebook_id]).fetchall()
             if r[0] not in done["clip"]]
    con.close()
    feats = None
    if model.config.feature_input:  # the model also reads each clip's feature
        table = clip_features(w.wh, model.config.feature_encoder)
        feats = [[table.get(r[0])] for r in clips]
    cvec = embed_token_seqs(model, [(int(r[3]),) for r in clips], feats=feats, device=device)
    tids, tvids, texts = pending_texts(w.wh, done["text"])
    tvec = embed_texts(model, tokenizer, texts, max_text=max_text, device=device)
    added = commit_embeddings(w, "videobert", model_run,
                              ([r[0] for r in clips], [r[1] for r in clips], cvec),
                              (tids, tvids, tvec), done["video"],
                              f"embeddings videobert {model_run}")
    return {"encoder": "videobert", "model_run": model_run, "added": added}
