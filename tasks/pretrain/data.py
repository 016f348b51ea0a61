"""VideoBERT pretraining data: seeded, resumable batches over an exported corpus file.

The corpus file (:mod:`tasks.pretrain.corpus`, re-exported here: :func:`export_corpus`) holds
every video's tokenized clips and timed text; :class:`PretrainData` reads one split of it.

Examples (Sun et al., 2019): *joint* ``[CLS] text [>] video [SEP]`` pairs a text segment (with
probability ``p_join`` also the next one) with the visual tokens of the clips it overlaps in
time; a share ``p_negative`` gets the clips of another video or of a distant time in the same
video instead (alignment label 0, else 1). *text-only* ``[CLS] text [SEP]`` and *video-only*
``[CLS] [>] video [SEP]`` rows (label -100) make up ``p_text_only`` / ``p_video_only`` of an
epoch. Video tokens are subsampled with a random stride in ``cfg.stride``. BERT masking (15%,
80/10/10, replacements drawn from the same modality) runs on both modalities.

Determinism: an epoch's plan (which examples, their joins, strides, negatives, order and
length buckets) is drawn from ``(seed, epoch)``: the lengths must be known before batches are
bucketed. A batch's masking is drawn from ``(seed, epoch, batch index)``. So
``batches(epoch, start=k)`` yields exactly what an uninterrupted run yields from batch k on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.vocab import CLS, MASK, PAD, SEP, TEXT_VOCAB, VIS_OFFSET, VSEP
from tasks.pretrain.corpus import CORPUS_FORMAT, Corpus, export_corpus, load_corpus
from tasks.pretrain.data_config import DataConfig

__all__ = ["CORPUS_FORMAT", "Corpus", "DataConfig", "EpochPlan", "PretrainData",
           "export_corpus", "load_corpus"]

FIRST_WORDPIECE = 999
"""First ordinary wordpiece id of BERT's uncased vocabulary (below: [unused*] and specials)."""
JOINT, TEXT_ONLY, VIDEO_ONLY = 0, 1, 2
KINDS = ("joint", "text_only", "video_only")
IGNORE = -100
SPLITS = ("train", "val", "test")
_PLAN_TAG, _BATCH_TAG = 0x504C414E, 0x42415443  # separate seed streams for plans and batches


# --------------------------------------------------------------------------- examples


@dataclass
class EpochPlan:
    """Every example of one epoch and how they form batches (arrays indexed by example)."""

    kind: np.ndarray  # (N,) JOINT, TEXT_ONLY or VIDEO_ONLY
    seg: np.ndarray  # (N,) first text segment (-1: video-only)
    joined: np.ndarray  # (N,) bool: the next segment's text follows
    text_len: np.ndarray  # (N,) wordpieces (after truncation)
    vstart: np.ndarray  # (N,) first clip of the video part (-1: text-only)
    vstride: np.ndarray  # (N,) clip stride of the video part
    vcount: np.ndarray  # (N,) visual tokens (0: text-only)
    align: np.ndarray  # (N,) 1 matched, 0 mismatched, -100 single-modality
    order: np.ndarray  # (N,) example indices in batch order
    bounds: np.ndarray  # (n_batches+1,) batch b is order[bounds[b]:bounds[b+1]]

    @property
    def length(self) -> np.ndarray:
        """(N,) sequence length with specials."""
        return self.text_len + 2 + (self.kind != TEXT_ONLY) * (1 + self.vcount)


def _randint(rng: np.random.Generator, high: np.ndarray | int, n: int) -> np.ndarray:
    """n integers uniform in [0, high) per element (high < 1 is treated as 1)."""
    high = np.maximum(np.asarray(high, np.int64), 1)
    return np.minimum((rng.random(n) * high).astype(np.int64), high - 1)


