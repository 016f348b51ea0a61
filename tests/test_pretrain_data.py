"""Pretraining data: corpus export from a real warehouse, examples, masking, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models.vocab import CLS, MASK, PAD, SEP, TEXT_VOCAB, VIS_OFFSET, VSEP
from tasks.pretrain.data import (
    IGNORE,
    JOINT,
    TEXT_ONLY,
    VIDEO_ONLY,
    DataConfig,
    PretrainData,
    export_corpus,
)
from tests.pretrain_fixtures import (
    CLIP_S,
    MISSING_FEATURE,
    MISSING_TOKEN,
    N_VISUAL,
    SPLITS,
    WORDS,
    vid,
)
from warehouse.atomic import sha256_file
from warehouse.store import Warehouse


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
               for k in a)


def _originals(batch: dict) -> torch.Tensor:
    """input_ids with the masked positions restored to their original ids."""
    ids = batch["input_ids"].clone()
    ids.view(-1)[batch["mlm_pos"]] = batch["mlm_labels"]
    return ids


def _clip_of(token_id: int) -> tuple[int, int]:
    t = token_id - VIS_OFFSET
    return t // 100, t % 100


def test_export_is_deterministic_and_complete(warehouse: Warehouse, corpus: Path,
                                              feat_corpus: Path, tmp_path: Path):
    again = export_corpus(warehouse, "cb1", tmp_path / "elsewhere")
    assert again.name == corpus.name and sha256_file(again) == sha256_file(corpus)
    assert corpus.parent == warehouse.home / "training" and corpus.name.startswith("corpus-cb1-")
    assert not [p for p in corpus.parent.iterdir() if p.name.startswith(".tmp-")]
    t = pq.read_table(corpus).to_pylist()
    assert [r["video_id"] for r in t] == [vid(i) for i in range(10)]
    assert [r["split"] for r in t] == SPLITS
    assert len(t[0]["clip_token"]) == 39 and 5 not in t[0]["clip_token"]  # untokenized clip
    assert t[1]["clip_token"] == [100 + c for c in range(40)]  # cb1, time order
    assert t[9]["seg_text"] == [] and len(t[2]["seg_text"]) == 14
    assert t[2]["seg_start"] == sorted(t[2]["seg_start"])
    f = pq.read_table(feat_corpus).to_pylist()[1]["clip_feature"]
    feats = np.asarray(f, np.float32).reshape(40, 4)
    assert np.isnan(feats[3]).all() and feats[4].tolist() == [1.0, 4.0, 0.0, 1.0]  # version v1
    with pytest.raises(ValueError, match="unknown codebook 'nope'"):
        export_corpus(warehouse, "nope", tmp_path)
    with pytest.raises(ValueError, match="no clip features of encoder 'clip'"):
        export_corpus(warehouse, "cb1", tmp_path, feature_encoder="clip")
    named = export_corpus(warehouse, "cb2", tmp_path / "c2.parquet")
    assert named == tmp_path / "c2.parquet"
    assert pq.read_table(named).to_pylist()[0]["clip_token"][5] == 55  # the other codebook


def test_same_seed_same_batches_other_seed_differs(corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=8, seed=3)
    a = list(PretrainData(corpus, tokenizer, cfg).batches(0))
    b = list(PretrainData(corpus, tokenizer, DataConfig(batch_size=8, seed=3)).batches(0))
    assert len(a) == len(b) > 5 and all(_same(x, y) for x, y in zip(a, b, strict=True))
    c = list(PretrainData(corpus, tokenizer, DataConfig(batch_size=8, seed=4)).batches(0))
    assert not all(_same(x, y) for x, y in zip(a, c, strict=True))
    e1 = list(PretrainData(corpus, tokenizer, cfg).batches(1))
    assert not all(_same(x, y) for x, y in zip(a, e1, strict=True))


def test_resume_yields_the_tail_of_an_uninterrupted_epoch(corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=8, seed=7, contrastive=True)
    full = list(PretrainData(corpus, tokenizer, cfg).batches(2))
    data = PretrainData(corpus, tokenizer, cfg)
    next(iter(data.batches(0)))  # another epoch's plan cached first
    k = len(full) // 2
    tail = list(data.batches(2, start=k))
    assert len(tail) == len(full) - k
    assert all(_same(x, y) for x, y in zip(full[k:], tail, strict=True))


def test_masking_statistics(corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=64, seed=1, p_video_only=0.5, stride=(1, 2),  # long rows
                     mlm_on_negatives=True)  # every masked position scored: rates visible
    data = PretrainData(corpus, tokenizer, cfg)
    batches = [b for e in range(6) for b in data.batches(e)]
    long_cand = long_mask = n_mask = n_masktok = n_random = n_same = 0
    for b in batches:
        ids, orig = b["input_ids"], _originals(b)
        pos = b["mlm_pos"]
        special = (orig == CLS) | (orig == SEP) | (orig == PAD) | (orig == VSEP)
        assert not special.view(-1)[pos].any()  # specials are never masked
        assert torch.equal(orig.view(-1)[pos], b["mlm_labels"])
        assert torch.equal(b["mlm_is_video"], b["mlm_labels"] >= VIS_OFFSET)
        per_row = torch.bincount(pos // ids.shape[1], minlength=ids.shape[0])
        assert (per_row >= 1).all()  # every row has a masked position
        cand = (~special).sum(1)
        long = cand >= 20  # short rows get their one forced position: rate measured on long
        long_cand += int(cand[long].sum())
        long_mask += int(per_row[long].sum())
        unmasked = torch.ones(ids.numel(), dtype=torch.bool)
        unmasked[pos] = False
        assert torch.equal(ids.view(-1)[unmasked], orig.view(-1)[unmasked])
        new = ids.view(-1)[pos]
        is_mask, same = new == MASK, new == b["mlm_labels"]
        rand, vis = ~is_mask & ~same, b["mlm_is_video"]
        assert ((new[rand & ~vis] >= 999) & (new[rand & ~vis] < TEXT_VOCAB)).all()
        assert ((new[rand & vis] >= VIS_OFFSET) & (new[rand & vis] < VIS_OFFSET + N_VISUAL)).all()
        n_mask += len(pos)
        n_masktok += int(is_mask.sum())
        n_random += int(rand.sum())
        n_same += int(same.sum())
    print(f"masked {n_mask}: long-row rate {long_mask / long_cand:.4f}, [MASK] "
          f"{n_masktok / n_mask:.3f} random {n_random / n_mask:.3f} same {n_same / n_mask:.3f}")
    assert n_mask > 2000 and long_mask > 1000
    assert 0.13 < long_mask / long_cand < 0.17
    assert 0.76 < n_masktok / n_mask < 0.84
    assert 0.07 < n_random / n_mask < 0.13 and 0.07 < n_same / n_mask < 0.13
    assert sum(b["mlm_is_video"].sum().item() for b in batches) > 300  # both modalities
    assert sum((~b["mlm_is_video"]).sum().item() for b in batches) > 300


def test_idf_weighting_masks_rare_words_more_often(corpus: Path, tokenizer):
    ratios = {}
    idf = PretrainData(corpus, tokenizer, DataConfig(mask_weighting="idf"))._idf
    for weighting in ("uniform", "idf"):
        cfg = DataConfig(batch_size=64, seed=3, mask_weighting=weighting,
                         mlm_on_negatives=True)
        data = PretrainData(corpus, tokenizer, cfg)
        seen: dict[int, int] = {}
        masked: dict[int, int] = {}
        n_pos = n_mask = 0
        for b in (b for e in range(4) for b in data.batches(e)):
            orig = _originals(b)
            text = (orig >= 999) & (orig < TEXT_VOCAB)
            for t in orig[text].tolist():
                seen[t] = seen.get(t, 0) + 1
            labels = b["mlm_labels"][~b["mlm_is_video"]].tolist()
            for t in labels:
                masked[t] = masked.get(t, 0) + 1
            n_pos += int(((orig != PAD) & (orig != CLS) & (orig != SEP) & (orig != VSEP)).sum())
            n_mask += len(b["mlm_pos"])
        assert 0.13 < n_mask / n_pos < 0.19  # the same number of masks per row either way
        toks = sorted(seen, key=lambda t: idf[t])
        q = len(toks) // 4
        rare, common = toks[-q:], toks[:q]
        rate_rare = sum(masked.get(t, 0) for t in rare) / sum(seen[t] for t in rare)
        rate_common = sum(masked.get(t, 0) for t in common) / sum(seen[t] for t in common)
        ratios[weighting] = rate_rare / rate_common
    assert 0.7 < ratios["uniform"] < 1.4, ratios
    assert ratios["idf"] > 1.5 * ratios["uniform"], ratios


def test_warmup_batches_hold_matched_joint_rows_only(corpus: Path, tokenizer):
    probe = PretrainData(corpus, tokenizer, DataConfig(batch_size=8, seed=4))
    per_epoch = -(-probe.counts["joint"] // 8)
    cfg = DataConfig(batch_size=8, seed=4, positive_batches=per_epoch + 1)  # -> 2 epochs
    train = PretrainData(corpus, tokenizer, cfg)
    assert train.warmup_epochs == 2
    full = PretrainData(corpus, tokenizer, DataConfig(batch_size=8, seed=4))
    for epoch in range(3):
        batches = list(train.batches(epoch))
        assert len(batches) == train.num_batches(epoch)
        labels = torch.cat([b["align_labels"] for b in batches])
        if epoch < 2:  # warm-up: every row a matched text-video pair, no alignment term
            assert labels.tolist() == [IGNORE] * train.counts["joint"]
            assert all((b["token_type_ids"] == 1).any(1).all() for b in batches)
            plan = train.plan(epoch)
            assert (plan.kind == JOINT).all()
            vids = train.corpus.clip_video[plan.vstart]  # the clips of the text's own video
            assert (vids == train.corpus.seg_video[plan.seg]).all()
        else:  # then the full mixture, exactly as without warm-up
            assert (labels == 0).any() and (labels == IGNORE).any()
            ref = list(full.batches(epoch))
            assert all(_same(a, b) for a, b in zip(batches, ref, strict=True))
    val = PretrainData(corpus, tokenizer, cfg, split="val")  # held-out data is never warm-up
    assert not val.warmup(0) and val.num_batches(0) == PretrainData(
        corpus, tokenizer, DataConfig(batch_size=8, seed=4), split="val").num_batches(0)
    with pytest.raises(ValueError, match="positive_batches"):
        DataConfig(positive_batches=-1)


def test_mismatched_rows_are_masked_but_not_scored(corpus: Path, tokenizer):
    assert DataConfig().mlm_on_negatives  # BERT's default: every masked token is scored
    scored = {}
    for on_neg in (False, True):
        data = PretrainData(corpus, tokenizer, DataConfig(batch_size=64, seed=1,
                                                          mlm_on_negatives=on_neg))
        neg_masked = neg_scored = pos_scored = 0
        for b in data.batches(0):
            row = b["mlm_pos"] // b["input_ids"].shape[1]
            neg = b["align_labels"] == 0
            neg_masked += int((b["input_ids"][neg] == MASK).sum())
            neg_scored += int(neg[row].sum())
            pos_scored += int((~neg)[row].sum())
        scored[on_neg] = (neg_masked, neg_scored, pos_scored)
    (masked_off, neg_off, pos_off), (masked_on, neg_on, pos_on) = scored[False], scored[True]
    assert masked_off == masked_on > 0  # same masking either way: alignment sees no difference
    assert neg_off == 0 and neg_on > 0
    assert pos_off == pos_on > 0


def _joint_rows(data: PretrainData, epoch: int):
    p = data.plan(epoch)
    for b in range(data.num_batches(epoch)):
        batch = data.batch(epoch, b)
        orig = _originals(batch)
        for r, ex in enumerate(p.order[p.bounds[b]:p.bounds[b + 1]]):
            yield p, ex, batch, r, orig[r]


def test_joint_examples_pair_text_with_overlapping_clips(corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=16, seed=2, p_negative=0.0, max_video=6)
    data = PretrainData(corpus, tokenizer, cfg)
    c = data.corpus
    strides, joined, n_joint = set(), 0, 0
    for p, ex, batch, r, row in _joint_rows(data, 0):
        if p.kind[ex] != JOINT:
            continue
        n_joint += 1
        assert batch["align_labels"][r] == 1
        ids = row[row != PAD].tolist()
        split = ids.index(VSEP)
        s = int(p.seg[ex])
        words = c.tok[c.tok_off[s]:c.tok_off[s + 2 if p.joined[ex] else s + 1]].tolist()
        assert ids[0] == CLS and ids[-1] == SEP and ids[1:split] == words[:cfg.max_text]
        t0 = c.seg_start[s]
        t1 = max(c.seg_end[s], c.seg_end[s + 1]) if p.joined[ex] else c.seg_end[s]
        clips = [_clip_of(t) for t in ids[split + 1:-1]]
        assert 1 <= len(clips) <= cfg.max_video
        for v, ci in clips:  # same video, overlapping [t0, t1)
            assert c.video_ids[c.seg_video[s]] == vid(v)
            assert ci * CLIP_S < t1 and (ci + 1) * CLIP_S > t0
        gaps = {b[1] - a[1] for a, b in zip(clips, clips[1:], strict=False)}
        if clips[0][0] != MISSING_TOKEN[0]:  # elsewhere clip indices are consecutive
            assert len(gaps) <= 1  # one stride per example
        strides |= gaps
        joined += bool(p.joined[ex])
    assert n_joint == 6 * 14 and strides >= {1, 2} and 0 < joined < n_joint
    types = batch["token_type_ids"]
    assert (types[batch["attention_mask"] == 0] == 0).all()


def test_negatives_come_from_another_video_or_a_distant_time(corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=16, seed=5, p_negative=0.5,
                     mlm_on_negatives=True)  # _originals restores scored positions only
    data = PretrainData(corpus, tokenizer, cfg)
    c, kinds = data.corpus, {"other": 0, "same": 0}
    n_neg = n_joint = 0
    for p, ex, batch, r, row in _joint_rows(data, 0):
        if p.kind[ex] != JOINT:
            continue
        n_joint += 1
        assert batch["align_labels"][r] == p.align[ex]
        ids = row[row != PAD].tolist()
        clips = [_clip_of(t) for t in ids[ids.index(VSEP) + 1:-1]]
        s = int(p.seg[ex])
        own = int(c.video_ids[c.seg_video[s]][:2])
        t0, t1 = c.seg_start[s], (max(c.seg_end[s], c.seg_end[s + 1]) if p.joined[ex]
                                  else c.seg_end[s])
        lo, hi = int(t0 // CLIP_S), int(np.ceil(t1 / CLIP_S))  # overlapping clips [lo, hi)
        if p.align[ex] == 1:
            assert all(v == own and lo <= ci < hi for v, ci in clips)
            continue
        n_neg += 1
        assert SPLITS[clips[0][0]] == "train"
        if clips[0][0] != own:
            kinds["other"] += 1
        else:
            kinds["same"] += 1
            assert all(ci >= hi + cfg.neg_min_gap or ci < lo - cfg.neg_min_gap for _, ci in clips)
    assert 0.35 < n_neg / n_joint < 0.65
    assert kinds["other"] > 5 and kinds["same"] > 5


def test_text_only_and_video_only_rows(corpus: Path, tokenizer):
    data = PretrainData(corpus, tokenizer, DataConfig(batch_size=16, seed=0))
    p = data.plan(0)
    counts = np.bincount(p.kind, minlength=3)
    assert abs(counts[TEXT_ONLY] / counts.sum() - 0.2) < 0.02
    assert abs(counts[VIDEO_ONLY] / counts.sum() - 0.2) < 0.02
    videos_seen = set()
    for b in range(data.num_batches(0)):
        batch = data.batch(0, b)
        orig, types, attn = _originals(batch), batch["token_type_ids"], batch["attention_mask"]
        rows = p.order[p.bounds[b]:p.bounds[b + 1]]
        for r, ex in enumerate(rows):
            n = int(attn[r].sum())
            ids, ty = orig[r, :n].tolist(), types[r, :n].tolist()
            assert (orig[r, n:] == PAD).all() and ids[0] == CLS and ids[-1] == SEP
            if p.kind[ex] == TEXT_ONLY:
                assert batch["align_labels"][r] == IGNORE and ty == [0] * n
                assert all(0 < t < TEXT_VOCAB for t in ids) and VSEP not in ids
            elif p.kind[ex] == VIDEO_ONLY:
                assert batch["align_labels"][r] == IGNORE and ids[1] == VSEP
                assert ty == [0] + [1] * (n - 1)
                assert all(t >= VIS_OFFSET for t in ids[2:-1]) and n >= 4
                videos_seen.add(_clip_of(ids[2])[0])
            else:
                k = ids.index(VSEP)
                assert ty == [0] * k + [1] * (n - k)
                assert batch["align_labels"][r] in (0, 1)
    assert 9 in videos_seen  # a video without text still gives video-only rows
    s = data.summary()
    assert s["videos"] == 7 and s["videos_with_text"] == 6 and s["clips"] == 7 * 40 - 1
    assert s["segments"] == 6 * 14 and s["examples"]["joint"] == 6 * 14
    assert s["examples"]["text_only"] == counts[TEXT_ONLY] and s["batches"] == data.num_batches()


def test_splits_are_kept_apart(corpus: Path, tokenizer):
    held_out = set(tokenizer(" ".join(WORDS["val"][0] + WORDS["val"][1] + WORDS["test"][0]
                                      + WORDS["test"][1]), add_special_tokens=False)["input_ids"])
    train = PretrainData(corpus, tokenizer,
                         DataConfig(batch_size=32, seed=0, mlm_on_negatives=True))
    for b in train.batches(0):
        ids = set(_originals(b).view(-1).tolist())
        assert not ids & held_out
        assert all(SPLITS[_clip_of(t)[0]] == "train" for t in ids if t >= VIS_OFFSET)
    val = PretrainData(corpus, tokenizer, DataConfig(batch_size=32, seed=0, mlm_on_negatives=True),
                       split="val")
    assert val.corpus.video_ids == [vid(6), vid(7)]
    for b in val.batches(0):
        vis = [_clip_of(t)[0] for t in _originals(b).view(-1).tolist() if t >= VIS_OFFSET]
        assert set(vis) <= {6, 7}  # negatives drawn from the val split only
    test = PretrainData(corpus, tokenizer, DataConfig(), split="test")
    assert test.summary()["videos"] == 1
    with pytest.raises(ValueError, match="unknown split 'tain'"):
        PretrainData(corpus, tokenizer, DataConfig(), split="tain")


def test_feature_targets_and_contrastive_pairs(feat_corpus: Path, tokenizer):
    cfg = DataConfig(batch_size=32, seed=0, contrastive=True, mask_prob=0.3)
    data = PretrainData(feat_corpus, tokenizer, cfg)
    assert data.feature_dim == 4 and data.n_visual == N_VISUAL
    n_feat = n_pairs = 0
    for b in data.batches(0):
        orig = _originals(b).view(-1)
        pos = b["mlm_pos"][b["mlm_is_video"]]
        assert set(b["feat_pos"].tolist()) <= set(pos.tolist())
        for fp, target in zip(b["feat_pos"].tolist(), b["feat_targets"], strict=True):
            v, ci = _clip_of(int(orig[fp]))
            assert target.tolist() == [float(v), float(ci), 0.0, 1.0]
        missing = [p for p in pos.tolist() if _clip_of(int(orig[p])) == MISSING_FEATURE]
        assert not set(missing) & set(b["feat_pos"].tolist())
        n_feat += len(b["feat_pos"])
        if "ctr_text_ids" in b:
            t, v = b["ctr_text_ids"], b["ctr_video_ids"]
            assert t.shape[0] == v.shape[0] == int((b["align_labels"] == 1).sum())
            assert (t[:, 0] == CLS).all() and (v[:, 1] == VSEP).all()
            assert ((t < TEXT_VOCAB) | ~b["ctr_text_mask"]).all()
            assert ((v[:, 2:] >= VIS_OFFSET) | (v[:, 2:] == SEP) | (v[:, 2:] == PAD)).all()
            assert torch.equal(b["ctr_video_mask"], v != PAD)
            n_pairs += t.shape[0]
    assert n_feat > 50 and n_pairs > 20


def test_length_bucketing_keeps_padding_small(corpus: Path, tokenizer):
    def pad_share(bucket: int) -> float:
        cfg = DataConfig(batch_size=8, seed=0, bucket_batches=bucket)
        bs = list(PretrainData(corpus, tokenizer, cfg).batches(0))
        return 1 - sum(b["n_tokens"] for b in bs) / sum(b["input_ids"].numel() for b in bs)

    bucketed, unbucketed = pad_share(50), pad_share(1)
    print(f"padding share: bucketed {bucketed:.3f}, unbucketed {unbucketed:.3f}")
    assert bucketed < unbucketed / 3


def test_config_checks_and_round_trip():
    cfg = DataConfig(stride=[2, 3], seed=9)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg and cfg.stride == (2, 3)
    with pytest.raises(ValueError, match="p_negative"):
        DataConfig(p_negative=1.5)
    with pytest.raises(ValueError, match="no joint"):
        DataConfig(p_text_only=0.5, p_video_only=0.5)
    with pytest.raises(ValueError, match="stride"):
        DataConfig(stride=(0, 5))
    with pytest.raises(ValueError, match="unknown DataConfig"):
        DataConfig.from_dict({"batch": 3})
