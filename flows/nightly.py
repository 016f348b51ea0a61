"""Nightly flow: incremental ingest -> tokens -> continued pretraining -> fine-tuning -> indices
-> evaluation -> promotion gate, in one run (deployment ``nightly-retrain``, ``videobert run``).

Run it with ``videobert run [--source DIR]...`` or ``python -m flows.nightly [SOURCE]...``.
Steps: hold ``HOME/nightly.lock`` (a second run exits with a clear message); crash cleanup
(the warehouse writer's recovery, stale ``running`` training runs marked ``failed``); ingest
every source (the built-in sample corpus when none is given); when nothing new arrived since
the live model was trained, stop there ("skipped: no new data"). Otherwise tokenize the new
clips with the current codebook (re-cluster when asked, or when new clips are a large share of
all clips), continue pretraining from the live model's pretraining run (from scratch on a new
codebook or on the first night), fine-tune, caption the new clips (with the newest caption
model, when there is one; retrained behind a validation CIDEr-D gate with
``caption_retrain``), embed and index, evaluate the candidate and the live model on the gate
split, and promote the candidate only when the gate metric does not regress
(``tasks/nightly/gate.py``). A ``promotions`` row records the decision either way; search and the
index follow the live run. The evaluation table on the test split, the gate values and the
decision become Prefect artifacts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from tasks.nightly import gate as nt
from tasks.shared import model_runs
from warehouse.home import resolve_home
from warehouse.store import Warehouse

TABLE_COLS = ("encoder", "model_run", "level", "direction", "mode", "r1", "r5", "r10", "mdr",
              "mnr")


class NightlyParams(BaseModel):
    """Parameters of the nightly flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    sources: list[str] = Field([], description="Folders, video files, patterns (videos/*.mp4) "
                               "or caption manifests to ingest, one ingest run each (empty: "
                               "the built-in sample corpus, built in HOME/samples/real)")
    pretrain_preset: Literal["tiny", "small", "mini", "base", "large"] = Field(
        "tiny", description="Model size of pretraining")
    pretrain_steps: int = Field(200, ge=1, description="Pretraining optimiser steps per night")
    pretrain_batch_size: int = Field(32, ge=1, description="Pretraining sequences per batch")
    finetune_steps: int = Field(100, ge=1, description="Fine-tuning optimiser steps (maximum)")
    finetune_batch_size: int = Field(64, ge=2, description="Caption-clip pairs per batch")
    finetune_lr: float = Field(3e-4, gt=0, description="Fine-tuning peak learning rate")
    encoders: list[Literal["i3d", "clip", "concepts"]] = Field(
        ["i3d", "concepts"], description="Feature encoders (clip also runs with clip_model)")
    clip_model: str | None = Field(None, description="CLIP weights: a local folder or hub id")
    levels: int | None = Field(None, ge=1, le=8, description="Codebook hierarchy depth "
                               "(default: 4; 2 on the sample corpus)")
    branching: int | None = Field(None, ge=2, le=256, description="Codebook children per node "
                                  "(default: 12; 4 on the sample corpus)")
    min_points_per_token: int | None = Field(None, ge=1, description="Clips per visual token "
                                             "on average (default: 39; 2 on the sample corpus)")
    recluster: bool = Field(False, description="Fit a new codebook on this run")
    recluster_share: float = Field(0.5, gt=0, le=1, description="Also re-cluster when this "
                                   "run's new clips are more than this share of all clips")
    gate_metric: Literal["r1", "r5", "r10", "mdr", "mnr"] = Field(
        "r5", description="Promotion gate: VideoBERT text->clip exact retrieval metric "
        "(default R@5) on gate_split; the candidate must be at least as good as the live model")
    gate_split: str = Field("val", description="Split the gate is measured on")
    eval_split: str = Field("test", description="Split of the published evaluation table")
    force: bool = Field(False, description="Train even when there is no new data")
    asr: Literal["auto", "always", "never"] = Field("auto", description="Speech to text at "
                                                    "ingest (needs the asr extra)")
    captions: bool = Field(True, description="Caption the new clips with the newest caption "
                           "model (when there is one for the current codebook) before indexing, "
                           "so they are found by what they show")
    caption_retrain: bool = Field(False, description="Also train a new caption model each "
                                  "night, kept only when its validation CIDEr-D is not worse "
                                  "(off by default: minutes of CPU per night)")
    caption_steps: int = Field(1500, ge=1, description="Caption training steps (retrain)")
    seed: int = Field(0, description="Seed of pretraining and fine-tuning")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")


