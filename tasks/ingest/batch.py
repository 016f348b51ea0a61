"""Turn a batch of files into warehouse rows: probe, validate, cut clips, attach text.

Pure functions (no Prefect, no warehouse writes): they return row dicts that the flow stages
and commits. Every failure of a file becomes exactly one ``ingest_errors`` row and never stops
the batch.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tasks.ingest import asr, text
from tasks.ingest.asr_models import AsrUnavailable
from tasks.ingest.manifests import ManifestRow, read_caption_manifest
from tasks.ingest.plan import KnownState, NewContent
from tasks.ingest.rows import (
    IngestConfig,
    Rows,
    clip_rows,
    error_row,
    file_error,
    file_row,
    hash_split,
    source_id,
    text_rows,
    video_row,
)
from tasks.ingest.scan import Candidate, resolve_inside
from tasks.ingest.speech import attach_asr, has_text
from tasks.shared import media
from tasks.shared.errors import IngestError
from warehouse.atomic import sha256_file


@dataclass
class ManifestInfo:
    """One caption manifest of the run, its hash, and its rows grouped by video file."""

    cand: Candidate
    sha: str
    rows_by_video: dict[str, list[ManifestRow]]


@dataclass
class TextIndex:
    """Which sidecars and manifest rows belong to which video file (by absolute path)."""

    sidecars: dict[str, list[Candidate]] = field(default_factory=dict)
    manifests: list[ManifestInfo] = field(default_factory=list)


def _replace_old(out: Rows, st: KnownState, video_id: str, abs_path: str, tsid: str) -> bool:
    """Skip a source already stored; mark older versions of the same file for removal."""
    if tsid in st.text_sources:
        return False
    out.replaced_sources += st.text_by_path.get((video_id, abs_path), [])
    return True


def attach_sidecars(out: Rows, cfg: IngestConfig, st: KnownState, video_id: str,
                    duration: float, names: list[Candidate], index: TextIndex) -> None:
    """Parse and attach the subtitle sidecars of every name of a video."""
    for name in names:
        for sub in index.sidecars.get(name.abs_path, []):
            try:
                sha = sha256_file(sub.abs_path)
            except OSError as e:
                out.add("ingest_errors", file_error(cfg, sub, IngestError(
                    "io_error", f"cannot read {sub.path!r}: {e}", "text")))
                continue
            fmt = text.sidecar_format(Path(sub.abs_path)) or "srt"
            tsid = source_id(video_id, fmt, sub.abs_path, sha)
            if not _replace_old(out, st, video_id, sub.abs_path, tsid):
                continue
            try:
                parsed = text.parse_subtitle_file(Path(sub.abs_path), duration)
            except IngestError as e:
                out.add("ingest_errors", file_error(cfg, sub, e, sha))
                continue
            lang = text.sidecar_language(Path(name.abs_path), Path(sub.abs_path))
            text_rows(out, cfg, video_id, parsed, source=fmt, tsid=tsid, path=sub.path,
                       abs_path=sub.abs_path, stream=None, sha=sha, size=sub.size,
                       mtime=sub.mtime_ns, language=lang)


def attach_manifest_rows(out: Rows, cfg: IngestConfig, st: KnownState, video_id: str,
                         duration: float, names: list[Candidate], index: TextIndex) -> None:
    """Attach the caption-manifest rows naming any of a video's files."""
    for info in index.manifests:
        rows = [r for n in names for r in info.rows_by_video.get(n.abs_path, [])]
        if not rows:
            continue
        tsid = source_id(video_id, "manifest", info.cand.abs_path, info.sha)
        if not _replace_old(out, st, video_id, info.cand.abs_path, tsid):
            continue
        problems: dict[str, int] = {}
        cues = [text.Cue(r.start_s, r.end_s, r.text, i, r.line) for i, r in enumerate(rows)]
        kept = text.normalize_cues(cues, duration, problems)
        parsed = text.ParsedText(format="manifest", encoding="utf-8", cues=kept,
                                 problems=problems, n_blocks=len(rows))
        langs = {r.language for r in rows if r.language}
        text_rows(out, cfg, video_id, parsed, source="manifest", tsid=tsid,
                   path=info.cand.path, abs_path=info.cand.abs_path, stream=None,
                   sha=info.sha, size=info.cand.size, mtime=info.cand.mtime_ns,
                   language=langs.pop() if len(langs) == 1 else None,
                   metas=[r.meta for r in rows])


def attach_embedded(out: Rows, cfg: IngestConfig, video_id: str, duration: float,
                    nc: NewContent, pr: media.ProbeResult) -> None:
    """Extract and attach text subtitle streams embedded in the container."""
    for s in pr.subtitle_streams:
        where = f"{nc.rep.abs_path}#s:{s.position}"
        try:
            if not s.text_based:
                raise IngestError("subtitle_unreadable", f"stream {s.position} of {nc.rep.path!r}"
                                  f" is a bitmap subtitle ({s.codec}); only text is read", "text")
            raw = media.extract_subtitles(Path(nc.rep.abs_path), s, cfg.limits)
            parsed = text.parse_subtitle_bytes(raw.encode("utf-8"), "vtt", duration)
        except IngestError as e:
            out.add("ingest_errors", error_row(cfg, f"{nc.rep.path}#s:{s.position}", e,
                                               abs_path=nc.rep.abs_path, sha=nc.sha))
            continue
        sha = hashlib.sha256(raw.encode("utf-8")).hexdigest()
        text_rows(out, cfg, video_id, parsed, source="embedded",
                   tsid=source_id(video_id, "embedded", where, sha), path=None,
                   abs_path=nc.rep.abs_path, stream=s.index, sha=sha, size=None, mtime=None,
                   language=s.language)


