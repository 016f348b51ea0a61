"""Pretrain flow: warehouse -> corpus file -> VideoBERT training -> a registered model run.

Run it with ``videobert pretrain`` or ``python -m flows.pretrain --preset tiny --steps 200``.
Steps: pick the codebook (default: the newest one with visual tokens) and export the
corpus of its visual tokens and the text into the run's folder (``<home>/models/<run>/data``);
register the run in ``model_runs`` (status ``running``); train (``tasks/pretrain/train.py``: in this
process on CPU or one GPU, under ``torchrun`` on a machine with several GPUs); register the
result (``done`` or ``failed``), with the final checkpoint's path relative to the data home;
publish the evaluation table and the loss curve as Prefect artifacts.

``resume`` continues the newest unfinished run of the preset (killed or failed) from its last
complete checkpoint, with its stored configuration and corpus file, so it ends with the weights
an uninterrupted run would have had. ``continue_from`` starts a new run from another run's
final weights (continued pretraining, e.g. nightly on new videos).

Deployment: training wants a GPU, the other flows do not. Give this flow its own deployment in
``prefect.yaml`` with ``work_pool: {name: gpu}`` (a process pool whose worker runs on the GPU
machine, started with ``prefect worker start --pool gpu``), while ingest and tokenize deploy to
a CPU pool; the data home must be the same path on both (a shared file system).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import BaseModel, Field

from tasks.pretrain.train import TrainConfig, TrainJob, run_job
from tasks.shared import model_runs
from tasks.shared.errors import InputError
from warehouse import queries
from warehouse.atomic import write_bytes_atomic
from warehouse.home import resolve_home
from warehouse.store import Warehouse, utcnow

PRESET_LR = {"tiny": 1e-3, "small": 5e-4, "mini": 1e-4, "base": 1e-4, "large": 5e-5}
"""Peak learning rate per preset when none is given (BERT-like; tiny learns fast)."""
ROOT = Path(__file__).resolve().parents[1]


class PretrainParams(BaseModel):
    """Parameters of the pretrain flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    preset: Literal["tiny", "small", "mini", "base", "large"] = Field(
        "tiny", description="Model size: tiny (tests), small (CPU, from scratch), mini (MiniLM "
        "init), base, large (paper)")
    steps: int = Field(1000, ge=1, description="Optimiser steps")
    batch_size: int = Field(32, ge=1, description="Sequences per micro-batch (per GPU)")
    accum: int = Field(1, ge=1, description="Micro-batches per optimiser step")
    lr: float | None = Field(None, gt=0, description="Peak learning rate (default per preset)")
    warmup: int | None = Field(None, ge=0, description="Warmup steps (default: 10% of steps, "
                               "at most 1000)")
    max_seq: int = Field(128, ge=8, le=512, description="Longest sequence, specials included")
    positive_share: float = Field(0.5, ge=0, le=1, description="Share of the first steps "
                                  "trained on matched text-video pairs only (cross-modal "
                                  "warm-up; 0: the full mix from the start)")
    align_weight: float = Field(1.0, ge=0, description="Weight of the text-video alignment "
                                "loss (masked words and visual tokens weigh 1)")
    features: str = Field("auto", description="Clip features the model reads beside its "
                          "visual tokens: auto (i3d when the warehouse has them), none, or an "
                          "encoder of clip_features")
    seed: int = Field(0, description="Seed of init, dropout, data order and masking")
    codebook: str | None = Field(None, description="Codebook id (default: the newest one "
                                 "with visual tokens)")
    resume: bool = Field(False, description="Continue the newest unfinished run of this preset "
                         "from its last complete checkpoint")
    continue_from: str | None = Field(None, description="Start from this model run's weights")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    nproc: int | None = Field(None, ge=1, description="GPUs for torchrun (default: all "
                              "visible GPUs when there are several)")
    compile: bool = Field(False, description="torch.compile the model")
    eval_every: int = Field(100, ge=1, description="Evaluate on held-out videos every N steps")
    eval_batches: int = Field(20, ge=1, description="Held-out batches per evaluation")
    ckpt_every: int = Field(100, ge=1, description="Checkpoint every N steps")
    keep_last: int = Field(3, ge=1, description="Checkpoints kept per run")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch")
    deterministic: bool = Field(False, description="Deterministic torch algorithms")
    progress: bool = Field(False, description="Show a progress bar on the terminal")


@dataclass
class RunPlan:
    """What this flow run trains: a new run, a resumed one, or a continuation."""

    job: TrainJob
    codebook_id: str
    parent_run: str | None
    started_at: dt.datetime
    resumed: bool


