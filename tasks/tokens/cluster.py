"""VideoBERT's visual tokenizer: hierarchical k-means over clip features.

VideoBERT (Sun et al. 2019) clusters clip features with hierarchical k-means, 4 levels of 12:
12**4 = 20,736 visual tokens. Level 1 clusters all points, then every cluster's points are
clustered into ``branching`` children, and so on. Layout: ``centroids[l]`` (level ``l + 1``) has
shape ``(branching ** (l + 1), d)``; the children of row ``i`` of level ``l`` are rows
``i * branching ... i * branching + branching - 1`` of level ``l + 1``. A token is the leaf row
index; its base-``branching`` digits are the path from the root.

- **Every point counts**: a node with more than ``sample_per_centroid x branching`` points is
  first fitted on that many of its points drawn at random (FAISS's rule, 256 by default), then
  ``refine`` Lloyd iterations (5) run on every one of its points; smaller nodes are fitted on
  all their points. Every point then descends to its nearest child.
- **Auto-reduction** (:func:`plan_shape`): ``n`` points support ``levels`` x ``branching`` only
  if ``n >= min_points_per_centroid * branching ** levels`` (every level's k-means then sees, on
  average, that many points per centroid). Otherwise the depth is kept and the branching
  lowered to the largest that fits; only when branching 2 does not fit is the depth lowered
  too. The chosen shape is reported through ``log``.
- **Small nodes**: a node with more than ``branching`` points is split by k-means (k-means++
  init, then Lloyd). A node with ``1 <= n <= branching`` points takes its points as its first
  ``n`` children; the other children, and all children of an empty node, copy the node's own
  centroid. A child identical to an earlier sibling is never chosen (tokens stay
  deterministic); empty clusters are counted in :class:`LevelStats`.
- **Assignment** descends the tree, taking the nearest of the current node's children (float32,
  near-ties decided in float64) through the code the fit partitions with, so fitted tokens
  equal :func:`assign`'s.

Backends (``device``), in ``auto``'s order: ``torch-cuda``, ``torch-cpu``; ``faiss-gpu`` and
``faiss-cpu`` (``faiss.Clustering`` per node, every point) on request. The torch backends fit a
whole level at once (nodes of similar size batched), which on 100k and 1M x 1024 features
measured 3.1-4.3x faster than scikit-learn's ``KMeans`` per node at 1.000-1.006x its inertia
(``bench/cluster.py --anchors``; BENCHMARKS.md). Trees are bit-identical for the same input,
seed, backend and threads.
Backend selection and the per-node k-means live in :mod:`tasks.tokens.kmeans_backends`; this module
holds the tree (fit, descent, assignment, persistence, reports) and re-exports
:data:`BACKENDS` and :func:`resolve_backend`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError, safe_open

from tasks.tokens.kmeans_backends import BACKENDS as BACKENDS
from tasks.tokens.kmeans_backends import _sqnorms, _threads, _torch_device, split_level
from tasks.tokens.kmeans_backends import resolve_backend as resolve_backend
from warehouse.atomic import write_bytes_atomic

FORMAT = "videobert.hkmeans/1"
_TIE = 1e-4  # relative gap under which two children are compared again in float64
_CHUNK = 8192  # rows per distance block of the descent: 8192 x 1024 x 4 B = 32 MiB


@dataclass
class LevelStats:
    """One level over the training points. ``size_hist[0]`` counts empty clusters,
    ``size_hist[i]`` clusters of ``[2 ** (i - 1), 2 ** i)`` points; ``unsplit`` counts parents
    with 1 to ``branching`` points, filled without k-means."""

    inertia: float
    n_clusters: int
    empty: int
    unsplit: int
    size_min: int
    size_median: float
    size_max: int
    size_hist: list[int]


@dataclass
class HKMeansTree:
    """A fitted hierarchical k-means codebook (layout in the module docstring).

    ``version`` is computed from the shape and the centroid bytes (16 hex of a sha256) and
    changes with any centroid. ``train_tokens`` holds the tokens of the points the tree was
    fitted on (not saved); ``fit_info`` records how it was fitted (saved, not hashed).
    """

    levels: int
    branching: int
    d: int
    centroids: list[np.ndarray]
    stats: list[LevelStats] = field(default_factory=list)
    fit_info: dict[str, Any] = field(default_factory=dict)
    train_tokens: np.ndarray | None = field(default=None, repr=False, compare=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.centroids) != self.levels:
            raise ValueError(f"{len(self.centroids)} centroid arrays for {self.levels} levels")
        for lvl, c in enumerate(self.centroids):
            want = (self.branching ** (lvl + 1), self.d)
            if c.shape != want or c.dtype != np.float32:
                raise ValueError(f"level {lvl + 1} centroids {c.shape} {c.dtype}, want {want}")
        self.version = _version(self.levels, self.branching, self.d, self.centroids)

    @property
    def n_tokens(self) -> int:
        """Number of visual tokens (leaves): ``branching ** levels``."""
        return self.branching**self.levels


def _version(levels: int, branching: int, d: int, centroids: list[np.ndarray]) -> str:
    """16 hex digits of a sha256 over the shape and the float32 centroid bytes."""
    h = hashlib.sha256(json.dumps([FORMAT, levels, branching, d]).encode())
    for c in centroids:
        h.update(memoryview(np.ascontiguousarray(c, dtype="<f4")).cast("B"))
    return h.hexdigest()[:16]


def plan_shape(n: int, levels: int, branching: int,
               min_points_per_centroid: int) -> tuple[int, int]:
    """Choose the tree shape a corpus of ``n`` points supports (rule in the module docstring).

    Args:
        n: number of training points.
        levels, branching: the requested shape.
        min_points_per_centroid: average points each leaf must have.

    Returns:
        ``(levels, branching)`` actually used.
    """
    if levels < 1 or branching < 2 or min_points_per_centroid < 1:
        raise ValueError(f"bad shape levels={levels} branching={branching} "
                         f"min_points_per_centroid={min_points_per_centroid}")
    for lv in range(levels, 0, -1):
        for br in range(branching, 1, -1):
            if n >= min_points_per_centroid * br**lv:
                return lv, br
    raise ValueError(f"{n} points are too few for even 2 clusters with min_points_per_centroid="
                     f"{min_points_per_centroid} (need >= {2 * min_points_per_centroid})")


def _as_matrix(x: np.ndarray, d: int | None = None) -> np.ndarray:
    """Validate features: 2-D, finite, ``d`` columns; returned as contiguous float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"features of shape {x.shape}, want (N, {d if d else 'd'})")
    if not np.isfinite(x.sum(dtype=np.float64)):  # NaN/inf propagate; no (N, d) temporary
        raise ValueError("features contain NaN or infinite values")
    return x


