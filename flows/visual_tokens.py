"""Tokenize flow: clips -> features (I3D, CLIP, concepts) -> hierarchical k-means -> tokens.

Run it with ``videobert tokenize`` or ``python -m flows.visual_tokens``. (The file is not named
``tokenize.py``: Prefect puts a flow file's folder on ``sys.path`` when it loads an entrypoint,
and a ``tokenize.py`` there shadows the standard library module that ``linecache`` imports.)
Incremental: clips that already have features for an encoder version are skipped, new clips
are assigned with the existing codebook (a full re-cluster is explicit: ``recluster``).
Features are committed per task, so a killed run resumes where it stopped, without duplicates.
Feature tasks run on threads in this process (default) or on Dask (``task_runner: dask``: a
LocalCluster of ``workers`` processes, or the scheduler at ``dask_address``); see
``flows/runners.py``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import uuid
from typing import Any, Literal

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from pydantic import BaseModel, Field

from flows.runners import (
    batches,
    describe_runner,
    runner_slots,
    submit_bounded,
    submit_task,
    task_runner_for,
)
from models.concepts import concepts_encoder
from tasks.shared.progress import Progress
from tasks.tokens.encoders import EncoderSpec, load_encoder
from tasks.tokens.features import ClipRef, encode_clips
from warehouse import queries
from warehouse.home import resolve_home
from warehouse.store import Warehouse, Writer, utcnow

Encoder = Literal["i3d", "clip", "concepts"]


class TokenizeParams(BaseModel):
    """Parameters of the tokenize flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    encoders: list[Encoder] = Field(["i3d", "concepts"], description="Feature encoders to run "
                                    "(clip also runs when clip_model is given)")
    clip_model: str | None = Field(None, description="CLIP weights: a local folder or a hub id")
    codebook_encoder: Literal["i3d", "clip"] = Field("i3d", description="Features clustered "
                                                     "into visual tokens")
    levels: int = Field(4, ge=1, le=8, description="Hierarchy depth (VideoBERT: 4)")
    branching: int = Field(12, ge=2, le=256, description="Children per node (VideoBERT: 12)")
    seed: int = Field(0, description="k-means seed")
    recluster: bool = Field(False, description="Fit a new codebook even if one exists")
    min_points_per_token: int = Field(39, ge=1, description="Clips each visual token needs "
                                      "on average; a smaller corpus gets a smaller codebook "
                                      "(39 is FAISS's floor; lower it for small corpora)")
    batch_size: int = Field(8, ge=1, description="Clips per model forward pass")
    decode_workers: int | None = Field(None, ge=1, description="Parallel decoders (default: "
                                       "CPU count)")
    clips_per_task: int = Field(256, ge=1, description="Clips per Prefect task (and commit)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where feature tasks run: threads of this process, or Dask (a "
        "LocalCluster of `workers` processes, or the scheduler at dask_address)")
    dask_address: str | None = Field(None, description="A running Dask scheduler, e.g. "
                                     "tcp://10.0.0.5:8786 (task_runner dask; its workers must "
                                     "see the data home and videos at the same paths)")
    workers: int | None = Field(None, ge=1, description="Feature tasks at once (default: 1 on "
                                "threads, as the model already uses every core; on Dask, the "
                                "cluster's threads) and LocalCluster workers (default: CPUs)")
    progress: bool = Field(False, description="Show progress bars on the terminal")


@task(name="extract-features", cache_policy=NO_CACHE)
def features_task(spec: EncoderSpec, clips: list[ClipRef], clip_s: float, batch_size: int,
                  workers: int) -> tuple[list[dict], list[tuple]]:
    """Decode and encode one chunk of clips (the encoder is loaded once per process)."""
    return encode_clips(load_encoder(spec), clips, clip_s, batch_size=batch_size,
                        workers=workers)


def _todo(wh: Warehouse, encoder: str, version: str) -> dict[float, list[ClipRef]]:
    """Clips without features for this encoder version, by clip length, readable file only."""
    con = wh.connect()
    rows = con.execute(queries.load("clips_without_features"), [encoder, version]).fetchall()
    con.close()
    out: dict[float, list[ClipRef]] = {}
    for clip_id, video_id, start, end, clip_s, paths in rows:
        path = next((p for p in paths if os.path.exists(p)), None)
        if path is not None:
            out.setdefault(float(clip_s), []).append(ClipRef(clip_id, video_id, path, start, end))
    return out


def _submit_features(runner: TaskRunner, spec: EncoderSpec, chunk: list[ClipRef], *,
                     clip_s: float, batch_size: int, workers: int) -> PrefectFuture[Any]:
    return submit_task(runner, features_task, {"spec": spec, "clips": chunk, "clip_s": clip_s,
                                               "batch_size": batch_size, "workers": workers})