def _resumable(wh: Warehouse, p: PretrainParams, home: Path, log: Any) -> RunPlan | None:
    row = model_runs.one(wh, "pretrain_unfinished_run", [p.preset])
    if row is None:
        log.warning("resume: no unfinished %s run in %s; starting a new one", p.preset, home)
        return None
    model_run, codebook_id, config_json, parent, _seed, started = row
    stored = json.loads(config_json)["job"]
    stored["run_dir"] = str(home / stored["run_dir"])
    stored["corpus_path"] = str(home / stored["corpus_path"])
    if stored.get("init_from"):
        stored["init_from"] = str(home / stored["init_from"])
    job = TrainJob.model_validate(stored)
    job.train = job.train.model_copy(update={"device": p.device, "compile": p.compile,
                                             "threads": p.threads})
    job = job.model_copy(update={"home": str(home), "resume": True, "progress": p.progress})
    log.info("resuming %s (codebook %s)", model_run, codebook_id)
    return RunPlan(job, codebook_id, parent, started, resumed=True)


def _new_plan(wh: Warehouse, p: PretrainParams, home: Path, log: Any) -> RunPlan:
    codebook, init_from, preset = p.codebook, None, p.preset
    if p.continue_from:
        row = model_runs.one(wh, "model_run", [p.continue_from])
        if row is None or not row[6]:
            raise ValueError(f"continue_from: no model run {p.continue_from!r} with a "
                             f"checkpoint in {home}")
        if codebook and codebook != row[3]:
            raise ValueError(f"continue_from {p.continue_from!r} was trained on codebook "
                             f"{row[3]!r}, not {codebook!r}")
        codebook, init_from = row[3], str(home / row[6])
        if row[2] != preset:
            log.warning("continue_from %s: a %s model; training it as such (not %s)",
                        p.continue_from, row[2], preset)
            preset = row[2]
    if codebook is None:
        found = model_runs.one(wh, "pretrain_default_codebook", [])
        if found is None:
            raise InputError(f"no codebook with visual tokens in {home}: run "
                             "`videobert tokenize` first")
        codebook = found[0]
    encoder = _feature_encoder(wh, p.features)
    if encoder is None and p.features == "auto":
        log.warning("no i3d clip features in %s: pretraining on visual tokens alone", home)
    model_run = model_runs.new_run_id("pretrain")
    warmup = p.warmup if p.warmup is not None else min(1000, p.steps // 10)
    train = TrainConfig(steps=p.steps, lr=p.lr or PRESET_LR[preset], warmup=warmup,
                        accum=p.accum, eval_every=p.eval_every, eval_batches=p.eval_batches,
                        ckpt_every=p.ckpt_every, keep_last=p.keep_last, seed=p.seed,
                        compile=p.compile, device=p.device, threads=p.threads,
                        deterministic=p.deterministic)
    job = TrainJob(model_run=model_run, run_dir=str(home / "models" / model_run),
                   corpus_path="", preset=preset, init_from=init_from,
                   data={"batch_size": p.batch_size, "max_seq": p.max_seq, "seed": p.seed,
                         "positive_batches": round(p.positive_share * p.steps * p.accum),
                         "feature_encoder": encoder, "feature_input": encoder is not None},
                   train=train, home=str(home), progress=p.progress,
                   model_overrides={"w_align": p.align_weight})
    return RunPlan(job, codebook, p.continue_from, utcnow(), resumed=False)


def _feature_encoder(wh: Warehouse, features: str) -> str | None:
    """The clip-feature encoder pretraining reads: ``features`` resolved (see the params)."""
    if features in ("none", ""):
        return None
    con = wh.connect()
    try:
        found = con.execute(queries.load("pretrain_feature_version"),
                            ["i3d" if features == "auto" else features]).fetchall()
    finally:
        con.close()
    if found:
        return "i3d" if features == "auto" else features
    if features == "auto":
        return None
    raise InputError(f"features={features!r}: no clip features of that encoder in {wh.home} "
                     "(run `videobert tokenize --encoder ...`, or pass features=none)")


@task(name="export-corpus", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def export_task(home: Path, codebook_id: str, dest: Path,
                feature_encoder: str | None = None) -> Path:
    """Export the warehouse's text and visual tokens of ``codebook_id`` (and the clips'
    ``feature_encoder`` features) into one file."""
    from tasks.pretrain.data import export_corpus

    return export_corpus(Warehouse(home), codebook_id, dest, feature_encoder=feature_encoder)


def gpu_processes(device: str, nproc: int | None) -> int:
    """Processes to train with: ``nproc``, else every visible GPU when the device is CUDA."""
    if not device.startswith(("auto", "cuda")) or ":" in device:
        return 1
    import torch

    n = torch.cuda.device_count()
    return min(nproc, n) if nproc else max(n, 1)


@task(name="train", cache_policy=NO_CACHE)
def train_task(job: TrainJob, nproc: int) -> dict[str, Any]:
    """Train in this process, or launch ``torchrun`` with ``nproc`` processes (several GPUs)."""
    log = get_run_logger()
    if nproc <= 1:
        return run_job(job, log=log)
    job_path = Path(job.run_dir) / "job.json"
    write_bytes_atomic(job.model_dump_json(indent=1).encode(), job_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "tasks.pretrain.train", "--job", str(job_path)]
    log.info("launching %s", " ".join(cmd))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads((Path(job.run_dir) / "result.json").read_text())


def _register(wh: Warehouse, plan: RunPlan, status: str, *, steps: int = 0,
              device: str | None = None, result: dict[str, Any] | None = None) -> None:
    """Upsert the run's ``model_runs`` row (one atomic commit)."""
    home, job = wh.home, plan.job
    stored = job.model_dump(mode="json", exclude={"home", "progress", "resume"})
    rel = model_runs.rel
    stored |= {"run_dir": rel(home, job.run_dir), "corpus_path": rel(home, job.corpus_path),
               "init_from": model_runs.rel(home, job.init_from) if job.init_from else None}
    result = result or {}
    ck = result.get("checkpoint")
    row = {"model_run": job.model_run, "kind": "pretrain", "preset": job.preset,
           "parent_run": plan.parent_run, "codebook_id": plan.codebook_id, "status": status,
           "device": device, "seed": job.train.seed, "steps": steps,
           "config_json": json.dumps({"job": stored}, sort_keys=True),
           "data_json": json.dumps(result["data"]) if "data" in result else None,
           "metrics_json": json.dumps(result["metrics"]) if "metrics" in result else None,
           "checkpoint_path": model_runs.rel(home, ck) if ck else None,
           "flow_run_id": str(flow_run.id) if flow_run.id else None,
           "started_at": plan.started_at,
           "finished_at": None if status == "running" else utcnow()}
    model_runs.upsert(wh, row, purpose="pretrain")


def _artifacts(result: dict[str, Any], model_run: str) -> None:
    rows = [{"split": split, "metric": k, "value": round(float(v), 6)}
            for split, vals in sorted(result["metrics"].items()) for k, v in sorted(vals.items())]
    key = model_run.lower()
    create_table_artifact(rows, key=f"{key}-metrics",
                          description=f"{model_run}: metrics at step {result['steps']}")
    png = result["loss_png"]
    create_markdown_artifact(
        f"# {model_run}\n\n![loss curve]({Path(png).as_uri()})\n\n"
        f"Loss curve: `{png}`  \nCheckpoint: `{result['checkpoint']}`  \n"
        f"Steps: {result['steps']} on {result['device']}\n", key=f"{key}-loss-curve",
        description=f"{model_run}: loss curve")


@flow(name="pretrain")
def pretrain_flow(params: PretrainParams) -> dict[str, Any]:
    """Export the corpus, train VideoBERT, register the run; returns its summary."""
    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    plan = (_resumable(wh, params, home, log) if params.resume else None) \
        or _new_plan(wh, params, home, log)
    job = plan.job
    if not (plan.resumed and Path(job.corpus_path).is_file()):
        corpus = export_task(home, plan.codebook_id, Path(job.run_dir) / "data",
                             job.data.get("feature_encoder"))
        if plan.resumed:
            log.warning("corpus file of %s was missing: re-exported to %s (resume is exact "
                        "only when the warehouse is unchanged)", job.model_run, corpus)
        job.corpus_path = str(corpus)
    with model_runs.running(home, job.model_run):  # crash cleanup: this run is alive
        _register(wh, plan, "running")
        nproc = gpu_processes(job.train.device, params.nproc)
        try:
            result = train_task(job, nproc)
        except BaseException:
            with contextlib.suppress(Exception):  # the training error is the one to report
                _register(wh, plan, "failed")
            raise
        _register(wh, plan, "done", steps=result["steps"], device=result["device"],
                  result=result)
    _artifacts(result, job.model_run)
    summary = {k: v for k, v in result.items() if k != "history"}
    summary |= {"status": "done", "codebook_id": plan.codebook_id, "home": str(home),
                "checkpoint_path": model_runs.rel(home, result["checkpoint"]),
                "resumed": plan.resumed, "parent_run": plan.parent_run,
                "continue_from": params.continue_from}
    log.info("pretrain: %s", json.dumps(summary, default=str))
    return summary


def _cli(argv: list[str] | None = None) -> PretrainParams:
    """Parse ``--field value`` options, one per :class:`PretrainParams` field."""
    ap = argparse.ArgumentParser(prog="python -m flows.pretrain",
                                 description=__doc__.split("\n")[0])
    for name, f in PretrainParams.model_fields.items():
        flag = "--" + name.replace("_", "-")
        text = (f.description or "").replace("%", "%%")
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                            help=text)
        else:
            ap.add_argument(flag, dest=name, default=None, help=f"{text} (default: {f.default})")
    args = {k: v for k, v in vars(ap.parse_args(argv)).items() if v is not None}
    return PretrainParams(**args)


if __name__ == "__main__":
    pretrain_flow(_cli())
