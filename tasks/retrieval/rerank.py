"""Re-ranking with VideoBERT as a cross-encoder: the alignment head reads caption and clip together.

The dual encoder (``embed_text`` / ``embed_video``) ranks every clip cheaply; the top ``N``
candidates are then scored by the alignment head on ``[CLS] caption [>] clip [SEP]`` (clip
features included where the model reads them), and the two scores are fused:

    fused = similarity + weight * alignment log-odds

``weight`` is tuned on the validation split after fine-tuning (:func:`tune_weight`: the weight
with the best validation text->clip R@1 among a fixed grid, 0 when none beats the dual encoder
alone, so re-ranking can only help on validation) and stored in the fine-tuned model's config
(``rerank_weight``), so it travels with the weights.

Training the cross-encoder (:func:`itm_loss`): during fine-tuning, each caption of a batch is
paired with its own clip, with a hard negative clip and each clip with a hard negative caption,
sampled in proportion to the dual encoder's in-batch similarity (ALBEF/BLIP's image-text
matching with hard negatives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from models.vocab import CLS, PAD, SEP, VIDEO_SEGMENT, VSEP, visual_id
from tasks.retrieval.metrics import first_correct_ranks

RERANK_TOP = 20
"""Candidates re-scored per query by default."""
WEIGHT_GRID = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""Fusion weights tried on validation (the similarity is in [-1, 1], log-odds in ~[-10, 10])."""


