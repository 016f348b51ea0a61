"""Clip features as pretraining input, and the held-out alignment evaluation's rows and scores
(on the real warehouse of tests/test_pretrain_data.py, where a token names its clip)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.videobert import build_model
from models.vocab import PAD, VIS_OFFSET, VSEP
from tasks.pretrain.align_eval import MATCH, OTHER, SAME, align_metrics, align_scores, align_set
from tasks.pretrain.data import DataConfig, PretrainData
from tests.pretrain_fixtures import MISSING_FEATURE, N_VISUAL


def _clip(token: int) -> tuple[int, int]:
    t = token - VIS_OFFSET
    return t // 100, t % 100


def test_features_ride_with_visual_tokens_but_not_with_masked_ones(feat_corpus: Path,
                                                                    tokenizer) -> None:
    data = PretrainData(feat_corpus, tokenizer, DataConfig(batch_size=16, seed=1,
                                                           feature_input=True, mask_prob=0.3))
    n_vis = n_hidden = 0
    for b in data.batches(0):
        f, ids = b["features"], b["input_ids"]
        assert f.shape == (*ids.shape, 4)
        hidden = set(b["mlm_pos"].tolist())
        flat_f, flat_ids = f.reshape(-1, 4), ids.reshape(-1)
        for p in range(flat_ids.shape[0]):
            tok, vec = int(flat_ids[p]), flat_f[p]
            if p in hidden or tok < VIS_OFFSET or _clip(tok) == MISSING_FEATURE:
                n_hidden += p in hidden and bool((vec == 0).all())
                if p not in hidden:
                    assert (vec == 0).all()  # text, specials, padding, no feature
                continue
            v, ci = _clip(tok)
            want = torch.tensor([v, ci, 0.0, 1.0]) / np.linalg.norm([v, ci, 0.0, 1.0])
            assert torch.allclose(vec, want, atol=1e-6)  # its own clip's feature, unit length
            n_vis += 1
        # a masked visual position keeps no feature (it would give the answer away)
        assert all((flat_f[p] == 0).all() for p in hidden)
    assert n_vis > 100 and n_hidden > 20


def test_feature_input_needs_a_corpus_with_features(corpus: Path, tokenizer) -> None:
    with pytest.raises(ValueError, match="feature_input needs a corpus exported with features"):
        PretrainData(corpus, tokenizer, DataConfig(feature_input=True))


def test_same_video_share_of_negatives(corpus: Path, tokenizer) -> None:
    for share, want_same in ((1.0, True), (0.0, False)):
        data = PretrainData(corpus, tokenizer, DataConfig(batch_size=32, seed=2,
                                                          p_same_video=share))
        p, c = data.plan(0), data.corpus
        neg = np.flatnonzero(p.align == 0)
        assert len(neg) > 10
        same = c.clip_video[p.vstart[neg]] == c.seg_video[p.seg[neg]]
        assert same.all() if want_same else not same.any()


def test_alignment_rows_are_matches_and_both_kinds_of_negatives(corpus: Path,
                                                                tokenizer) -> None:
    data = PretrainData(corpus, tokenizer, DataConfig(), split="val")
    rows = align_set(data, seed=3)
    c = data.corpus
    kinds = {k: int((rows.kind == k).sum()) for k in (MATCH, OTHER, SAME)}
    assert kinds[MATCH] == 2 * 14 and kinds[OTHER] == kinds[MATCH] and kinds[SAME] > 20
    for i in range(len(rows)):
        s, start, n = rows.segment[i], rows.vstart[i], rows.vcount[i]
        clips = range(start, start + n)
        own = c.seg_video[s]
        t0, t1 = c.seg_start[s], c.seg_end[s]
        overlaps = [c.clip_start[k] < t1 and c.clip_end[k] > t0 for k in clips]
        videos = {int(c.clip_video[k]) for k in clips}
        if rows.kind[i] == MATCH:
            assert videos == {own} and all(overlaps)
        elif rows.kind[i] == OTHER:
            assert own not in videos and len(videos) == 1
        else:
            assert videos == {own} and not any(overlaps)
    again = align_set(data, seed=3)
    assert np.array_equal(again.vstart, rows.vstart)  # every evaluation scores the same rows


def test_alignment_metrics_are_balanced() -> None:
    kind = np.array([MATCH] * 4 + [OTHER] * 2 + [SAME] * 6)
    perfect = np.where(kind == MATCH, 3.0, -3.0)
    m = align_metrics(perfect, kind)
    assert m["acc_align_other"] == m["acc_align_same"] == 1.0
    assert m["auc_align_other"] == 1.0 and m["n_align_eval"] == 4
    yes = align_metrics(np.ones(len(kind)), kind)  # always "match": chance, whatever the mix
    assert yes["acc_align_other"] == yes["acc_align_same"] == 0.5
    assert yes["auc_align_same"] == 0.5
    wrong = align_metrics(-perfect, kind)
    assert wrong["acc_align_other"] == 0.0 and wrong["auc_align_other"] == 0.0


def test_alignment_scores_read_the_features(feat_corpus: Path, tokenizer) -> None:
    data = PretrainData(feat_corpus, tokenizer, DataConfig(feature_input=True), split="val")
    rows = align_set(data, seed=0)
    torch.manual_seed(0)
    model = build_model("tiny", N_VISUAL, feature_dim=4)
    plain = align_scores(model, data, rows)
    model.enable_feature_input(4, "i3d")
    assert np.allclose(align_scores(model, data, rows), plain)  # zero-initialised projection
    with torch.no_grad():
        model.feature_in.weight.normal_()
    moved = align_scores(model, data, rows)
    assert moved.shape == (len(rows),) and not np.allclose(moved, plain)
    assert not (rows.vcount == 0).any() and (rows.text_len > 0).all()
    ids = data.layout(rows.text_start[:1], rows.text_len[:1], np.ones(1, bool),
                      rows.vstart[:1], np.ones(1, np.int64), rows.vcount[:1])[0][0]
    assert VSEP in ids.tolist() and PAD not in ids.tolist()
