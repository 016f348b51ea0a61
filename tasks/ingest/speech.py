"""Speech-to-text rows at ingest: one transcript per (video, ASR model), failures as rows.

New videos are transcribed inside their ingest batch (:func:`attach_asr`, called from
:func:`tasks.ingest.batch.process_new`); videos ingested earlier that still need a transcript
from this run's model (:func:`asr_backlog`) get batches of their own (:func:`transcribe_batch`).
The recognition itself, its written rule and the transcript cache are in :mod:`tasks.ingest.asr`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tasks.ingest import asr, text
from tasks.ingest.asr_models import AsrUnavailable
from tasks.ingest.plan import KnownState
from tasks.ingest.rows import IngestConfig, Rows, error_row, source_id, text_rows
from tasks.ingest.scan import Candidate
from tasks.shared.errors import IngestError


def has_text(out: Rows, video_id: str) -> bool:
    """True when ``out`` attaches at least one subtitle or caption cue to the video."""
    return any(r["video_id"] == video_id and r["n_cues"] and r["source"] != "asr"
               for r in out.tables.get("text_sources", []))


@dataclass(frozen=True)
class AsrItem:
    """A video already in the warehouse that still needs a transcript from this run's model."""

    video_id: str
    name: Candidate
    duration_s: float
    audio_codec: str | None


def _asr_error(out: Rows, cfg: IngestConfig, video_id: str, name: Candidate,
               err: IngestError) -> None:
    out.stats["asr_failed"] += 1
    out.add("ingest_errors", error_row(cfg, f"{name.path}#asr", err, abs_path=name.abs_path,
                                       sha=video_id, size=name.size, mtime_ns=name.mtime_ns))


def attach_asr(out: Rows, cfg: IngestConfig, st: KnownState, video_id: str, duration: float,
               name: Candidate, audio_codec: str | None) -> None:
    """Transcribe a video's first audio track (or reuse its cached transcript) into text rows.

    The text source id is a function of (video, ASR model) only, so a transcript is stored
    once per model. A failure becomes one ``ingest_errors`` row (stage ``asr``, path
    ``<file>#asr``); the video's other rows are kept.

    Args:
        out: rows to add to (text_sources/text_segments, or one ingest_errors row).
        cfg: the run's settings (``cfg.asr`` set).
        st: the committed state (a transcript it already holds is skipped).
        video_id: the content hash.
        duration: the readable duration (segments are clamped to it).
        name: the file to read the audio from.
        audio_codec: the probed audio codec.

    Raises:
        AsrUnavailable: the model cannot be loaded (an installation problem: stops the batch).
    """
    assert cfg.asr is not None
    model_id = cfg.asr.model.model_id
    tsid = source_id(video_id, "asr", model_id, "")
    if tsid in st.text_sources:
        return
    try:
        tr, cached = asr.transcribe_video(cfg.asr, Path(name.abs_path), video_id, duration,
                                          audio_codec, cfg.limits)
    except IngestError as e:
        _asr_error(out, cfg, video_id, name, e)
        return
    except AsrUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - a recogniser crash on one file is that file's error
        _asr_error(out, cfg, video_id, name, IngestError(
            "asr_failed", f"speech recognition failed on {name.path!r}: "
            f"{type(e).__name__}: {e}", "asr"))
        return
    out.stats["asr_cached" if cached else "asr_transcribed"] += 1
    out.stats["asr_audio_ms"] += int(tr.get("audio_s", 0) * 1000)
    segs = tr["segments"]
    problems = dict(tr.get("dropped") or {})
    if tr.get("decode_errors"):
        problems["audio_decode_errors"] = int(tr["decode_errors"])
    cues = [text.Cue(float(s["start"]), float(s["end"]), text.clean_text([s["text"]]), i)
            for i, s in enumerate(segs)]
    parsed = text.ParsedText(format=model_id, encoding="", n_blocks=len(segs), problems=problems,
                             cues=text.normalize_cues(cues, duration or None, problems))
    metas = [{k: v for k, v in s.items() if k not in ("start", "end", "text")} for s in segs]
    sha = hashlib.sha256(json.dumps(segs, sort_keys=True).encode("utf-8")).hexdigest()
    text_rows(out, cfg, video_id, parsed, source="asr", tsid=tsid, path=None,
               abs_path=name.abs_path, stream=None, sha=sha, size=None, mtime=None,
               language=tr.get("language"), metas=metas, model=model_id,
               confidences=[asr.confidence(s["avg_logprob"]) for s in segs])
    if (f"{name.path}#asr", cfg.root) in st.errors:
        out.cleared_errors.append((f"{name.path}#asr", cfg.root))


def asr_backlog(cfg: IngestConfig, st: KnownState, known: list[tuple[Candidate, str]],
                new_text: Rows) -> list[AsrItem]:
    """Videos already in the warehouse that this run's ASR mode and model still have to
    transcribe: the extra was installed since, the mode or the model changed, or an earlier
    run was killed. Videos whose ASR failed before are not retried.

    Args:
        cfg: the run's settings (``cfg.asr`` None: nothing to do).
        st: the committed state.
        known: (file, video id) of every seen name of a known video.
        new_text: text rows this run adds to known videos (they count as text).

    Returns:
        one item per video, from its first name in path order.
    """
    if cfg.asr is None or cfg.asr.mode == "never":
        return []
    items: dict[str, AsrItem] = {}
    for cand, vid in sorted(known, key=lambda cv: cv[0].path):
        if vid in items or vid not in st.audio or vid in st.asr_failed:
            continue
        if source_id(vid, "asr", cfg.asr.model.model_id, "") in st.text_sources:
            continue
        text_here = st.text_cues.get(vid, 0) > 0 or has_text(new_text, vid)
        if asr.wants_asr(cfg.asr.mode, True, text_here):
            items[vid] = AsrItem(vid, cand, st.videos.get(vid, 0.0), st.audio[vid])
    return list(items.values())


def transcribe_batch(cfg: IngestConfig, st: KnownState, items: list[AsrItem]) -> Rows:
    """Transcribe a batch of videos already in the warehouse (see :func:`asr_backlog`).

    Args:
        cfg: the run's settings (``cfg.asr`` set).
        st: the committed state.
        items: the videos to transcribe.

    Returns:
        their text rows and error rows (one file's failure never stops the batch).
    """
    out = Rows()
    for it in items:
        attach_asr(out, cfg, st, it.video_id, it.duration_s, it.name, it.audio_codec)
    return out