def _groups(node: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(node id, indices of its points in ascending order)`` for each non-empty node."""
    order = torch.argsort(node, stable=True)
    ids, counts = torch.unique_consecutive(node[order], return_counts=True)
    yield from zip(ids.tolist(), torch.split(order, counts.tolist()), strict=True)


def _dup_mask(level_c: torch.Tensor, b: int) -> torch.Tensor:
    """``(K * b,)`` bool: True where a centroid equals an earlier sibling (never chosen)."""
    cb = level_c.view(-1, b, level_c.shape[1])
    dup = torch.zeros(cb.shape[:2], dtype=torch.bool, device=level_c.device)
    for j in range(1, b):
        for i in range(j):
            dup[:, j] |= (cb[:, j] == cb[:, i]).all(dim=1)
    return dup.flatten()


def _descend(x: torch.Tensor, xn: torch.Tensor, node: torch.Tensor, level_c: torch.Tensor,
             b: int, dup: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest of its node's ``b`` children for every point: ``(child, squared distance)``.

    Distances are compared in float32; a point whose two nearest children lie within float32's
    error of each other (``_TIE`` of the squared norms) is decided again in float64, so the
    choice never depends on the batch or the order of points. The fit and :func:`assign` both
    partition points through this one function.
    """
    dup = _dup_mask(level_c, b) if dup is None else dup
    child = torch.empty_like(node)
    dmin = torch.empty(len(node), dtype=torch.float64, device=x.device)
    for k, idx in _groups(node):
        cb, mask = level_c[k * b : (k + 1) * b], dup[k * b : (k + 1) * b]
        cn, whole = (cb.double() ** 2).sum(1), len(idx) == len(x)  # whole: idx is 0..N-1
        cn32 = cn.float()
        for s in range(0, len(idx), _CHUNK):
            ii = idx[s : s + _CHUNK]
            with _threads(len(ii) * x.shape[1] * b, x.device):
                xb = x[s : s + _CHUNK] if whole else x[ii]  # a view of the root: no copy
                dist = cn32 - 2.0 * (xb @ cb.T)  # + |x|^2, the same for all children
                dist[:, mask] = math.inf
                first, lab = dist.min(dim=1)
                if b > 1:
                    gap = (dist.scatter(1, lab[:, None], math.inf).min(dim=1).values - first)
                    gap = gap.double()
                    near = (gap <= _TIE * (xn[ii] + cn.max())).nonzero().squeeze(1)
                    if len(near):  # near-ties: float64
                        d64 = cn - 2.0 * (xb[near].double() @ cb.double().T)
                        d64[:, mask] = math.inf
                        lab[near] = d64.argmin(dim=1)
                child[ii] = lab
                dmin[ii] = (xn[ii] + first.double()).clamp_min(0.0)
    return child, dmin


def _level_stats(node: torch.Tensor, dmin: torch.Tensor, n_clusters: int,
                 unsplit: int) -> LevelStats:
    """Per-level statistics from the points' cluster ids and squared distances."""
    counts = torch.bincount(node, minlength=n_clusters).cpu().numpy()
    bucket = np.zeros(len(counts), dtype=np.int64)
    nz = counts > 0
    bucket[nz] = np.floor(np.log2(counts[nz])).astype(np.int64) + 1
    return LevelStats(inertia=float(dmin.sum()), n_clusters=n_clusters,
                      empty=int((~nz).sum()), unsplit=unsplit, size_min=int(counts.min()),
                      size_median=float(np.median(counts)), size_max=int(counts.max()),
                      size_hist=np.bincount(bucket).tolist())


def fit_hkmeans(x: np.ndarray, levels: int = 4, branching: int = 12, *, seed: int = 0,
                niter: int = 20, min_points_per_centroid: int = 39, device: str = "auto",
                sample_per_centroid: int = 256, refine: int = 5,
                log: Callable[[str], None] | None = None) -> HKMeansTree:
    """Fit VideoBERT's hierarchical k-means codebook on the points ``x``.

    Args:
        x: ``(N, d)`` features (converted to contiguous float32).
        levels, branching: requested shape; lowered by :func:`plan_shape` on small corpora.
        seed: seeds every node's k-means; same input and seed give the same tree.
        niter: Lloyd iterations per node (at most: a node stops when its centroids settle).
        min_points_per_centroid: average points per leaf the corpus must provide.
        device: ``auto`` or a backend (see :func:`resolve_backend`).
        sample_per_centroid, refine: a node with more than ``sample_per_centroid x branching``
            points is fitted on that many of them, then refined by ``refine`` Lloyd iterations
            on all of them (torch backends; the module docstring).
        log: receives progress lines and the auto-reduction notice.

    Returns:
        The fitted tree, with ``train_tokens`` set to the tokens of ``x``.
    """
    say = log or (lambda _msg: None)
    x = _as_matrix(x)
    n, d = x.shape
    lv, br = plan_shape(n, levels, branching, min_points_per_centroid)
    if (lv, br) != (levels, branching):
        say(f"hkmeans: {n} points cannot fill {levels} levels x {branching} "
            f"(needs >= {min_points_per_centroid} points per leaf); using {lv} levels x {br} "
            f"= {br**lv} tokens")
    backend = resolve_backend(device)
    xt = torch.from_numpy(x).to(_torch_device(backend))
    node, xn = torch.zeros(n, dtype=torch.long, device=xt.device), _sqnorms(xt)
    parents = x.mean(axis=0, dtype=np.float64)[None].astype(np.float32)
    centroids: list[np.ndarray] = []
    stats: list[LevelStats] = []
    t_start = time.perf_counter()
    for level in range(lv):
        t0 = time.perf_counter()
        level_c, unsplit = split_level(x, xt, list(_groups(node)), parents, br, niter, seed,
                                       level, backend, sample_per_centroid, refine)
        child, dmin = _descend(xt, xn, node, torch.from_numpy(level_c).to(xt.device), br)
        node = node * br + child
        stats.append(_level_stats(node, dmin, br ** (level + 1), unsplit))
        centroids.append(level_c)
        parents = level_c
        say(f"hkmeans level {level + 1}/{lv}: {br ** (level + 1)} clusters, inertia "
            f"{stats[-1].inertia:.4g}, empty {stats[-1].empty}, unsplit {unsplit}, "
            f"{time.perf_counter() - t0:.1f} s ({backend})")
    info = {"backend": backend, "seed": seed, "niter": niter, "n_points": n,
            "sample_per_centroid": sample_per_centroid, "refine": refine,
            "min_points_per_centroid": min_points_per_centroid,
            "requested": [levels, branching], "seconds": round(time.perf_counter() - t_start, 3)}
    return HKMeansTree(lv, br, d, centroids, stats, info, train_tokens=node.cpu().numpy())


def assign_path(tree: HKMeansTree, x: np.ndarray, *, device: str = "auto",
                batch_size: int = 65536) -> np.ndarray:
    """Path of every point down the tree.

    Args:
        tree: a fitted codebook.
        x: ``(N, d)`` features.
        device: as for :func:`fit_hkmeans`; GPU backends descend on CUDA, others on CPU.
        batch_size: points per batch; memory is bounded by this, not by N.

    Returns:
        ``(N, levels)`` int64: the child index in ``[0, branching)`` chosen at each level.
    """
    x = _as_matrix(x, tree.d)
    dev, b = _torch_device(device), tree.branching
    cents = [torch.from_numpy(c).to(dev) for c in tree.centroids]
    dups = [_dup_mask(c, b) for c in cents]
    out = np.empty((len(x), tree.levels), dtype=np.int64)
    for s in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[s : s + batch_size]).to(dev)
        node, xn = torch.zeros(len(xb), dtype=torch.long, device=dev), _sqnorms(xb)
        for level in range(tree.levels):
            child, _ = _descend(xb, xn, node, cents[level], b, dups[level])
            out[s : s + len(xb), level] = child.cpu().numpy()
            node = node * b + child
    return out


