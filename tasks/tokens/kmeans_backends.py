"""k-means backends of the hierarchical k-means tokenizer (:mod:`tasks.tokens.cluster`).

Choosing a backend from a ``device`` argument (:func:`resolve_backend`), and clustering one
tree node's points into its children (``_split_node``): k-means++ seeding, then Lloyd
iterations either in torch (CPU or CUDA; deterministic sums by one-hot matmul, FAISS's
empty-cluster split rule) or with FAISS (CPU or GPU, on every point, no sampling). Small CPU
work runs on one thread (``_threads``). Backends, in ``auto``'s order: ``faiss-gpu``,
``torch-cuda``, ``torch-cpu``; ``faiss-cpu`` on request (why torch is the CPU default: the
:mod:`tasks.tokens.cluster` docstring).

The tree itself (fit, descent, assignment, persistence, reports) stays in
:mod:`tasks.tokens.cluster`, which re-exports :data:`BACKENDS` and :func:`resolve_backend`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faiss
import numpy as np
import torch

BACKENDS = ("faiss-gpu", "torch-cuda", "torch-cpu", "faiss-cpu")
_CHUNK = 8192  # rows per float64 distance block: 8192 x 1024 x 8 B = 64 MiB
_SPLIT_EPS = 1.0 / 1024  # FAISS's perturbation when an empty cluster takes half of another
# CPU work this small (n * d * k multiply-adds) runs on one thread (torch and FAISS; process-wide
# settings, restored after): OpenMP barriers on tiny work stall for 0.1-1 s when the cores are
# shared with other processes (measured: a 300-point FAISS k-means went from 0.4 ms to ~1 s).
_SMALL_WORK = 1 << 26
_GPU_RES: list[Any] = []  # one faiss.StandardGpuResources per process, made on first use


def resolve_backend(device: str) -> str:
    """Map a ``device`` argument of :func:`tasks.tokens.cluster.fit_hkmeans` to a backend.

    Args:
        device: ``auto``, ``cpu`` (torch-cpu), ``cuda``/``gpu`` (best GPU backend) or a backend.

    Returns:
        The backend; ``ValueError`` if it is unknown or not available on this machine.
    """
    gpu = [name for name, ok in (
        ("faiss-gpu", hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0),
        ("torch-cuda", torch.cuda.is_available())) if ok]
    # auto on a CPU: FAISS per node (bench/cluster.py: same tree, same inertia, 2-3x faster)
    alias = {"auto": (gpu + ["faiss-cpu"])[0], "cpu": "torch-cpu"}
    alias["cuda"] = alias["gpu"] = (gpu + ["torch-cuda"])[0]
    backend = alias.get(device, device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or one of {BACKENDS}")
    if backend in BACKENDS[:2] and backend not in gpu:
        raise ValueError(f"device {device!r}: backend {backend} is not available on this machine")
    return backend


def _torch_device(device: str) -> torch.device:
    """Where the float64 descent runs: CUDA for the GPU backends when torch sees it, else CPU."""
    gpu = resolve_backend(device) in BACKENDS[:2] and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


@contextmanager
def _threads(work: int, device: torch.device) -> Iterator[None]:
    """One torch/FAISS thread for small CPU work (see ``_SMALL_WORK``); restored on exit."""
    if device.type != "cpu" or work >= _SMALL_WORK:
        yield
        return
    saved = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1), faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0]), faiss.omp_set_num_threads(saved[1])


def _sqnorms(x: torch.Tensor) -> torch.Tensor:
    """Squared norms of the rows of ``x`` in float64, ``(N,)``."""
    return torch.linalg.vector_norm(x, dim=1, dtype=torch.float64) ** 2


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding of ``k`` centroids from ``x`` (n > k): each step draws
    ``2 + ln k`` candidates by D^2 sampling and keeps the one that lowers the potential most
    (Arthur & Vassilvitskii's greedy variant, scikit-learn's default)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    xn = _sqnorms(x).to(x.dtype)
    picks = [int(torch.randint(n, (1,), generator=gen))]
    d2 = (xn - 2.0 * (x @ x[picks[0]]) + xn[picks[0]]).clamp_min(0.0)
    for _ in range(1, k):
        cum = torch.cumsum(d2.double(), 0)
        if float(cum[-1]) <= 0.0:  # every point coincides with a pick: draw uniformly
            cum = torch.arange(1.0, n + 1, dtype=torch.float64, device=x.device)
        u = torch.rand(trials, generator=gen, dtype=torch.float64).to(x.device) * cum[-1]
        cand = torch.searchsorted(cum, u).clamp(max=n - 1)
        dc = (xn[None, :] - 2.0 * (x[cand] @ x.T) + xn[cand][:, None]).clamp_min(0.0)
        dc = torch.minimum(d2[None, :], dc)
        best = int(torch.argmin(dc.double().sum(1)))
        picks.append(int(cand[best]))
        d2 = dc[best]
    return x[torch.tensor(picks, device=x.device)].clone()


def _split_empty(c: torch.Tensor, counts: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """FAISS's empty-cluster rule: an empty centroid takes half of a cluster drawn by size."""
    counts = counts.double().cpu()
    sign = torch.ones(c.shape[1], dtype=c.dtype, device=c.device)
    sign[1::2] = -1.0
    for ci in (counts == 0).nonzero().flatten().tolist():
        weights = (counts - 1.0).clamp_min(0.0)
        if float(weights.sum()) <= 0.0:
            break
        cj = int(torch.multinomial(weights, 1, generator=gen))
        c[ci] = c[cj] * (1.0 + _SPLIT_EPS * sign)
        c[cj] = c[cj] * (1.0 - _SPLIT_EPS * sign)
        counts[ci] = math.floor(counts[cj] / 2)
        counts[cj] -= counts[ci]
    return c


