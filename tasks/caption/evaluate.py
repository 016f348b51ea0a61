"""Caption evaluation: the model against two baselines measured in the same run.

Systems, all on the same captioned clips of one split:

- ``videobert``: the decoder on VideoBERT (beam search by default);
- ``features``: the same decoder trained on the raw clip features without VideoBERT (the
  paper's S3D-only row; I3D here);
- ``nearest``: the caption of the most similar captioned train clip, by the retrieval model's
  clip embeddings (cosine), or by the clip features when there is no retrieval run.

Scores: ``tasks/caption/scores.py`` (pycocoevalcap). On captions from the synthetic grammar,
slot accuracy too: does the caption name the reference's object, its motion, both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tasks.caption.data import ClipSet
from tasks.caption.scores import caption_scores, java_available, slot_accuracy
from tasks.ingest.synthetic import MOTIONS, OBJECTS
from warehouse import queries
from warehouse.store import Warehouse, utcnow

#: The synthetic corpus's grammar: object nouns and motion phrases (slot accuracy).
SLOTS: dict[str, dict[str, tuple[str, ...]]] = {
    "object": {o: (o,) for o in OBJECTS}, "motion": dict(MOTIONS)}


def clip_vectors(wh: Warehouse, encoder: str, model_run: str) -> dict[str, np.ndarray]:
    """Stored clip embeddings of one encoder and run (``{}`` when there are none)."""
    con = wh.connect()
    try:
        rows = con.execute(queries.load("clip_vectors"), [encoder, model_run]).fetchall()
    finally:
        con.close()
    return {r[0]: np.asarray(r[1], np.float32) for r in rows}


def nearest_captions(train: ClipSet, test: ClipSet,
                     vectors: Mapping[str, np.ndarray]) -> list[str]:
    """Per test clip, the first reference of the most similar captioned train clip."""
    pool = [i for i in range(len(train)) if train.refs[i] and train.clip_ids[i] in vectors]
    if not pool:
        raise ValueError("nearest-neighbour captioning needs captioned train clips with "
                         "vectors")
    m = np.stack([vectors[train.clip_ids[i]] for i in pool])
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    out = []
    for c in test.clip_ids:
        v = vectors.get(c)
        if v is None:
            out.append("")
            continue
        best = int(np.argmax(m @ (v / max(float(np.linalg.norm(v)), 1e-12))))
        out.append(train.refs[pool[best]][0])
    return out


def score_systems(systems: Mapping[str, Sequence[str]], test: ClipSet, *,
                  meteor: bool = True) -> dict[str, dict[str, Any]]:
    """Scores and slot accuracies per system (captions aligned with ``test``)."""
    refs = dict(zip(test.clip_ids, test.refs, strict=True))
    out = {}
    for name, caps in systems.items():
        s = caption_scores(dict(zip(test.clip_ids, caps, strict=True)), refs, meteor=meteor)
        out[name] = s | slot_accuracy(caps, test.refs, SLOTS)
    return out


def eval_rows(eval_id: str, results: Mapping[str, Mapping[str, Any]],
              runs: Mapping[str, str], split: str,
              decoding: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``caption_eval`` rows."""
    at = utcnow()
    return [{"eval_id": eval_id, "system": name, "model_run": runs[name], "split": split,
             "n_clips": r["n"], "bleu1": r["bleu1"], "bleu2": r["bleu2"], "bleu3": r["bleu3"],
             "bleu4": r["bleu4"], "meteor": r["meteor"], "rouge_l": r["rouge_l"],
             "cider": r["cider"], "object_acc": r.get("object_acc"),
             "motion_acc": r.get("motion_acc"), "both_acc": r.get("all_acc"),
             "decoding_json": (json.dumps(dict(decoding), sort_keys=True)
                               if decoding and name != "nearest" else None), "at": at}
            for name, r in results.items()]


def _fmt(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(dest: Path, eval_id: str, results: Mapping[str, Mapping[str, Any]],
           runs: Mapping[str, str], split: str, samples: Sequence[tuple[str, ...]]) -> Path:
    """Write ``captions.md``: the score table, notes, and sample captions per system."""
    lines = [f"# Captioning evaluation {eval_id}", "",
             f"Split: {split}; {next(iter(results.values()))['n']} captioned clips. "
             "BLEU, METEOR and ROUGE-L in percent, CIDEr-D as is (pycocoevalcap).", "",
             "| system | run | BLEU-1 | BLEU-4 | METEOR | ROUGE-L | CIDEr-D | object % | "
             "motion % | both % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {runs[name]} | {_fmt(r['bleu1'])} | {_fmt(r['bleu4'])} | "
                     f"{_fmt(r['meteor'])} | {_fmt(r['rouge_l'])} | {_fmt(r['cider'], 3)} | "
                     f"{_fmt(r.get('object_acc'), 1)} | {_fmt(r.get('motion_acc'), 1)} | "
                     f"{_fmt(r.get('all_acc'), 1)} |")
    if not java_available():
        lines += ["", "METEOR: not computed (it needs Java: `apt-get install "
                  "default-jre-headless`); captions were tokenised by the Python rule, not "
                  "the PTB tokenizer."]
    lines += ["", "## Samples", "", "| reference | " + " | ".join(results) + " |",
              "|---" * (len(results) + 1) + "|"]
    lines += ["| " + " | ".join(s) + " |" for s in samples]
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "captions.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
