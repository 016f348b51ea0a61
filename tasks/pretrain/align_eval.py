"""Held-out alignment accuracy: does ``[CLS]`` tell a caption's own clips from others?

Independent of how training samples its negatives: for every text segment of a held-out split
that overlaps clips, three joint rows ``[CLS] text [>] video [SEP]`` are scored,

- its own clips (a match);
- as many clips of another video (an *other-video* negative: the easy kind);
- as many clips of the same video that do not overlap the text (a *same-video* negative: same
  scene and speaker, another moment; only where the video has such clips).

The choices are seeded, so every evaluation of a run scores the same rows. Accuracies are
balanced (mean of the accuracy on matches and on negatives), so always answering "match"
scores 0.5 whatever the mix: ``acc_align_other`` and ``acc_align_same``. ``auc_align_*`` is the
probability that a match outscores a negative of that kind (threshold-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tasks.pretrain.data import PretrainData

MATCH, OTHER, SAME = 0, 1, 2


@dataclass(frozen=True)
class AlignSet:
    """Joint rows to score: text span, video window and kind (arrays indexed by row)."""

    text_start: np.ndarray  # (N,) offset of the text's first wordpiece in corpus.tok
    text_len: np.ndarray  # (N,) wordpieces
    vstart: np.ndarray  # (N,) first clip
    vcount: np.ndarray  # (N,) clips (stride 1)
    kind: np.ndarray  # (N,) MATCH, OTHER or SAME
    segment: np.ndarray  # (N,) text segment index in the split

    def __len__(self) -> int:
        return len(self.kind)


def align_set(data: PretrainData, *, seed: int = 0, max_segments: int = 512) -> AlignSet:
    """The rows of the held-out alignment evaluation of one split (see the module docstring).

    Args:
        data: a split of a corpus (usually ``val``).
        seed: seed of the negatives' choice (and of the subset when the split has more than
            ``max_segments`` segments with clips).
        max_segments: segments evaluated at most (each gives up to three rows).

    Returns:
        The rows; empty when no segment of the split overlaps a clip.
    """
    c, cfg = data.corpus, data.cfg
    rng = np.random.default_rng([seed, 0x414C4E])
    ntok = np.diff(c.tok_off)
    lo, hi = data.overlap(c.seg_video, c.seg_start, c.seg_end)
    seg = np.flatnonzero((hi > lo) & (ntok > 0))
    if len(seg) > max_segments:
        seg = np.sort(rng.choice(seg, max_segments, replace=False))
    tl = np.minimum(ntok[seg], min(cfg.max_text, cfg.max_seq - 4))
    span = np.minimum(hi[seg] - lo[seg], np.maximum(cfg.max_seq - 3 - tl, 1))
    rows: list[tuple[int, int, int, int, int]] = []  # (segment, text_len, vstart, vcount, kind)
    with_clips = np.flatnonzero(np.diff(c.clip_off) > 0)
    for i, s in enumerate(seg):
        v, n, t = int(c.seg_video[s]), int(span[i]), int(tl[i])
        rows.append((s, t, int(lo[s]), n, MATCH))
        others = with_clips[with_clips != v]
        if len(others):
            o = int(others[rng.integers(len(others))])
            o_n = min(n, int(c.clip_off[o + 1] - c.clip_off[o]))
            start = int(c.clip_off[o]) + int(rng.integers(c.clip_off[o + 1] - c.clip_off[o]
                                                          - o_n + 1))
            rows.append((s, t, start, o_n, OTHER))
        vs, ve = int(c.clip_off[v]), int(c.clip_off[v + 1])
        starts = [x for x in range(vs, ve - n + 1) if x + n <= lo[s] or x >= hi[s]]
        if starts:
            rows.append((s, t, int(starts[rng.integers(len(starts))]), n, SAME))
    a = np.asarray(rows, np.int64).reshape(-1, 5)
    return AlignSet(text_start=c.tok_off[a[:, 0]], text_len=a[:, 1], vstart=a[:, 2],
                    vcount=a[:, 3], kind=a[:, 4], segment=a[:, 0])


@torch.no_grad()
def align_scores(model: torch.nn.Module, data: PretrainData, rows: AlignSet, *,
                 device: torch.device | str = "cpu", batch: int = 128) -> np.ndarray:
    """(N,) alignment log-odds (match minus no match) of each row, clip features included
    when the model reads them and the corpus has them."""
    model.eval()
    out = []
    feats = data.corpus.feats is not None and bool(getattr(model.config, "feature_input", False))
    for s in range(0, len(rows), batch):
        sl = slice(s, s + batch)
        n = len(rows.kind[sl])
        ids, types, attn, _mod, clip = data.layout(
            rows.text_start[sl], rows.text_len[sl], np.ones(n, bool), rows.vstart[sl],
            np.ones(n, np.int64), rows.vcount[sl])
        f = torch.from_numpy(data.input_features(clip)).to(device) if feats else None
        logits = model.alignment_logits(torch.from_numpy(ids).to(device),
                                        torch.from_numpy(types).to(device),
                                        torch.from_numpy(attn).to(device), f)
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a match outscores a negative), ties counting half."""
    p, n = pos[:, None], neg[None, :]
    return float((p > n).mean() + 0.5 * (p == n).mean())


def align_metrics(scores: np.ndarray, kind: np.ndarray) -> dict[str, float]:
    """Balanced accuracy (threshold 0) and AUC per negative kind, plus the row counts."""
    pos = scores[kind == MATCH]
    out: dict[str, float] = {"n_align_eval": float(len(pos))}
    for name, k in (("other", OTHER), ("same", SAME)):
        neg = scores[kind == k]
        if len(pos) and len(neg):
            out[f"acc_align_{name}"] = float(((pos > 0).mean() + (neg <= 0).mean()) / 2)
            out[f"auc_align_{name}"] = _auc(pos, neg)
    return out


def evaluate_alignment(model: torch.nn.Module, data: PretrainData, *,
                       device: torch.device | str = "cpu", seed: int = 0) -> dict[str, float]:
    """:func:`align_metrics` of :func:`align_set` on ``data`` ({} when it has no rows)."""
    rows = align_set(data, seed=seed)
    if len(rows) == 0:
        return {}
    return align_metrics(align_scores(model, data, rows, device=device), rows.kind)
