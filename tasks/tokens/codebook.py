"""Codebooks and visual tokens in the warehouse: fit once, assign new clips incrementally."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.shared.errors import InputError
from tasks.tokens import cluster
from warehouse import queries
from warehouse.store import Writer, utcnow


def path_tokens(paths: np.ndarray, branching: int) -> np.ndarray:
    """Leaf ids from root-first child indices: node(l+1) = node(l) * branching + child."""
    tokens = np.zeros(len(paths), dtype=np.int64)
    for level in range(paths.shape[1]):
        tokens = tokens * branching + paths[:, level]
    return tokens


def _features(w: Writer, query: str, params: list) -> tuple[list[str], list[str], np.ndarray]:
    con = w.wh.connect()
    rows = con.execute(queries.load(query), params).fetchall()
    con.close()
    if not rows:
        return [], [], np.zeros((0, 0), np.float32)
    x = np.asarray([r[2] for r in rows], dtype=np.float32)
    return [r[0] for r in rows], [r[1] for r in rows], x


def fit_codebook(w: Writer, encoder: str, version: str, levels: int, branching: int, seed: int,
                 run_id: str, log: Any, min_points: int = 39) -> dict[str, Any]:
    """Fit a hierarchical k-means tree on every feature of (encoder, version) and record it.

    ``min_points`` is the average number of clips each leaf needs: with fewer clips than
    ``min_points * branching ** levels`` the tree is made smaller (``cluster.plan_shape``).

    The tree file is written (atomically) before its ``codebooks`` row is committed; the tree
    id is a content hash, so a refit of the same data after a crash rewrites the same file.
    """
    _, _, x = _features(w, "features_of_encoder", [encoder, version])
    if len(x) == 0:
        raise InputError(f"no {encoder} features to cluster in {w.wh.home}: no clip was ingested "
                         "or none could be decoded (`videobert ingest PATH...` first)")
    # A tiny corpus (the sample videos) still gets a vocabulary: below 2 x min_points the
    # per-centroid floor drops so that at least a one-level tree of a few tokens is fitted.
    mpc = min_points if len(x) >= 2 * min_points else max(1, len(x) // 4)
    if mpc < min_points:
        log.warning("only %d clips with %s features: fitting a small codebook "
                    "(%d+ points per centroid); re-cluster once there is more data "
                    "(videobert tokenize --recluster)", len(x), encoder, mpc)
    tree = cluster.fit_hkmeans(x, levels, branching, seed=seed, min_points_per_centroid=mpc,
                               log=lambda m: log.info(m))
    rel = f"codebooks/{encoder}-{tree.version}.safetensors"
    (w.wh.home / "codebooks").mkdir(parents=True, exist_ok=True)
    cluster.save_tree(tree, w.wh.home / rel)
    row = {"codebook_id": tree.version, "encoder": encoder, "encoder_version": version,
           "levels": tree.levels, "branching": tree.branching, "n_tokens": tree.n_tokens,
           "n_points": int(len(x)), "seed": seed, "path": rel,
           "stats_json": json.dumps(cluster.report(tree), default=float),
           "created_at": utcnow()}
    w.commit([w.stage("codebooks", [row])], message=f"tokenize {run_id}: codebook")
    return {"codebook_id": tree.version, "path": rel, "fitted": True,
            "levels": tree.levels, "branching": tree.branching, "n_points": int(len(x))}


def assign_new(w: Writer, codebook_id: str, rel_path: str, encoder: str, version: str,
               run_id: str, chunk: int = 65536) -> int:
    """Give every clip with features but no token under ``codebook_id`` its token."""
    tree = cluster.load_tree(Path(w.wh.home) / rel_path)
    ids, vids, x = _features(w, "features_without_tokens", [encoder, version, codebook_id])
    total = 0
    for s in range(0, len(ids), chunk):
        paths = cluster.assign_path(tree, x[s:s + chunk])
        tokens = path_tokens(paths, tree.branching)
        now = utcnow()
        rows = [{"clip_id": ids[s + i], "video_id": vids[s + i], "codebook_id": codebook_id,
                 "token": int(tokens[i]), "path": [int(v) for v in paths[i]],
                 "assigned_at": now} for i in range(len(paths))]
        w.commit([w.stage("visual_tokens", rows)], publish="auto",
                 message=f"tokenize {run_id}: tokens")
        total += len(rows)
    return total
