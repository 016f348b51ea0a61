"""Retrieval fine-tuning: VideoBERT as a dual encoder trained with a symmetric InfoNCE loss.

A pretrained VideoBERT encodes text-only input (``[CLS] caption [SEP]``) and video-only input
(``[CLS] [>] visual tokens [SEP]``) through the same transformer; each side is mean-pooled and
projected (``embed_text`` / ``embed_video``) into a shared unit sphere. Training pairs are each
train-split text segment and the clips it overlaps in time. In-batch negatives.

With clip features (``features``, by default the I3D ones), each visual token's embedding also
gets its clip's projected feature (:meth:`models.videobert.VideoBert.enable_feature_input`):
the token says which cluster a clip is in, the feature tells apart the clips of one cluster.
Captions of the same clips are positives of each other. Without features, captions whose clips
carry the very same visual tokens are all positives of each other (the model cannot tell those
clips apart, so calling them negatives would only teach noise).

The temperature is the model's learnable ``logit_scale``. Optional distillation matches the
student's in-batch similarity distribution to a teacher's (concepts baseline or CLIP). Early
stopping on validation text->clip R@5; the best weights are kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from models.vocab import CLS, PAD, SEP, VSEP, visual_id
from tasks.retrieval import rerank as rr
from tasks.retrieval.metrics import retrieval_metrics
from tasks.shared.clip_features import clip_features as clip_features  # re-exported
from warehouse import queries
from warehouse.store import Warehouse

_MAX_LOGIT_SCALE = math.log(100.0)


class FinetuneConfig(BaseModel):
    """Optimisation and early-stopping settings of a retrieval fine-tune."""

    steps: int = Field(600, ge=1, description="Maximum optimiser steps")
    batch_size: int = Field(64, ge=2, description="Pairs per batch (in-batch negatives)")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate")
    warmup: int = Field(30, ge=0, description="Linear warmup steps")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    eval_every: int = Field(50, ge=1, description="Validate every N steps")
    patience: int = Field(4, ge=1, description="Stop after N validations without a better R@5")
    max_text: int = Field(48, ge=4, description="WordPieces kept per caption")
    distill: str | None = Field(None, description="Teacher: None, 'concepts' or 'clip'")
    distill_weight: float = Field(0.5, ge=0, description="Weight of the distillation term")
    features: str | None = Field("i3d", description="Clip features added to the visual "
                                 "tokens (an encoder of clip_features), or None: tokens only")
    itm_weight: float = Field(1.0, ge=0, description="Weight of the cross-encoder term: the "
                              "alignment head on each pair and on hard negatives mined from "
                              "the batch (0: dual encoder only, no re-ranking)")
    rerank_top: int = Field(20, ge=2, description="Candidates re-ranked when the fusion "
                            "weight is tuned on validation")
    seed: int = Field(0, description="Seed of the batch order")


@dataclass(frozen=True)
class Pairs:
    """Text segments of one split with the clips (and visual tokens) they overlap."""

    segment_ids: list[str]
    video_ids: list[str]
    texts: list[str]
    clip_ids: list[tuple[str, ...]]
    tokens: list[tuple[int, ...]]
    features: Mapping[str, np.ndarray] | None = None  # clip_id -> unit feature (shared)

    def __len__(self) -> int:
        return len(self.segment_ids)

    def feature_seqs(self, rows: Sequence[int]) -> list[list[np.ndarray | None]] | None:
        """Per row, the features of its clips (None where a clip has none); None without
        features."""
        if self.features is None:
            return None
        return [[self.features.get(c) for c in self.clip_ids[i]] for i in rows]


def load_pairs(wh: Warehouse, codebook_id: str, split: str,
               features: Mapping[str, np.ndarray] | None = None) -> Pairs:
    """Caption-clip pairs of a split from the published warehouse."""
    con = wh.connect()
    rows = con.execute(queries.load("retrieval_pairs"), [codebook_id, split]).fetchall()
    con.close()
    return Pairs(segment_ids=[r[0] for r in rows], video_ids=[r[1] for r in rows],
                 texts=[r[2] for r in rows], clip_ids=[tuple(r[3]) for r in rows],
                 tokens=[tuple(int(t) for t in r[4]) for r in rows], features=features)


def text_inputs(tokenizer: Any, texts: Sequence[str], max_text: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] text [SEP]`` ids and mask, padded to the longest row."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                    max_length=max_text)["input_ids"]
    rows = [[CLS, *e, SEP] for e in enc]
    return _pad(rows)


def video_inputs(token_seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] [>] v... [SEP]`` ids and mask for sequences of visual tokens."""
    return _pad([[CLS, VSEP, *(visual_id(t) for t in seq), SEP] for seq in token_seqs])


