"""Retrieval fine-tuning flow: pretrained VideoBERT -> dual encoder -> embeddings in the warehouse.

Run it with ``videobert finetune`` or ``python -m flows.finetune [HOME]``. Starts from a
pretraining run (the newest finished one by default), trains with a symmetric InfoNCE loss on
the train split with early stopping on validation text->clip R@5
(``tasks/retrieval/finetune.py``), saves the best weights with ``save_pretrained``, registers
the run in ``model_runs`` (kind
``finetune``, parent = the pretraining run) with its validation curve in ``training_metrics``,
and writes the run's clip, text and video embeddings to ``embeddings``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from tasks.shared import model_runs
from tasks.shared.errors import InputError
from warehouse.home import resolve_home
from warehouse.store import Warehouse, utcnow


class FinetuneParams(BaseModel):
    """Parameters of the fine-tuning flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    from_run: str | None = Field(None, description="Pretraining run to start from (default: "
                                 "the newest finished one)")
    steps: int = Field(600, ge=1, description="Maximum optimiser steps")
    batch_size: int = Field(64, ge=2, description="Caption-clip pairs per batch")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate")
    eval_every: int = Field(50, ge=1, description="Validate every N steps")
    patience: int = Field(4, ge=1, description="Early stopping: validations without gain")
    distill: Literal["concepts", "clip"] | None = Field(
        None, description="Distil from a teacher encoder's in-batch similarities: the concepts "
        "baseline, or CLIP (its clip features from `videobert tokenize --encoder clip`)")
    clip_model: str | None = Field(None, description="CLIP weights (folder or hub id) for the "
                                   "teacher's text side; needed with distill=clip")
    features: str | None = Field("i3d", description="Clip features added to the visual "
                                 "tokens (an encoder of clip_features); None: tokens only")
    itm_weight: float = Field(1.0, ge=0, description="Weight of the cross-encoder (re-ranking) "
                              "term with hard negatives; 0: no re-ranking head")
    seed: int = Field(0, description="Seed of the batch order")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")


def _teacher(wh: Warehouse, pairs: Any, device: str, kind: str,
             clip_model: str | None) -> tuple[Any, Any]:
    """A teacher's unit-length embeddings of the train pairs: text (MiniLM for concepts, CLIP's
    text tower for clip) and video (the mean of the pair's stored clip features)."""
    import numpy as np

    from tasks.retrieval.finetune import clip_features

    if kind == "clip" and not clip_model:
        raise InputError("distill=clip needs --clip-model (the CLIP weights that made the clip "
                         "features) for the captions' side")
    feats = clip_features(wh, kind)
    if not feats:
        raise InputError(f"distill={kind} needs {kind} clip features: run `videobert tokenize"
                         f"{' --encoder clip --clip-model ...' if kind == 'clip' else ''}`")
    if kind == "clip":
        from models.clip import ClipEncoder

        embed_text = ClipEncoder.from_pretrained(clip_model, device=device).encode_text
    else:
        from models.concepts import concepts_encoder

        embed_text = concepts_encoder(device).embed_text
    dim = len(next(iter(feats.values())))
    video = np.stack([np.mean([feats[c] for c in cids if c in feats] or [np.zeros(dim)],
                              axis=0) for cids in pairs.clip_ids]).astype(np.float32)
    video /= np.maximum(np.linalg.norm(video, axis=1, keepdims=True), 1e-12)
    text = np.asarray(embed_text(pairs.texts), np.float32)
    if text.shape[1] != dim:
        raise ValueError(f"distill={kind}: text embeddings have {text.shape[1]} dimensions, the "
                         f"stored clip features {dim}: give the CLIP model that made them")
    return text, video


@task(name="finetune-train", cache_policy=NO_CACHE)
def train_task(home: Path, model_run: str, parent: tuple, p: FinetuneParams) -> dict[str, Any]:
    """Fine-tune, save the best weights, and log the validation curve."""
    from models.device import pick_device
    from models.videobert import VideoBert, text_tokenizer
    from tasks.pretrain.metrics import WarehouseSink, metric_rows
    from tasks.retrieval.finetune import FinetuneConfig, clip_features, finetune, load_pairs

    log = get_run_logger()
    wh = Warehouse(home)
    _run, codebook_id, ckpt, _preset = parent
    device = pick_device(p.device)
    model = VideoBert.from_pretrained(home / ckpt, device=str(device))
    tok = text_tokenizer()
    feats = (clip_features(wh, p.features) if p.features else None) or None
    if feats:
        model.enable_feature_input(len(next(iter(feats.values()))), p.features)
    elif p.features:
        log.warning("no %s clip features in %s: fine-tuning on the visual tokens alone",
                    p.features, home)
    train = load_pairs(wh, codebook_id, "train", feats)
    val = load_pairs(wh, codebook_id, "val", feats)
    cfg = FinetuneConfig(steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                         eval_every=p.eval_every, patience=p.patience, distill=p.distill,
                         features=p.features if feats else None, itm_weight=p.itm_weight,
                         seed=p.seed)
    teacher = _teacher(wh, train, str(device), p.distill, p.clip_model) if p.distill else None
    sink = WarehouseSink(home, model_run)

    def on_eval(step: int, m: dict[str, float]) -> None:
        vals = {k: float(v) for k, v in m.items() if k not in ("step", "n_queries",
                                                                "n_candidates")}
        sink.write(metric_rows(model_run, step, "val", vals))
        log.info("finetune step %d: val R@1 %.1f R@5 %.1f MdR %.1f", step, m["r1"], m["r5"],
                 m["mdr"])

    result = finetune(model, tok, train, val, cfg, device=device, teacher=teacher,
                      on_eval=on_eval)
    final = Path(home) / "models" / model_run / "final"
    model.save_pretrained(final)
    return {"checkpoint": str(final), "best_step": result.best_step, "best": result.best,
            "stopped_early": result.stopped_early, "device": str(device),
            "rerank": result.rerank,
            "data": {"train_pairs": len(train), "val_pairs": len(val)},
            "history": result.history}