def _ingest(p: NightlyParams, home: Path) -> list[dict[str, Any]]:
    """Ingest every source (the sample corpus when none is configured)."""
    from flows.ingest import IngestParams, ingest_flow
    from tasks.ingest.sources import plan_sources

    sources = list(p.sources)
    if not sources:
        from tasks.ingest.samples import build_sample_corpus
        from warehouse.home import sample_corpus_dir

        sources = [str(build_sample_corpus(sample_corpus_dir(home)).root)]
    # each configured source is one run (a pattern: one run of its matches; a manifest among
    # them: a run of its own), so what earlier nights stored keeps its root
    groups = [g for s in sources for g in plan_sources([s])]
    return [ingest_flow(IngestParams(source=g, home=str(home), asr=p.asr)) for g in groups]


def _has_queries(wh: Warehouse, split: str) -> bool:
    from tasks.retrieval.evaluate import load_eval_set

    return bool(load_eval_set(wh, split).segment_ids)


def _gate_eval(home: Path, wh: Warehouse, p: NightlyParams, run: str) -> float | None:
    """The gate metric of one VideoBERT run on the gate split (None: not measurable)."""
    from flows.evaluate import EvaluateParams, evaluate_flow

    if not _has_queries(wh, p.gate_split):
        return None
    try:  # a step of the gate, not a stage: the flow's body runs in this flow run (its
        # task runs and rows as usual), which spares a subflow run's bookkeeping per model
        ev = evaluate_flow.fn(EvaluateParams(home=str(home), split=p.gate_split, model_run=run,
                                             encoders=["videobert"], rerank=False,
                                             device=p.device))
    except (ValueError, LookupError) as e:  # e.g. the run's codebook lacks the new clips
        get_run_logger().warning("gate: %s cannot be evaluated on %s: %s", run, p.gate_split, e)
        return None
    return nt.gate_value(ev["rows"], p.gate_metric)


def _tokenize(home: Path, wh: Warehouse, p: NightlyParams, live: tuple | None,
              ingests: list[dict[str, Any]]) -> dict[str, Any]:
    """Tokenize new clips; re-cluster when configured or when new clips dominate."""
    from flows.visual_tokens import TokenizeParams, tokenize_flow

    new_clips = sum(int(s.get("clips", 0)) for s in ingests)
    total = (model_runs.one(wh, "clip_count", []) or (0,))[0]
    share = new_clips / total if total else 0.0
    recluster = p.recluster or (live is not None and share > p.recluster_share)
    small = not p.sources  # the sample corpus is a handful of videos: a small codebook
    out = tokenize_flow(TokenizeParams(
        home=str(home), encoders=list(p.encoders), clip_model=p.clip_model,
        levels=p.levels or (2 if small else 4), branching=p.branching or (4 if small else 12),
        min_points_per_token=p.min_points_per_token or (2 if small else 39), seed=p.seed,
        recluster=recluster, device=p.device))
    return out | {"new_clip_share": round(share, 4), "reclustered": recluster}