def _kmeans_torch(x: torch.Tensor, init: torch.Tensor, niter: int,
                  gen: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means in torch (any device); deterministic: sums by one-hot matmul."""
    c, k = init.clone(), init.shape[0]
    for _ in range(niter):
        sums = torch.zeros(c.shape, dtype=torch.float64, device=x.device)  # exact for 1e7+ points
        counts = torch.zeros(k, dtype=torch.float64, device=x.device)
        for s in range(0, x.shape[0], 16 * _CHUNK):  # row slices are views: no copy
            xb = x[s : s + 16 * _CHUNK]
            lab = torch.argmin((c * c).sum(1) - 2.0 * (xb @ c.T), dim=1)
            # one-hot matmul, not index_add_: faster on CPU, and CUDA's atomics are not repeatable
            sums += (torch.nn.functional.one_hot(lab, k).to(x.dtype).T @ xb).double()
            counts += torch.bincount(lab, minlength=k).double()
        mean = (sums / counts.clamp_min(1.0)[:, None]).to(x.dtype)
        c = _split_empty(torch.where(counts[:, None] > 0, mean, c), counts, gen)
    return c


def _kmeans_faiss(x: np.ndarray, init: np.ndarray, niter: int, seed: int, gpu: bool) -> np.ndarray:
    """FAISS k-means on every point of ``x`` (no sampling), started from ``init``."""
    n, d = x.shape
    cp = faiss.ClusteringParameters()
    cp.niter, cp.seed, cp.verbose = niter, seed, False
    cp.max_points_per_centroid, cp.min_points_per_centroid = n, 1  # all points, no warning
    clus = faiss.Clustering(d, init.shape[0], cp)
    faiss.copy_array_to_vector(np.ascontiguousarray(init, np.float32).ravel(), clus.centroids)
    if gpu and not _GPU_RES:
        _GPU_RES.append(faiss.StandardGpuResources())
    clus.train(x, faiss.GpuIndexFlatL2(_GPU_RES[0], d) if gpu else faiss.IndexFlatL2(d))
    return faiss.vector_to_array(clus.centroids).reshape(init.shape[0], d)


def _split_node(x: np.ndarray, xt: torch.Tensor, idx: torch.Tensor, parent: np.ndarray, b: int,
                niter: int, seed: int, backend: str) -> tuple[np.ndarray, bool]:
    """Children ``(b, d)`` of one non-empty node (k-means++ then Lloyd); True if k-means ran."""
    n, whole = len(idx), len(idx) == len(x)  # whole: the root, use x itself (no copy)
    if n <= b:
        out = np.repeat(parent[None], b, axis=0)
        out[:n] = x[idx.cpu().numpy()]
        return out, False
    gen = torch.Generator().manual_seed(seed)
    with _threads(n * x.shape[1] * b, xt.device):
        pts = xt if whole else xt[idx] if xt.is_cuda or backend.startswith("torch") else None
        if backend.startswith("torch"):
            return _kmeans_torch(pts, _kmeanspp(pts, b, gen), niter, gen).cpu().numpy(), True
        xs = x if whole else x[idx.cpu().numpy()]  # FAISS wants host memory
        init = _kmeanspp(torch.from_numpy(xs) if pts is None else pts, b, gen).cpu().numpy()
        return _kmeans_faiss(xs, init, niter, seed, backend == "faiss-gpu"), True