def manifest_split(names: list[Candidate], index: TextIndex) -> str | None:
    """The split a caption manifest gives one of these files (first row that has one)."""
    for info in index.manifests:
        for n in names:
            for r in info.rows_by_video.get(n.abs_path, []):
                if r.split:
                    return r.split
    return None


def process_new(cfg: IngestConfig, st: KnownState, nc: NewContent, index: TextIndex) -> Rows:
    """Probe, validate, clip and attach text for one new content (all of its names)."""
    out = Rows()
    try:
        pr = media.probe(Path(nc.rep.abs_path), cfg.limits)
        val = media.validate(Path(nc.rep.abs_path), pr, cfg.limits)
    except IngestError as e:
        for n in nc.names:
            out.add("ingest_errors", file_error(cfg, n, e, nc.sha))
        for n in nc.names:
            for sub in index.sidecars.get(n.abs_path, []):
                out.add("ingest_errors", file_error(cfg, sub, IngestError(
                    "orphan_subtitle", f"its video {n.path!r} was rejected ({e.code})", "text")))
        return out
    out.add("videos", video_row(cfg, nc, pr, val))
    for n in nc.names:
        out.add("video_files", file_row(cfg, nc.sha, n))
    for row in clip_rows(nc.sha, val.readable_duration_s, cfg.clip_s, cfg.min_clip_s):
        out.add("clips", row)
    dur = val.readable_duration_s
    attach_sidecars(out, cfg, st, nc.sha, dur, nc.names, index)
    attach_embedded(out, cfg, nc.sha, dur, nc, pr)
    attach_manifest_rows(out, cfg, st, nc.sha, dur, nc.names, index)
    if cfg.asr is not None:

        if asr.wants_asr(cfg.asr.mode, pr.has_audio, has_text(out, nc.sha)):
            attach_asr(out, cfg, st, nc.sha, dur, nc.rep, pr.audio_codec)
    split = manifest_split(nc.names, index)
    out.add("splits", {"video_id": nc.sha, "split": split or hash_split(nc.sha),
                       "assigned_by": "manifest" if split else "hash"})
    return out


def process_batch(cfg: IngestConfig, st: KnownState, items: list[NewContent],
                  index: TextIndex) -> Rows:
    """Process a batch of new contents; one bad file never stops the others."""
    out = Rows()
    for nc in items:
        try:
            out.extend(process_new(cfg, st, nc, index))
        except AsrUnavailable:
            raise  # the installation, not the file: stop the batch (Prefect records it)
        except Exception as e:  # noqa: BLE001 - an unexpected bug must still leave one row
            for n in nc.names:
                out.add("ingest_errors", file_error(cfg, n, IngestError(
                    "decode_failed", f"unexpected failure on {n.path!r}: {type(e).__name__}: {e}",
                    "probe"), nc.sha))
    return out


def build_text_index(cfg: IngestConfig, root: Path, videos: list[Candidate],
                     subtitles: list[Candidate], manifests: list[Candidate],
                     manifest_only: bool) -> tuple[TextIndex, list[Candidate], Rows]:
    """Match sidecars to videos and read caption manifests.

    Returns:
        The index, the videos named by manifests (manifest mode: the videos to ingest), and
        error rows (orphan subtitles, bad manifests and bad manifest rows).
    """
    from tasks.ingest.scan import _candidate  # shared stat+symlink rules

    out = Rows()
    index = TextIndex()
    by_video: dict[str, list[Candidate]] = {}
    matched: set[str] = set()
    subs_by_dir: dict[Path, list[Candidate]] = defaultdict(list)
    for s in subtitles:
        subs_by_dir[Path(s.abs_path).parent].append(s)
    for v in videos:
        here = subs_by_dir.get(Path(v.abs_path).parent, [])
        names = set(text.match_sidecars(Path(v.abs_path), [Path(s.abs_path) for s in here]))
        by_video[v.abs_path] = [s for s in here if Path(s.abs_path) in names]
        matched.update(s.abs_path for s in by_video[v.abs_path])
    index.sidecars = by_video
    if not manifest_only:
        for s in subtitles:
            if s.abs_path not in matched:
                out.add("ingest_errors", file_error(cfg, s, IngestError(
                    "orphan_subtitle", f"no video named like {s.path!r} in its folder", "scan")))
    named: dict[str, Candidate] = {}
    for m in manifests:
        try:
            rows, bad = read_caption_manifest(Path(m.abs_path))
            sha = sha256_file(m.abs_path)
        except IngestError as e:
            out.add("ingest_errors", file_error(cfg, m, e))
            continue
        except OSError as e:
            out.add("ingest_errors",
                    file_error(cfg, m, IngestError("io_error", str(e), "manifest")))
            continue
        for b in bad:
            out.add("ingest_errors", error_row(cfg, f"{m.path}:{b.line}", IngestError(
                b.code, b.message, "manifest"), abs_path=m.abs_path))
        info = ManifestInfo(m, sha, defaultdict(list))
        for r in rows:
            try:
                target = resolve_inside(root, r.path, Path(m.abs_path).parent)
                cand = named.get(str(target)) or _candidate(
                    root, target, target.relative_to(root).as_posix())
            except IngestError as e:
                out.add("ingest_errors", error_row(cfg, f"{m.path}:{r.line}", IngestError(
                    e.code, f"line {r.line}: {e.message}", "manifest"), abs_path=m.abs_path))
                continue
            named[cand.abs_path] = cand
            info.rows_by_video[cand.abs_path].append(r)
        index.manifests.append(info)
    return index, sorted(named.values(), key=lambda c: c.path), out
