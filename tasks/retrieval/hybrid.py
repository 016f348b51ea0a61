"""Lexical and hybrid retrieval measured on a split, and the hybrid weight tuned on validation.

The rule that keeps the figures honest is **leave-one-out**: every caption of the split is a
query, and the documents made from that caption's own text segment are left out of its
ranking, so a query never finds its clip through its own words. (BM25's corpus statistics
still count them: a word of the query is then slightly *less* rare, never a help.) What
lexical search can find is the clip's *other* text: speech, subtitles, other captions. The
BM25 index of an evaluation holds the split's documents only, as the exact dense rows rank
the split's clips only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.retrieval.lexical import (
    DEFAULT_WEIGHT,
    WEIGHT_GRID,
    bm25_index,
    clip_scores,
    doc_scores,
    fuse,
    tokenize,
)
from tasks.retrieval.metrics import first_correct_ranks, metrics_from_ranks


def lexical_sims(docs: pa.Table, clip_ids: Sequence[str], segment_ids: Sequence[str],
                 texts: Sequence[str], leave_one_out: bool = True) -> np.ndarray:
    """(queries, clips) best BM25 score of each clip for each caption, leave-one-out.

    Args:
        docs: documents (:func:`tasks.retrieval.lexical.clip_documents`); those of other
            clips are ignored.
        clip_ids: the candidate clips.
        segment_ids: each query's own text segment (its documents are left out).
        texts: the queries.
        leave_one_out: False keeps each query's own documents (known-item search: finding a
            moment by the words said or written there; used for tuning, never for figures).
    """
    at = {c: i for i, c in enumerate(clip_ids)}
    keep = [i for i, c in enumerate(docs.column("clip_id").to_pylist()) if c in at]
    out = np.zeros((len(texts), len(clip_ids)), np.float32)
    if not keep:
        return out
    sub = docs.take(pa.array(keep, pa.int64()))
    bm = bm25_index(sub)
    doc_clip = np.asarray([at[c] for c in sub.column("clip_id").to_pylist()], np.int64)
    doc_seg = np.asarray(sub.column("segment_id").to_pylist(), dtype=object)
    for q, words in enumerate(tokenize(list(texts))):
        s = doc_scores(bm, words, sub.num_rows)
        if leave_one_out:
            s[doc_seg == segment_ids[q]] = 0.0
        out[q] = clip_scores(s, doc_clip, len(clip_ids))
    return out


def hybrid_sims(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """Row-wise :func:`~tasks.retrieval.lexical.fuse` of two (queries, clips) matrices."""
    return np.stack([fuse(d, lx, weight) for d, lx in zip(dense, lexical, strict=True)]) \
        if len(dense) else np.zeros_like(dense)


def tune_weight(dense: np.ndarray, lexical: np.ndarray, positives: Sequence[Sequence[int]],
                known_item: np.ndarray | None = None) -> dict[str, Any]:
    """The weight of :data:`WEIGHT_GRID` with the best text->clip R@1 on these queries (then
    R@5, R@10, the lower mean rank; then the one nearest the default), with every weight's
    R@1.

    ``known_item``: the same queries' lexical scores with their own text kept. Hybrid search
    serves two uses: describing what is seen (the leave-one-out ``lexical``: words can only
    help through a clip's other text) and finding the moment where given words are said or
    written (``known_item``); with it, each weight is scored by the mean of both."""
    sets = [lexical] + ([known_item] if known_item is not None else [])
    scored = []
    for w in WEIGHT_GRID:
        ms = [metrics_from_ranks(first_correct_ranks(hybrid_sims(dense, lx, w), positives),
                                 dense.shape[1]) for lx in sets]
        mean = [float(np.mean([getattr(m, f) for m in ms])) for f in ("r1", "r5", "r10", "mnr")]
        scored.append((mean[0], mean[1], mean[2], -mean[3], -abs(w - DEFAULT_WEIGHT), w,
                       [round(m.r1, 2) for m in ms]))
    best = max(scored, key=lambda t: t[:6])
    out = {"weight": best[5], "r1": {str(t[5]): t[6][0] for t in scored},
           "n_queries": len(positives)}
    if known_item is not None:
        out["r1_known_item"] = {str(t[5]): t[6][1] for t in scored}
    return out


def rows(dense: np.ndarray, lexical: np.ndarray, positives: Sequence[Sequence[int]],
         weight: float) -> list[dict[str, Any]]:
    """The exact clip-level text->clip rows of lexical search alone and of the fusion."""
    n = dense.shape[1]
    out = []
    for name, sim in (("lexical", lexical), ("hybrid", hybrid_sims(dense, lexical, weight))):
        ranks = first_correct_ranks(sim, positives)
        out.append({"kind": name, "level": "clip", "direction": "t2v", "mode": "exact",
                    **metrics_from_ranks(ranks, n).as_row(), "ranks": ranks})
    return out
