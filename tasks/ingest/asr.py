"""Speech to text for videos without subtitles: audio extraction, Whisper, a transcript cache.

Pipeline for one video (:func:`transcribe_video`):

1. The transcript cache ``HOME/asr/cache/<model_id>/<video_id>.json`` is read first: a video
   is transcribed at most once per model, across runs and after a SIGKILL (each transcript is
   written atomically the moment it is finished, before the batch commits its rows).
2. ffmpeg decodes the first audio track to 16 kHz mono PCM through the same safe runner as
   every other ffmpeg call (:func:`tasks.shared.media_validate.run_tool`: argument list, ``file:``
   input, protocol and demuxer whitelists, wall-clock timeout, memory limit, stderr thread).
   ``aresample=async=1:first_pts=0`` pads a late-starting track, so sample 0 is video time 0.
3. faster-whisper transcribes it (one model load per process: :func:`load_model`), with
   word timings, on CUDA in float16 when CTranslate2 sees a GPU, else int8 on the CPU.

THE WRITTEN RULE for what becomes text (silence and music give no segments, not garbage):

* Silero VAD (faster-whisper's ``vad_filter``) removes non-speech before decoding.
* A decoded segment is then dropped, counted by name, under the first rule that matches:
  ``asr_no_speech`` (no_speech_prob > 0.6 and avg_logprob < -0.5), ``asr_low_confidence``
  (avg_logprob < -1.0), ``asr_repetitive`` (compression ratio > 2.4: a decoding loop), or
  ``asr_no_words`` (no letter or digit in the text).
* Kept segments go through :func:`tasks.ingest.text.normalize_cues` like any subtitle (times clamped
  to the video's readable duration). ``confidence`` = exp(avg_logprob).
* Audio decode errors: no decodable audio -> ``audio_unreadable``; some packets lost ->
  transcribed, counted as ``audio_decode_errors``. A codec the installed ffmpeg cannot decode
  -> ``unsupported_audio_codec``. Past ``120 s + 10 x`` the audio length -> ``timeout``. All
  with stage ``asr``; the video itself stays ingested.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.ingest.asr_models import (
    ASR_MODULES,
    PIP_HINT,
    AsrModel,
    AsrUnavailable,
    cuda_devices,
    missing_modules,
    resolve_model,
)
from tasks.shared.errors import IngestError
from tasks.shared.ffbin import find_tools
from tasks.shared.media_validate import Limits, input_args, run_tool, software_decoders
from warehouse.atomic import TMP_PREFIX, write_bytes_atomic

SAMPLE_RATE = 16_000
RECIPE = 1  # bump when decoding options change: cached transcripts of other recipes are redone
ASR_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class AsrConfig:
    """How one ingest run transcribes (shared by every batch).

    ``mode``: auto (videos with audio and no subtitle/caption text), always (every video with
    audio), never. ``device``/``compute_type``: resolved (cuda/float16 or cpu/int8).
    ``cpu_threads``: CTranslate2 threads per process (0: every core of the machine it runs on).
    Thresholds are those of the written rule in the module docstring.
    """

    mode: str
    model: AsrModel
    cache_dir: str
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0
    beam_size: int = 5
    no_speech_prob: float = 0.6
    no_speech_logprob: float = -0.5
    min_logprob: float = -1.0
    max_compression: float = 2.4
    base_timeout_s: float = 120.0
    max_rtf: float = 10.0


def make_config(mode: str, model: AsrModel, home: Path, device: str = "auto",
                cpu_threads: int = 0) -> AsrConfig:
    """An :class:`AsrConfig` with the device resolved and stale cache temp files removed.

    Args:
        mode: auto, always or never.
        model: the resolved model.
        home: the data home (the cache lives under ``asr/cache``).
        device: auto (CUDA when CTranslate2 sees a GPU), cpu or cuda.
        cpu_threads: CTranslate2 threads per process (0: all cores).

    Returns:
        the config.

    Raises:
        ValueError: an unknown mode or device.
        AsrUnavailable: cuda asked for and no CUDA device.
    """
    if mode not in ASR_MODES:
        raise ValueError(f"asr mode must be one of {ASR_MODES}, not {mode!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"asr device must be auto, cpu or cuda, not {device!r}")
    gpus = cuda_devices() if device != "cpu" else 0
    if device == "cuda" and not gpus:
        raise AsrUnavailable("--asr-device cuda: CTranslate2 sees no CUDA device")
    cache = home / "asr" / "cache" / safe_name(model.model_id)
    cache.mkdir(parents=True, exist_ok=True)
    for tmp in cache.glob(f"{TMP_PREFIX}*"):  # left by a killed run (one writer at a time)
        tmp.unlink(missing_ok=True)
    return AsrConfig(mode=mode, model=model, cache_dir=str(cache),
                     device="cuda" if gpus else "cpu",
                     compute_type="float16" if gpus else "int8", cpu_threads=max(0, cpu_threads))


def setup(mode: str, model_spec: str, home: Path, device: str = "auto", cpu_threads: int = 0,
          required: tuple[str, ...] = ASR_MODULES) -> tuple[AsrConfig | None, str | None]:
    """Resolve a run's ASR settings once, at the start of an ingest.

    Args:
        mode: auto, always or never.
        model_spec: ``tiny.en``, ``base`` or a CTranslate2 Whisper folder.
        home: the data home.
        device: auto, cpu or cuda.
        cpu_threads: CTranslate2 threads per process (0: all cores).
        required: the modules the extra must provide.

    Returns:
        ``(config, notice)``: config None when ASR is off for this run; notice is a one-line
        message for the user when auto mode turns ASR off because the extra is missing.

    Raises:
        AsrUnavailable: ``always`` without the extra, or an unusable model/device.
        ValueError: an unknown mode or device.
    """
    if mode not in ASR_MODES:
        raise ValueError(f"asr mode must be one of {ASR_MODES}, not {mode!r}")
    if mode == "never":
        return None, None
    missing = missing_modules(required)
    if missing:
        if mode == "always":
            raise AsrUnavailable(f"--asr always needs the speech-recognition extra "
                                 f"({', '.join(missing)} not installed): {PIP_HINT}")
        return None, (f"speech recognition off: the asr extra is not installed "
                      f"({PIP_HINT}); videos without subtitles get no text")
    return make_config(mode, resolve_model(model_spec, home), home, device, cpu_threads), None


def safe_name(text: str) -> str:
    """``text`` as a single safe file name component."""
    return re.sub(r"[^A-Za-z0-9._@+-]+", "_", text)[:120]


def wants_asr(mode: str, has_audio: bool, has_text: bool) -> bool:
    """The mode rule: auto transcribes a video with audio and no subtitle/caption cue."""
    return has_audio and (mode == "always" or (mode == "auto" and not has_text))


# ----------------------------------------------------------------------------- audio
def extract_audio(path: Path, duration_s: float, audio_codec: str | None,
                  limits: Limits) -> tuple[np.ndarray, int]:
    """Decode the first audio track to 16 kHz mono float32 in [-1, 1].

    Args:
        path: the video file (already probed).
        duration_s: its readable duration (the decode is capped just past it).
        audio_codec: the probed audio codec (checked against the installed decoders).
        limits: timeouts and the memory limit.

    Returns:
        ``(samples, decode_errors)``: the audio and the count of decoder error lines.

    Raises:
        IngestError: ``unsupported_audio_codec``, ``audio_unreadable``, ``timeout`` (stage
            ``asr``).
    """
    tools = find_tools()
    if not audio_codec or audio_codec not in software_decoders(tools.ffmpeg):
        raise IngestError("unsupported_audio_codec", f"audio codec {audio_codec or 'unknown'!r} "
                          f"of {path} has no decoder in this ffmpeg ({tools.ffmpeg_source})",
                          "asr")
    cap_s = max(1.0, duration_s) + 1.0
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", *input_args(path, limits),
            "-map", "0:a:0", "-vn", "-sn", "-dn", "-t", f"{cap_s:.3f}",
            "-af", f"aresample={SAMPLE_RATE}:async=1:first_pts=0", "-ac", "1",
            "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:1"]
    out_limit = int((cap_s + 1) * SAMPLE_RATE * 2) + 65536
    run = run_tool(args, timeout_s=limits.decode_timeout_s + cap_s, path=path, stage="asr",
                   limits=dataclasses.replace(limits, max_output_bytes=out_limit))
    pcm = np.frombuffer(run.stdout[: len(run.stdout) // 2 * 2], dtype="<i2")
    errors = sum(1 for ln in run.stderr.splitlines() if ln.strip())
    if run.returncode != 0 and not len(pcm):
        raise IngestError("audio_unreadable", f"ffmpeg could not decode the audio of {path} "
                          f"(exit {run.returncode}): {run.first_error()}", "asr")
    if len(pcm) < SAMPLE_RATE // 10:
        raise IngestError("audio_unreadable", f"no decodable audio in {path} "
                          f"({len(pcm)} samples; {run.first_error()})", "asr")
    return pcm.astype(np.float32) / 32768.0, errors


# ----------------------------------------------------------------------------- model
_MODELS: dict[tuple[str, str, str], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


def load_model(cfg: AsrConfig) -> Any:
    """The faster-whisper model of ``cfg``, loaded once per process and shared by threads.

    On the CPU it uses ``cfg.cpu_threads`` threads (default: every core); :func:`transcribe`
    runs one file at a time per model, so concurrent batches of one process share the cores
    instead of oversubscribing them (as the bare library does when called from two threads).

    Args:
        cfg: the model folder, device and compute type.

    Returns:
        the ``faster_whisper.WhisperModel``.

    Raises:
        AsrUnavailable: faster-whisper is missing or cannot load the folder.
    """
    return _model_and_lock(cfg)[0]


def _model_and_lock(cfg: AsrConfig) -> tuple[Any, threading.Lock]:
    key = (cfg.model.path, cfg.device, cfg.compute_type)
    with _MODELS_LOCK:
        if key not in _MODELS:
            try:
                from faster_whisper import WhisperModel
            except ImportError as e:
                raise AsrUnavailable(f"faster-whisper is not installed ({e}): "
                                     'pip install -e ".[asr]"') from e
            try:
                model = WhisperModel(cfg.model.path, device=cfg.device,
                                     compute_type=cfg.compute_type,
                                     cpu_threads=cfg.cpu_threads or os.cpu_count() or 0,
                                     local_files_only=True)
            except Exception as e:  # noqa: BLE001 - any load failure is an installation issue
                raise AsrUnavailable(f"cannot load ASR model {cfg.model.model_id} from "
                                     f"{cfg.model.path}: {type(e).__name__}: {e}") from e
            _MODELS[key] = (model, threading.Lock())
        return _MODELS[key]


def _drop_reason(cfg: AsrConfig, seg: Any) -> str | None:
    if seg.no_speech_prob > cfg.no_speech_prob and seg.avg_logprob < cfg.no_speech_logprob:
        return "asr_no_speech"
    if seg.avg_logprob < cfg.min_logprob:
        return "asr_low_confidence"
    if seg.compression_ratio > cfg.max_compression:
        return "asr_repetitive"
    if not any(ch.isalnum() for ch in seg.text):
        return "asr_no_words"
    return None


def _segment(seg: Any) -> dict[str, Any]:
    words = [[round(w.start, 3), round(w.end, 3), w.word.strip(), round(w.probability, 4)]
             for w in (seg.words or [])]
    return {"start": round(seg.start, 3), "end": round(seg.end, 3), "text": seg.text.strip(),
            "avg_logprob": round(seg.avg_logprob, 4),
            "no_speech_prob": round(seg.no_speech_prob, 4),
            "compression_ratio": round(seg.compression_ratio, 3),
            "temperature": seg.temperature, "words": words}


def transcribe(cfg: AsrConfig, audio: np.ndarray, what: str = "audio") -> dict[str, Any]:
    """Transcribe 16 kHz mono float32 audio by the written rule.

    Args:
        cfg: the run's ASR settings.
        audio: the samples.
        what: named in a timeout error.

    Returns:
        ``{"language", "language_probability", "audio_s", "segments", "dropped"}``; segments
        are dicts with start/end/text, avg_logprob, no_speech_prob, compression_ratio,
        temperature and ``words`` as ``[start, end, word, probability]`` lists.

    Raises:
        IngestError: ``timeout`` (stage ``asr``) past the time budget.
    """
    model, lock = _model_and_lock(cfg)
    audio_s = len(audio) / SAMPLE_RATE
    budget = cfg.base_timeout_s + cfg.max_rtf * audio_s
    kept: list[dict[str, Any]] = []
    dropped: dict[str, int] = {}
    with lock:
        started = time.monotonic()
        segments, info = model.transcribe(
            audio, language=None if model.model.is_multilingual else "en",
            beam_size=cfg.beam_size, vad_filter=True, word_timestamps=True,
            condition_on_previous_text=False)
        for seg in segments:  # a generator: decoding happens while iterating
            if time.monotonic() - started > budget:
                raise IngestError("timeout", f"speech recognition of {what} exceeded "
                                  f"{budget:.0f} s", "asr")
            reason = _drop_reason(cfg, seg)
            if reason:
                dropped[reason] = dropped.get(reason, 0) + 1
            else:
                kept.append(_segment(seg))
    return {"language": info.language, "language_probability":
            round(float(info.language_probability), 4), "audio_s": round(audio_s, 3),
            "segments": kept, "dropped": dropped}


# ----------------------------------------------------------------------------- cache
def cache_path(cfg: AsrConfig, video_id: str) -> Path:
    """Where the transcript of ``video_id`` by ``cfg``'s model is cached."""
    return Path(cfg.cache_dir) / f"{video_id}.json"


