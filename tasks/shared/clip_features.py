"""Stored clip features as unit vectors: what retrieval fine-tuning, re-ranking and the
pretraining probe give the model beside each clip's visual token."""

from __future__ import annotations

import numpy as np

from warehouse import queries
from warehouse.store import Warehouse


def clip_features(wh: Warehouse, encoder: str) -> dict[str, np.ndarray]:
    """``clip_id -> unit-length float32 feature`` of an encoder's newest version ({} if none)."""
    con = wh.connect()
    try:
        version = con.execute(queries.load("latest_feature_version"), [encoder]).fetchone()
        rows = [] if version is None else con.execute(
            queries.load("features_of_encoder"), [encoder, version[0]]).fetchall()
    finally:
        con.close()
    out = {}
    for clip_id, _video, vec in rows:
        v = np.asarray(vec, np.float32)
        out[clip_id] = v / max(float(np.linalg.norm(v)), 1e-12)
    return out
