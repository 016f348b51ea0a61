"""Ingest flow: folders, video files or a caption manifest -> videos, clips and text in the
warehouse.

Run it with ``videobert ingest PATH...`` or ``python -m flows.ingest PATH...``. Files are
processed in batches (one Prefect task per batch, never one per file); each batch is
committed atomically, so a run killed at any point and started again ends with exactly the
rows of an uninterrupted run. Bad files become ``ingest_errors`` rows and never stop the run.
Videos without subtitles are transcribed inside their batch (``asr``: :mod:`tasks.ingest.asr`);
videos ingested earlier that still need a transcript from this run's model get batches of
their own ("transcribe-known").
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.runners import batches, submit_task, task_runner_for
from tasks.ingest import asr
from tasks.ingest import plan as ing
from tasks.ingest.batch import (
    IngestConfig,
    Rows,
    TextIndex,
    attach_manifest_rows,
    attach_sidecars,
    build_text_index,
    error_row,
    file_error,
    file_row,
    process_batch,
)
from tasks.ingest.scan import ScanResult, scan_manifest, scan_paths, sidecar_candidates
from tasks.ingest.sources import expand_sources, group_sources, is_manifest
from tasks.ingest.speech import asr_backlog, transcribe_batch
from tasks.shared import media
from tasks.shared.errors import IngestError, InputError
from tasks.shared.progress import Progress
from warehouse import queries
from warehouse.home import resolve_home
from warehouse.store import StagedPart, Warehouse, Writer, rewrite_without, utcnow


class IngestParams(BaseModel):
    """Parameters of the ingest flow (shown as a form in Prefect's UI)."""

    source: str | list[str] = Field(description="What to ingest: a folder to walk, video files "
                                    "(with their sidecar subtitles), patterns like "
                                    "videos/*.mp4, or one caption manifest (.jsonl/.csv)")
    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    clip_s: float = Field(1.5, gt=0, description="Clip window length in seconds (VideoBERT: 1.5)")
    min_clip_s: float | None = Field(None, description="Shortest final clip kept (default: "
                                     "half a window)")
    batch_size: int | None = Field(None, ge=1, description="Files per task (default: about "
                                   "four tasks per worker, 4 to 64 files each)")
    workers: int | None = Field(None, ge=1, description="Concurrent batches (default: CPU count)")
    task_runner: Literal["threads", "dask"] = Field(
        "threads", description="Where batches run: threads of this process, or Dask (a "
        "LocalCluster of `workers` processes, or the scheduler at dask_address)")
    dask_address: str | None = Field(None, description="A running Dask scheduler, e.g. "
                                     "tcp://10.0.0.5:8786 (task_runner dask)")
    max_pixels: int = Field(media.Limits().max_pixels, description="Reject frames larger than this")
    max_duration_s: float = Field(media.Limits().max_duration_s, description="Reject longer videos")
    max_file_bytes: int = Field(media.Limits().max_file_bytes, description="Reject larger files")
    validation: Literal["decode", "demux"] = Field(
        "decode", description="Validation pass: decode every frame (catches corrupt data), or "
        "demux only (5-15x faster; decode errors then surface at feature extraction)")
    wait_s: float = Field(0.0, ge=0, description="Wait this long for another writer to finish")
    publish_every_s: float = Field(2.0, ge=0, description="Republish the read-only catalog at "
                                   "most this often during the run (readers see new rows then)")
    commit_every_s: float = Field(1.0, ge=0, description="Commit finished batches this often "
                                  "(0: after every batch); a kill loses at most this much work")
    progress: bool = Field(False, description="Show progress bars on the terminal")
    asr: Literal["auto", "always", "never"] = Field(
        "auto", description="Speech to text: auto (videos with audio and no subtitle or caption "
        "text), always (every video with audio), never. Needs the asr extra")
    asr_model: str = Field("tiny.en", description="Whisper model: tiny.en (English, default), "
                           "base (multilingual), or a local CTranslate2 Whisper folder")
    asr_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where ASR runs: auto (CUDA float16 when available, else CPU int8)")


@task(name="scan-inputs", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def scan_task(paths: list[Path], home: Path) -> ScanResult:
    """Walk the folders and stat the files named (or read the manifest)."""
    if len(paths) == 1 and is_manifest(paths[0]):
        return scan_manifest(paths[0])
    return scan_paths(paths, exclude=[home])


def _sources(params: IngestParams) -> list[Path]:
    """The paths this run ingests (patterns expanded); a user's mistake is an InputError."""
    paths = expand_sources([params.source] if isinstance(params.source, str)
                           else params.source)
    if len(group_sources(paths)) > 1:
        raise InputError("a caption manifest names its own videos: ingest it in a run of its "
                         "own (`videobert ingest` splits the paths it is given this way)")
    return paths


@task(name="hash-files", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def hash_task(cands: list) -> list:
    """sha256 of a batch of files."""
    return ing.hash_candidates(cands)


@task(name="probe-validate-parse", cache_policy=NO_CACHE)
def process_task(cfg: IngestConfig, st: ing.KnownState, items: list, index: TextIndex) -> Rows:
    """Probe, validate, clip and attach text for a batch of new contents."""
    return process_batch(cfg, st, items, index)


@task(name="transcribe-known", cache_policy=NO_CACHE)
def asr_task(cfg: IngestConfig, st: ing.KnownState, items: list) -> Rows:
    """Speech to text for a batch of videos already in the warehouse."""
    return transcribe_batch(cfg, st, items)


def _commit(w: Writer, st: ing.KnownState, rows: Rows, message: str) -> Counter:
    """Stage and commit one batch's rows atomically; returns rows added per table."""
    errs = []
    for r in rows.tables.get("ingest_errors", []):
        key = (r["path"], r["root"] or "")
        if key in st.errors and st.errors[key] == (r["size_bytes"], r["mtime_ns"]):
            continue  # already rejected, unchanged
        errs.append(r)
    rows.tables["ingest_errors"] = errs
    fixed = [(r["path"], r["root"]) for r in rows.tables.get("video_files", [])
             if (r["path"], r["root"]) in st.errors]
    stale_errors = [p for p, _ in fixed] + [r["path"] for r in errs
                                            if (r["path"], r["root"] or "") in st.errors]
    stale_errors += [p for p, root in rows.cleared_errors if (p, root) in st.errors]
    parts: list[StagedPart] = []
    remove: dict[str, list[str]] = {}
    for table, column, values in (("ingest_errors", "path", stale_errors),
                                  ("text_sources", "text_source_id", rows.replaced_sources),
                                  ("text_segments", "text_source_id", rows.replaced_sources)):
        staged, old = rewrite_without(w, table, column, sorted(set(values)))
        parts += staged
        remove.update(old)
    counts: Counter = Counter(rows.stats)
    for table, table_rows in rows.tables.items():
        if table_rows:
            parts.append(w.stage(table, table_rows))
            counts[table] += len(table_rows)
    if parts:
        w.commit(parts, remove=remove, message=message, publish="auto")
    for r in errs:
        st.errors[(r["path"], r["root"] or "")] = (r["size_bytes"], r["mtime_ns"])
    for r in rows.tables.get("videos", []):
        st.videos[r["video_id"]] = r["duration_s"]
    return counts


def _known_text(cfg: IngestConfig, st: ing.KnownState, scan: ScanResult,
                plan: ing.WorkPlan, index: TextIndex, unchanged: list) -> Rows:
    """New or edited text for videos already in the warehouse (and new names of them)."""
    out = Rows()
    known = [(c, st.files[c.abs_path][2]) for c in unchanged if c.abs_path in st.files]
    known += plan.duplicates
    for cand, vid in known:
        dur = st.videos.get(vid, 0.0)
        attach_sidecars(out, cfg, st, vid, dur, [cand], index)
        attach_manifest_rows(out, cfg, st, vid, dur, [cand], index)
    for cand, vid in plan.duplicates:
        out.add("video_files", file_row(cfg, vid, cand))
    for cand, sha, (code, msg, stage) in plan.known_bad:
        out.add("ingest_errors", file_error(cfg, cand, IngestError(
            code, f"same content as an earlier rejected file: {msg}", stage), sha))
    for cand, err in plan.unreadable:
        out.add("ingest_errors", file_error(cfg, cand, err))
    return out


def _bounded(submit: Any, batches: list[list], limit: int) -> Iterator[tuple[list, Any]]:
    """Submit batches as tasks, ``limit`` running plus one queued so no worker idles while
    the flow commits; yield (batch, result) as they finish."""
    task_submit = submit.submit if hasattr(submit, "submit") else submit
    pending = list(reversed(batches))
    running: dict[Any, list] = {}
    while pending or running:
        while pending and len(running) < max(1, limit) + 1:
            batch = pending.pop()
            running[task_submit(batch)] = batch
        done = next(as_completed(list(running)))
        yield running.pop(done), done.result()


@flow(name="ingest", task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 2))
def ingest_flow(params: IngestParams) -> dict[str, Any]:
    """Ingest a folder or manifest into the warehouse; returns the run summary."""
    log = get_run_logger()
    home = resolve_home(params.home)
    paths = _sources(params)
    source = ", ".join(str(p) for p in paths)
    wh = Warehouse(home)
    run_id = uuid.uuid4().hex
    started = utcnow()
    limits = media.Limits(max_pixels=params.max_pixels, max_duration_s=params.max_duration_s,
                          max_file_bytes=params.max_file_bytes, validate_mode=params.validation)
    workers = params.workers or os.cpu_count() or 2
    with (wh.writer(wait_s=params.wait_s, purpose=f"ingest {source}") as w,
          task_runner_for(params.task_runner, workers=params.workers,
                          address=params.dask_address) as runner):
        w.publish_interval_s = params.publish_every_s
        # Dask LocalCluster: `workers` processes, each with its own model, share the cores.
        threads = (max(1, (os.cpu_count() or 1) // workers)
                   if params.task_runner == "dask" and not params.dask_address else 0)
        asr_cfg, notice = asr.setup(params.asr, params.asr_model, home, params.asr_device,
                                    threads)
        if notice:
            log.warning(notice)
        scan = scan_task(paths, home)
        cfg = IngestConfig(root=str(scan.root), run_id=run_id, now=started, clip_s=params.clip_s,
                           min_clip_s=params.min_clip_s, limits=limits, asr=asr_cfg)
        st = ing.load_state(wh)
        index, named, text_errors = build_text_index(cfg, scan.root, scan.videos, scan.subtitles,
                                                     scan.manifests, scan.manifest_only)
        videos = scan.videos
        if scan.manifest_only:
            videos = named
            subs = [s for v in named for s in sidecar_candidates(scan.root, Path(v.abs_path))]
            index, _, _ = build_text_index(cfg, scan.root, named, subs, scan.manifests, True)
        unchanged = [c for c in videos if ing.is_unchanged(c, st)]
        todo = [c for c in videos if not ing.is_unchanged(c, st)]
        bar = Progress(enabled=params.progress)
        hashed: list = []
        size = params.batch_size or min(64, max(4, -(-len(todo) // (4 * workers))))
        with bar.task("hashing", total=len(todo)) as tick:
            for _, res in _bounded(lambda b: submit_task(runner, hash_task, {"cands": b}),
                                   batches(todo, max(size * 4, 32)), workers):
                hashed += res
                tick(len(res))
        hashed.sort(key=lambda h: h[0].path)
        plan = ing.make_plan(hashed, st)
        first = _known_text(cfg, st, scan, plan, index, unchanged)
        first.tables["ingest_errors"] = (
            [error_row(cfg, path, e, abs_path=abs_path) for path, abs_path, e in scan.errors]
            + first.tables.get("ingest_errors", []) + text_errors.tables.get("ingest_errors", []))
        known = [(c, st.files[c.abs_path][2]) for c in unchanged if c.abs_path in st.files]
        backlog = asr_backlog(cfg, st, known + plan.duplicates, first)
        commit = _Committer(w, st, f"ingest {run_id}: batches", params.commit_every_s, first)
        with bar.task("probing", total=len(plan.new)) as tick:
            # submit_task quote()s on threads: Prefect would otherwise walk these large inputs
            for batch, rows in _bounded(lambda b: submit_task(runner, process_task, {
                    "cfg": cfg, "st": st, "items": b, "index": index}),
                                        batches(plan.new, size), workers):
                commit.add(rows)
                tick(len(batch))
        with bar.task("transcribing", total=len(backlog)) as tick:
            for batch, rows in _bounded(lambda b: submit_task(runner, asr_task, {
                    "cfg": cfg, "st": st, "items": b}),
                                        batches(backlog, size), workers):
                commit.add(rows)
                tick(len(batch))
        summary = _summary(run_id, source, scan, plan, unchanged, commit.flush(), w, started)
        summary["asr"] = _asr_summary(params, asr_cfg, notice, commit.totals)
    log.info("ingest %s: %s", source, summary)
    return summary


class _Committer:
    """Commits finished batches together every ``every_s`` seconds (a kill loses at most that
    much finished work; each commit costs a Parquet part per table)."""

    def __init__(self, w: Writer, st: ing.KnownState, message: str, every_s: float,
                 first: Rows) -> None:
        self.w, self.st, self.message, self.every_s = w, st, message, every_s
        self.pending, self.last, self.totals = first, time.monotonic(), Counter()

    def add(self, rows: Rows) -> None:
        """Queue one batch's rows; commit the queue when it is due."""
        self.pending.extend(rows)
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> Counter:
        """Commit what is queued; returns the rows (and counters) committed so far."""
        self.totals += _commit(self.w, self.st, self.pending, self.message)
        self.pending, self.last = Rows(), time.monotonic()
        return self.totals


def _asr_summary(params: IngestParams, cfg: asr.AsrConfig | None, notice: str | None,
                 totals: Counter) -> dict[str, Any]:
    """What speech recognition did in this run (for the summary)."""
    return {"mode": params.asr if cfg else "off", "model": cfg.model.model_id if cfg else None,
            "device": f"{cfg.device}/{cfg.compute_type}" if cfg else None, "notice": notice,
            "transcribed": totals.get("asr_transcribed", 0),
            "cached": totals.get("asr_cached", 0), "failed": totals.get("asr_failed", 0),
            "audio_s": round(totals.get("asr_audio_ms", 0) / 1000, 3)}


def _summary(run_id: str, source: str, scan: ScanResult, plan: ing.WorkPlan, unchanged: list,
             totals: Counter, w: Writer, started) -> dict[str, Any]:
    con = w.wh.connect()
    rejected = dict(con.execute(queries.load("run_rejections"), [run_id]).fetchall())
    con.close()
    row = {"run_id": run_id, "source": str(source), "started_at": started,
           "finished_at": utcnow(), "n_files": scan.n_files,
           "n_ingested": totals.get("videos", 0), "n_duplicates": len(plan.duplicates) + sum(
               len(n.names) - 1 for n in plan.new),
           "n_rejected": sum(rejected.values()), "n_unchanged": len(unchanged),
           "n_text_sources": totals.get("text_sources", 0),
           "rejected_json": json.dumps(rejected, sort_keys=True)}
    w.commit([w.stage("ingest_runs", [row])], message=f"ingest {run_id}: done")
    return {**{k: v for k, v in row.items() if k not in ("started_at", "finished_at",
                                                         "rejected_json")},
            "rejected": rejected, "clips": totals.get("clips", 0),
            "text_segments": totals.get("text_segments", 0), "home": str(w.wh.home)}


if __name__ == "__main__":
    ingest_flow(IngestParams(source=sys.argv[1:], progress=True))