def _train(home: Path, wh: Warehouse, p: NightlyParams, live: tuple | None,
           codebook_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Continued (or first) pretraining, then retrieval fine-tuning; returns both summaries."""
    from flows.finetune import FinetuneParams, finetune_flow
    from flows.pretrain import PretrainParams, pretrain_flow

    parent = nt.pretrain_parent(wh, live, codebook_id)
    t0 = time.perf_counter()
    pre = pretrain_flow(PretrainParams(
        home=str(home), preset=p.pretrain_preset, steps=p.pretrain_steps,
        batch_size=p.pretrain_batch_size, codebook=codebook_id, continue_from=parent,
        eval_every=min(100, p.pretrain_steps), ckpt_every=p.pretrain_steps, seed=p.seed,
        device=p.device))
    pre["seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fine = finetune_flow(FinetuneParams(
        home=str(home), from_run=pre["model_run"], steps=p.finetune_steps,
        batch_size=p.finetune_batch_size, lr=p.finetune_lr,
        eval_every=max(1, min(50, p.finetune_steps // 2)), seed=p.seed, device=p.device))
    fine["seconds"] = time.perf_counter() - t0
    return pre | {"continue_from": parent}, fine


def _gate(home: Path, wh: Warehouse, p: NightlyParams, candidate: str,
          live: tuple | None) -> dict[str, Any]:
    """Evaluate candidate and live model on the gate split, decide, record the decision."""
    from flows.index import IndexParams, index_flow

    value = _gate_eval(home, wh, p, candidate)
    previous = live[0] if live else None
    prev_value = None
    if previous is not None:
        # the live model's embeddings and index must cover the new clips (it may stay live)
        index_flow(IndexParams(home=str(home), encoders=["videobert"], model_run=previous,
                               device=p.device))
        prev_value = _gate_eval(home, wh, p, previous)
    decision = nt.decide(p.gate_metric, value, previous, prev_value)
    row = nt.record_promotion(wh, model_run=candidate, previous_run=previous,
                              metric=f"{p.gate_metric} t2v clip exact on {p.gate_split}",
                              value=value, previous_value=prev_value, decision=decision,
                              flow_run_id=str(flow_run.id) if flow_run.id else None)
    return {k: row[k] for k in ("promotion_id", "model_run", "previous_run", "promoted",
                                "metric", "value", "previous_value", "reason")}


def _evaluate(home: Path, wh: Warehouse, p: NightlyParams) -> dict[str, Any] | None:
    """The published table: every encoder on the evaluation split, VideoBERT = the live run."""
    from flows.evaluate import EvaluateParams, evaluate_flow

    split = next((s for s in (p.eval_split, p.gate_split) if _has_queries(wh, s)), None)
    if split != p.eval_split:  # e.g. the sample corpus: five videos, one held out (val)
        get_run_logger().warning("no captioned clips in the %s split: evaluation table on %s",
                                 p.eval_split, split)
    if split is None:
        return None
    ev = evaluate_flow(EvaluateParams(home=str(home), split=split, device=p.device))
    return ev | {"split": split, "requested_split": p.eval_split}


def _captions(home: Path, wh: Warehouse, p: NightlyParams, codebook_id: str,
              fine_run: str) -> dict[str, Any] | None:
    """Retrain the caption model behind a CIDEr-D gate (when asked), then caption new clips."""
    import json

    from flows.caption import (
        CAPTION,
        CaptionFillParams,
        CaptionTrainParams,
        caption_fill_flow,
        caption_train_flow,
    )

    log = get_run_logger()
    out: dict[str, Any] = {}
    current = model_runs.latest_done(wh, CAPTION)
    if p.caption_retrain:
        new = caption_train_flow(CaptionTrainParams(home=str(home), from_run=fine_run,
                                                    steps=p.caption_steps, baselines=False,
                                                    seed=p.seed, device=p.device))
        old = (json.loads(model_runs.one(wh, "model_run_metrics", [current[0]])[0] or "{}")
               .get("val", {}).get("cider") if current else None)
        kept = old is None or new["val"]["cider"] >= old
        if not kept:
            model_runs.set_status(wh, new["model_run"], "rejected", purpose="caption gate")
        out["retrain"] = {"model_run": new["model_run"], "val_cider": new["val"]["cider"],
                          "previous_cider": old, "kept": kept}
        log.info("nightly captions: %s val CIDEr-D %.3f vs %s: %s", new["model_run"],
                 new["val"]["cider"], old, "kept" if kept else "rejected")
        current = model_runs.latest_done(wh, CAPTION)
    if current is None or current[1] != codebook_id:
        log.info("nightly captions: no caption model for codebook %s (`videobert caption "
                 "train`): clips not captioned", codebook_id)
        return out or None
    return out | {"fill": caption_fill_flow(CaptionFillParams(home=str(home),
                                                              device=p.device))}


def _artifacts(result: dict[str, Any]) -> None:
    """Prefect artifacts: the evaluation table and the promotion decision."""
    ev, gate = result.get("evaluation"), result.get("gate")
    if ev:
        create_table_artifact([{c: (round(r[c], 2) if isinstance(r[c], float) else r[c])
                                for c in TABLE_COLS} for r in ev["rows"]],
                              key="nightly-metrics",
                              description=f"nightly: retrieval on {ev['split']} ({ev['eval_id']})")
    lines = [f"# Nightly run: {result['status']}", ""]
    if gate:
        verdict = "promoted" if gate["promoted"] else "not promoted"
        lines += [f"Candidate `{gate['model_run']}` **{verdict}**: {gate['reason']}", "",
                  f"- gate metric: {gate['metric']}: candidate {gate['value']}, live "
                  f"{gate['previous_value']} (`{gate['previous_run']}`)"]
    lines += [f"- live model: `{result.get('live_run')}`"]
    if ev:
        lines += [f"- report: {ev['report']}"]
    create_markdown_artifact("\n".join(lines), key="nightly-promotion",
                             description="nightly: promotion decision")


@flow(name="nightly")
def nightly_flow(params: NightlyParams) -> dict[str, Any]:
    """One nightly retraining run; see the module docstring."""
    log = get_run_logger()
    home = resolve_home(params.home)
    with nt.nightly_lock(home):
        wh = Warehouse(home)
        result: dict[str, Any] = {"home": str(home),
                                  "cleanup": {"failed_runs": nt.crash_cleanup(wh)}}
        live = model_runs.live_run(wh)
        t0 = time.perf_counter()
        result["ingest"] = _ingest(params, home)
        seconds = result["seconds"] = {"ingest": time.perf_counter() - t0}
        pending = nt.data_since(wh, live)
        result["live_before"] = live[0] if live else None
        if live is not None and not pending and not params.force:
            result |= {"status": "skipped: no new data", "live_run": live[0]}
            log.info("nightly: no new videos or text since %s was trained: training, "
                     "indexing and evaluation skipped", live[0])
            _artifacts(result)
            return result
        t0 = time.perf_counter()
        tok = _tokenize(home, wh, params, live, result["ingest"])
        seconds["tokenize"] = time.perf_counter() - t0
        codebook_id = tok["codebook"]["codebook_id"]
        pre, fine = _train(home, wh, params, live, codebook_id)
        seconds |= {"pretrain": pre.pop("seconds"), "finetune": fine.pop("seconds")}
        from flows.index import IndexParams, index_flow

        if params.captions:
            t0 = time.perf_counter()
            result["captions"] = _captions(home, wh, params, codebook_id, fine["model_run"])
            seconds["captions"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        index_flow(IndexParams(home=str(home), model_run=fine["model_run"],
                               clip_model=params.clip_model, device=params.device))
        seconds["index"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gate = _gate(home, wh, params, fine["model_run"], live)
        seconds["gate"] = time.perf_counter() - t0
        after = model_runs.live_run(wh)
        result |= {"status": "trained", "tokenize": {k: tok[k] for k in (
                       "codebook", "new_clip_share", "reclustered")},
                   "pretrain": {k: pre.get(k) for k in ("model_run", "continue_from", "steps")},
                   "finetune": {k: fine[k] for k in ("model_run", "best_step", "val")},
                   "gate": gate, "live_run": after[0] if after else None}
        t0 = time.perf_counter()
        result["evaluation"] = _evaluate(home, wh, params)
        seconds["evaluate"] = time.perf_counter() - t0
        log.info("nightly: candidate %s %s (%s); live %s", fine["model_run"],
                 "promoted" if gate["promoted"] else "not promoted", gate["reason"],
                 result["live_run"])
        _artifacts(result)
        return result


if __name__ == "__main__":
    nightly_flow(NightlyParams(sources=sys.argv[1:]))