@task(name="embeddings-videobert", cache_policy=NO_CACHE)
def embed_task(home: Path, model_run: str, codebook_id: str, device: str) -> dict[str, Any]:
    """Write the run's clip, text and video embeddings (new items only)."""
    from models.device import pick_device
    from models.videobert import VideoBert, text_tokenizer
    from tasks.retrieval.embed import videobert_embeddings

    dev = pick_device(device)
    model = VideoBert.from_pretrained(Path(home) / "models" / model_run / "final",
                                      device=str(dev))
    with Warehouse(home).writer(wait_s=120, purpose="embeddings") as w:
        return videobert_embeddings(w, model, text_tokenizer(), model_run, codebook_id,
                                    device=dev)


def _row(home: Path, model_run: str, parent: tuple, p: FinetuneParams, status: str,
         started: Any, result: dict[str, Any] | None = None) -> dict[str, Any]:
    result = result or {}
    return {"model_run": model_run, "kind": "finetune", "preset": parent[3],
            "parent_run": parent[0], "codebook_id": parent[1], "status": status,
            "device": result.get("device"), "seed": p.seed,
            "steps": result.get("best_step"),
            "config_json": json.dumps({"params": p.model_dump(mode="json")}, sort_keys=True),
            "data_json": json.dumps(result["data"]) if "data" in result else None,
            "metrics_json": (json.dumps({"val": result["best"], "rerank": result.get("rerank")})
                             if "best" in result else None),
            "checkpoint_path": (model_runs.rel(home, result["checkpoint"])
                                if "checkpoint" in result else None),
            "flow_run_id": str(flow_run.id) if flow_run.id else None,
            "started_at": started, "finished_at": None if status == "running" else utcnow()}


@flow(name="finetune")
def finetune_flow(params: FinetuneParams) -> dict[str, Any]:
    """Fine-tune a pretrained run for retrieval and write its embeddings."""
    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    parent = (model_runs.one(wh, "model_run_ckpt", [params.from_run]) if params.from_run
              else model_runs.latest_done(wh, "pretrain"))
    if parent is None or not parent[2]:
        which = f" {params.from_run!r}" if params.from_run else ""
        raise InputError(f"no finished pretraining run{which} in {home}: run "
                         "`videobert pretrain` first")
    model_run = model_runs.new_run_id("finetune")
    started = utcnow()
    with model_runs.running(home, model_run):  # crash cleanup: this run is alive
        model_runs.upsert(wh, _row(home, model_run, parent, params, "running", started),
                          purpose="finetune")
        try:
            result = train_task(home, model_run, parent, params)
        except BaseException:
            model_runs.upsert(wh, _row(home, model_run, parent, params, "failed", started),
                              purpose="finetune")
            raise
        model_runs.upsert(wh, _row(home, model_run, parent, params, "done", started, result),
                          purpose="finetune")
    added = embed_task(home, model_run, parent[1], params.device)
    best = result["best"]
    create_table_artifact([{"metric": k, "value": round(float(v), 4)} for k, v in best.items()],
                          key=f"{model_run.lower()}-val",
                          description=f"{model_run}: best validation text->clip retrieval")
    log.info("finetune %s: best val R@5 %.1f at step %d; embeddings %s", model_run, best["r5"],
             result["best_step"], added["added"])
    return {"model_run": model_run, "parent_run": parent[0], "codebook_id": parent[1],
            "best_step": result["best_step"], "val": best, "embeddings": added["added"],
            "checkpoint": result["checkpoint"], "stopped_early": result["stopped_early"],
            "rerank": result.get("rerank")}


if __name__ == "__main__":
    finetune_flow(FinetuneParams(home=sys.argv[1] if len(sys.argv) > 1 else None))