def _draw(rng: np.random.Generator, n_cand: int, n: int) -> np.ndarray:
    """n candidate indices: without replacement while they last, then again."""
    if n_cand == 0 or n == 0:
        return np.zeros(0, np.int64)
    full = np.tile(np.arange(n_cand), n // n_cand)
    return np.concatenate([full, rng.permutation(n_cand)[:n % n_cand]])


class PretrainData:
    """Seeded, resumable batches of VideoBERT examples from one split of a corpus file.

    Args:
        corpus_path: a file written by :func:`export_corpus`.
        tokenizer: the BERT WordPiece tokenizer (``models.videobert.text_tokenizer()``).
        cfg: sampling and batching settings.
        split: ``train`` for training; ``val`` (held-out evaluation) or ``test`` (probe and
            retrieval). Negatives are drawn only from this split.
    """

    def __init__(self, corpus_path: Path | str, tokenizer: Any, cfg: DataConfig | None = None,
                 split: str = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
        self.cfg = cfg or DataConfig()
        self.split = split
        self.corpus = c = load_corpus(Path(corpus_path), split, tokenizer, self.cfg.max_text)
        self.codebook_id: str = c.meta["codebook_id"]
        self.n_visual: int = int(c.meta["n_visual"])
        self.feature_dim: int = int(c.meta.get("feature_dim") or 0)
        if self.cfg.feature_input and c.feats is None:
            raise ValueError(f"feature_input needs a corpus exported with features; "
                             f"{corpus_path} has none (export_corpus(feature_encoder=...))")
        self._ntok = np.diff(c.tok_off)
        times = np.concatenate([c.clip_end, c.seg_end, [0.0]])
        self._width = float(np.ceil(times.max())) + 1.0  # keys video * width + t sort by (v, t)
        self._start_key = c.clip_video * self._width + c.clip_start
        # fixed windows end in start order; the running max keeps searchsorted valid otherwise
        self._end_key = np.maximum.accumulate(c.clip_video * self._width + c.clip_end)
        lo, hi = self.overlap(c.seg_video, c.seg_start, c.seg_end)
        self._joint_cand = np.flatnonzero((hi > lo) & (self._ntok > 0))
        self._text_cand = np.flatnonzero(self._ntok > 0)
        n_clips = np.diff(c.clip_off)
        self._has_clips = np.flatnonzero(n_clips > 0)
        n_win = -(-n_clips // self.cfg.max_video)
        first = np.repeat(c.clip_off[:-1], n_win)
        k = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
        self._win_start = first + k * self.cfg.max_video
        self.counts = self._counts()
        self._cached: tuple[int, EpochPlan] | None = None
        self._idf = self._token_idf() if self.cfg.mask_weighting == "idf" else None
        joint_batches = -(-self.counts["joint"] // self.cfg.batch_size)
        self.warmup_epochs = (-(-self.cfg.positive_batches // joint_batches)
                              if joint_batches and split == "train" else 0)
        self._video_w = float(self._idf[c.tok].mean()) if self._idf is not None and len(
            c.tok) else 1.0

    def _token_idf(self) -> np.ndarray:
        """(TEXT_VOCAB,) idf of each WordPiece over this split's segments, floored at 0.25
        (words in every caption keep a small chance to be masked)."""
        c = self.corpus
        seg = np.repeat(np.arange(len(self._ntok)), self._ntok)
        pairs = np.unique(seg.astype(np.int64) * TEXT_VOCAB + c.tok[:len(seg)])
        df = np.bincount(pairs % TEXT_VOCAB, minlength=TEXT_VOCAB)
        idf = np.log(max(len(self._ntok), 1) / np.maximum(df, 1)).astype(np.float64)
        return np.maximum(idf, 0.25)

    def _counts(self) -> dict[str, int]:
        cfg, n_joint = self.cfg, len(self._joint_cand)
        if n_joint == 0:  # no text-video overlap: single-modality examples only
            n_text = len(self._text_cand) if cfg.p_text_only > 0 else 0
            n_video = len(self._win_start) if cfg.p_video_only > 0 else 0
        else:
            total = n_joint / (1.0 - cfg.p_text_only - cfg.p_video_only)
            n_text = round(total * cfg.p_text_only) if len(self._text_cand) else 0
            n_video = round(total * cfg.p_video_only) if len(self._win_start) else 0
        return {"joint": n_joint, "text_only": n_text, "video_only": n_video}

    def overlap(self, vid: np.ndarray, t0: np.ndarray, t1: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Clips [lo, hi) of video ``vid`` with start < t1 and end > t0 (hi <= lo: none)."""
        lo = np.searchsorted(self._end_key, vid * self._width + t0, side="right")
        hi = np.searchsorted(self._start_key, vid * self._width + t1, side="left")
        return lo, np.maximum(hi, lo)

    def warmup(self, epoch: int) -> bool:
        """Whether ``epoch`` is a cross-modal warm-up epoch (train split only): every example
        is a matched joint row, with no negatives and no text-only or video-only rows. With
        those in the mix from the start, masked words the visual tokens could fill are a sliver
        of the gradient and the model settles into reading text alone (synthetic corpus: the
        masked object is predicted equally well with the true video, another clip's or none);
        after warm-up epochs it reads the video (``DataConfig.positive_batches``)."""
        return self.split == "train" and epoch < self.warmup_epochs

    def num_batches(self, epoch: int = 0) -> int:
        """Batches in ``epoch`` (warm-up epochs have the joint rows only)."""
        n = self.counts["joint"] if self.warmup(epoch) else sum(self.counts.values())
        return -(-n // self.cfg.batch_size)

    def summary(self) -> dict[str, Any]:
        """Videos, clips, segments and examples per kind of this split (negatives: epoch 0)."""
        c = self.corpus
        plan = self.plan(0)
        return {"split": self.split, "codebook_id": self.codebook_id, "n_visual": self.n_visual,
                "feature_dim": self.feature_dim, "videos": len(c.video_ids),
                "videos_with_clips": len(self._has_clips),
                "videos_with_text": int(len(np.unique(c.seg_video))),
                "clips": int(len(c.clip_token)), "segments": int(len(c.seg_start)),
                "examples": dict(self.counts),
                "joint_negatives": int((plan.align == 0).sum()),
                "batches": self.num_batches()}

    # ---- the epoch plan: every random choice drawn from (seed, epoch)

    def plan(self, epoch: int) -> EpochPlan:
        """The examples of ``epoch``, their random choices and their batch order.

        Args:
            epoch: epoch number (>= 0).

        Returns:
            The plan (cached for the last epoch asked).
        """
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.cfg.seed, epoch, _PLAN_TAG])
        warm = self.warmup(epoch)
        parts = [self._plan_joint(rng, warm), self._plan_text(rng, warm),
                 self._plan_video(rng, warm)]
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        plan = EpochPlan(**cols, order=np.zeros(0, np.int64), bounds=np.zeros(1, np.int64))
        plan.order, plan.bounds = self._bucket(rng, plan.length)
        self._cached = (epoch, plan)
        return plan

    def _text(self, rng: np.random.Generator, seg: np.ndarray, cap: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """Join the next segment of the same video with probability p_join; truncate."""
        c, n = self.corpus, len(seg)
        nxt = np.minimum(seg + 1, len(c.seg_video) - 1)
        can = (seg + 1 < len(c.seg_video)) & (c.seg_video[nxt] == c.seg_video[seg])
        joined = can & (rng.random(n) < self.cfg.p_join)
        tl = self._ntok[seg] + np.where(joined, self._ntok[nxt], 0)
        return joined, np.minimum(tl, cap)

    def _subsample(self, rng: np.random.Generator, vlo: np.ndarray, span: np.ndarray,
                   cap: np.ndarray | int, extend: bool) -> tuple[np.ndarray, ...]:
        """Random stride and phase over clips [vlo, vlo+span); at most ``cap`` tokens.

        ``extend`` lets a strided window reach past ``span`` (video-only windows, where
        ``span`` is the rest of the video).
        """
        n, (s_lo, s_hi) = len(vlo), self.cfg.stride
        stride = s_lo + _randint(rng, s_hi - s_lo + 1, n)
        if extend:
            span = np.minimum(span, cap * stride)
        stride = np.maximum(np.minimum(stride, span), 1)
        phase = _randint(rng, stride, n)
        count = -(-(span - phase) // stride)
        k0 = _randint(rng, np.maximum(count - cap, 0) + 1, n)
        return vlo + phase + k0 * stride, stride, np.minimum(count, cap)

    def _negatives(self, rng: np.random.Generator, v: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray, p_negative: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(first clip, clip span, label): a share p_negative moved to another video or to a
        time at least neg_min_gap clips away in the same video (in a video too short for that,
        as far away as it allows without overlapping the true clips)."""
        c, n = self.corpus, len(v)
        span = hi - lo
        neg = rng.random(n) < p_negative
        vs, ve = c.clip_off[v], c.clip_off[v + 1]
        widest = np.maximum(lo - vs - span, ve - span - hi)  # the largest gap this video has
        g = np.clip(widest, 0, self.cfg.neg_min_gap)
        left = np.maximum(0, lo - g - span - vs + 1)  # window starts in [vs, lo-g-span]
        right = np.maximum(0, ve - span - hi - g + 1)  # window starts in [hi+g, ve-span]
        u = _randint(rng, left + right, n)
        same_lo = np.where(u < left, vs + u, hi + g + u - left)
        has, m = self._has_clips, len(self._has_clips)
        j = _randint(rng, m - 1, n)
        j = np.minimum(j + (j >= np.searchsorted(has, v)), m - 1)
        other = has[j] if m else v
        o_len = c.clip_off[other + 1] - c.clip_off[other]
        o_span = np.minimum(span, o_len)
        o_lo = c.clip_off[other] + _randint(rng, o_len - o_span + 1, n)
        same_ok, other_ok = left + right > 0, m >= 2
        use_other = other_ok & (~same_ok | (rng.random(n) >= self.cfg.p_same_video))
        neg &= same_ok | other_ok
        vlo = np.where(neg, np.where(use_other, o_lo, same_lo), lo)
        return vlo, np.where(neg & use_other, o_span, span), np.where(neg, 0, 1)

    def _plan_joint(self, rng: np.random.Generator, warm: bool) -> dict[str, np.ndarray]:
        c, cfg, seg = self.corpus, self.cfg, self._joint_cand
        joined, tl = self._text(rng, seg, min(cfg.max_text, cfg.max_seq - 4))
        nxt = np.minimum(seg + 1, len(c.seg_end) - 1)
        t1 = np.where(joined, np.maximum(c.seg_end[seg], c.seg_end[nxt]), c.seg_end[seg])
        v = c.seg_video[seg]
        lo, hi = self.overlap(v, c.seg_start[seg], t1)
        vlo, span, label = self._negatives(rng, v, lo, hi, 0.0 if warm else cfg.p_negative)
        cap = np.minimum(cfg.max_video, cfg.max_seq - 3 - tl)
        start, stride, count = self._subsample(rng, vlo, span, cap, extend=False)
        if warm:  # no alignment term on positives only: it would learn to always say "match"
            label = np.full(len(seg), IGNORE)
        return {"kind": np.full(len(seg), JOINT), "seg": seg, "joined": joined, "text_len": tl,
                "vstart": start, "vstride": stride, "vcount": count, "align": label}

    def _plan_text(self, rng: np.random.Generator, warm: bool) -> dict[str, np.ndarray]:
        n = 0 if warm else self.counts["text_only"]
        seg = self._text_cand[_draw(rng, len(self._text_cand), n)]
        joined, tl = self._text(rng, seg, min(self.cfg.max_text, self.cfg.max_seq - 2))
        zero = np.zeros(n, np.int64)
        return {"kind": np.full(n, TEXT_ONLY), "seg": seg, "joined": joined, "text_len": tl,
                "vstart": zero - 1, "vstride": zero + 1, "vcount": zero,
                "align": zero + IGNORE}

    def _plan_video(self, rng: np.random.Generator, warm: bool) -> dict[str, np.ndarray]:
        c, n = self.corpus, 0 if warm else self.counts["video_only"]
        w = self._win_start[_draw(rng, len(self._win_start), n)]
        avail = c.clip_off[c.clip_video[w] + 1] - w
        cap = min(self.cfg.max_video, self.cfg.max_seq - 3)
        start, stride, count = self._subsample(rng, w, avail, cap, extend=True)
        zero = np.zeros(n, np.int64)
        return {"kind": np.full(n, VIDEO_ONLY), "seg": zero - 1, "joined": zero.astype(bool),
                "text_len": zero, "vstart": start, "vstride": stride, "vcount": count,
                "align": zero + IGNORE}

    def _bucket(self, rng: np.random.Generator, length: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Shuffle, then sort by length within chunks of bucket_batches batches and shuffle
        the batches of each chunk: little padding, still a random order."""
        b, perm = self.cfg.batch_size, rng.permutation(len(length))
        chunk = b * self.cfg.bucket_batches
        batches: list[np.ndarray] = []
        for s in range(0, len(perm), chunk):
            idx = perm[s:s + chunk]
            idx = idx[np.argsort(length[idx], kind="stable")]
            parts = [idx[i:i + b] for i in range(0, len(idx), b)]
            batches += [parts[i] for i in rng.permutation(len(parts))]
        sizes = [len(x) for x in batches]
        order = np.concatenate(batches) if batches else np.zeros(0, np.int64)
        return order, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])

    # ---- batches: masking drawn from (seed, epoch, batch index)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Any]]:
        """Batches ``start``, ``start + 1``, ... of ``epoch`` (see :meth:`batch`).

        Args:
            epoch: epoch number.
            start: first batch index (resume point).

        Returns:
            An iterator of batch dicts.
        """
        for b in range(start, self.num_batches(epoch)):
            yield self.batch(epoch, b)

    def batch(self, epoch: int, index: int) -> dict[str, Any]:
        """Batch ``index`` of ``epoch``: CPU tensors in the layout VideoBert.loss reads.

        Args:
            epoch: epoch number.
            index: batch index in ``[0, num_batches)``.

        Returns:
            input_ids, token_type_ids, attention_mask, mlm_pos, mlm_labels, mlm_is_video,
            align_labels, n_tokens; feat_pos/feat_targets when the corpus has features and a
            masked video position has one; features (B, T, feature_dim) when
            cfg.feature_input; ctr_* pairs when cfg.contrastive and the batch has two or more
            matched joint rows.
        """
        p = self.plan(epoch)
        if not 0 <= index < len(p.bounds) - 1:
            raise IndexError(f"batch {index} out of range for {len(p.bounds) - 1} batches")
        rows = p.order[p.bounds[index]:p.bounds[index + 1]]
        rng = np.random.default_rng([self.cfg.seed, epoch, _BATCH_TAG, index])
        kind, tl = p.kind[rows], p.text_len[rows]
        tb = self.corpus.tok_off[np.maximum(p.seg[rows], 0)]
        vs, vst, vc = p.vstart[rows], p.vstride[rows], p.vcount[rows]
        ids, types, attn, mod, clip = self.layout(tb, tl, kind != TEXT_ONLY, vs, vst, vc)
        pos, labels, is_video = self._mask(rng, ids, mod)
        if not self.cfg.mlm_on_negatives:
            # A mismatched row is masked like any other (the alignment head must not see a
            # difference) but not scored: its words cannot be read from another clip's video
            # (UNITER's recipe; off by default: it made no measurable difference on the
            # synthetic corpus, see the issue notes).
            keep = p.align[rows][pos // ids.shape[1]] != 0
            pos, labels, is_video = pos[keep], labels[keep], is_video[keep]
        out: dict[str, Any] = {
            "input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
            "attention_mask": torch.from_numpy(attn), "mlm_pos": torch.from_numpy(pos),
            "mlm_labels": torch.from_numpy(labels), "mlm_is_video": torch.from_numpy(is_video),
            "align_labels": torch.from_numpy(p.align[rows].astype(np.int64)),
            "n_tokens": int(attn.sum())}
        if self.cfg.feature_input and self.corpus.feats is not None:
            out["features"] = torch.from_numpy(self.input_features(clip, pos))
        if self.corpus.feats is not None:
            vclip = clip.reshape(-1)[pos[is_video]]
            ok = ~np.isnan(self.corpus.feats[vclip, 0])
            if ok.any():
                out["feat_pos"] = torch.from_numpy(pos[is_video][ok])
                out["feat_targets"] = torch.from_numpy(self.corpus.feats[vclip[ok]])
        pair = np.flatnonzero((kind == JOINT) & (p.align[rows] == 1))
        if self.cfg.contrastive and len(pair) >= 2:
            t_ids, _, t_mask, _, _ = self.layout(tb[pair], tl[pair], np.zeros(len(pair), bool),
                                                  vs[pair], vst[pair], vc[pair] * 0)
            v_ids, _, v_mask, _, _ = self.layout(tb[pair], tl[pair] * 0,
                                                  np.ones(len(pair), bool), vs[pair], vst[pair],
                                                  vc[pair])
            out.update(ctr_text_ids=torch.from_numpy(t_ids),
                       ctr_text_mask=torch.from_numpy(t_mask),
                       ctr_video_ids=torch.from_numpy(v_ids),
                       ctr_video_mask=torch.from_numpy(v_mask))
        return out

    def layout(self, tb: np.ndarray, tl: np.ndarray, has_v: np.ndarray, vs: np.ndarray,
                vst: np.ndarray, vc: np.ndarray) -> tuple[np.ndarray, ...]:
        """Padded ``[CLS] text [>] video [SEP]`` rows (parts absent where tl = 0 / not has_v).

        Returns (ids, token types, attention mask, modality 0/1 text/2 video, clip index or -1),
        each (B, T) with T the longest row.
        """
        c = self.corpus
        vc = np.where(has_v, vc, 0)
        length = tl + 2 + has_v * (1 + vc)
        t = np.arange(int(length.max()))[None, :]  # (1, T)
        tl_, hv, end = tl[:, None], has_v[:, None], length[:, None]
        ids = np.full((len(tl), t.shape[1]), PAD, np.int64)  # (B, T)
        ids[:, 0] = CLS
        is_text = (t >= 1) & (t <= tl_)
        ids[is_text] = c.tok[(tb[:, None] + t - 1)[is_text]]
        ids[hv & (t == tl_ + 1)] = VSEP
        k = t - tl_ - 2
        is_vid = hv & (k >= 0) & (k < vc[:, None])
        clip = np.where(is_vid, vs[:, None] + vst[:, None] * k, -1)
        ids[is_vid] = VIS_OFFSET + c.clip_token[clip[is_vid]]
        ids[t == end - 1] = SEP
        attn = t < end
        types = (hv & (t > tl_) & attn).astype(np.int64)
        mod = is_text.astype(np.int8) + 2 * is_vid.astype(np.int8)
        return ids, types, attn, mod, clip

    def input_features(self, clip: np.ndarray, hidden: np.ndarray | None = None) -> np.ndarray:
        """(B, T, feature_dim) unit-length clip features at the visual positions of ``clip``
        (from :meth:`layout`), zeros elsewhere, for clips without a feature and at the flat
        positions ``hidden`` (masked tokens: their feature would give the answer away)."""
        feats = self.corpus.feats
        assert feats is not None, "the corpus has no features"
        out = np.zeros((*clip.shape, feats.shape[1]), np.float32)
        at = clip >= 0
        f = np.nan_to_num(feats[clip[at]], nan=0.0)
        out[at] = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        if hidden is not None:
            out.reshape(-1, feats.shape[1])[hidden] = 0.0
        return out

    def _mask(self, rng: np.random.Generator, ids: np.ndarray, mod: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """BERT masking in place: mask_prob of each row's text+video positions (at least one),
        80% -> [MASK], 10% -> a random token of the same modality, 10% unchanged.

        Returns (flat positions, original ids, is-video flags) of the chosen positions.
        """
        cand = mod > 0
        n = cand.sum(1)
        k = np.floor(self.cfg.mask_prob * n + rng.random(len(n))).astype(np.int64)
        k = np.where(n > 0, np.clip(k, 1, np.maximum(n, 1)), 0)
        u = rng.random(ids.shape)
        if self._idf is None:
            keys = np.where(cand, u, 2.0)
        else:  # weighted draw without replacement (exponential race); video: the mean weight
            w = np.where(mod == 1, self._idf[np.minimum(ids, TEXT_VOCAB - 1)], self._video_w)
            keys = np.where(cand, -np.log1p(-u) / w, np.inf)
        rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
        pos = np.flatnonzero(rank < k[:, None])
        flat = ids.reshape(-1)
        labels = flat[pos].copy()
        is_video = mod.reshape(-1)[pos] == 2
        u = rng.random(len(pos))
        rand_text = rng.integers(FIRST_WORDPIECE, TEXT_VOCAB, len(pos))
        rand_vis = VIS_OFFSET + rng.integers(0, max(self.n_visual, 1), len(pos))
        new = np.where(u < 0.8, MASK, np.where(u < 0.9, np.where(is_video, rand_vis, rand_text),
                                                labels))
        flat[pos] = new
        return pos.astype(np.int64), labels, is_video
