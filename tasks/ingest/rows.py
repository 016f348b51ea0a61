"""Ingest's rows: the run settings, the row container, and one builder per warehouse row.

Pure functions over plain values: ``batch.py`` (files -> rows) and ``speech.py`` (transcripts ->
rows) both build on them; the flow stages and commits what they return.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from tasks.ingest import asr, text
from tasks.ingest.plan import NewContent
from tasks.ingest.scan import Candidate
from tasks.shared import media
from tasks.shared.errors import IngestError


@dataclass(frozen=True)
class IngestConfig:
    """Settings shared by every batch of one run."""

    root: str
    run_id: str
    now: Any  # datetime (UTC, naive)
    clip_s: float = 1.5
    min_clip_s: float | None = None
    limits: media.Limits = field(default_factory=media.Limits)
    asr: asr.AsrConfig | None = None  # None: speech recognition off for this run


@dataclass
class Rows:
    """Rows produced for the warehouse, per table, plus run counters (``stats``) and the
    (path, root) keys of earlier error rows that these rows make stale."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    replaced_sources: list[str] = field(default_factory=list)
    cleared_errors: list[tuple[str, str]] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)

    def add(self, table: str, row: dict[str, Any]) -> None:
        """Append one row for ``table``."""
        self.tables[table].append(row)

    def extend(self, other: Rows) -> None:
        """Merge another batch's rows into this one."""
        for t, rows in other.tables.items():
            self.tables[t].extend(rows)
        self.replaced_sources += other.replaced_sources
        self.cleared_errors += other.cleared_errors
        self.stats.update(other.stats)


def error_row(cfg: IngestConfig, path: str, err: IngestError, *, abs_path: str | None = None,
              sha: str | None = None, size: int | None = None,
              mtime_ns: int | None = None) -> dict[str, Any]:
    """One ``ingest_errors`` row."""
    return {"path": path, "abs_path": abs_path, "sha256": sha, "stage": err.stage,
            "code": err.code, "message": err.message, "at": cfg.now, "root": cfg.root,
            "size_bytes": size, "mtime_ns": mtime_ns, "run_id": cfg.run_id}


def file_error(cfg: IngestConfig, c: Candidate, err: IngestError,
               sha: str | None = None) -> dict[str, Any]:
    """An ``ingest_errors`` row for a scanned file."""
    return error_row(cfg, c.path, err, abs_path=c.abs_path, sha=sha, size=c.size,
                     mtime_ns=c.mtime_ns)


def file_row(cfg: IngestConfig, video_id: str, c: Candidate) -> dict[str, Any]:
    """One ``video_files`` row: a name the content was seen under."""
    return {"video_id": video_id, "path": c.path, "abs_path": c.abs_path, "root": cfg.root,
            "size_bytes": c.size, "mtime_ns": c.mtime_ns, "first_seen_at": cfg.now,
            "run_id": cfg.run_id}


def clip_rows(video_id: str, duration_s: float, clip_s: float = 1.5,
              min_clip_s: float | None = None) -> list[dict[str, Any]]:
    """Fixed windows of ``clip_s`` over [0, duration); a final shorter window is kept when it
    lasts at least ``min_clip_s`` (default: half a window). Times are whole milliseconds."""
    clip_ms = int(round(clip_s * 1000))
    if clip_ms <= 0:
        raise ValueError(f"clip length must be positive, got {clip_s!r}")
    min_ms = int(round((clip_s / 2 if min_clip_s is None else min_clip_s) * 1000))
    dur_ms = int(math.floor(max(0.0, duration_s) * 1000))
    rows = []
    for i, start in enumerate(range(0, dur_ms, clip_ms)):
        end = min(start + clip_ms, dur_ms)
        if end - start < max(min_ms, 1):
            break
        rows.append({"clip_id": f"{video_id[:16]}_{clip_ms}_{i:06d}", "video_id": video_id,
                     "clip_index": i, "start_s": start / 1000, "end_s": end / 1000,
                     "clip_s": clip_ms / 1000})
    return rows


def hash_split(video_id: str) -> str:
    """Deterministic 80/10/10 train/val/test split from the content hash."""
    bucket = int(video_id[:8], 16) % 100
    return "train" if bucket < 80 else "val" if bucket < 90 else "test"


def video_row(cfg: IngestConfig, nc: NewContent, pr: media.ProbeResult,
              val: media.Validation) -> dict[str, Any]:
    """One ``videos`` row from the probe and the validation pass.

    ``vfr``: the header hint (average vs base frame rate), or a measured rate (packets read /
    readable duration) more than 5% off the average rate: Matroska headers rarely tell.
    """
    measured = (val.frames / val.readable_duration_s
                if val.frames and val.readable_duration_s else None)
    vfr = bool(pr.vfr or (measured and pr.fps and abs(measured - pr.fps) / pr.fps > 0.05))
    return {"video_id": nc.sha, "duration_s": val.readable_duration_s,
            "probed_duration_s": pr.duration_s, "fps": pr.fps, "vfr": vfr,
            "width": pr.width, "height": pr.height, "codec": pr.codec, "pix_fmt": pr.pix_fmt,
            "bit_depth": pr.bit_depth, "rotation": pr.rotation, "has_audio": pr.has_audio,
            "audio_codec": pr.audio_codec, "n_subtitle_streams": len(pr.subtitle_streams),
            "format_name": pr.format_name, "size_bytes": nc.size, "status": val.status,
            "status_detail": val.detail or "", "first_path": nc.rep.path,
            "probe_json": json.dumps(pr.raw, sort_keys=True), "ingested_at": cfg.now,
            "run_id": cfg.run_id}


def source_id(video_id: str, source: str, where: str, content_sha: str) -> str:
    """Stable id of one text source of one video."""
    return hashlib.sha256(f"{video_id}|{source}|{where}|{content_sha}".encode()).hexdigest()[:32]


def text_rows(out: Rows, cfg: IngestConfig, video_id: str, parsed: text.ParsedText, *,
               source: str, tsid: str, path: str | None, abs_path: str | None,
               stream: int | None, sha: str, size: int | None, mtime: int | None,
               language: str | None, metas: list[dict] | None = None,
               model: str | None = None, confidences: list[float] | None = None) -> None:
    """Add one ``text_sources`` row and a ``text_segments`` row per cue of ``parsed``."""
    problems = {k: v for k, v in parsed.problems.items() if v}
    out.add("text_sources", {
        "text_source_id": tsid, "video_id": video_id, "source": source, "path": path,
        "abs_path": abs_path, "stream_index": stream, "sha256": sha, "size_bytes": size,
        "mtime_ns": mtime, "format": parsed.format, "encoding": parsed.encoding or None,
        "language": language, "n_cues": len(parsed.cues), "n_problems": sum(problems.values()),
        "problems_json": json.dumps(problems, sort_keys=True), "ingested_at": cfg.now,
        "run_id": cfg.run_id})
    for i, cue in enumerate(parsed.cues):
        meta = metas[cue.index] if metas else None
        out.add("text_segments", {
            "segment_id": f"{tsid}_{i:05d}", "video_id": video_id, "text_source_id": tsid,
            "start_s": cue.start_s, "end_s": cue.end_s, "text": cue.text, "source": source,
            "language": language, "cue_index": cue.index,
            "confidence": confidences[cue.index] if confidences else None, "model": model,
            "meta_json": json.dumps(meta, sort_keys=True) if meta else None})
