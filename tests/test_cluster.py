"""Hierarchical k-means tokenizer (tasks.tokens.cluster): fit, assignment, persistence, backends.

CPU only, real FAISS, small synthetic mixtures; the GPU check carries the ``gpu`` marker
(run ``pytest -m gpu tests/test_cluster.py`` on a CUDA machine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.tokens.cluster import (
    BACKENDS,
    HKMeansTree,
    assign,
    assign_path,
    fit_hkmeans,
    load_tree,
    plan_shape,
    report,
    resolve_backend,
    save_tree,
    usage_histogram,
)


def _mixture(n: int, d: int, k: int, seed: int, spread: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * spread
    return (centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def _fit(x: np.ndarray, **kw) -> HKMeansTree:
    kw = {"levels": 3, "branching": 4, "min_points_per_centroid": 5, "device": "torch-cpu"} | kw
    return fit_hkmeans(x, **kw)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _mixture(3000, 16, 40, seed=1)


@pytest.fixture(scope="module")
def tree(data: np.ndarray) -> HKMeansTree:
    return _fit(data)


def test_shape_layout_and_version(tree: HKMeansTree, data: np.ndarray) -> None:
    assert (tree.levels, tree.branching, tree.d, tree.n_tokens) == (3, 4, 16, 64)
    assert [c.shape for c in tree.centroids] == [(4, 16), (16, 16), (64, 16)]
    assert len(tree.version) == 16 and int(tree.version, 16) >= 0
    assert tree.train_tokens.shape == (len(data),) and tree.train_tokens.dtype == np.int64
    assert 0 <= tree.train_tokens.min() and tree.train_tokens.max() < 64
    assert [s.n_clusters for s in tree.stats] == [4, 16, 64]
    assert tree.stats[0].inertia > tree.stats[1].inertia > tree.stats[2].inertia


def test_same_input_and_seed_give_identical_tree(tree: HKMeansTree, data: np.ndarray) -> None:
    again = _fit(data)
    assert again.version == tree.version
    assert all(np.array_equal(a, b) for a, b in zip(again.centroids, tree.centroids, strict=True))
    assert np.array_equal(again.train_tokens, tree.train_tokens)
    assert _fit(data, seed=1).version != tree.version


def test_assignment_is_nearest_sibling_at_every_level(tree: HKMeansTree) -> None:
    x = _mixture(400, 16, 40, seed=7)  # new points from the same kind of mixture
    path = assign_path(tree, x)
    b, node = tree.branching, np.zeros(len(x), dtype=np.int64)
    for level in range(tree.levels):
        rows = node[:, None] * b + np.arange(b)  # (N, b) rows of the siblings
        d2 = ((x[:, None, :].astype(np.float64) - tree.centroids[level][rows]) ** 2).sum(-1)
        chosen = d2[np.arange(len(x)), path[:, level]]
        assert np.all(chosen <= d2.min(axis=1) * (1 + 1e-9) + 1e-9)
        node = node * b + path[:, level]
    assert np.array_equal(assign(tree, x), node)


def test_assign_is_repeatable_and_batch_independent(tree: HKMeansTree) -> None:
    x = _mixture(500, 16, 40, seed=8)
    tokens = assign(tree, x)
    assert np.array_equal(assign(tree, x), tokens)
    assert np.array_equal(assign(tree, x, batch_size=7), tokens)
    assert np.array_equal(assign(tree, x[::-1])[::-1], tokens)


def test_fitted_tokens_equal_assign_of_training_points(tree: HKMeansTree, data: np.ndarray):
    assert np.array_equal(assign(tree, data), tree.train_tokens)
    assert np.array_equal(assign(tree, data, device="cpu", batch_size=1000), tree.train_tokens)


def test_small_corpus_is_reduced_and_logged() -> None:
    messages: list[str] = []
    small = fit_hkmeans(_mixture(500, 8, 10, seed=2), log=messages.append)  # device auto
    assert (small.levels, small.branching, small.n_tokens) == (3, 2, 8)
    notice = [m for m in messages if "cannot fill" in m]
    assert notice and "4 levels x 12" in notice[0] and "using 3 levels x 2 = 8 tokens" in notice[0]
    assert small.fit_info["requested"] == [4, 12]


def test_plan_shape_rule() -> None:
    assert plan_shape(808_704, 4, 12, 39) == (4, 12)  # exactly 39 points per leaf
    assert plan_shape(808_703, 4, 12, 39) == (4, 11)  # keep the depth, lower the branching
    assert plan_shape(200_000, 4, 12, 39) == (4, 8)
    assert plan_shape(500, 4, 12, 39) == (3, 2)  # depth drops only when branching 2 won't fit
    with pytest.raises(ValueError, match="too few"):
        plan_shape(77, 4, 12, 39)


@pytest.mark.parametrize("device", ["torch-cpu", "faiss-cpu"])
def test_tiny_nodes_get_copies_and_empty_leaves(device: str) -> None:
    rng = np.random.default_rng(3)
    blob = rng.normal(size=(300, 8))
    outliers = np.eye(8)[:3] * 1000.0  # three far singletons: level-1 clusters of one point
    x = np.vstack([blob, outliers]).astype(np.float32)
    t = fit_hkmeans(x, 2, 4, min_points_per_centroid=1, device=device)
    assert t.stats[1].unsplit == 3 and t.stats[1].empty == 9
    tokens = assign(t, x)
    assert np.array_equal(tokens, t.train_tokens)
    for i in range(3):
        node = int(assign_path(t, outliers[i : i + 1])[0, 0])
        kids = t.centroids[1][node * 4 : node * 4 + 4]
        assert np.array_equal(kids, np.repeat(t.centroids[0][node : node + 1], 4, axis=0))
        near = (outliers[i] + 0.5).astype(np.float32)[None]
        assert assign(t, near)[0] == node * 4  # the first of identical siblings wins


def test_copied_children_of_an_empty_node_resolve_to_the_first() -> None:
    level1 = np.array([[0.0, 0.0], [10.0, 0.0]], dtype=np.float32)
    level2 = np.array([[-1, 0], [1, 0], [10, 0], [10, 0]], dtype=np.float32)  # node 1 empty
    t = HKMeansTree(2, 2, 2, [level1, level2])
    x = np.array([[9.0, 3.0], [11.0, -3.0], [0.9, 0.0]], dtype=np.float32)
    assert assign(t, x).tolist() == [2, 2, 1]


def test_save_load_round_trip(tmp_path: Path, tree: HKMeansTree, data: np.ndarray) -> None:
    path = tmp_path / "codebook.safetensors"
    save_tree(tree, path)
    loaded = load_tree(path)
    assert loaded.version == tree.version and loaded.stats == tree.stats
    assert loaded.fit_info == tree.fit_info
    assert all(np.array_equal(a, b) for a, b in zip(loaded.centroids, tree.centroids, strict=True))
    assert np.array_equal(assign(loaded, data), tree.train_tokens)
    assert [p.name for p in tmp_path.iterdir()] == ["codebook.safetensors"]  # no temp left
    save_tree(tree, path)  # overwriting in place works
    assert load_tree(path).version == tree.version


def test_tampered_or_foreign_files_are_refused(tmp_path: Path, tree: HKMeansTree) -> None:
    path = tmp_path / "codebook.safetensors"
    save_tree(tree, path)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x01  # one bit of the last centroid array
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupted or modified"):
        load_tree(path)
    path.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(ValueError, match="cannot read codebook"):
        load_tree(path)
    import safetensors.numpy

    safetensors.numpy.save_file({"w": np.zeros(3, np.float32)}, str(path))
    with pytest.raises(ValueError, match="not a videobert.hkmeans"):
        load_tree(path)


def test_torch_backend_agrees_with_faiss(data: np.ndarray, tree: HKMeansTree) -> None:
    assert tree.fit_info["backend"] == "torch-cpu"
    t = _fit(data, device="faiss-cpu")
    assert t.fit_info["backend"] == "faiss-cpu"
    # without sampling both run the same algorithm at the root (same seeding, Lloyd on every
    # point); below it the random streams differ (torch draws one per batch of nodes)
    every = _fit(data, sample_per_centroid=len(data))
    assert abs(t.stats[0].inertia - every.stats[0].inertia) <= 1e-3 * t.stats[0].inertia
    # the default (sampled, then refined on every point) is no worse at the leaves
    assert tree.stats[-1].inertia <= 1.03 * t.stats[-1].inertia
    assert np.array_equal(assign(t, data), t.train_tokens)


def test_well_separated_blobs_map_to_distinct_level1_clusters() -> None:
    rng = np.random.default_rng(5)
    centres = np.eye(8)[:6] * 40.0
    sizes = [100, 150, 200, 250, 300, 350]
    x = np.vstack([c + rng.normal(size=(s, 8)) for c, s in zip(centres, sizes, strict=True)])
    truth = np.repeat(np.arange(6), sizes)
    x = x.astype(np.float32)
    top = assign_path(fit_hkmeans(x, 2, 6, min_points_per_centroid=5), x)[:, 0]
    per_blob = [set(top[truth == i].tolist()) for i in range(6)]
    assert all(len(s) == 1 for s in per_blob)
    assert len(set().union(*per_blob)) == 6


def test_usage_histogram_and_report(tree: HKMeansTree, data: np.ndarray) -> None:
    hist = usage_histogram(tree.train_tokens, tree.n_tokens)
    assert hist.shape == (64,) and hist.sum() == len(data)
    rep = report(tree)
    leaf = rep["per_level"][-1]
    assert (leaf["size_min"], leaf["size_max"], leaf["empty"]) == (
        hist.min(), hist.max(), (hist == 0).sum())
    assert leaf["size_median"] == float(np.median(hist)) and sum(leaf["size_hist"]) == 64
    assert leaf["inertia"] == tree.stats[-1].inertia and leaf["level"] == 3
    assert rep["version"] == tree.version and rep["n_tokens"] == 64
    with pytest.raises(ValueError, match="must lie in"):
        usage_histogram(np.array([64]), 64)


def test_bad_inputs_name_the_problem(tree: HKMeansTree) -> None:
    with pytest.raises(ValueError, match="NaN"):
        fit_hkmeans(np.full((100, 4), np.nan, np.float32), 1, 2, min_points_per_centroid=1)
    with pytest.raises(ValueError, match=r"want \(N, 16\)"):
        assign(tree, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="unknown device"):
        resolve_backend("tpu")
    assert resolve_backend("cpu") == "torch-cpu" and resolve_backend("auto") in BACKENDS


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_backend_agrees_with_cpu(data: np.ndarray, tree: HKMeansTree) -> None:
    t = _fit(data, device="cuda")
    assert abs(t.stats[-1].inertia - tree.stats[-1].inertia) <= 0.03 * tree.stats[-1].inertia
    assert np.array_equal(assign(t, data, device="cuda"), assign(t, data, device="cpu"))


def test_batched_lloyd_ignores_padding_and_moves_empty_clusters() -> None:
    from tasks.tokens.kmeans_backends import _lloyd

    rng = np.random.default_rng(11)
    blobs = np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0]])
    a = torch.from_numpy((blobs[rng.integers(3, size=90)] + rng.normal(size=(90, 2)))
                         .astype(np.float32))
    b = torch.from_numpy(rng.normal(size=(40, 2)).astype(np.float32) * 5.0)
    # node a: two centres in one blob and one far from every point (it ends up empty)
    init_a = torch.tensor([[0.0, 0.0], [0.5, 0.5], [500.0, 500.0]])
    init_b = b[:3].clone()
    alone = [_lloyd(p[None], torch.ones(1, len(p), dtype=torch.bool), c[None], 50)[0]
             for p, c in ((a, init_a), (b, init_b))]
    pad = torch.zeros(2, 90, 2)
    pad[0], pad[1, :40], pad[1, 40:] = a, b, 1e6  # padding far away: must not count
    mask = torch.arange(90)[None, :] < torch.tensor([90, 40])[:, None]
    both = _lloyd(pad, mask, torch.stack([init_a, init_b]), 50)
    assert torch.allclose(both[0], alone[0], atol=1e-4)
    assert torch.allclose(both[1], alone[1], atol=1e-4)
    # every blob got a centre: the empty one moved to the farthest point, Lloyd did the rest
    nearest = torch.cdist(torch.from_numpy(blobs).float(), alone[0]).min(dim=1).values
    assert bool((nearest < 1.0).all())
    assert float(both[1].abs().max()) < 100.0


def test_piecewise_assignment_sums_equal_a_direct_computation() -> None:
    from tasks.tokens import kmeans_backends as kb

    rng = np.random.default_rng(12)
    p = torch.from_numpy(rng.normal(size=(3, 5000, 8)).astype(np.float32))
    mask = torch.arange(5000)[None, :] < torch.tensor([5000, 4321, 17])[:, None]
    c = p[:, :4].clone()
    dmin, lab, sums, counts = kb._assign(p, mask.float(), c)  # pieces of _PIECE rows
    d = ((p[:, :, None, :].double() - c[:, None, :, :].double()) ** 2).sum(-1)
    assert torch.equal(lab[mask], d.argmin(2)[mask])
    onehot = torch.nn.functional.one_hot(d.argmin(2), 4).double() * mask[:, :, None]
    assert torch.allclose(sums, onehot.transpose(1, 2) @ p.double(), rtol=1e-5, atol=1e-3)
    assert torch.equal(counts.double(), onehot.sum(1))
    assert torch.allclose(dmin.double() + (p.double() ** 2).sum(-1), d.min(2).values,
                          rtol=1e-4, atol=1e-3)
