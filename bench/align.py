"""Why the alignment head stayed at chance, measured: pretraining variants side by side.

Each variant pretrains VideoBERT on the same exported corpus (same seed, same steps) and
reports the held-out alignment accuracies of :mod:`tasks.pretrain.align_eval` on the ``val``
split (balanced: 0.5 is chance) against other-video and same-video negatives, plus the
masked-word accuracy, so the hypotheses of issue 14 are measured, not guessed:

- ``cls-tokens``: the head as it was (``[CLS]`` only), visual tokens only, half the steps as
  warm-up (``positive_share`` 0.5): the recipe before issue 14;
- ``cls-features``: the same with each clip's I3D feature added to its visual token;
- ``bilinear-features``: + the bilinear term of the alignment head (``align_head``);
- ``bilinear-tokens``: the bilinear head without features (same-video negatives share the
  visual token: can tokens alone tell them apart?);
- ``recipe``: bilinear head, features, no warm-up, alignment loss weighted 2 (the README's).

Every variant trains with same-video negatives where a video has another moment (the 2-clip
synthetic videos: the other clip).

Usage (a data home where ``videobert ingest`` and ``videobert tokenize`` ran, e.g. the
README's 200-video synthetic corpus)::

    python bench/align.py --home syn-home --out bench/out/align.json   # ~20 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "cls-tokens": {"features": False, "model": {"align_head": "cls"}},
    "cls-features": {"model": {"align_head": "cls"}},
    "bilinear-features": {},
    "bilinear-tokens": {"features": False},
    "recipe": {"positive_share": 0.0, "model": {"w_align": 2.0}},
}


def run_variant(name: str, spec: dict[str, Any], corpus: Path, work: Path, *, preset: str,
                steps: int, batch_size: int, lr: float, seed: int) -> dict[str, Any]:
    """Pretrain one variant in-process (no Prefect) and return its last val metrics."""
    from tasks.pretrain.train import TrainConfig, TrainJob, run_job

    n_steps = steps
    use_feats = spec.get("features", True)
    data = {"batch_size": batch_size, "seed": seed,
            "positive_batches": round(spec.get("positive_share", 0.5) * n_steps),
            "feature_encoder": "i3d", "feature_input": use_feats, **spec.get("data", {})}
    train = TrainConfig(steps=n_steps, lr=lr, warmup=min(1000, n_steps // 10),
                        eval_every=max(n_steps // 4, 1), ckpt_every=n_steps, seed=seed,
                        device="cpu")
    job = TrainJob(model_run=f"bench-{name}", run_dir=str(work / name), corpus_path=str(corpus),
                   preset=preset, data=data, train=train, model_overrides=spec.get("model", {}))
    t0 = time.perf_counter()
    res = run_job(job)
    val = res["metrics"].get("val", {})
    train_acc = res["metrics"].get("train", {}).get("acc_align")
    keys = ("acc_align", "acc_align_other", "acc_align_same", "auc_align_other",
            "auc_align_same", "acc_text_mlm", "acc_video_mlm")
    return {"variant": name, "steps": n_steps, "wall_s": round(time.perf_counter() - t0, 1),
            "train_acc_align": None if train_acc is None else round(train_acc, 4),
            **{k: round(val[k], 4) for k in keys if k in val},
            "curve": [{k: round(h[k], 4) for k in ("step", "acc_align_other", "acc_align_same")
                       if k in h} for h in res["history"] if h["split"] == "val"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="data home (ingested, tokenized)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON results")
    args = ap.parse_args()
    from tasks.pretrain.data import export_corpus
    from tasks.shared import model_runs
    from warehouse.store import Warehouse

    wh = Warehouse(args.home.resolve())
    codebook = model_runs.one(wh, "pretrain_default_codebook", [])
    if codebook is None:
        raise SystemExit(f"no codebook with visual tokens in {args.home}: run tokenize first")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = export_corpus(wh, codebook[0], Path(tmp), feature_encoder="i3d")
        for name in args.variants.split(","):
            row = run_variant(name, VARIANTS[name], corpus, Path(tmp), preset=args.preset,
                              steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    report = {"machine": f"{platform.machine()}, {platform.processor() or '?'}",
              "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