def video_features(feat_seqs: Sequence[Sequence[np.ndarray | None]] | None, width: int,
                   dim: int) -> torch.Tensor | None:
    """(B, width, dim) clip features at the visual-token positions of :func:`video_inputs`
    (position 2 + k for clip k), zeros elsewhere and for clips without a feature."""
    if feat_seqs is None or dim <= 0:
        return None
    out = np.zeros((len(feat_seqs), width, dim), np.float32)
    for i, seq in enumerate(feat_seqs):
        for k, f in enumerate(seq):
            if f is not None:
                out[i, 2 + k] = f
    return torch.from_numpy(out)


def _pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, ids != PAD


@torch.no_grad()
def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], *, max_text: int = 48,
                device: torch.device | str = "cpu", batch: int = 256) -> np.ndarray:
    """(N, proj_dim) unit-length text embeddings."""
    model.eval()
    out = []
    for s in range(0, len(texts), batch):
        ids, mask = text_inputs(tokenizer, texts[s:s + batch], max_text)
        out.append(model.embed_text(ids.to(device), mask.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.proj_dim), np.float32)


def _embed_video(model: Any, seqs: Sequence[Sequence[int]],
                 feats: Sequence[Sequence[np.ndarray | None]] | None,
                 device: torch.device | str) -> torch.Tensor:
    ids, mask = video_inputs(seqs)
    dim = model.config.feature_dim if model.config.feature_input else 0
    f = video_features(feats, ids.shape[1], dim)
    return model.embed_video(ids.to(device), mask.to(device),
                             None if f is None else f.to(device))


@torch.no_grad()
def embed_token_seqs(model: Any, seqs: Sequence[Sequence[int]], *,
                     feats: Sequence[Sequence[np.ndarray | None]] | None = None,
                     device: torch.device | str = "cpu", batch: int = 512) -> np.ndarray:
    """(N, proj_dim) unit-length video embeddings of visual-token sequences (with their clips'
    features when the model reads features and ``feats`` is given)."""
    model.eval()
    out = []
    for s in range(0, len(seqs), batch):
        f = None if feats is None else feats[s:s + batch]
        out.append(_embed_video(model, seqs[s:s + batch], f, device).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.proj_dim), np.float32)


def clip_level_set(pairs: Pairs) -> tuple[list[str], list[tuple[int, ...]], list[list[int]]]:
    """Unique clips of the pairs (candidates), their token, and each caption's correct clips."""
    index: dict[str, int] = {}
    seqs: list[tuple[int, ...]] = []
    positives = []
    for cids, toks in zip(pairs.clip_ids, pairs.tokens, strict=True):
        row = []
        for c, t in zip(cids, toks, strict=True):
            if c not in index:
                index[c] = len(seqs)
                seqs.append((t,))
            row.append(index[c])
        positives.append(row)
    return list(index), seqs, positives


def validate(model: Any, tokenizer: Any, pairs: Pairs, cfg: FinetuneConfig,
             device: torch.device | str) -> dict[str, float]:
    """Text -> clip retrieval metrics on a held-out split (exact, pessimistic ties)."""
    clip_ids, seqs, positives = clip_level_set(pairs)
    feats = (None if pairs.features is None
             else [[pairs.features.get(c)] for c in clip_ids])
    t = embed_texts(model, tokenizer, pairs.texts, max_text=cfg.max_text, device=device)
    v = embed_token_seqs(model, seqs, feats=feats, device=device)
    return retrieval_metrics(t @ v.T, positives).as_row()


