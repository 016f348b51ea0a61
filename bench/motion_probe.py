"""Do the clip features carry the synthetic corpus's motions? Linear probes, measured.

Issue 14's verb item asks VideoBERT's zero-shot probe to fill held-out motion words better
with the video than without. That can only work if the clip features the model reads carry
the motion. This script answers that part alone, without VideoBERT: a logistic regression
(scikit-learn, the ``bench`` extra) from each clip's feature to its caption's motion (and, as
a control, its object), trained on the ``train`` split and scored on ``val`` (object-motion
pairs seen in training) and ``test`` (pairs never seen in training: the probe's split).

Reported per encoder and label: top-1 and top-5 accuracy (%) on val and test, and chance.

Usage (a data home where ``videobert ingest`` and ``videobert tokenize`` ran on the README's
200-video synthetic corpus)::

    python bench/motion_probe.py --home syn-home            # a few seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def topk(proba: np.ndarray, classes: list[str], truth: list[str], k: int) -> float:
    """Share (%) of rows whose true class is among the k most probable."""
    best = np.argsort(-proba, axis=1)[:, :k]
    return float(np.mean([classes.index(t) in row for t, row in zip(truth, best, strict=True)])
                 * 100.0)


def probe(home: Path, encoders: list[str]) -> list[dict]:
    """One row per (encoder, label): val/test top-1/top-5 of a linear probe trained on train."""
    from sklearn.linear_model import LogisticRegression

    from tasks.pretrain.probe import load_items
    from tasks.shared import model_runs
    from warehouse.store import Warehouse

    wh = Warehouse(home)
    codebook = model_runs.one(wh, "pretrain_default_codebook", [])[0]
    out = []
    for enc in encoders:
        # the zero-shot probe's own clips and labels (one row per clip), with this feature
        by = {s: [it for it in load_items(wh, codebook, s, enc) if it.feature is not None]
              for s in ("train", "val", "test")}
        if not all(by.values()):
            print(f"{enc}: no features or no labelled clips in every split; skipped")
            continue
        x = {s: np.stack([it.feature for it in items]) for s, items in by.items()}
        for label in ("motion", "object"):
            y = {s: [getattr(it, label) for it in items] for s, items in by.items()}
            clf = LogisticRegression(max_iter=2000).fit(x["train"], y["train"])
            classes = list(clf.classes_)
            row = {"encoder": enc, "label": label, "classes": len(classes),
                   "n": {s: len(v) for s, v in y.items()},
                   "chance_top1": 100.0 / len(classes),
                   "chance_top5": 100.0 * min(5, len(classes)) / len(classes)}
            for s in ("val", "test"):
                p = clf.predict_proba(x[s])
                row[f"{s}_top1"] = topk(p, classes, y[s], 1)
                row[f"{s}_top5"] = topk(p, classes, y[s], 5)
            out.append(row)
            print(f"{enc:<9} {label:<7} val top-1 {row['val_top1']:5.1f} top-5 "
                  f"{row['val_top5']:5.1f} | test (unseen pairs) top-1 {row['test_top1']:5.1f} "
                  f"top-5 {row['test_top5']:5.1f} | chance {row['chance_top1']:.1f} / "
                  f"{row['chance_top5']:.1f}  (n {row['n']})")
    return out


def main() -> None:
    """Parse arguments, run the probes, print (and optionally write) the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--encoders", default="i3d,concepts")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = probe(args.home, args.encoders.split(","))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
