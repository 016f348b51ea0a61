"""Retrieval metrics against reference formulas written independently here.

The reference is CLIP4Clip's ``compute_metrics`` (sort descending, find the ground truth's
0-based position, R@K = mean(rank < K) * 100, MR = median + 1, MeanR = mean + 1). On tied
scores its ``np.where(sorted - diag == 0)`` finds several positions per row; the reference
below takes the first one (optimistic) or the last one (pessimistic) explicitly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.retrieval import metrics as rm
from warehouse import schema


def clip4clip_metrics(x: np.ndarray, pick: str = "first") -> dict[str, float]:
    """CLIP4Clip's compute_metrics on a square matrix whose diagonal is the ground truth."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    rows, cols = np.where(sx - d == 0)
    ind = np.array([cols[rows == r][0 if pick == "first" else -1] for r in range(len(x))])
    return {"r1": float(np.sum(ind == 0)) * 100 / len(ind),
            "r5": float(np.sum(ind < 5)) * 100 / len(ind),
            "r10": float(np.sum(ind < 10)) * 100 / len(ind),
            "mdr": float(np.median(ind)) + 1, "mnr": float(np.mean(ind)) + 1}


def lexsort_ranks(sim: np.ndarray, mask: np.ndarray, ties: str) -> np.ndarray:
    """Rank of the first correct candidate by an explicit full sort with a tie key."""
    out = []
    for s, m in zip(sim, mask, strict=True):
        idx = np.arange(len(s))
        if ties == "pessimistic":  # on equal score: wrong candidates first
            order = np.lexsort((idx, m.astype(int), -s))
        elif ties == "optimistic":  # on equal score: correct candidates first
            order = np.lexsort((idx, (~m).astype(int), -s))
        else:  # on equal score: lower candidate index first
            order = np.lexsort((idx, -s))
        out.append(int(np.flatnonzero(m[order])[0]) + 1)
    return np.array(out)


def as_dict(m: rm.RetrievalMetrics) -> dict[str, float]:
    return {k: getattr(m, k) for k in ("r1", "r5", "r10", "mdr", "mnr")}


def test_hand_made_matrix() -> None:
    sim = np.array([[0.9, 0.1, 0.2, 0.3],   # ground truth on top: rank 1
                    [0.8, 0.5, 0.7, 0.1],   # two above: rank 3
                    [0.1, 0.2, 0.3, 0.4],   # one above: rank 2
                    [0.9, 0.8, 0.7, 0.1]])  # last: rank 4
    assert rm.first_correct_ranks(sim, np.arange(4)).tolist() == [1, 3, 2, 4]
    m = rm.retrieval_metrics(sim, np.arange(4))
    expected = {"r1": 25.0, "r5": 100.0, "r10": 100.0, "mdr": 2.5, "mnr": 2.5}
    assert as_dict(m) == expected
    assert clip4clip_metrics(sim) == pytest.approx(expected)
    assert (m.n_queries, m.n_candidates) == (4, 4)


@pytest.mark.parametrize("n", [7, 50, 300])
@pytest.mark.parametrize("ties", rm.TIES)
def test_random_matrices_match_clip4clip(n: int, ties: str) -> None:
    rng = np.random.default_rng(n)
    sim = rng.standard_normal((n, n)) + 2.0 * np.eye(n) * rng.random(n)
    ours = rm.retrieval_metrics(sim, np.arange(n), ties=ties)  # type: ignore[arg-type]
    assert as_dict(ours) == pytest.approx(clip4clip_metrics(sim))


def test_ties_follow_the_documented_rule() -> None:
    sim = np.array([[0.5, 0.5, 0.1],    # correct (col 0) tied with col 1
                    [0.7, 0.7, 0.7],    # all tied; correct is col 1
                    [0.2, 0.9, 0.2]])   # correct (col 2) tied with col 0, col 1 above
    gt = np.arange(3)
    assert rm.first_correct_ranks(sim, gt, "pessimistic").tolist() == [2, 3, 3]
    assert rm.first_correct_ranks(sim, gt, "optimistic").tolist() == [1, 1, 2]
    assert rm.first_correct_ranks(sim, gt, "index").tolist() == [1, 2, 3]
    assert as_dict(rm.retrieval_metrics(sim, gt)) == pytest.approx(clip4clip_metrics(sim, "last"))
    assert as_dict(rm.retrieval_metrics(sim, gt, "optimistic")) == pytest.approx(
        clip4clip_metrics(sim, "first"))


def test_constant_scorer_gets_the_worst_rank() -> None:
    sim = np.zeros((20, 20))
    assert rm.retrieval_metrics(sim, np.arange(20)).r1 == 0.0
    assert rm.retrieval_metrics(sim, np.arange(20)).mdr == 20.0
    assert rm.retrieval_metrics(sim, np.arange(20), "optimistic").r1 == 100.0


