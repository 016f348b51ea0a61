"""Which FAISS index to build for a collection, and the search parameters it needs.

:func:`choose_index` picks the type from the collection size and a memory budget;
:func:`make_spec` gives one type's defaults (the benchmark builds every type);
:func:`tune_search` picks the smallest ``efSearch`` / ``nprobe`` reaching a recall target.
Vectors are unit length and the metric is inner product (= cosine).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

EXACT_BELOW = 100_000
"""Below this many vectors an exact ``Flat`` index is chosen (when it fits the budget)."""
PQ_MIN_TRAIN = 39 * 256
"""Fewest vectors that train 8-bit product quantisers without FAISS's warning."""
TUNE_TARGET = 0.96
"""Default recall@10 that efSearch/nprobe are tuned to: 0.95 plus a margin for the noise of
a 200-query tuning sample."""
TUNE_GRID = {"efSearch": (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512),
             "nprobe": (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 512, 1024)}


@dataclass(frozen=True)
class IndexSpec:
    """What to build: FAISS factory string, build/search parameters and its memory cost."""

    kind: str
    """flat, hnsw, ivf or ivfpq"""
    factory: str
    d: int
    params: dict[str, int] = field(default_factory=dict)
    bytes_per_vector: float = 0.0
    reason: str = ""
    gpu: bool = False


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def bytes_per_vector(kind: str, n: int, d: int, params: Mapping[str, int]) -> float:
    """Estimated resident bytes per vector of an index (shared parts amortised over ``n``).

    Args:
        kind: flat, hnsw, ivf or ivfpq.
        n: vectors in the index.
        d: dimension.
        params: ``M`` (hnsw), ``nlist`` (ivf*), ``m`` and ``nbits`` (ivfpq).

    Returns:
        Bytes per vector, ids included.
    """
    if kind == "flat":
        return 4 * d + 8
    if kind == "hnsw":  # level-0 links (2M int32), ~1 upper link per vector, levels, offsets
        return 4 * d + 8 + 8 * params["M"] + 4 + 4 + 8
    centroids = 4 * d * params["nlist"] / n
    if kind == "ivf":
        return 4 * d + 8 + centroids
    if kind == "ivfpq":
        codebooks = 4 * d * (1 << params["nbits"]) / n
        return params["m"] * params["nbits"] / 8 + 8 + centroids + codebooks
    raise ValueError(f"unknown index kind {kind!r}")


