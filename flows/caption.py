"""Captioning flows: train a caption model (and its baseline), evaluate, fill generated_captions.

``videobert caption train`` runs :func:`caption_train_flow`: a BART-style decoder on the live
VideoBERT (the promoted or newest fine-tune, else the newest pretraining run) trained on the
train split's clip captions, early-stopped on validation CIDEr-D and registered in
``model_runs`` (kind ``caption``); then the same decoder on the raw clip features without
VideoBERT (kind ``caption-baseline``) with the same settings; then :func:`caption_eval_flow`
scores both and the nearest-neighbour baseline on the test split (``caption_eval``, a report in
``reports/<eval_id>/captions.md``, a Prefect table artifact).

``videobert caption --all`` runs :func:`caption_fill_flow`: a caption for every clip without
one from the newest caption model, committed in chunks (kill it any time; rerun finishes it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from tasks.shared import model_runs
from tasks.shared.errors import InputError
from warehouse.home import resolve_home
from warehouse.store import Warehouse, utcnow

CAPTION, BASELINE = "caption", "caption-baseline"


class CaptionTrainParams(BaseModel):
    """Parameters of caption training (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    from_run: str | None = Field(None, description="VideoBERT run whose encoder to start from "
                                 "(default: the live fine-tune, else the newest pretraining)")
    steps: int = Field(1500, ge=1, description="Optimiser steps")
    batch_size: int = Field(32, ge=1, description="Clip-caption pairs per step")
    lr: float = Field(2e-3, gt=0, description="Peak learning rate (the decoder's)")
    eval_every: int = Field(100, ge=1, description="Validate (greedy CIDEr-D) every N steps")
    patience: int = Field(4, ge=1, description="Early stopping: validations without gain")
    denoise_steps: int = Field(300, ge=0, description="BART-style text-infilling warm-up "
                               "steps, part of ``steps`` and at most a fifth of them "
                               "(300: measured better on the synthetic corpus)")
    encoder_lr_scale: float = Field(0.1, ge=0, description="The pretrained encoder's learning "
                                    "rate as a share of the decoder's (the baseline's random "
                                    "encoder always learns at the full rate)")
    context: int = Field(0, ge=0, description="Neighbouring clips each side in the input")
    features: str | None = Field("i3d", description="Clip features the encoder reads")
    baselines: bool = Field(True, description="Also train the features-only baseline and "
                            "evaluate all systems on the test split")
    beams: int = Field(4, ge=1, description="Beam width of the evaluation")
    split: str = Field("test", description="Split evaluated")
    seed: int = Field(0, description="Seed")
    device: str = Field("auto", description="auto, cpu, cuda, ...")


class CaptionEvalParams(BaseModel):
    """Parameters of caption evaluation."""

    home: str | None = None
    model_run: str | None = Field(None, description="Caption run (default: the newest)")
    baseline_run: str | None = Field(None, description="Features-only run (default: the "
                                     "newest one trained on the same parent)")
    split: str = Field("test", description="Split evaluated")
    beams: int = Field(4, ge=1, description="Beam width")
    device: str = Field("auto", description="auto, cpu, cuda, ...")


class CaptionFillParams(BaseModel):
    """Parameters of ``videobert caption --all``."""

    home: str | None = None
    model_run: str | None = Field(None, description="Caption run (default: the newest)")
    beams: int = Field(4, ge=1, description="Beam width")
    chunk: int = Field(512, ge=1, description="Clips per warehouse commit")
    device: str = Field("auto", description="auto, cpu, cuda, ...")


def encoder_run(wh: Warehouse, from_run: str | None) -> tuple:
    """(model_run, codebook_id, checkpoint_path, preset) of the VideoBERT to caption with."""
    run = (model_runs.one(wh, "model_run_ckpt", [from_run]) if from_run
           else model_runs.live_run(wh) or model_runs.latest_done(wh, "pretrain"))
    if run is None or not run[2]:
        which = f" {from_run!r}" if from_run else ""
        raise InputError(f"no finished VideoBERT run{which} in {wh.home}: run `videobert "
                         "pretrain` (and `videobert finetune`) first")
    return run


def caption_run(wh: Warehouse, model_run: str | None, kind: str = CAPTION) -> tuple:
    """(model_run, codebook_id, checkpoint_path, preset) of a finished caption run."""
    run = (model_runs.one(wh, "model_run_ckpt", [model_run]) if model_run
           else model_runs.latest_done(wh, kind))
    if run is None or not run[2]:
        which = f" {model_run!r}" if model_run else ""
        raise InputError(f"no finished caption model{which} in {wh.home}: run `videobert "
                         "caption train` first")
    return run


def load_captioner(home: Path, run: tuple, device: Any = "cpu") -> tuple[Any, Any]:
    """A caption run's model (on ``device``) and every clip as it reads them."""
    from models.captioner import VideoCaptioner

    model = VideoCaptioner.from_pretrained(Path(home) / run[2], device=str(device))
    clips, _ = _clips(Warehouse(home), run[1], model.config.context,
                      model.config.feature_encoder)
    return model, clips


def _clips(wh: Warehouse, codebook_id: str, context: int, features: str | None) -> Any:
    from tasks.caption.data import load_clips
    from tasks.shared.clip_features import clip_features

    feats = (clip_features(wh, features) if features else None) or None
    return load_clips(wh, codebook_id, context=context, features=feats), feats


@task(name="caption-train", cache_policy=NO_CACHE)
def train_task(home: Path, model_run: str, parent: tuple, p: CaptionTrainParams,
               mode: str) -> dict[str, Any]:
    """Build the captioner (``videobert`` or ``features`` mode), train it, save ``final/``."""
    from models.captioner import CaptionerConfig, VideoCaptioner
    from models.device import pick_device
    from models.videobert import VideoBert, text_tokenizer
    from tasks.caption.train import CaptionTrainConfig, train_captioner
    from tasks.pretrain.metrics import WarehouseSink, metric_rows

    log = get_run_logger()
    wh = Warehouse(home)
    run, codebook_id, ckpt_path, preset = parent
    clips, feats = _clips(wh, codebook_id, p.context, p.features)
    dim = len(next(iter(feats.values()))) if feats else 0
    cfg = CaptionerConfig(mode=mode, context=p.context, parent_run=run,
                          feature_encoder=p.features if dim else None,
                          feature_memory=bool(dim) and mode == "videobert")
    device = pick_device(p.device)
    if mode == "videobert":
        encoder = VideoBert.from_pretrained(home / ckpt_path, device="cpu")
        if encoder.config.feature_input and encoder.config.feature_dim != dim:
            raise InputError(f"{run} reads {encoder.config.feature_dim}-d features; the "
                             f"warehouse has {dim}-d {p.features} features")
        model = VideoCaptioner.from_videobert(encoder, cfg, feature_dim=dim, seed=p.seed)
    else:
        if not dim:
            raise InputError(f"the features baseline needs {p.features} clip features: run "
                             "`videobert tokenize` first")
        n_visual = VideoBert.from_pretrained(home / ckpt_path).config.n_visual
        model = VideoCaptioner.features_baseline(preset, n_visual, dim, cfg, seed=p.seed)
    train, val = clips.where(split="train", captioned=True), clips.where(split="val",
                                                                        captioned=True)
    tcfg = CaptionTrainConfig(steps=p.steps, batch_size=p.batch_size, lr=p.lr,
                              eval_every=p.eval_every, ckpt_every=p.eval_every,
                              patience=p.patience,
                              denoise_steps=(min(p.denoise_steps, p.steps // 5)
                                             if mode == "videobert" else 0),
                              # a pretrained encoder moves slowly; a random one learns freely
                              encoder_lr_scale=p.encoder_lr_scale if mode == "videobert"
                              else 1.0,
                              seed=p.seed, device=str(device))
    sink = WarehouseSink(home, model_run)

    def on_eval(step: int, m: dict[str, float]) -> None:
        sink.write(metric_rows(model_run, step, "val", m))
        log.info("%s step %d: val CIDEr-D %.3f BLEU-4 %.2f (train loss %.3f)", model_run, step,
                 m["cider"], m["bleu4"], m["train_loss"])

    try:
        result = train_captioner(model, text_tokenizer(), train, val, tcfg,
                                 home / "models" / model_run, on_eval=on_eval)
    except ValueError as e:
        raise InputError(str(e)) from e
    final = home / "models" / model_run / "final"
    model.save_pretrained(final)
    return result | {"checkpoint": str(final), "codebook_id": codebook_id,
                     "data": {"train_captions": sum(len(r) for r in train.refs),
                              "val_clips": len(val)}}


def _row(home: Path, model_run: str, kind: str, parent: tuple, p: BaseModel, status: str,
         started: Any, result: dict[str, Any] | None = None) -> dict[str, Any]:
    result = result or {}
    return {"model_run": model_run, "kind": kind, "preset": parent[3], "parent_run": parent[0],
            "codebook_id": parent[1], "status": status, "device": result.get("device"),
            "seed": getattr(p, "seed", None), "steps": result.get("best_step"),
            "config_json": json.dumps({"params": p.model_dump(mode="json"),
                                       "mode": "videobert" if kind == CAPTION else "features"},
                                      sort_keys=True),
            "data_json": json.dumps(result["data"]) if "data" in result else None,
            "metrics_json": json.dumps({"val": result["best"]}) if "best" in result else None,
            "checkpoint_path": (model_runs.rel(home, result["checkpoint"])
                                if "checkpoint" in result else None),
            "flow_run_id": str(flow_run.id) if flow_run.id else None,
            "started_at": started, "finished_at": None if status == "running" else utcnow()}


def _train_one(home: Path, parent: tuple, p: CaptionTrainParams, kind: str) -> dict[str, Any]:
    wh = Warehouse(home)
    model_run = model_runs.new_run_id(kind)
    started = utcnow()
    with model_runs.running(home, model_run):
        model_runs.upsert(wh, _row(home, model_run, kind, parent, p, "running", started),
                          purpose="caption")
        try:
            result = train_task(home, model_run, parent, p,
                                "videobert" if kind == CAPTION else "features")
        except BaseException:
            model_runs.upsert(wh, _row(home, model_run, kind, parent, p, "failed", started),
                              purpose="caption")
            raise
        model_runs.upsert(wh, _row(home, model_run, kind, parent, p, "done", started, result),
                          purpose="caption")
    return result | {"model_run": model_run}


@flow(name="caption-train")
def caption_train_flow(params: CaptionTrainParams) -> dict[str, Any]:
    """Train a caption model (and its features-only baseline) and evaluate them."""
    log = get_run_logger()
    home = resolve_home(params.home)
    parent = encoder_run(Warehouse(home), params.from_run)
    main = _train_one(home, parent, params, CAPTION)
    log.info("caption %s: best val CIDEr-D %.3f at step %d", main["model_run"],
             main["best"]["cider"], main["best_step"])
    out: dict[str, Any] = {"model_run": main["model_run"], "parent_run": parent[0],
                           "val": main["best"], "best_step": main["best_step"],
                           "steps_done": main["steps_done"], "seconds": main["seconds"]}
    if params.baselines:
        base = _train_one(home, parent, params, BASELINE)
        out["baseline_run"] = base["model_run"]
        out["baseline_val"] = base["best"]
        out["evaluation"] = caption_eval_flow(CaptionEvalParams(
            home=str(home), model_run=main["model_run"], baseline_run=base["model_run"],
            split=params.split, beams=params.beams, device=params.device))
    return out


@task(name="caption-describe", cache_policy=NO_CACHE)
def describe_task(home: Path, run: tuple, clip_ids: list[str], beams: int,
                  device: str) -> list[str]:
    """Captions of some clips by a caption run (in ``clip_ids`` order)."""
    from models.caption_decoding import Decoding
    from models.device import pick_device
    from models.videobert import text_tokenizer
    from tasks.caption.describe import describe

    dev = pick_device(device)
    model, clips = load_captioner(home, run, dev)
    sub = clips.where(clip_ids=clip_ids)
    order = {c: i for i, c in enumerate(sub.clip_ids)}
    sub = sub.subset(order[c] for c in clip_ids)
    caps = describe(model, text_tokenizer(), sub, Decoding(beams=beams,
                                                           max_len=model.config.max_caption),
                    device=dev)
    return [t for t, _ in caps]


@flow(name="caption-evaluate")
def caption_eval_flow(params: CaptionEvalParams) -> dict[str, Any]:
    """Score a caption run, its features-only baseline and nearest-neighbour captioning."""
    from models.caption_decoding import Decoding
    from tasks.caption import evaluate as ev

    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    run = caption_run(wh, params.model_run)
    parent_row = model_runs.one(wh, "model_run_lineage", [run[0]])
    parent = parent_row[1] if parent_row else None
    base = (caption_run(wh, params.baseline_run, BASELINE) if params.baseline_run
            else model_runs.latest_done(wh, BASELINE))
    clips, feats = _clips(wh, run[1], 0, "i3d")
    test, train = clips.where(split=params.split, captioned=True), clips.where(
        split="train", captioned=True)
    if len(test) == 0:
        raise InputError(f"no captioned clip in the {params.split!r} split: nothing to score")
    systems = {"videobert": describe_task(home, run, test.clip_ids, params.beams,
                                          params.device)}
    runs = {"videobert": run[0]}
    if base is not None:
        systems["features"] = describe_task(home, base, test.clip_ids, params.beams,
                                            params.device)
        runs["features"] = base[0]
    vectors = ev.clip_vectors(wh, "videobert", parent) if parent else {}
    runs["nearest"] = parent if vectors else "i3d-features"
    systems["nearest"] = ev.nearest_captions(train, test, vectors or feats or {})
    results = ev.score_systems(systems, test)
    eval_id = f"caption-{utcnow().strftime('%Y%m%d-%H%M%S')}-{run[0][-6:]}"
    dec = Decoding(beams=params.beams).as_dict()
    rows = ev.eval_rows(eval_id, results, runs, params.split, dec)
    with wh.writer(wait_s=120, purpose="caption eval") as w:
        w.commit([w.stage("caption_eval", rows)], message=f"caption eval {eval_id}")
    samples = [(test.refs[i][0], *(systems[s][i] for s in systems))
               for i in range(min(8, len(test)))]
    path = ev.report(home / "reports" / eval_id, eval_id, results, runs, params.split, samples)
    create_table_artifact([{k: (round(v, 3) if isinstance(v, float) else v)
                            for k, v in r.items() if k not in ("at", "decoding_json")}
                           for r in rows], key=f"{eval_id.lower()}",
                          description=f"captioning on {params.split}")
    log.info("caption evaluation %s: CIDEr-D %s", eval_id,
             ", ".join(f"{k} {v['cider']:.3f}" for k, v in results.items()))
    return {"eval_id": eval_id, "report": str(path), "split": params.split,
            "results": {k: {m: v for m, v in r.items()} for k, r in results.items()},
            "runs": runs}


@flow(name="caption-fill")
def caption_fill_flow(params: CaptionFillParams) -> dict[str, Any]:
    """A caption for every clip without one from the caption model (incremental)."""
    from models.caption_decoding import Decoding
    from models.device import pick_device
    from models.videobert import text_tokenizer
    from tasks.caption.fill import fill

    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    run = caption_run(wh, params.model_run)
    dev = pick_device(params.device)
    model, clips = load_captioner(home, run, dev)
    out = fill(wh, model, text_tokenizer(), clips, run[0],
               Decoding(beams=params.beams, max_len=model.config.max_caption), device=dev,
               chunk=params.chunk)
    log.info("captions %s: %d written, %d already there", run[0], out["added"], out["skipped"])
    return out | {"model_run": run[0]}


if __name__ == "__main__":
    caption_fill_flow(CaptionFillParams(home=sys.argv[1] if len(sys.argv) > 1 else None))