def read_cached(cfg: AsrConfig, video_id: str) -> dict[str, Any] | None:
    """The cached transcript, or None (absent, unreadable, another model or recipe)."""
    try:
        data = json.loads(cache_path(cfg, video_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (not isinstance(data, dict) or data.get("model_id") != cfg.model.model_id
            or data.get("recipe") != RECIPE or data.get("video_id") != video_id
            or not isinstance(data.get("segments"), list)):
        return None
    return data


def transcribe_video(cfg: AsrConfig, path: Path, video_id: str, duration_s: float,
                     audio_codec: str | None, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The transcript of one video: from the cache, else extracted, transcribed and cached.

    Args:
        cfg: the run's ASR settings.
        path: the video file.
        video_id: its content hash.
        duration_s: its readable duration.
        audio_codec: the probed audio codec.
        limits: ffmpeg limits.

    Returns:
        ``(transcript, from_cache)``; the transcript also has ``model_id``, ``recipe``,
        ``video_id``, ``decode_errors``, ``device`` and ``seconds`` (wall time spent).

    Raises:
        IngestError: stage ``asr`` (see the module docstring).
    """
    cached = read_cached(cfg, video_id)
    if cached is not None:
        return cached, True
    started = time.monotonic()
    audio, errors = extract_audio(path, duration_s, audio_codec, limits)
    result = transcribe(cfg, audio, str(path))
    result.update(model_id=cfg.model.model_id, recipe=RECIPE, video_id=video_id,
                  decode_errors=errors, device=f"{cfg.device}/{cfg.compute_type}",
                  seconds=round(time.monotonic() - started, 3))
    write_bytes_atomic(json.dumps(result, sort_keys=True).encode("utf-8"),
                       cache_path(cfg, video_id))
    return result, False


# ----------------------------------------------------------------------------- evaluation
def normalize_words(text: str) -> list[str]:
    """Lower-cased words without punctuation (``don't`` -> ``dont``), for error rates."""
    text = unicodedata.normalize("NFKC", text).lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[^\w\s]", " ", text).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance / reference length, on normalised text.

    Args:
        reference: the true transcript.
        hypothesis: the recognised text.

    Returns:
        (substitutions + deletions + insertions) / reference words; 0 is perfect.

    Raises:
        ValueError: the reference has no words.
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        raise ValueError("the reference transcript has no words")
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)


def confidence(avg_logprob: float) -> float:
    """Segment confidence in (0, 1]: the geometric-mean token probability."""
    return round(min(1.0, math.exp(avg_logprob)), 4)
