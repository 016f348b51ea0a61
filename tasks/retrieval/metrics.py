"""Text<->video retrieval metrics: R@K, median and mean rank of the first correct candidate.

Conventions (they match CLIP4Clip's ``compute_metrics`` on scores without ties):

- A query's **rank** is the 1-based position of its best-ranked correct candidate (1 = top).
  A query may have several correct candidates (video -> its captions); only the first counts.
- **R@K** = percent of queries with rank <= K. **MdR** = ``np.median`` of the ranks (the mean of
  the two middle ranks for an even count, as CLIP4Clip). **MnR** = mean rank.
- **Ties** (equal float scores) are resolved by ``ties``:
  ``"pessimistic"`` (default): every wrong candidate scoring exactly the best correct
  candidate's score ranks ahead of it, so a constant scorer gets the worst rank, never the best;
  ``"optimistic"``: tied wrong candidates rank behind it;
  ``"index"``: the order of a stable descending sort (lower candidate index first), which is
  deterministic and what an argsort-based implementation reports.
- **Top-k lists** (what an ANN index returns): the rank is the position of the first correct
  item inside the list; a query whose correct items are all missing gets ``miss_rank``,
  ``k + 1`` by default. With that default R@K for K <= k and MdR (while it is <= k) are exact,
  and MnR is a lower bound; pass ``math.inf`` to make MnR infinite instead. With ``scores``
  the same tie rule applies among the listed items. Entries ``-1`` or ``None`` are padding.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Ties = Literal["pessimistic", "optimistic", "index"]
TIES: tuple[str, ...] = ("pessimistic", "optimistic", "index")
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


@dataclass(frozen=True)
class RetrievalMetrics:
    """Metrics of one retrieval direction; R@K in percent, ranks 1-based."""

    r1: float
    r5: float
    r10: float
    mdr: float
    mnr: float
    n_queries: int
    n_candidates: int

    def as_row(self) -> dict[str, float | int]:
        """The metric columns of the ``eval_results`` table, by name."""
        return asdict(self)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"unknown tie rule {ties!r}; expected one of {TIES}")


def positives_mask(positives: np.ndarray | Sequence[int | Collection[int]],
                   n_queries: int, n_candidates: int) -> np.ndarray:
    """Ground truth as a boolean (queries, candidates) matrix.

    Args:
        positives: a boolean matrix of that shape; or, per query, one correct candidate index
            or a collection of them (a 1-D integer array is one index per query).
        n_queries: rows of the similarity matrix.
        n_candidates: columns of the similarity matrix.

    Returns:
        ``mask[q, c]`` is True when candidate ``c`` is correct for query ``q``.

    Raises:
        ValueError: on a shape mismatch, an index out of range, or a query with no correct
            candidate (its rank would be undefined).
    """
    if isinstance(positives, np.ndarray) and positives.dtype == bool:
        if positives.shape != (n_queries, n_candidates):
            raise ValueError(f"positives mask has shape {positives.shape}, "
                             f"expected {(n_queries, n_candidates)}")
        mask = positives.copy()
    else:
        if len(positives) != n_queries:
            raise ValueError(f"{len(positives)} ground-truth entries for {n_queries} queries")
        mask = np.zeros((n_queries, n_candidates), dtype=bool)
        for q, pos in enumerate(positives):
            idx = np.atleast_1d(np.asarray(list(pos) if isinstance(pos, Collection) else pos))
            if idx.size and (idx.min() < 0 or idx.max() >= n_candidates):
                raise ValueError(f"query {q}: candidate index out of range 0..{n_candidates - 1}"
                                 f" in {idx.tolist()}")
            mask[q, idx.astype(np.int64)] = True
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(f"query {int(empty[0])} has no correct candidate "
                         f"({empty.size} such queries)")
    return mask


def first_correct_ranks(sim: np.ndarray, positives: np.ndarray | Sequence[int | Collection[int]],
                        ties: Ties = "pessimistic", chunk: int = 1024) -> np.ndarray:
    """1-based rank of each query's best-ranked correct candidate in a similarity matrix.

    Args:
        sim: (queries, candidates) scores, higher = more similar.
        positives: ground truth (see :func:`positives_mask`).
        ties: how equal scores are ordered (module docstring).
        chunk: queries processed at once (bounds memory).

    Returns:
        int64 array (queries,) of ranks in ``1..candidates``.
    """
    _check_ties(ties)
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D, got shape {sim.shape}")
    if not np.isfinite(sim).all():
        raise ValueError("similarity matrix contains NaN or infinite scores")
    mask = positives_mask(positives, *sim.shape)
    ranks = np.empty(sim.shape[0], dtype=np.int64)
    for s in range(0, sim.shape[0], chunk):
        block, m = sim[s : s + chunk], mask[s : s + chunk]
        if ties == "index":
            order = np.argsort(-block, axis=1, kind="stable")
            ranks[s : s + chunk] = np.argmax(np.take_along_axis(m, order, axis=1), axis=1) + 1
            continue
        best = np.where(m, block, -np.inf).max(axis=1, keepdims=True)
        ahead = (block >= best) if ties == "pessimistic" else (block > best)
        ranks[s : s + chunk] = 1 + (ahead & ~m).sum(axis=1)
    return ranks


def _as_set(pos: Hashable | Collection[Hashable]) -> set[Hashable]:
    if isinstance(pos, str | bytes) or not isinstance(pos, Collection):
        return {pos}
    return set(pos)


def _valid(item: object) -> bool:
    return item is not None and not (isinstance(item, int | np.integer) and item < 0)


def topk_ranks(topk: np.ndarray | Sequence[Sequence[Hashable]],
               positives: Sequence[Hashable | Collection[Hashable]], *,
               scores: np.ndarray | None = None, ties: Ties = "pessimistic",
               miss_rank: float | None = None) -> np.ndarray:
    """Rank of the first correct item in ranked top-k lists (e.g. from a FAISS search).

    Args:
        topk: (queries, k) candidate ids, best first (ints, or strings such as item ids);
            ``-1``/``None`` entries are padding.
        positives: per query, the correct id or a collection of correct ids.
        scores: optional (queries, k) scores of ``topk``; with them ties among listed items
            follow ``ties``, without them the list order is taken as is.
        ties: tie rule (module docstring); ``"index"`` keeps the list order.
        miss_rank: rank given when no correct id is listed; default ``k + 1``.

    Returns:
        float64 array (queries,) of ranks (``miss_rank`` for misses).
    """
    _check_ties(ties)
    rows = [list(r) for r in topk]
    if len(rows) != len(positives):
        raise ValueError(f"{len(positives)} ground-truth entries for {len(rows)} top-k lists")
    k = max((len(r) for r in rows), default=0)
    miss = float(k + 1 if miss_rank is None else miss_rank)
    ranks = np.full(len(rows), miss, dtype=np.float64)
    for q, (row, pos) in enumerate(zip(rows, positives, strict=True)):
        pos_set = _as_set(pos)
        hit = [j for j, c in enumerate(row) if _valid(c) and c in pos_set]
        if not hit:
            continue
        first = hit[0]
        if scores is None or ties == "index":
            ranks[q] = first + 1
            continue
        s = np.asarray(scores[q], dtype=np.float64)
        best = s[first]
        wrong = [j for j, c in enumerate(row) if _valid(c) and c not in pos_set]
        ahead = (s[wrong] >= best) if ties == "pessimistic" else (s[wrong] > best)
        ranks[q] = 1 + int(ahead.sum())
    return ranks


def recall_curve(ranks: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """R@K in percent for each K in ``ks`` (for recall@K plots).

    Args:
        ranks: 1-based ranks, one per query.
        ks: cut-offs.

    Returns:
        float64 array aligned with ``ks``.
    """
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks: at least one query is needed")
    return np.array([(r <= k).mean() * 100.0 for k in ks], dtype=np.float64)


def metrics_from_ranks(ranks: np.ndarray, n_candidates: int) -> RetrievalMetrics:
    """R@1/5/10 (percent), MdR and MnR from 1-based first-correct ranks.

    Args:
        ranks: one rank per query (1 = top); may hold a miss rank (k+1 or inf).
        n_candidates: candidates each query ranked (recorded, not used in the formulas).

    Returns:
        The metrics.
    """
    r = np.asarray(ranks, dtype=np.float64)
    r1, r5, r10 = recall_curve(r, DEFAULT_KS)
    return RetrievalMetrics(r1=float(r1), r5=float(r5), r10=float(r10),
                            mdr=float(np.median(r)), mnr=float(np.mean(r)),
                            n_queries=int(r.size), n_candidates=int(n_candidates))


def retrieval_metrics(sim: np.ndarray, positives: np.ndarray | Sequence[int | Collection[int]],
                      ties: Ties = "pessimistic") -> RetrievalMetrics:
    """Exact metrics from a full (queries, candidates) similarity matrix.

    Args:
        sim: scores, higher = more similar (text->video: rows are captions).
        positives: ground truth (see :func:`positives_mask`).
        ties: tie rule (module docstring).

    Returns:
        The metrics.
    """
    return metrics_from_ranks(first_correct_ranks(sim, positives, ties), np.shape(sim)[1])


def topk_metrics(topk: np.ndarray | Sequence[Sequence[Hashable]],
                 positives: Sequence[Hashable | Collection[Hashable]], n_candidates: int, *,
                 scores: np.ndarray | None = None, ties: Ties = "pessimistic",
                 miss_rank: float | None = None) -> RetrievalMetrics:
    """Metrics from ranked top-k lists, e.g. through the published ANN index.

    Args:
        topk: (queries, k) ids, best first; k must be >= 10 so that R@10 is exact.
        positives: per query, the correct id or a collection of correct ids.
        n_candidates: size of the searched collection.
        scores: optional scores of ``topk`` for the tie rule.
        ties: tie rule (module docstring).
        miss_rank: rank of a query whose correct ids are all missing (default k+1).

    Returns:
        The metrics (MnR is a lower bound when some queries miss and miss_rank is finite).

    Raises:
        ValueError: when k < 10 (misses would count as hits for R@10).
    """
    k = max((len(r) for r in topk), default=0)
    if k < max(DEFAULT_KS):
        raise ValueError(f"top-{k} lists cannot give R@{max(DEFAULT_KS)}: "
                         f"search with k >= {max(DEFAULT_KS)}")
    ranks = topk_ranks(topk, positives, scores=scores, ties=ties, miss_rank=miss_rank)
    return metrics_from_ranks(ranks, n_candidates)


__all__ = ["DEFAULT_KS", "TIES", "RetrievalMetrics", "Ties", "first_correct_ranks",
           "metrics_from_ranks", "positives_mask", "recall_curve", "retrieval_metrics",
           "topk_metrics", "topk_ranks"]