def assign(tree: HKMeansTree, x: np.ndarray, *, device: str = "auto",
           batch_size: int = 65536) -> np.ndarray:
    """Visual token of every point (see :func:`assign_path` for the arguments).

    Returns:
        ``(N,)`` int64 token ids in ``[0, branching ** levels)``: the leaf row index.
    """
    path = assign_path(tree, x, device=device, batch_size=batch_size)
    weights = tree.branching ** np.arange(tree.levels - 1, -1, -1, dtype=np.int64)
    return path @ weights


def save_tree(tree: HKMeansTree, path: Path) -> None:
    """Write a codebook atomically: safetensors centroids + JSON metadata in its header.

    Args:
        tree: the codebook.
        path: destination file (replaced atomically: temp file, fsync, ``os.replace``).
    """
    path = Path(path)
    meta = {"format": FORMAT, "levels": tree.levels, "branching": tree.branching, "d": tree.d,
            "version": tree.version, "stats": [asdict(s) for s in tree.stats],
            "fit_info": tree.fit_info}
    tensors = {f"centroids.{i}": np.ascontiguousarray(c) for i, c in enumerate(tree.centroids)}
    blob = safetensors.numpy.save(tensors, metadata={"hkmeans": json.dumps(meta)})
    write_bytes_atomic(blob, path)


