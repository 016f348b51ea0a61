"""Zero-shot probe (VideoBERT's template idea): fill masked caption words from the video.

For each held-out clip whose caption names an object and a motion (the synthetic corpus's
manifest records both), a cloze template is filled with every candidate word of the corpus
(all objects for the noun probe, all motions for the verb probe). Multi-piece words get one
``[MASK]`` per WordPiece; a candidate's score is the mean log-probability of its pieces at the
masked positions. The clip's visual token follows ``[>]``: ``[CLS] template [>] v [SEP]``.
A model that reads clip features (``feature_input``) gets the clip's feature at the visual
token too, as in training. The text-only baseline is the same model with the video hidden
(``[CLS] template [SEP]``), so any gain comes from reading the video. A second control gives
each clip another clip's video (one with a different object and motion): a model that reads
the video scores well with its own and badly with the other one; a model that only learned
"some video follows" scores the same with both. Top-1 / top-5 accuracy of the true word among
the candidates are reported for nouns and verbs, with the clip's video, with another clip's
and without video, and chance levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.vocab import CLS, MASK, PAD, SEP, TEXT_SEGMENT, VIDEO_SEGMENT, VSEP, visual_id
from tasks.shared.clip_features import clip_features
from warehouse import queries
from warehouse.store import Warehouse

NOUN_TEMPLATE = "here we see the {slot}"
"""Noun probe: the caption grammar's own phrasing, the object masked."""
VERB_TEMPLATE = "here we see the [MASK] that {slot}"
"""Verb probe: the object masked too (as the paper's "how to [MASK] the [MASK]")."""


@dataclass(frozen=True)
class ProbeItem:
    """One held-out clip: its visual tokens and the words its caption used."""

    clip_id: str
    tokens: tuple[int, ...]
    object: str
    motion: str
    feature: np.ndarray | None = None  # unit clip feature, for models that read features


def load_items(wh: Warehouse, codebook_id: str, split: str = "test",
               feature_encoder: str | None = None) -> list[ProbeItem]:
    """Held-out clips with object/motion labels and their visual token (one per clip), with
    their ``feature_encoder`` feature when one is named."""
    con = wh.connect()
    rows = con.execute(queries.load("probe_items"), [codebook_id, split]).fetchall()
    con.close()
    feats = clip_features(wh, feature_encoder) if feature_encoder else {}
    seen: dict[str, ProbeItem] = {}
    for clip_id, _video, token, obj, motion in rows:
        seen.setdefault(clip_id, ProbeItem(clip_id, (int(token),), obj, motion,
                                           feats.get(clip_id)))
    return list(seen.values())


def _sequences(tokenizer: Any, template: str, word: str, items: Sequence[ProbeItem],
               with_video: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int],
                                          torch.Tensor | None]:
    """Batch of cloze inputs for one candidate word; returns ids, types, mask, target pieces
    and the clip features at the visual positions (None without video or features)."""
    pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
    text = template.format(slot=" ".join(["[MASK]"] * len(pieces)))
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rows, types = [], []
    for it in items:
        ids = [CLS, *text_ids]
        tt = [TEXT_SEGMENT] * len(ids)
        if with_video:
            vid = [VSEP, *(visual_id(t) for t in it.tokens)]
            ids += vid
            tt += [VIDEO_SEGMENT] * len(vid)
        ids.append(SEP)
        tt.append(VIDEO_SEGMENT if with_video else TEXT_SEGMENT)
        rows.append(ids)
        types.append(tt)
    width = max(len(r) for r in rows)
    ids_t = torch.full((len(rows), width), PAD, dtype=torch.long)
    tt_t = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, t) in enumerate(zip(rows, types, strict=True)):
        ids_t[i, :len(r)] = torch.tensor(r)
        tt_t[i, :len(t)] = torch.tensor(t)
    feats = None
    if with_video and all(it.feature is not None for it in items):
        at = len(text_ids) + 2  # [CLS] template [>] v
        feats = torch.zeros((len(rows), width, len(items[0].feature)))
        for i, it in enumerate(items):
            feats[i, at] = torch.from_numpy(it.feature)
    return ids_t, tt_t, ids_t != PAD, pieces, feats


@torch.no_grad()
def candidate_scores(model: Any, tokenizer: Any, template: str, words: Sequence[str],
                     items: Sequence[ProbeItem], *, with_video: bool,
                     device: torch.device | str = "cpu", batch: int = 256) -> np.ndarray:
    """(items, words) mean log-probability of each candidate word's pieces in the template.

    Only the masks of the candidate slot are scored (``VERB_TEMPLATE`` also masks the object,
    which is left unscored, as in the paper's joint template).
    """
    model.eval()
    out = np.zeros((len(items), len(words)), dtype=np.float64)
    for j, word in enumerate(words):
        for s in range(0, len(items), batch):
            ids, tt, am, pieces, f = _sequences(tokenizer, template, word, items[s:s + batch],
                                                with_video)
            ids, tt, am = ids.to(device), tt.to(device), am.to(device)
            hidden = model.encode(ids, tt, am, None if f is None else f.to(device))  # (B, T, D)
            masks = (ids[0] == MASK).nonzero().flatten().tolist()
            slot = masks[-len(pieces):]  # the candidate's slot is the last masked span
            logp = torch.log_softmax(model.mlm_text_logits(hidden[:, slot].reshape(
                -1, hidden.shape[-1])).float(), dim=-1).reshape(len(ids), len(slot), -1)
            target = torch.tensor(pieces, device=logp.device)
            picked = logp.gather(2, target.view(1, -1, 1).expand(len(ids), -1, 1))
            out[s:s + len(ids), j] = picked.squeeze(2).mean(1).cpu().numpy()
    return out


