"""Text <-> video retrieval evaluation on a held-out split, exact and through the FAISS index.

Queries and candidates come from one split (``test`` by default):

- clip level: each caption's correct candidates are the clips of its video it overlaps in time;
  candidates are all clips of the split. ``v2t``: each clip's correct captions are those.
- video level: a caption's correct candidate is its video; candidates are the split's videos.

Exact metrics rank every candidate by cosine similarity (``tasks/retrieval/metrics.py``,
pessimistic ties: clips the model cannot tell apart never help it). ``index`` ranks through the
published ANN index (t2v only: the index holds clips and videos of every split, results are
filtered to the split's candidates), so ``exact`` minus ``index`` is what the ANN costs.
``videobert+rerank`` (mode ``index``) re-scores each caption's top index candidates with the
alignment head fused with the similarity (:mod:`tasks.retrieval.rerank`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tasks.retrieval.metrics import first_correct_ranks, metrics_from_ranks, topk_metrics
from tasks.retrieval.rerank import RERANK_TOP
from warehouse import queries
from warehouse.store import Warehouse

"""Candidates per caption re-scored by the alignment head."""


@dataclass(frozen=True)
class EvalSet:
    """Queries, candidates and ground truth of one split."""

    split: str
    segment_ids: list[str]
    segment_videos: list[str]
    clip_ids: list[str]
    clip_videos: list[str]
    video_ids: list[str]
    text_to_clips: list[list[int]]
    text_to_video: list[int]

    def clip_to_texts(self) -> tuple[list[int], list[list[int]]]:
        """Clips that have a caption (v2t queries) and, for each, its captions."""
        by_clip: dict[int, list[int]] = {}
        for t, clips in enumerate(self.text_to_clips):
            for c in clips:
                by_clip.setdefault(c, []).append(t)
        keys = sorted(by_clip)
        return keys, [by_clip[k] for k in keys]


#: Captions below which a split's recall figures mean little: with 20 queries one hit moves
#: R@1 by 5 points. ``videobert run`` and ``evaluate`` say so under a smaller table.
MIN_MEANINGFUL_QUERIES = 20


def too_few_queries(rows: Sequence[dict], split: str, requested: str | None = None) -> str | None:
    """The "too few captioned clips to evaluate" line for an evaluation's rows, or None when
    the ``requested`` split (default ``split``) had enough captions to mean something."""
    n = max((int(r.get("n_queries") or 0) for r in rows if r.get("direction") == "t2v"),
            default=0)
    requested = requested or split
    if split == requested and n >= MIN_MEANINGFUL_QUERIES:
        return None
    where = (f"the {requested} split has no captioned clips, so the table is on {split} "
             f"({n} caption(s))" if split != requested else
             f"the {split} split has {n} caption(s)")
    return (f"too few captioned clips to evaluate: {where}; at least "
            f"{MIN_MEANINGFUL_QUERIES} are needed for recall figures that mean anything, so "
            "read the table as a check that the pipeline ran, not as a result (for a real "
            "one: your own captioned videos, or `videobert samples --synthetic 200`)")


def load_eval_set(wh: Warehouse, split: str = "test") -> EvalSet:
    """The split's captions, clips and videos with their ground truth."""
    con = wh.connect()
    pairs = con.execute(queries.load("eval_text_clip_pairs"), [split]).fetchall()
    clips = con.execute(queries.load("eval_clips"), [split]).fetchall()
    con.close()
    clip_index = {c: i for i, (c, _) in enumerate(clips)}
    videos = sorted({v for _, v in clips})
    video_index = {v: i for i, v in enumerate(videos)}
    return EvalSet(
        split=split, segment_ids=[p[0] for p in pairs], segment_videos=[p[1] for p in pairs],
        clip_ids=[c for c, _ in clips], clip_videos=[v for _, v in clips], video_ids=videos,
        text_to_clips=[[clip_index[c] for c in p[2]] for p in pairs],
        text_to_video=[video_index[p[1]] for p in pairs])


def vectors(wh: Warehouse, encoder: str, model_run: str, kind: str,
            ids: Sequence[str]) -> np.ndarray:
    """(len(ids), d) embeddings in ``ids`` order.

    Raises:
        LookupError: when an item has no embedding (names the first few missing).
    """
    con = wh.connect()
    got = dict(con.execute(queries.load("embedding_vectors"),
                           [encoder, model_run, kind]).fetchall())
    con.close()
    missing = [i for i in ids if i not in got]
    if missing:
        raise LookupError(f"{len(missing)} {kind} item(s) have no {encoder}/{model_run} "
                          f"embedding (e.g. {missing[:3]}): run `videobert index` first")
    return np.asarray([got[i] for i in ids], dtype=np.float32)


def _row(level: str, direction: str, mode: str, ranks: np.ndarray, n_cand: int
         ) -> dict[str, Any]:
    return {"level": level, "direction": direction, "mode": mode,
            **metrics_from_ranks(ranks, n_cand).as_row(), "ranks": ranks}