def pair_inputs(tokenizer: Any, texts: Sequence[str], token_seqs: Sequence[Sequence[int]],
                feat_seqs: Sequence[Sequence[np.ndarray | None]] | None = None, *,
                max_text: int = 48, feature_dim: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``[CLS] text [>] v... [SEP]`` for text i with clip sequence i.

    Args:
        tokenizer: the WordPiece tokenizer.
        texts: one caption per row.
        token_seqs: the visual tokens of each row's clips.
        feat_seqs: each row's clip features (None entries: no feature); None: no features.
        max_text: WordPieces kept per caption.
        feature_dim: feature width (0: no feature tensor).

    Returns:
        ids, token types, attention mask, each (B, T), and (B, T, feature_dim) features at the
        visual positions (None without features).
    """
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                    max_length=max_text)["input_ids"]
    rows, starts = [], []
    for words, seq in zip(enc, token_seqs, strict=True):
        starts.append(len(words) + 2)  # [CLS] words [>]
        rows.append([CLS, *words, VSEP, *(visual_id(t) for t in seq), SEP])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD, dtype=torch.long)
    types = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        types[i, starts[i] - 1:len(r)] = VIDEO_SEGMENT
    feats = None
    if feat_seqs is not None and feature_dim > 0:
        feats = torch.zeros((len(rows), width, feature_dim))
        for i, seq in enumerate(feat_seqs):
            for k, f in enumerate(seq):
                if f is not None:
                    feats[i, starts[i] + k] = torch.as_tensor(f)
    return ids, types, ids != PAD, feats


def reads_features(model: Any) -> int:
    """The feature width a model reads beside its visual tokens (0: none)."""
    cfg = model.config
    return int(cfg.feature_dim) if cfg.feature_input else 0


def alignment_scores(model: Any, tokenizer: Any, texts: Sequence[str],
                     token_seqs: Sequence[Sequence[int]],
                     feat_seqs: Sequence[Sequence[np.ndarray | None]] | None = None, *,
                     device: Any = "cpu", batch: int = 256) -> np.ndarray:
    """(N,) alignment log-odds of pair i (text i with clip sequence i)."""
    out = []
    dim = reads_features(model)
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            f = None if feat_seqs is None else feat_seqs[s:s + batch]
            ids, types, mask, feats = pair_inputs(tokenizer, texts[s:s + batch],
                                                  token_seqs[s:s + batch], f, feature_dim=dim)
            logits = model.alignment_logits(ids.to(device), types.to(device), mask.to(device),
                                            None if feats is None else feats.to(device))
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def rerank_candidates(model: Any, tokenizer: Any, texts: Sequence[str],
                      candidates: np.ndarray, clip_tokens: Sequence[int],
                      clip_feats: Sequence[np.ndarray | None] | None, *,
                      device: Any = "cpu") -> np.ndarray:
    """(Q, N) alignment log-odds of each query's N candidate clips (indices into the clips)."""
    model.eval()
    q, n = candidates.shape
    flat = candidates.reshape(-1)
    seqs = [(int(clip_tokens[c]),) for c in flat]
    feats = None if clip_feats is None else [[clip_feats[c]] for c in flat]
    rep = [t for t in texts for _ in range(n)]
    return alignment_scores(model, tokenizer, rep, seqs, feats, device=device).reshape(q, n)


def fused_ranks(sim: np.ndarray, candidates: np.ndarray, align: np.ndarray, weight: float,
                positives: Sequence[Sequence[int]]) -> np.ndarray:
    """First-correct rank per query after fusing the top candidates' scores (the rest keep
    their similarity order behind them)."""
    scores = sim.astype(np.float64) - 1e4  # every re-scored candidate ranks above the rest
    rows = np.arange(len(sim))[:, None]
    scores[rows, candidates] = sim[rows, candidates] + weight * align
    return first_correct_ranks(scores, positives)


def top_candidates(sim: np.ndarray, top: int) -> np.ndarray:
    """(Q, min(top, C)) indices of each query's most similar candidates, best first."""
    top = min(top, sim.shape[1])
    return np.argsort(-sim, axis=1, kind="stable")[:, :top]


def tune_weight(sim: np.ndarray, candidates: np.ndarray, align: np.ndarray,
                positives: Sequence[Sequence[int]]) -> dict[str, float]:
    """The fusion weight of :data:`WEIGHT_GRID` with the best R@1 (then MnR) on validation.

    Returns:
        ``weight`` and the validation ``r1_dual`` / ``r1_fused`` it was chosen on (percent).
    """
    best: tuple[float, float, float] | None = None
    base = 0.0
    for w in WEIGHT_GRID:
        ranks = fused_ranks(sim, candidates, align, w, positives)
        r1, mnr = float((ranks == 1).mean() * 100), float(ranks.mean())
        if w == 0.0:
            base = r1
        if best is None or (r1, -mnr) > (best[1], -best[2]):
            best = (w, r1, mnr)
    assert best is not None
    return {"weight": best[0], "r1_dual": base, "r1_fused": best[1]}


def itm_loss(model: Any, tokenizer: Any, texts: Sequence[str],
             token_seqs: Sequence[Sequence[int]],
             feat_seqs: Sequence[Sequence[np.ndarray | None]] | None, sim: torch.Tensor,
             same: torch.Tensor, generator: torch.Generator, *, max_text: int = 48,
             device: Any = "cpu") -> torch.Tensor:
    """Image-text-matching loss with hard negatives mined from the in-batch similarity.

    Args:
        texts, token_seqs, feat_seqs: the batch's pairs (row i: caption i and its clips).
        sim: (B, B) dual-encoder similarities (detached inside).
        same: (B, B) bool, True where clip j is a positive of caption i.
        generator: the seeded generator of the negatives' draw.

    Returns:
        Mean binary cross-entropy of the alignment head over the B positives and the 2B
        negatives (0 with fewer than two distinct pairs).
    """
    w = torch.softmax(sim.detach().float(), dim=1).masked_fill(same, 0.0).cpu()  # (B, B)
    w_t = torch.softmax(sim.detach().float().T, dim=1).masked_fill(same.T, 0.0).cpu()
    ok = (w.sum(1) > 0) & (w_t.sum(1) > 0)
    if int(ok.sum()) < 2:
        return sim.new_zeros(())
    idx = torch.nonzero(ok).flatten().tolist()
    neg_v = torch.multinomial(w[idx], 1, generator=generator)  # a hard clip per caption
    neg_t = torch.multinomial(w_t[idx], 1, generator=generator)  # a hard caption per clip
    pairs = ([(i, i) for i in idx]
             + [(i, int(j)) for i, j in zip(idx, neg_v.flatten(), strict=True)]
             + [(int(j), i) for i, j in zip(idx, neg_t.flatten(), strict=True)])
    labels = torch.tensor([1.0] * len(idx) + [0.0] * (2 * len(idx)), device=device)
    dim = reads_features(model)
    ids, types, mask, feats = pair_inputs(
        tokenizer, [texts[t] for t, _ in pairs], [token_seqs[v] for _, v in pairs],
        None if feat_seqs is None else [feat_seqs[v] for _, v in pairs], max_text=max_text,
        feature_dim=dim)
    logits = model.alignment_logits(ids.to(device), types.to(device), mask.to(device),
                                    None if feats is None else feats.to(device))
    return F.binary_cross_entropy_with_logits(logits.float(), labels)


def features_of(clip_ids: Sequence[str], table: Mapping[str, np.ndarray] | None
                ) -> list[np.ndarray | None] | None:
    """Each clip's feature from ``table`` (None entries where missing; None without a table)."""
    return None if table is None else [table.get(c) for c in clip_ids]
