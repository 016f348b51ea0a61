"""k-means backends of the hierarchical k-means tokenizer (:mod:`tasks.tokens.cluster`).

Choosing a backend from a ``device`` argument (:func:`resolve_backend`), and splitting every
node of one tree level into its children (:func:`split_level`).

The torch backends (CPU or CUDA) fit a whole level at once: nodes of similar size are stacked
into padded ``(G, m, d)`` batches, seeded together by greedy k-means++ (2 + ln k candidates
per centre, the best kept: scikit-learn's default) and refined together by Lloyd iterations,
so a level of thousands of small nodes costs a few large matrix products rather than thousands
of library calls. A node with more than ``sample_per_centroid x k`` points is first fitted on
that many of its points drawn at random (FAISS's rule), then refined by ``refine`` Lloyd
iterations on every one of its points. As in scikit-learn, a node stops when its centroids
move by at most ``1e-4`` x its points' mean variance, and an empty cluster moves to the point
farthest from its centroid. Sums are repeatable (no atomics; :func:`_assign`).

The FAISS backends (``faiss-cpu``, ``faiss-gpu``, on request) run ``faiss.Clustering`` per node
on every point of the node, from the same seeding. Small CPU work runs on one thread
(``_threads``). ``auto`` is ``torch-cuda`` when torch sees a GPU, else ``torch-cpu``.

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

BACKENDS = ("torch-cuda", "torch-cpu", "faiss-gpu", "faiss-cpu")
# CPU work this small (n * d * k multiply-adds) runs on one thread (torch and FAISS; process-wide
# settings, restored after): OpenMP barriers on tiny work stall for 0.1-1 s when the cores are
# shared with other processes (measured: a 300-point FAISS k-means went from 0.4 ms to ~1 s).
_SMALL_WORK = 1 << 26
_PIECE = 2048  # rows assigned and summed while in cache (L2: 2048 x 1024 x 4 B = 8 MiB)
_BATCH_FLOATS = 1 << 26  # floats in one padded (G, m, d) batch of nodes: 256 MiB
_SEED_POINTS = 128  # k-means++ seeds a node from at most this many points per centroid
_FILL = 0.85  # a batch's nodes have at least this share of its largest node's points
_VAR_POINTS = 256  # a node's variance (Lloyd's stopping threshold) from about this many points
_GPU_RES: list[Any] = []  # one faiss.StandardGpuResources per process, made on first use


def resolve_backend(device: str) -> str:
    """Map a ``device`` argument of :func:`tasks.tokens.cluster.fit_hkmeans` to a backend.

    Args:
        device: ``auto`` (torch on CUDA if torch sees a GPU, else on CPU), ``cpu``,
            ``cuda``/``gpu``, or a backend name.

    Returns:
        The backend; ``ValueError`` if it is unknown or not available on this machine.
    """
    cuda = torch.cuda.is_available()
    faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    alias = {"auto": "torch-cuda" if cuda else "torch-cpu", "cpu": "torch-cpu",
             "cuda": "torch-cuda", "gpu": "torch-cuda"}
    backend = alias.get(device, device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or one of {BACKENDS}")
    if (backend == "torch-cuda" and not cuda) or (backend == "faiss-gpu" and not faiss_gpu):
        raise ValueError(f"device {device!r}: backend {backend} is not available on this machine")
    return backend


def _torch_device(device: str) -> torch.device:
    """Where the tree is fitted and descended: CUDA for the GPU backends, else CPU."""
    gpu = resolve_backend(device) in ("torch-cuda", "faiss-gpu") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def node_seed(seed: int, level: int, node: int) -> int:
    """An independent, reproducible 31-bit seed for one node (or batch of nodes)."""
    return int(np.random.SeedSequence([seed, level, node]).generate_state(1)[0] >> 1)


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
    """Squared norms of the rows of ``x``, ``(N,)`` float64 (summed in ``x``'s precision)."""
    return torch.einsum("ij,ij->i", x, x).double()


def _seed(p: torch.Tensor, mask: torch.Tensor, nvalid: torch.Tensor, k: int,
          gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding of ``k`` centroids in each of ``G`` padded nodes at once.

    Each step draws ``2 + ln k`` candidates per node by D^2 sampling and keeps the one that
    lowers the node's potential most (Arthur & Vassilvitskii's greedy variant, scikit-learn's
    default). ``p`` is ``(G, m, d)``, ``mask`` ``(G, m)`` marks real points, ``nvalid`` ``(G,)``
    counts them (each > k). Returns ``(G, k, d)``.
    """
    g, trials = torch.arange(p.shape[0], device=p.device), 2 + int(math.log(k))

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen, dtype=torch.float64).to(p.device)

    if p.shape[1] > _SEED_POINTS * k:  # seed from a random subset of each node's points
        keep = rand(*mask.shape).masked_fill(~mask, 2.0).argsort(1)[:, : _SEED_POINTS * k]
        p, mask, nvalid = p[g[:, None], keep], mask[g[:, None], keep], nvalid.clamp(
            max=_SEED_POINTS * k)
    pn, w = torch.einsum("gmd,gmd->gm", p, p), mask.to(p.dtype)

    pick = (rand(len(g)) * nvalid).long().minimum(nvalid - 1)
    d2 = (pn - 2.0 * torch.bmm(p, p[g, pick][:, :, None]).squeeze(2)
          + pn[g, pick][:, None]).clamp_min(0.0) * w
    picks = [pick]
    for _ in range(1, k):
        cum = torch.cumsum(d2.double(), 1)
        total = cum[:, -1:]
        cand = torch.searchsorted(cum, rand(len(g), trials) * total)
        uniform = (rand(len(g), trials) * nvalid[:, None]).long()  # all points at a pick
        cand = torch.where(total > 0, cand, uniform).minimum(nvalid[:, None] - 1)
        pc = p[g[:, None], cand]  # (G, t, d)
        dc = (pn[:, None, :] - 2.0 * torch.bmm(pc, p.transpose(1, 2))
              + pn[g[:, None], cand][:, :, None]).clamp_min(0.0)
        dc = torch.minimum(d2[:, None, :], dc) * w[:, None, :]
        best = dc.double().sum(2).argmin(1)
        picks.append(cand[g, best])
        d2 = dc[g, best]
    return p[g[:, None], torch.stack(picks, 1)].clone()


def _assign(p: torch.Tensor, w: torch.Tensor,
            c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Lloyd step's assignment and sums for ``G`` padded nodes: ``(dmin, labels, sums,
    counts)``; ``dmin`` lacks ``|x|^2``, ``sums`` are float64 and count real points only.

    On CPU the points go through in pieces of about ``_PIECE`` rows, each assigned and summed
    while it is still in cache (1.35x faster than two passes over memory here), the sums by
    ``index_add_`` (sequential: repeatable). On CUDA in one go, the sums by one-hot ``bmm``
    (CUDA's ``index_add_`` uses atomics: not repeatable).
    """
    g, m, d = p.shape
    k, cn = c.shape[1], (c * c).sum(2)
    if p.is_cuda:
        dmin, lab = (cn[:, None, :] - 2.0 * torch.bmm(p, c.transpose(1, 2))).min(2)
        onehot = torch.nn.functional.one_hot(lab, k).to(p.dtype) * w[:, :, None]
        return dmin, lab, torch.bmm(onehot.transpose(1, 2), p).double(), onehot.sum(1)
    dmin, lab = torch.empty(g, m, dtype=p.dtype), torch.empty(g, m, dtype=torch.long)
    sums = torch.zeros(g, k, d, dtype=torch.float64)
    span = max(1, _PIECE // m)  # whole nodes per piece, or row blocks of one node
    for g0 in range(0, g, span):
        for s in range(0, m, _PIECE):
            pp, ww = p[g0 : g0 + span, s : s + _PIECE], w[g0 : g0 + span, s : s + _PIECE]
            gp, mp = pp.shape[:2]
            dm, lb = (cn[g0 : g0 + gp, None, :] - 2.0 * torch.bmm(
                pp, c[g0 : g0 + gp].transpose(1, 2))).min(2)
            dmin[g0 : g0 + gp, s : s + mp], lab[g0 : g0 + gp, s : s + mp] = dm, lb
            dump = gp * k  # padding rows add into a row that is dropped
            flat = torch.where(ww > 0, lb + k * torch.arange(gp)[:, None], dump).view(-1)
            part = torch.zeros(dump + 1, d, dtype=p.dtype)
            part.index_add_(0, flat, pp.reshape(gp * mp, d))
            sums[g0 : g0 + gp] += part[:dump].view(gp, k, d)
    counts = torch.zeros(g, k, dtype=p.dtype).scatter_add_(1, lab, w)
    return dmin, lab, sums, counts


def _lloyd(p: torch.Tensor, mask: torch.Tensor, c: torch.Tensor, niter: int,
           tol: float = 1e-4) -> torch.Tensor:
    """Lloyd's k-means on ``G`` padded nodes at once: ``p`` ``(G, m, d)``, ``c`` ``(G, k, d)``.

    A node stops, as in scikit-learn, when its centroids move by at most ``tol`` x its points'
    mean variance (squared shift summed over centroids; 0 when no label changes); stopped
    nodes leave the batch once they are half of it. An empty cluster takes the point farthest
    from its own centroid (scikit-learn's rule). Repeatable: no atomics (:func:`_assign`).
    """
    w, pn = mask.to(p.dtype), None
    every = max(1, p.shape[1] // _VAR_POINTS)  # the variance from every `every`-th point
    ps, ws = p[:, ::every], w[:, ::every]
    n = ws.sum(1)
    mean = torch.bmm(ws[:, None, :], ps).squeeze(1) / n[:, None]
    var = (torch.einsum("gmd,gmd,gm->g", ps, ps, ws) / n - (mean * mean).sum(1)).clamp_min(0.0)
    limit, out = tol * var / p.shape[2], c.clone()
    rows = torch.arange(len(c), device=p.device)
    for _ in range(niter):
        dmin, _, sums, counts = _assign(p, w, c)
        new = (sums / counts.clamp_min(1.0)[:, :, None].double()).to(c.dtype)
        new = torch.where(counts[:, :, None] > 0, new, c)
        empty = counts == 0
        if bool(empty.any()):
            pn = torch.einsum("gmd,gmd->gm", p, p) if pn is None else pn
            far = (dmin + pn).masked_fill(~mask, -math.inf)
            top = far.topk(int(empty.sum(1).max()), dim=1).indices  # (G, e)
            gi, ki = empty.nonzero(as_tuple=True)
            rank = (torch.cumsum(empty.long(), 1) - 1)[gi, ki]
            new[gi, ki] = p[gi, top[gi, rank]]
        moving = ((new - c) ** 2).sum((1, 2)) > limit
        c, out[rows] = new, new
        if not bool(moving.any()):
            break
        if 2 * int(moving.sum()) <= len(moving):  # compact: the moving nodes only
            p, mask, w, c = p[moving], mask[moving], w[moving], c[moving]
            pn = None if pn is None else pn[moving]
            limit, rows = limit[moving], rows[moving]
    return out


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


def _batches(sizes: list[int], d: int) -> Iterator[list[int]]:
    """Positions into ``sizes``, largest first, grouped into padded ``(G, m, d)`` batches of at
    most ``_BATCH_FLOATS`` floats (one node at least) whose nodes have at least ``_FILL`` of
    the largest one's points (padding costs the same arithmetic as points)."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    start = 0
    while start < len(order):
        top = sizes[order[start]]
        end = start + 1
        while (end < len(order) and (end - start + 1) * top * d <= _BATCH_FLOATS
               and sizes[order[end]] >= _FILL * top):
            end += 1
        yield order[start:end]
        start = end


def split_level(x: np.ndarray, xt: torch.Tensor, groups: list[tuple[int, torch.Tensor]],
                parents: np.ndarray, b: int, niter: int, seed: int, level: int, backend: str,
                sample_per_centroid: int = 256, refine: int = 5) -> tuple[np.ndarray, int]:
    """Children of every node of one level.

    Args:
        x, xt: the training points as NumPy and as torch (on the backend's device).
        groups: ``(node id, indices of its points)`` for every non-empty node.
        parents: ``(K, d)`` centroids of the level's nodes.
        b: children per node; niter: Lloyd iterations per node.
        seed, level: seed every batch reproducibly (:func:`node_seed`).
        backend: a resolved backend.
        sample_per_centroid, refine: the torch backends' sampling rule (module docstring).

    Returns:
        ``(K * b, d)`` float32 children (rows of empty nodes copy their parent) and the number
        of nodes with 1 to ``b`` points, which take their points as children without k-means.
    """
    level_c = np.repeat(parents, b, axis=0)
    fit: list[tuple[int, torch.Tensor]] = []
    for k, idx in groups:
        if len(idx) <= b:  # its points, then copies of the node's own centroid
            level_c[k * b : k * b + len(idx)] = x[idx.cpu().numpy()]
        else:
            fit.append((k, idx))
    if backend.startswith("faiss"):
        for k, idx in fit:
            node_s = node_seed(seed, level, k)
            gen = torch.Generator().manual_seed(node_s)
            xs = x if len(idx) == len(x) else x[idx.cpu().numpy()]
            with _threads(len(idx) * x.shape[1] * b, xt.device):
                pts = torch.from_numpy(xs).to(xt.device)[None]
                init = _seed(pts, torch.ones(pts.shape[:2], dtype=torch.bool, device=xt.device),
                             torch.tensor([len(idx)], device=xt.device), b, gen)[0]
                level_c[k * b : (k + 1) * b] = _kmeans_faiss(
                    xs, init.cpu().numpy(), niter, node_s, backend == "faiss-gpu")
        return level_c, len(groups) - len(fit)
    cap = sample_per_centroid * b
    work = []  # the points each node is seeded and first fitted on
    for k, idx in fit:
        if len(idx) > cap:  # a random sample of `cap` points, in their order
            gen = torch.Generator().manual_seed(node_seed(seed, level, k))
            idx = idx[torch.randperm(len(idx), generator=gen)[:cap].sort().values.to(idx.device)]
        work.append(idx)
    cent: list[torch.Tensor] = [torch.empty(0)] * len(fit)
    for batch in _batches([len(w) for w in work], x.shape[1]):
        m, dev = len(work[batch[0]]), xt.device
        rows = torch.stack([torch.cat([work[i], work[i][:1].expand(m - len(work[i]))])
                            for i in batch])  # pad with the node's first point
        nvalid = torch.tensor([len(work[i]) for i in batch], device=dev)
        mask = torch.arange(m, device=dev)[None, :] < nvalid[:, None]
        gen = torch.Generator().manual_seed(node_seed(seed, level, fit[batch[0]][0]))
        with _threads(len(batch) * m * x.shape[1] * b, dev):
            p = xt[rows] if len(batch) > 1 or m < len(xt) else xt[None]
            c = _lloyd(p, mask, _seed(p, mask, nvalid, b, gen), niter)
        for j, i in enumerate(batch):
            cent[i] = c[j]
    for i, (_, idx) in enumerate(fit):  # every point of a sampled node: `refine` iterations
        if len(idx) > cap:
            p = xt[None] if len(idx) == len(xt) else xt[idx][None]
            mask = torch.ones(p.shape[:2], dtype=torch.bool, device=xt.device)
            cent[i] = _lloyd(p, mask, cent[i][None], refine)[0]
    for (k, _), c in zip(fit, cent, strict=True):
        level_c[k * b : (k + 1) * b] = c.cpu().numpy()
    return level_c, len(groups) - len(fit)