def exact_rows(es: EvalSet, text: np.ndarray, clip: np.ndarray, video: np.ndarray
               ) -> list[dict[str, Any]]:
    """Exact t2v and v2t at clip and video level (ranks included for curves)."""
    out = []
    sim_c = text @ clip.T  # (texts, clips)
    out.append(_row("clip", "t2v", "exact", first_correct_ranks(sim_c, es.text_to_clips),
                    len(es.clip_ids)))
    qclips, truth = es.clip_to_texts()
    out.append(_row("clip", "v2t", "exact", first_correct_ranks(sim_c.T[qclips], truth),
                    len(es.segment_ids)))
    sim_v = text @ video.T  # (texts, videos)
    out.append(_row("video", "t2v", "exact", first_correct_ranks(sim_v, es.text_to_video),
                    len(es.video_ids)))
    by_video: dict[int, list[int]] = {}
    for t, v in enumerate(es.text_to_video):
        by_video.setdefault(v, []).append(t)
    vq = sorted(by_video)
    out.append(_row("video", "v2t", "exact",
                    first_correct_ranks(sim_v.T[vq], [by_video[v] for v in vq]),
                    len(es.segment_ids)))
    return out


def index_row(es: EvalSet, text: np.ndarray, index: Any, level: str, k: int = 10
              ) -> dict[str, Any]:
    """t2v through a loaded FAISS index, its results filtered to the split's candidates."""
    cands = es.clip_ids if level == "clip" else es.video_ids
    allowed = set(cands)
    # enough neighbours that k of them are in the split even when it is a small share
    depth = int(min(index.ntotal, max(4 * k, np.ceil(k * index.ntotal / max(len(cands), 1))
                                      * 4)))
    _, found = index.search(np.ascontiguousarray(text, dtype=np.float32), depth)
    topk = [[i for i in row if i in allowed][:k] for row in found]
    topk = [row + [None] * (k - len(row)) for row in topk]
    if level == "clip":
        truth = [{es.clip_ids[c] for c in cs} for cs in es.text_to_clips]
    else:
        truth = [es.video_ids[v] for v in es.text_to_video]
    m = topk_metrics(topk, truth, len(cands))
    return {"level": level, "direction": "t2v", "mode": "index", **m.as_row()}


def _index_candidates(es: EvalSet, text: np.ndarray, index: Any, k: int) -> list[list[int]]:
    """Per caption, the first ``k`` split clips the index returns (indices into es.clip_ids)."""
    at = {c: i for i, c in enumerate(es.clip_ids)}
    depth = int(min(index.ntotal, max(4 * k, np.ceil(k * index.ntotal / max(len(at), 1)) * 4)))
    _, found = index.search(np.ascontiguousarray(text, dtype=np.float32), depth)
    return [[at[i] for i in row if i in at][:k] for row in found]


@torch.no_grad()
def rerank_row(es: EvalSet, text: np.ndarray, clip: np.ndarray, index: Any, model: Any,
               tokenizer: Any, texts: Sequence[str], clip_tokens: Sequence[int],
               clip_feats: Sequence[np.ndarray | None] | None, *, top: int = RERANK_TOP,
               device: Any = "cpu") -> dict[str, Any]:
    """Clip-level t2v through the index, its top ``top`` split candidates re-ranked.

    Each caption's candidates come from the published index (as the ``index`` row); the first
    ``top`` are re-scored by similarity + ``rerank_weight`` x the alignment log-odds of
    ``[CLS] caption [>] clip [SEP]`` (:mod:`tasks.retrieval.rerank`; weight 1 for a model
    whose weight was never tuned); the rest keep their order behind them.
    """
    from tasks.retrieval import rerank as rr

    k = max(top, 10)
    cands = _index_candidates(es, text, index, k)
    weight = model.config.rerank_weight
    weight = 1.0 if weight is None else float(weight)
    model.eval()
    ranked = []
    for q, row in enumerate(cands):
        head = np.asarray(row[:top], dtype=np.int64)
        if len(head):
            align = rr.rerank_candidates(model, tokenizer, [texts[q]], head[None, :],
                                         clip_tokens, clip_feats, device=device)[0]
            fused = text[q] @ clip[head].T + weight * align
            head = head[np.argsort(-fused, kind="stable")]
        ranked.append([es.clip_ids[i] for i in [*head.tolist(), *row[top:]]])
    ranked = [r + [None] * (k - len(r)) for r in ranked]
    truth = [{es.clip_ids[c] for c in cs} for cs in es.text_to_clips]
    m = topk_metrics(ranked, truth, len(es.clip_ids))
    return {"level": "clip", "direction": "t2v", "mode": "index", **m.as_row(),
            "rerank_weight": weight, "rerank_top": top}