def contrastive_loss(t: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
                     same: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric multi-positive InfoNCE; returns the loss and the (B, B) logits.

    Args:
        t, v: (B, P) unit-length text and video embeddings, row i of each is a pair.
        scale: the exp'd logit scale (inverse temperature).
        same: (B, B) bool, True where video j is a positive of text i (equal visual tokens).
    """
    logits = scale * (t.float() @ v.float().T)  # (B, B)
    target = same.float() / same.float().sum(1, keepdim=True)
    loss_t2v = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    target_v = same.T.float() / same.T.float().sum(1, keepdim=True)
    loss_v2t = -(target_v * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return (loss_t2v + loss_v2t) / 2, logits


def distill_loss(student_logits: torch.Tensor, teacher_t: torch.Tensor, teacher_v: torch.Tensor,
                 temperature: float = 0.05) -> torch.Tensor:
    """KL from the teacher's in-batch text->video distribution to the student's."""
    teacher = F.softmax((teacher_t @ teacher_v.T) / temperature, dim=1)  # (B, B)
    return F.kl_div(F.log_softmax(student_logits, dim=1), teacher, reduction="batchmean")


def _lr(step: int, cfg: FinetuneConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))


@dataclass
class FinetuneResult:
    """What a fine-tune reached: best step, its validation metrics, the history."""

    best_step: int
    best: dict[str, float]
    history: list[dict[str, float]]
    stopped_early: bool
    rerank: dict[str, float] | None = None  # tuned fusion weight and validation R@1


def finetune(model: Any, tokenizer: Any, train: Pairs, val: Pairs, cfg: FinetuneConfig, *,
             device: torch.device | str = "cpu",
             teacher: tuple[np.ndarray, np.ndarray] | None = None,
             on_eval: Callable[[int, dict[str, float]], None] | None = None) -> FinetuneResult:
    """Train ``model`` in place as a dual encoder; on return it holds the best weights.

    Args:
        model: a VideoBert (pretrained), already on ``device``.
        tokenizer: the WordPiece tokenizer.
        train, val: caption-clip pairs of the train and validation splits.
        cfg: optimisation and early-stopping settings.
        device: where the model lives.
        teacher: optional (text, video) teacher embeddings aligned with ``train`` rows.
        on_eval: called with (step, validation metrics) after each validation.

    Returns:
        The best step, its metrics and the validation history.
    """
    if len(train) < 2 or len(val) < 1:
        raise ValueError(f"fine-tuning needs >= 2 train pairs and >= 1 val pair; got "
                         f"{len(train)} and {len(val)} (ingest captioned videos in both splits)")
    gen = torch.Generator().manual_seed(cfg.seed)
    itm_gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr(s, cfg))
    history: list[dict[str, float]] = []
    best = validate(model, tokenizer, val, cfg, device) | {"step": 0}
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    history.append(best)
    bad, order, pos = 0, torch.randperm(len(train), generator=gen), 0
    step = 0
    for step in range(1, cfg.steps + 1):
        if pos + cfg.batch_size > len(order):
            order, pos = torch.randperm(len(train), generator=gen), 0
        idx = order[pos:pos + cfg.batch_size].tolist()
        pos += cfg.batch_size
        loss = _step_loss(model, tokenizer, train, idx, cfg, device, teacher, itm_gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            m = validate(model, tokenizer, val, cfg, device) | {"step": step,
                                                                 "train_loss": float(loss.detach())}
            history.append(m)
            if on_eval is not None:
                on_eval(step, m)
            if m["r5"] > best["r5"] or (m["r5"] == best["r5"] and m["mnr"] < best["mnr"]):
                best, bad = m, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
    model.load_state_dict(best_state)
    rerank = tune_rerank(model, tokenizer, val, cfg, device) if cfg.itm_weight > 0 else None
    return FinetuneResult(best_step=int(best["step"]), best=best, history=history,
                          stopped_early=step < cfg.steps, rerank=rerank)


def tune_rerank(model: Any, tokenizer: Any, val: Pairs, cfg: FinetuneConfig,
                device: torch.device | str) -> dict[str, float]:
    """Tune the re-ranking fusion weight on validation and store it in ``model.config``.

    Returns:
        The weight and the validation text->clip R@1 without and with re-ranking.
    """
    clip_ids, seqs, positives = clip_level_set(val)
    feats = None if val.features is None else [[val.features.get(c)] for c in clip_ids]
    t = embed_texts(model, tokenizer, val.texts, max_text=cfg.max_text, device=device)
    v = embed_token_seqs(model, seqs, feats=feats, device=device)
    sim = t @ v.T
    cands = rr.top_candidates(sim, cfg.rerank_top)
    align = rr.rerank_candidates(model, tokenizer, val.texts, cands, [s[0] for s in seqs],
                                 rr.features_of(clip_ids, val.features), device=device)
    tuned = rr.tune_weight(sim, cands, align, positives)
    model.config.rerank_weight = tuned["weight"]
    return tuned


def _step_loss(model: Any, tokenizer: Any, train: Pairs, idx: list[int], cfg: FinetuneConfig,
               device: torch.device | str, teacher: tuple[np.ndarray, np.ndarray] | None,
               itm_gen: torch.Generator) -> torch.Tensor:
    model.train()
    ids, mask = text_inputs(tokenizer, [train.texts[i] for i in idx], cfg.max_text)
    t = model.embed_text(ids.to(device), mask.to(device))  # (B, P)
    seqs = [train.tokens[i] for i in idx]
    v = _embed_video(model, seqs, train.feature_seqs(idx), device)  # (B, P)
    # positives: captions of the same clips; without features, of the same visual tokens
    keys = [train.clip_ids[i] for i in idx] if train.features is not None else seqs
    same = torch.tensor([[a == b for b in keys] for a in keys], device=t.device)  # (B, B)
    scale = model.logit_scale.clamp(0.0, _MAX_LOGIT_SCALE).exp()
    loss, logits = contrastive_loss(t, v, scale, same)
    if teacher is not None and cfg.distill_weight > 0:
        tt = torch.as_tensor(teacher[0][idx], device=t.device, dtype=torch.float32)
        tv = torch.as_tensor(teacher[1][idx], device=t.device, dtype=torch.float32)
        loss = loss + cfg.distill_weight * distill_loss(logits, tt, tv)
    if cfg.itm_weight > 0:
        texts = [train.texts[i] for i in idx]
        loss = loss + cfg.itm_weight * rr.itm_loss(
            model, tokenizer, texts, seqs, train.feature_seqs(idx), logits, same, itm_gen,
            max_text=cfg.max_text, device=device)
    return loss
