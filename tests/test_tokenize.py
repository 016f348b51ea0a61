"""The tokenize flow on the sample corpus: real I3D weights, concepts, codebook, tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.tokens import cluster
from warehouse.store import Warehouse


@pytest.fixture(scope="module")
def tokenized(prefect_harness, tmp_path_factory) -> tuple[Path, dict, dict]:
    """Sample corpus ingested and tokenized once; returns (home, first, second summary)."""
    from flows.ingest import IngestParams, ingest_flow
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from tasks.ingest.samples import build_sample_corpus

    home = tmp_path_factory.mktemp("tok") / "home"
    corpus = build_sample_corpus(home / "samples" / "real")
    ingest_flow(IngestParams(source=str(corpus.root), home=str(home)))
    params = TokenizeParams(home=str(home), levels=2, branching=3, clips_per_task=8)
    first = tokenize_flow(params)
    second = tokenize_flow(params)
    return home, first, second


def test_every_clip_has_features_and_a_token(tokenized):
    home, first, _ = tokenized
    con = Warehouse(home).connect()
    n_clips = con.sql("SELECT count(*) FROM clips").fetchall()[0][0]
    assert n_clips > 10
    per_encoder = dict(con.sql("SELECT encoder, count(DISTINCT clip_id) FROM clip_features "
                               "GROUP BY 1").fetchall())
    assert per_encoder == {"i3d": n_clips, "concepts": n_clips}
    dims = dict(con.sql("SELECT encoder, min(dim) FROM clip_features GROUP BY 1").fetchall())
    assert dims == {"i3d": 1024, "concepts": 384}
    assert con.sql("SELECT count(*) FROM clip_features WHERE encoder = 'i3d' "
                   "AND len(logits) = 400").fetchall()[0][0] == n_clips
    cb = con.sql("SELECT codebook_id, n_tokens, n_points, path FROM codebooks").fetchall()
    assert len(cb) == 1 and cb[0][2] == n_clips
    tokens = con.sql("SELECT clip_id, token, path FROM visual_tokens").fetchall()
    assert len(tokens) == n_clips and len({t[0] for t in tokens}) == n_clips
    assert all(0 <= t[1] < cb[0][1] for t in tokens)
    assert first["codebook"]["fitted"] and first["features"]["i3d"] == n_clips


def test_second_run_does_nothing(tokenized):
    home, _, second = tokenized
    assert second["features"] == {"i3d": 0, "concepts": 0}
    assert second["codebook"]["fitted"] is False and second["codebook"]["assigned"] == 0
    con = Warehouse(home).connect()
    dup = con.sql("SELECT clip_id, encoder, count(*) FROM clip_features GROUP BY 1, 2 "
                  "HAVING count(*) > 1").fetchall()
    assert dup == []


def test_tokens_consistent_with_tree(tokenized):
    """Same clips assigned twice give the same tokens; stored tokens follow the tree."""
    home, _, _ = tokenized
    con = Warehouse(home).connect()
    path = con.sql("SELECT path FROM codebooks").fetchall()[0][0]
    tree = cluster.load_tree(home / path)
    rows = con.sql("SELECT f.vector, t.token FROM clip_features f JOIN visual_tokens t "
                   "USING (clip_id) WHERE f.encoder = 'i3d' ORDER BY clip_id").fetchall()
    x = np.asarray([r[0] for r in rows], dtype=np.float32)
    again = cluster.assign(tree, x)
    assert again.tolist() == [r[1] for r in rows]
    assert cluster.assign(tree, x).tolist() == again.tolist()


def test_concepts_search_beats_random(tokenized):
    """Text -> video with the concepts encoder: each caption's video ranks better than chance."""
    from models.concepts import concepts_encoder

    home, _, _ = tokenized
    con = Warehouse(home).connect()
    vids = con.sql("SELECT video_id, list(vector ORDER BY clip_id) FROM clip_features "
                   "WHERE encoder = 'concepts' GROUP BY 1 ORDER BY 1").fetchall()
    video_ids = [v for v, _ in vids]
    emb = np.stack([np.asarray(vecs, np.float32).mean(0) for _, vecs in vids])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    caps = con.sql("SELECT video_id, text FROM text_segments").fetchall()
    q = concepts_encoder().embed_text([t for _, t in caps])
    ranks = []
    for (vid, _), s in zip(caps, q @ emb.T, strict=True):
        ranks.append(1 + int((s > s[video_ids.index(vid)]).sum()))
    mean_rank = float(np.mean(ranks))
    chance = (len(video_ids) + 1) / 2
    print(f"concepts text->video mean rank {mean_rank:.2f} vs chance {chance:.2f} "
          f"over {len(ranks)} captions, {len(video_ids)} videos")
    assert mean_rank < chance - 0.5