def load_tree(path: Path) -> HKMeansTree:
    """Read a codebook written by :func:`save_tree`, verifying its version hash.

    Args:
        path: the safetensors file.

    Returns:
        The codebook; ``ValueError`` if the file is unreadable, not a codebook, or its
        centroids do not match the recorded version (corrupted or tampered with).
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get("hkmeans")
            meta = json.loads(raw) if raw else {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path} is not a {FORMAT} codebook ({meta.get('format')!r})")
            centroids = [f.get_tensor(f"centroids.{i}") for i in range(meta["levels"])]
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"cannot read codebook {path}: {e}") from e
    tree = HKMeansTree(meta["levels"], meta["branching"], meta["d"], centroids,
                       [LevelStats(**s) for s in meta["stats"]], meta["fit_info"])
    if tree.version != meta["version"]:
        raise ValueError(f"codebook {path}: centroids hash to {tree.version}, file records "
                         f"{meta['version']!r} (corrupted or modified)")
    return tree


def usage_histogram(tokens: np.ndarray, n_tokens: int) -> np.ndarray:
    """How often each token occurs.

    Args:
        tokens: token ids; n_tokens: vocabulary size (``tree.n_tokens``).

    Returns:
        ``(n_tokens,)`` int64 counts.
    """
    tokens = np.asarray(tokens, dtype=np.int64).ravel()
    if tokens.size and (tokens.min() < 0 or tokens.max() >= n_tokens):
        raise ValueError(f"token ids must lie in [0, {n_tokens}); got "
                         f"[{tokens.min()}, {tokens.max()}]")
    return np.bincount(tokens, minlength=n_tokens).astype(np.int64)


def report(tree: HKMeansTree) -> dict[str, Any]:
    """A JSON-able summary for users: shape, version, fit info and per-level statistics.

    Args:
        tree: the codebook.

    Returns:
        ``{"version", "levels", "branching", "n_tokens", "d", "fit", "per_level": [...]}``;
        each level has its :class:`LevelStats` fields (inertia, empty, size_min/median/max...).
    """
    return {"version": tree.version, "levels": tree.levels, "branching": tree.branching,
            "n_tokens": tree.n_tokens, "d": tree.d, "fit": tree.fit_info,
            "per_level": [{"level": i + 1} | asdict(s) for i, s in enumerate(tree.stats)]}