def make_spec(kind: str, n: int, d: int, *, gpu: bool = False, reason: str = "",
              **overrides: int) -> IndexSpec:
    """The spec of one index kind for ``n`` vectors of dimension ``d``, with default parameters.

    Args:
        kind: flat, hnsw (HNSW32, efConstruction 80), ivf (nlist ~ 4 sqrt(n), a power of two,
            at most n/39; k-means of 10 iterations on a sample of 40 x nlist vectors) or
            ivfpq (same, plus m = d/8 one-byte PQ codes).
        n: vectors to index.
        d: dimension.
        gpu: train and fill on GPU when FAISS has one (IVF types only: FAISS has no GPU
            HNSW, and a Flat build is a copy).
        reason: why this kind was chosen (recorded in the manifest).
        **overrides: parameter values replacing the defaults.

    Returns:
        The spec.
    """
    if kind == "flat":
        params: dict[str, int] = dict(overrides)
        factory = "Flat"
    elif kind == "hnsw":
        params = {"M": 32, "efConstruction": 80, "efSearch": 64} | overrides
        factory = f"HNSW{params['M']}"
    elif kind in ("ivf", "ivfpq"):
        nlist = overrides.get("nlist") or min(_pow2(4 * math.sqrt(n)),
                                              1 << int(math.log2(max(n // 39, 1))))
        params = {"nlist": nlist, "nprobe": min(16, nlist), "niter": 10,
                  "train_size": min(n, max(40 * nlist, PQ_MIN_TRAIN))}
        if kind == "ivfpq":
            params |= {"m": max(1, d // 8), "nbits": 8}
        params |= overrides
        if kind == "ivfpq" and d % params["m"]:
            raise ValueError(f"PQ sub-quantizers m={params['m']} must divide d={d}")
        factory = f"IVF{params['nlist']},Flat" if kind == "ivf" else \
            f"IVF{params['nlist']},PQ{params['m']}x{params['nbits']}"
    else:
        raise ValueError(f"unknown index kind {kind!r}; expected flat, hnsw, ivf or ivfpq")
    return IndexSpec(kind=kind, factory=factory, d=d, params=params,
                     bytes_per_vector=bytes_per_vector(kind, max(n, 1), d, params),
                     reason=reason, gpu=gpu and kind in ("ivf", "ivfpq"))


def choose_index(n: int, d: int, memory_budget_bytes: int, gpu: bool = False, *,
                 exact_below: int = EXACT_BELOW) -> IndexSpec:
    """Pick the index type from the collection size and a memory budget.

    Exact ``Flat`` below ``exact_below`` vectors; above, HNSW32 on CPU (IVF-Flat on GPU, where
    FAISS has no HNSW) when the full vectors fit, else IVF-PQ with the largest number of
    one-byte sub-quantizers (a divisor of d, at most d/8) that fits.

    Args:
        n: vectors to index.
        d: dimension.
        memory_budget_bytes: RAM the index may take.
        gpu: whether the build may use a GPU.
        exact_below: size under which search stays exact.

    Returns:
        The spec; ``params["memory_budget_bytes"]`` records the budget.

    Raises:
        ValueError: when no index type fits the budget.
    """
    if n < 1 or d < 1:
        raise ValueError(f"cannot index {n} vectors of dimension {d}")
    budget = {"memory_budget_bytes": int(memory_budget_bytes), "exact_below": int(exact_below)}
    flat = make_spec("flat", n, d, **budget)
    if n < exact_below and n * flat.bytes_per_vector <= memory_budget_bytes:
        return make_spec("flat", n, d, reason=f"n={n} < {exact_below}: exact search", **budget)
    if n >= exact_below:
        for kind in ("ivf", "hnsw") if gpu else ("hnsw", "ivf"):
            s = make_spec(kind, n, d, gpu=gpu, **budget)
            if n * s.bytes_per_vector <= memory_budget_bytes:
                return make_spec(kind, n, d, gpu=gpu, **budget,
                                 reason=f"n={n} >= {exact_below}, full vectors fit the budget")
    if n < PQ_MIN_TRAIN:
        raise ValueError(f"memory budget {memory_budget_bytes} B cannot hold {n} x {d} vectors "
                         f"({n * flat.bytes_per_vector:.0f} B) and {n} vectors are too few to "
                         f"train product quantisers (>= {PQ_MIN_TRAIN})")
    for m in sorted((m for m in range(1, d // 8 + 1) if d % m == 0), reverse=True):
        s = make_spec("ivfpq", n, d, gpu=gpu, m=m, **budget)
        if n * s.bytes_per_vector <= memory_budget_bytes:
            return make_spec("ivfpq", n, d, gpu=gpu, m=m, **budget,
                             reason=f"full vectors exceed the budget: PQ with {m} B codes")
    raise ValueError(f"memory budget {memory_budget_bytes} B is too small for {n} vectors "
                     f"even with 1-byte PQ codes")


def set_search_params(index: Any, params: Mapping[str, Any]) -> None:
    """Apply ``efSearch`` / ``nprobe`` from ``params`` (others ignored) to a FAISS index."""
    ps = faiss.ParameterSpace()
    for name in ("efSearch", "nprobe"):
        if name in params:
            ps.set_index_parameter(index, name, int(params[name]))


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean recall@k of ANN ids ``found`` against exact ids ``truth``."""
    hits = sum(len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True))
    return hits / (k * len(found))


def exact_topk_ids(queries: np.ndarray, base: np.ndarray, k: int,
                   absent: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k rows of ``base`` by inner product, leaving out the rows in ``absent``.

    Args:
        queries: (q, d) float32.
        base: (n, d) float32; row numbers are the ids.
        k: results per query.
        absent: rows not (yet) in the index under test.

    Returns:
        (q, k) int64 rows, best first.
    """
    extra = 0 if absent is None else len(absent)
    _, rows = faiss.knn(queries, base, min(k + extra, len(base)),
                        metric=faiss.METRIC_INNER_PRODUCT)
    if not extra:
        return rows
    out = np.full((len(rows), k), -1, dtype=np.int64)
    for q, r in enumerate(rows):
        kept = r[~np.isin(r, absent)][:k]
        out[q, : len(kept)] = kept
    return out


def tune_search(index: Any, base: np.ndarray, queries: np.ndarray, spec: IndexSpec,
                target_recall: float = TUNE_TARGET, k: int = 10,
                absent: np.ndarray | None = None) -> dict[str, float]:
    """Smallest efSearch (HNSW) or nprobe (IVF) reaching ``target_recall`` at ``k``.

    Recall is measured against exact top-k. The queries should not be indexed vectors: an
    indexed vector is reached through its own graph links or list, which overstates recall,
    so :func:`tasks.retrieval.index.build_index` holds a sample of rows out of the index while it
    tunes. Queries from another distribution (text embeddings searching clips) can need
    more: pass them as ``tune_queries`` to ``build_index``.

    Args:
        index: the index under test (ids = rows of ``base``).
        base: every vector, indexed or held out.
        queries: unit-length query vectors.
        spec: the index's spec.
        target_recall: recall@k to reach.
        k: cut-off.
        absent: rows of ``base`` not in the index (held out), left out of the exact top-k.

    Returns:
        ``{name: value, "tune_recall": r, "tune_queries": n}``; empty for Flat. IVF-PQ aims
        at 98% of the recall of scanning every list (``tune_ceiling``): PQ codes, not nprobe,
        cap it. When the grid never reaches the target its largest value is kept.
    """
    name = {"hnsw": "efSearch", "ivf": "nprobe", "ivfpq": "nprobe"}.get(spec.kind)
    if name is None or len(queries) == 0:
        return {}
    q = check_unit_vectors(queries, spec.d)
    truth = exact_topk_ids(q, base, k, absent)
    grid = [v for v in TUNE_GRID[name] if name != "nprobe" or v <= spec.params["nlist"]]
    out: dict[str, float] = {}
    if spec.kind == "ivfpq":  # PQ codes cap recall: aim just under what scanning all lists gets
        set_search_params(index, {name: spec.params["nlist"]})
        ceiling = _recall(index.search(q, k)[1], truth, k)
        target_recall = min(target_recall, 0.98 * ceiling)
        out["tune_ceiling"] = round(ceiling, 4)
    value, recall = grid[-1], 0.0
    for v in grid:
        set_search_params(index, {name: v})
        recall = _recall(index.search(q, k)[1], truth, k)
        if recall >= target_recall:
            value = v
            break
    set_search_params(index, {name: value})
    return out | {name: value, "tune_recall": round(recall, 4), "tune_queries": len(q)}


def check_unit_vectors(x: np.ndarray, d: int | None = None) -> np.ndarray:
    """``x`` as a contiguous float32 (n, d) matrix of unit-length rows, or ValueError."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0 or (d is not None and x.shape[1] != d):
        raise ValueError(f"vectors must be a non-empty (n, {d or 'd'}) matrix, got {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-2))
    if bad.size:
        raise ValueError(f"vectors must be L2-normalised: row {int(bad[0])} has norm "
                         f"{norms[bad[0]]:.4f} ({bad.size} such rows)")
    return x