def test_clip_features_with_a_local_clip_folder(tokenized, tmp_path):
    """A CLIP folder given: clip features for every clip; without one the flow says so."""
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from tests.tiny_clip import make_tiny_clip

    home, _, _ = tokenized
    missing = tokenize_flow(TokenizeParams(home=str(home), encoders=["i3d", "clip"],
                                           clip_model=str(tmp_path / "nope"), levels=2,
                                           branching=3))
    assert "save_pretrained" in missing["clip_skipped"]
    folder = make_tiny_clip(tmp_path / "tiny-clip")
    out = tokenize_flow(TokenizeParams(home=str(home), encoders=["clip"],
                                       clip_model=str(folder), levels=2, branching=3))
    con = Warehouse(home).connect()
    n_clips = con.sql("SELECT count(*) FROM clips").fetchall()[0][0]
    assert out["features"]["clip"] == n_clips
    dims = con.sql("SELECT DISTINCT dim FROM clip_features WHERE encoder = 'clip'").fetchall()
    assert dims == [(16,)]


def test_codebook_gallery_png(tokenized, tmp_path):
    from PIL import Image

    from tasks.tokens.gallery import THUMB, codebook_gallery

    home, _, _ = tokenized
    path, cb_id = codebook_gallery(Warehouse(home), tmp_path / "g.png", n_tokens=3, per_token=4)
    img = np.asarray(Image.open(path))
    assert img.shape[0] == 3 * (THUMB + 4) and img.shape[1] > 4 * THUMB
    assert img[:THUMB, 90:90 + THUMB].std() > 10  # a real frame, not a flat tile
    assert len(cb_id) == 16


def test_sigkill_mid_tokenize_resumes_without_duplicates(tokenized, tmp_path):
    import json
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from flows.ingest import IngestParams, ingest_flow
    from tests.test_cli import _env

    src_home, _, _ = tokenized
    home = tmp_path / "home"
    ingest_flow(IngestParams(source=str(src_home / "samples" / "real"), home=str(home)))
    shutil.copytree(src_home / "weights", home / "weights")  # skip the download
    wh = Warehouse(home)
    cmd = [sys.executable, "-m", "videobert.cli", "tokenize", "--levels", "2", "--branching",
           "3", "--clips-per-task", "2", "--format", "json"]
    proc = subprocess.Popen(cmd, env=_env(home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(e["message"].endswith("i3d features") for e in wh.manifest()["log"]):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_clips = wh.connect().sql("SELECT count(*) FROM clips").fetchall()[0][0]
    done = wh.connect().sql("SELECT count(*) FROM clip_features").fetchall()[0][0]
    assert 0 < done < n_clips, "the kill came too late (or too early) to test anything"
    p = subprocess.run(cmd, env=_env(home), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["features"]["i3d"] == n_clips - done
    con = wh.connect()
    assert con.sql("SELECT count(*), count(DISTINCT clip_id) FROM clip_features "
                   "WHERE encoder = 'i3d'").fetchall() == [(n_clips, n_clips)]
    assert con.sql("SELECT count(DISTINCT clip_id) FROM visual_tokens").fetchall() == [(n_clips,)]