def other_clips(items: Sequence[ProbeItem]) -> list[ProbeItem]:
    """Each item with the video (tokens, feature) of the next item, cyclically, that differs
    from it in object and motion (else in either; else itself): the wrong-video control."""
    out = []
    n = len(items)
    for i, it in enumerate(items):
        order = [items[(i + d) % n] for d in range(1, n)]
        other = next((o for o in order if o.object != it.object and o.motion != it.motion),
                     next((o for o in order if (o.object, o.motion) != (it.object, it.motion)),
                          it))
        out.append(ProbeItem(it.clip_id, other.tokens, it.object, it.motion, other.feature))
    return out


def topk_accuracy(scores: np.ndarray, truth: Sequence[int], k: int) -> float:
    """Share (percent) of rows whose true column is among the k highest (ties: pessimistic)."""
    t = np.asarray(truth)
    true_score = scores[np.arange(len(t)), t]
    rank = (scores >= true_score[:, None]).sum(1)  # 1 = best; ties count against us
    return float((rank <= k).mean() * 100.0) if len(t) else float("nan")


def run_probe(model: Any, tokenizer: Any, items: Sequence[ProbeItem], *,
              device: torch.device | str = "cpu") -> dict[str, Any]:
    """Noun and verb top-1/top-5 with the clip's video, another clip's and text-only, on the
    given held-out items.

    Returns:
        ``{"n_items", "nouns", "verbs", "noun": {...}, "verb": {...}}`` where each probe maps
        ``video_top1``, ``video_top5``, ``other_top1``, ``other_top5`` (another clip's video:
        :func:`other_clips`), ``text_top1``, ``text_top5``, ``chance_top1``, ``chance_top5``
        to percentages.
    """
    swapped = other_clips(items)
    nouns = sorted({it.object for it in items})
    verbs = sorted({it.motion for it in items})
    result: dict[str, Any] = {"n_items": len(items), "nouns": nouns, "verbs": verbs}
    for name, template, words, truth in (
            ("noun", NOUN_TEMPLATE, nouns, [nouns.index(it.object) for it in items]),
            ("verb", VERB_TEMPLATE, verbs, [verbs.index(it.motion) for it in items])):
        row: dict[str, float] = {}
        for mode, rows, with_video in (("video", items, True), ("other", swapped, True),
                                       ("text", items, False)):
            s = candidate_scores(model, tokenizer, template, words, rows,
                                 with_video=with_video, device=device)
            row[f"{mode}_top1"] = topk_accuracy(s, truth, 1)
            row[f"{mode}_top5"] = topk_accuracy(s, truth, 5)
        row["chance_top1"] = 100.0 / max(len(words), 1)
        row["chance_top5"] = 100.0 * min(5, len(words)) / max(len(words), 1)
        result[name] = row
    return result


def probe_run(home: Any, model_run: str | None = None, split: str = "test",
              device: str = "cpu") -> dict[str, Any]:
    """Run the probe on a pretraining run's checkpoint and log it to ``training_metrics``.

    Args:
        home: data home.
        model_run: a pretraining run (default: the newest finished one).
        split: held-out split whose captions are probed.
        device: where the model runs.

    Returns:
        :func:`run_probe`'s result plus ``model_run``; ``n_items`` 0 (and nothing logged) when
        no caption of the split names an object and a motion.
    """
    from pathlib import Path

    from models.videobert import VideoBert, text_tokenizer
    from tasks.pretrain.metrics import WarehouseSink, metric_rows
    from tasks.shared import model_runs

    wh = Warehouse(Path(home))
    run = (model_runs.one(wh, "model_run_ckpt", [model_run]) if model_run
           else model_runs.latest_done(wh, "pretrain"))
    if run is None or not run[2]:
        raise ValueError(f"no finished pretraining run {model_run or ''} in {home}")
    model = VideoBert.from_pretrained(Path(home) / run[2], device=device)
    cfg = model.config
    items = load_items(wh, run[1], split, cfg.feature_encoder if cfg.feature_input else None)
    if not items:
        return {"model_run": run[0], "n_items": 0}
    res = run_probe(model, text_tokenizer(), items, device=device) | {"model_run": run[0]}
    step = int(model_runs.one(wh, "model_run_steps", [run[0]])[0] or 0)
    values = {f"probe_{p}_{k}": v for p in ("noun", "verb") for k, v in res[p].items()}
    WarehouseSink(Path(home), run[0]).write(metric_rows(run[0], step, split, values))
    return res