@pytest.mark.parametrize("ties", rm.TIES)
def test_random_ties_and_several_correct_candidates(ties: str) -> None:
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 6, size=(80, 40)).astype(np.float32)  # many ties
    mask = rng.random((80, 40)) < 0.08
    mask[np.arange(80), rng.integers(0, 40, 80)] = True        # >= 1 correct per query
    ours = rm.first_correct_ranks(sim, mask, ties)  # type: ignore[arg-type]
    np.testing.assert_array_equal(ours, lexsort_ranks(sim, mask, ties))
    as_sets = [set(np.flatnonzero(row).tolist()) for row in mask]
    np.testing.assert_array_equal(rm.first_correct_ranks(sim, as_sets, ties), ours)  # type: ignore[arg-type]


def test_video_to_text_with_several_captions() -> None:
    # 2 videos x 4 captions; captions 0,1 belong to video 0 and 2,3 to video 1.
    sim = np.array([[0.1, 0.6, 0.8, 0.2],
                    [0.9, 0.3, 0.2, 0.1]])
    m = rm.retrieval_metrics(sim, [{0, 1}, {2, 3}])
    assert rm.first_correct_ranks(sim, [{0, 1}, {2, 3}]).tolist() == [2, 3]
    assert (m.r1, m.mdr, m.mnr) == (0.0, 2.5, 2.5)


def exact_topk(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


# An argsort top-k cuts tie groups by index, so on tied scores only "index" agrees exactly.
@pytest.mark.parametrize(("ties", "tied"), [("pessimistic", False), ("optimistic", False),
                                            ("index", False), ("index", True)])
def test_topk_lists_agree_with_exact_ranks(ties: str, tied: bool) -> None:
    rng = np.random.default_rng(5)
    sim = rng.standard_normal((200, 100))
    if tied:
        sim = rng.integers(0, 30, size=(200, 100)).astype(np.float32)
    gt = rng.integers(0, 100, 200)
    exact = rm.first_correct_ranks(sim, gt, ties)  # type: ignore[arg-type]
    ids, scores = exact_topk(sim, 12)
    ranks = rm.topk_ranks(ids, gt, scores=scores, ties=ties)  # type: ignore[arg-type]
    inside = exact <= 12
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(ranks[inside], exact[inside])
    assert (ranks[~inside] == 13).all()
    inf = rm.topk_ranks(ids, gt, scores=scores, ties=ties, miss_rank=math.inf)  # type: ignore[arg-type]
    assert np.isinf(inf[~inside]).all()


def test_topk_ties_hand_made() -> None:
    ids = [[5, 2, 7, 1]]
    scores = np.array([[0.9, 0.8, 0.8, 0.7]])
    for gt, want in ((7, {"pessimistic": 3, "optimistic": 2, "index": 3}),
                     (2, {"pessimistic": 3, "optimistic": 2, "index": 2})):
        for ties, rank in want.items():
            assert rm.topk_ranks(ids, [gt], scores=scores, ties=ties).tolist() == [rank]  # type: ignore[arg-type]
    assert rm.topk_ranks(ids, [7]).tolist() == [3.0]  # no scores: the list order


def test_topk_metrics_through_an_index_and_string_ids() -> None:
    rng = np.random.default_rng(8)
    sim = rng.standard_normal((60, 300))
    gt = rng.integers(0, 300, 60)
    ids, scores = exact_topk(sim, 10)
    names = np.array([f"clip-{i}" for i in range(300)], dtype=object)
    through = rm.topk_metrics(names[ids], [f"clip-{g}" for g in gt], 300, scores=scores)
    exact = rm.retrieval_metrics(sim, gt)
    assert (through.r1, through.r5, through.r10) == (exact.r1, exact.r5, exact.r10)
    exact_ranks = rm.first_correct_ranks(sim, gt)
    assert through.mnr == pytest.approx(np.minimum(exact_ranks, 11).mean())
    assert through.mnr <= exact.mnr


def test_topk_padding_and_short_lists() -> None:
    ids = np.array([[3, -1, -1, -1, -1, -1, -1, -1, -1, -1],
                    [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1]])
    assert rm.topk_ranks(ids, [3, -1]).tolist() == [1.0, 11.0]
    with pytest.raises(ValueError, match="search with k >= 10"):
        rm.topk_metrics(ids[:, :5], [3, 3], 100)


def test_bad_ground_truth_is_named() -> None:
    sim = np.zeros((2, 3))
    with pytest.raises(ValueError, match="query 1 has no correct candidate"):
        rm.first_correct_ranks(sim, [{0}, set()])
    with pytest.raises(ValueError, match="out of range"):
        rm.first_correct_ranks(sim, [0, 3])
    with pytest.raises(ValueError, match="NaN"):
        rm.first_correct_ranks(np.full((2, 3), np.nan), [0, 1])
    with pytest.raises(ValueError, match="unknown tie rule"):
        rm.first_correct_ranks(sim, [0, 1], "random")  # type: ignore[arg-type]


def test_recall_curve_and_eval_results_columns() -> None:
    ranks = np.array([1, 2, 3, 50])
    assert rm.recall_curve(ranks, [1, 2, 10, 100]).tolist() == [25.0, 50.0, 75.0, 100.0]
    row = rm.metrics_from_ranks(ranks, 100).as_row()
    assert set(row) <= set(schema.table("eval_results").arrow.names)
    assert row["mdr"] == 2.5 and row["mnr"] == 14.0