def _run_frame_encoder(w: Writer, spec: EncoderSpec, p: TokenizeParams, run_id: str,
                       bar: Progress, log: Any) -> int:
    """Features for every clip without them: one task per chunk on the selected task runner,
    each committed as it finishes (a kill loses only the tasks in flight)."""
    enc = load_encoder(spec)
    todo = _todo(w.wh, enc.name, enc.version)
    if not todo:
        return 0  # nothing new: no cluster is started
    decoders = p.decode_workers or os.cpu_count() or 2
    done = 0
    with task_runner_for(p.task_runner, workers=p.workers, address=p.dask_address) as runner:
        slots = runner_slots(runner, p.workers)
        log.info("%s features: %d clips, %d task(s) at once on %s", enc.name,
                 sum(map(len, todo.values())), slots, describe_runner(runner))
        for clip_s, clips in todo.items():
            submit = functools.partial(_submit_features, runner, spec, clip_s=clip_s,
                                       batch_size=p.batch_size, workers=decoders)
            with bar.task(f"{enc.name}", total=len(clips)) as tick:
                for chunk, (rows, failures) in submit_bounded(
                        submit, batches(clips, p.clips_per_task), slots):
                    now = utcnow()
                    for r in rows:
                        r.update(created_at=now, run_id=run_id)
                    if rows:
                        w.commit([w.stage("clip_features", rows)], publish="auto",
                                 message=f"tokenize {run_id}: {enc.name} features")
                    for clip, msg in failures:
                        log.warning("no %s features for clip %s: %s", enc.name, clip.clip_id,
                                    msg)
                    done += len(rows)
                    tick(len(chunk))
    return done


def _run_concepts(w: Writer, p: TokenizeParams, i3d_version: str, run_id: str) -> int:
    enc = concepts_encoder(p.device)
    version = f"concepts-{enc.version}-{i3d_version}"
    con = w.wh.connect()
    rows = con.execute(queries.load("logits_without_concepts"),
                       [i3d_version, version]).fetchall()
    con.close()
    total = 0
    for chunk in batches(rows, 4096):
        logits = np.asarray([r[2] for r in chunk], dtype=np.float32)
        emb = enc.embed_logits(logits)
        now = utcnow()
        out = [{"clip_id": c, "video_id": v, "encoder": "concepts", "encoder_version": version,
                "dim": int(emb.shape[1]), "vector": emb[i].tolist(), "n_frames": n,
                "created_at": now, "run_id": run_id}
               for i, (c, v, _, n) in enumerate(chunk)]
        w.commit([w.stage("clip_features", out)], publish="auto",
                 message=f"tokenize {run_id}: concepts")
        total += len(out)
    return total


def _codebook(w: Writer, p: TokenizeParams, encoder: str, version: str, run_id: str,
              log: Any) -> dict[str, Any]:
    """Fit (first time, or recluster) or reuse the codebook; assign tokens to new clips."""
    from tasks.tokens.codebook import assign_new, fit_codebook

    con = w.wh.connect()
    active = con.execute(queries.load("active_codebook"), [encoder, version]).fetchall()
    con.close()
    if not active or p.recluster:
        info = fit_codebook(w, encoder, version, p.levels, p.branching, p.seed, run_id, log,
                            min_points=p.min_points_per_token)
    else:
        info = {"codebook_id": active[0][0], "path": active[0][1], "fitted": False}
    info["assigned"] = assign_new(w, info["codebook_id"], info["path"], encoder, version,
                                  run_id)
    return info


@flow(name="tokenize")
def tokenize_flow(params: TokenizeParams) -> dict[str, Any]:
    """Features for every clip, a codebook, and each clip's visual token."""
    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    run_id = uuid.uuid4().hex
    bar = Progress(enabled=params.progress)
    summary: dict[str, Any] = {"run_id": run_id, "home": str(home), "features": {},
                               "task_runner": params.dask_address or params.task_runner}
    with wh.writer(purpose="tokenize") as w:
        i3d = None
        if {"i3d", "concepts"} & set(params.encoders) or params.codebook_encoder == "i3d":
            spec = EncoderSpec("i3d", str(home / "weights"), params.device)
            i3d = load_encoder(spec)
            summary["features"]["i3d"] = _run_frame_encoder(w, spec, params, run_id, bar, log)
        if "concepts" in params.encoders and i3d is not None:
            summary["features"]["concepts"] = _run_concepts(w, params, i3d.version, run_id)
        clip_enc = None
        if params.clip_model or "clip" in params.encoders:
            from models.clip import available

            ok, why = available(params.clip_model)
            if ok:
                spec = EncoderSpec("clip", str(params.clip_model), params.device)
                clip_enc = load_encoder(spec)
                summary["features"]["clip"] = _run_frame_encoder(w, spec, params, run_id,
                                                                 bar, log)
            else:
                log.warning("CLIP skipped: %s", why)
                summary["clip_skipped"] = why
        enc = clip_enc if params.codebook_encoder == "clip" else i3d
        if enc is None:
            raise ValueError(f"codebook encoder {params.codebook_encoder!r} did not run")
        summary["codebook"] = _codebook(w, params, enc.name, enc.version, run_id, log)
    log.info("tokenize: %s", json.dumps(summary, default=str))
    return summary


if __name__ == "__main__":
    tokenize_flow(TokenizeParams(home=sys.argv[1] if len(sys.argv) > 1 else None,
                                 progress=True))
