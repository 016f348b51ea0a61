"""Probe, validate, decode and read subtitles of one video file, safely.

Every function raises :class:`tasks.shared.errors.IngestError` with a stable code for a bad file;
the ingest flow turns it into one ``ingest_errors`` row. ffmpeg/ffprobe run only through
:func:`tasks.shared.media_validate.run_tool`: argument lists, ``-nostdin``, ``file:`` inputs,
``-protocol_whitelist file``, ``-format_whitelist`` (video demuxers only, on every open),
bounded ``-probesize``/``-analyzeduration``, a wall-clock timeout, an address-space limit,
stderr drained by a thread. Order of checks:

1. :func:`sniff` (no ffmpeg): missing, empty, too big, playlists/manifests/URL lists
   (``unsafe_input``), text and images (``not_a_video``), judged by content.
2. :func:`probe`: ffprobe restricted by ``-format_whitelist`` to real video containers (the
   check is repeated on the detected ``format_name``). A demuxer outside the list is named
   in ffprobe's error and mapped: hls/concat/sdp/... -> ``unsafe_input``, image demuxers ->
   ``not_a_video``. Then ``no_video_stream`` (cover art does not count), single-frame stills,
   the pixel limit and codecs this ffmpeg cannot decode in software (``unsupported_codec``;
   the native ``av1`` decoder is hardware-only, so AV1 needs libdav1d/libaom).
   The header duration is never trusted for ``too_long``: headers lie.
3. :func:`validate`: ONE demux pass, ``-xerror -c copy -f null`` on the video stream,
   capped by ``-t max_duration_s+1`` and ``validate_timeout_s``. Demux-only, not a full
   decode: measured on the shipped samples (2 cores, median wall time of the process),
   bigbuckbunny 720p 30 ms vs 247 ms, bikes 16 vs 166, carphone 16 vs 72, cityCC0.mpg 27
   vs 136: 5-10x faster, and every kept frame is decoded later anyway (:func:`decode_frames`
   fails with ``decode_failed`` on corrupt data). Truncation shows up as an early
   ``-xerror`` stop (mp4: "partial file", exit != 0) or, for Matroska, "File ended
   prematurely" with exit 0; both go into ``detail``.

   Written rule: the pass counts packets and the last timestamp read. Coverage is packets
   / ``nb_frames`` where the container indexes its frames (mp4/mov), else measured /
   header duration. Coverage >= 98 % -> ``ok``. Otherwise, if >= 1 s is readable the
   file is kept as ``partial`` with ``readable_duration_s`` = what was read (clips are cut
   from that); < 1 s readable -> ``decode_failed`` (stage ``validate``). Measured content
   longer than ``max_duration_s`` -> ``too_long``. The measured duration always wins over
   the header: a header claiming 11 h over 2 s of data is read for 2 s, kept ``partial``.

:func:`decode_frames` samples by timestamp (VFR-safe): sample k is at ``start_s + k/fps``
(half-open ``[start_s, end_s)``) and shows the frame on screen at that time, i.e. the last
frame whose pts <= t. Measured on this ffmpeg: only ``-noaccurate_seek`` plus
``fps=...:start_time=0:round=up`` gives that exactly (accurate seek drops the frame already
on screen at ``start_s``; ``round=near``/``down`` pick frames up to half a period early).
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np

from tasks.shared.errors import IngestError
from tasks.shared.ffbin import find_tools
from tasks.shared.media_types import ProbeResult, SubtitleStream
from tasks.shared.media_validate import (
    VIDEO_DEMUXERS,
    Limits,
    Validation,
    container_magic,
    frame_cap,
    input_args,
    pix_fmt_depths,
    run_tool,
    sniff,
    software_decoders,
    validate,
)

__all__ = ["Limits", "ProbeResult", "SubtitleStream", "Validation", "decode_frames",
           "extract_subtitles", "probe", "sniff", "tools_report", "validate"]

# Demuxers that open other files or the network: never allowed, named as unsafe.
UNSAFE_DEMUXERS: frozenset[str] = frozenset({
    "hls", "applehttp", "concat", "dash", "sdp", "rtp", "rtsp", "webm_dash_manifest", "imf",
    "ffmetadata", "mpjpeg", "tedcaptions", "lavfi",
})
IMAGE_DEMUXERS: frozenset[str] = frozenset({
    "image2", "image2pipe", "apng", "gif", "ico", "webp", "alias_pix", "brender_pix", "fits",
    "jpegxl_anim", "jpeg", "png", "bmp", "tiff", "tga",
})
IMAGE_CODECS: frozenset[str] = frozenset({
    "png", "apng", "mjpeg", "bmp", "gif", "webp", "tiff", "jpeg2000", "jpegls", "jpegxl",
    "ppm", "pgm", "pgmyuv", "pbm", "pam", "qoi", "targa", "sgi", "dds", "exr", "hdr", "pcx",
    "xwd", "sunrast", "ljpeg",
})
TEXT_SUBTITLE_CODECS: frozenset[str] = frozenset({
    "subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text", "microdvd", "subviewer",
    "subviewer1", "jacosub", "sami", "realtext", "pjs", "mpl2", "vplayer", "stl", "ttml",
    "eia_608", "arib_caption",
})
DEFAULT_LIMITS = Limits()  # frozen: safe as a shared default


# ----------------------------------------------------------------------------- tools
def tools_report() -> dict[str, Any]:
    """Paths, sources and versions of ffmpeg/ffprobe, for ``videobert doctor``.

    Returns:
        a dict with ``ffmpeg``/``ffprobe`` paths, their sources and versions, the number of
        codecs with a software decoder, and whether H.264/HEVC/VP9/AV1 decode here.
    """
    tools = find_tools()
    decoders = software_decoders(tools.ffmpeg)
    return {
        "ffmpeg": tools.ffmpeg, "ffmpeg_source": tools.ffmpeg_source,
        "ffmpeg_version": tools.version("ffmpeg"),
        "ffprobe": tools.ffprobe, "ffprobe_source": tools.ffprobe_source,
        "ffprobe_version": tools.version("ffprobe"),
        "decodable_codecs": len(decoders),
        "decodes": {c: c in decoders for c in ("h264", "hevc", "vp9", "av1", "mpeg4")},
    }


# ----------------------------------------------------------------------------- probe
def _rate(value: str | None) -> float:
    try:
        frac = Fraction(value or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(frac)


def _num(value: Any, kind: type = float) -> Any:
    try:
        return kind(value) if value not in (None, "", "N/A") else None
    except (TypeError, ValueError):
        return None


def _rotation(stream: dict[str, Any]) -> int:
    """Clockwise display rotation: display matrix side data, else the legacy rotate tag."""
    for side in stream.get("side_data_list") or []:
        if side.get("side_data_type") == "Display Matrix" and "rotation" in side:
            ccw = _num(side["rotation"]) or 0.0
            return int(round(-ccw / 90.0)) * 90 % 360
    tag = _num((stream.get("tags") or {}).get("rotate"))
    return int(round(tag / 90.0)) * 90 % 360 if tag is not None else 0


def _components(format_name: str) -> set[str]:
    return {part.strip() for part in format_name.split(",") if part.strip()}


def _judge_format(path: Path, fmt: str) -> None:
    """Raise unless ``fmt`` (a demuxer name, maybe comma-joined) is an allowed container."""
    parts = _components(fmt)
    if parts & VIDEO_DEMUXERS:
        return
    if parts & UNSAFE_DEMUXERS:
        raise IngestError("unsafe_input", f"{path} was detected as {fmt!r}, an indirection "
                          "that opens other files; refused")
    if parts & IMAGE_DEMUXERS or any(p.endswith("_pipe") for p in parts):
        raise IngestError("not_a_video", f"{path} is an image ({fmt!r}), not a video")
    raise IngestError("not_a_video", f"{path} has format {fmt!r}, not an allowed video container")


def _probe_failure(path: Path, stderr: str, first_error: str) -> IngestError:
    m = re.search(r"\[([\w,.\-]+) @ (?:0x)?[0-9a-fA-F]+\] Format not on whitelist", stderr)
    if m:
        try:
            _judge_format(path, m.group(1))
        except IngestError as e:
            return e
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as e:
        return IngestError("io_error", f"cannot read {path}: {e}", "probe")
    magic = container_magic(head, len(head) if len(head) < 4096 else None)
    if magic:
        return IngestError("container_unreadable", f"{path} looks like {magic} but ffprobe "
                           f"cannot open it: {first_error}")
    return IngestError("not_a_video", f"ffprobe found no video container in {path}: "
                       f"{first_error}")


def _subtitles(streams: list[dict[str, Any]]) -> list[SubtitleStream]:
    subs = []
    for stream in streams:
        if stream.get("codec_type") != "subtitle":
            continue
        tags = stream.get("tags") or {}
        codec = stream.get("codec_name") or "unknown"
        subs.append(SubtitleStream(
            index=int(stream["index"]), position=len(subs), codec=codec,
            language=tags.get("language") if tags.get("language") not in ("und", "") else None,
            title=tags.get("title") or tags.get("name"),
            text_based=codec in TEXT_SUBTITLE_CODECS))
    return subs


def _is_main_video(stream: dict[str, Any]) -> bool:
    disp = stream.get("disposition") or {}
    return (stream.get("codec_type") == "video" and not disp.get("attached_pic")
            and not disp.get("still_image"))


def _build(path: Path, data: dict[str, Any], size: int, limits: Limits) -> ProbeResult:
    fmt = data.get("format") or {}
    streams = data.get("streams") or []
    videos = [s for s in streams if _is_main_video(s)]
    if not videos:
        kinds = sorted({"cover art" if s.get("codec_type") == "video" else
                        str(s.get("codec_type")) for s in streams}) or ["none"]
        raise IngestError("no_video_stream", f"{path} has no video stream (streams: "
                          f"{', '.join(kinds)})")
    v = videos[0]
    codec = v.get("codec_name") or "none"
    nb_frames = _num(v.get("nb_frames"), int) or None
    duration = _num(fmt.get("duration")) or _num(v.get("duration"))
    fps, r_fps = _rate(v.get("avg_frame_rate")), _rate(v.get("r_frame_rate"))
    if nb_frames == 1 or (codec in IMAGE_CODECS and not nb_frames and not duration):
        raise IngestError("not_a_video", f"{path} is a single-frame still ({codec!r}), "
                          "not a video")
    coded_w, coded_h = int(v.get("width") or 0), int(v.get("height") or 0)
    if coded_w * coded_h > limits.max_pixels:
        raise IngestError("too_large", f"{path} frame size {coded_w}x{coded_h} "
                          f"({coded_w * coded_h} px) is above the limit of {limits.max_pixels}")
    tools = find_tools()
    if codec == "none":
        tag = v.get("codec_tag_string") or "?"
        raise IngestError("unsupported_codec", f"{path} video codec is unknown to ffprobe "
                          f"(codec_name missing, tag {tag!r})")
    if codec not in software_decoders(tools.ffmpeg):
        raise IngestError("unsupported_codec", f"{path} video codec {codec!r} has no software "
                          f"decoder in this ffmpeg ({tools.ffmpeg_source})")
    if coded_w * coded_h == 0:
        raise IngestError("container_unreadable", f"{path} video stream has no frame size")
    rotation = _rotation(v)
    width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
    pix_fmt = v.get("pix_fmt")
    depth = _num(v.get("bits_per_raw_sample"), int) or pix_fmt_depths(tools.ffprobe).get(
        pix_fmt or "", 8)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    return ProbeResult(
        format_name=str(fmt.get("format_name")), duration_s=duration, fps=fps, r_fps=r_fps,
        vfr=bool(fps and r_fps and abs(fps - r_fps) / max(fps, r_fps) > 0.01),
        width=width, height=height, coded_width=coded_w, coded_height=coded_h, codec=codec,
        pix_fmt=pix_fmt, bit_depth=depth, rotation=rotation, has_audio=audio is not None,
        audio_codec=(audio.get("codec_name") if audio else None),
        subtitle_streams=_subtitles(streams), nb_frames=nb_frames,
        bit_rate=_num(fmt.get("bit_rate"), int) or _num(v.get("bit_rate"), int),
        size_bytes=size, video_index=int(v.get("index", 0)),
        start_time_s=_num(fmt.get("start_time")) or 0.0, raw=data)


def probe(path: Path, limits: Limits = DEFAULT_LIMITS) -> ProbeResult:
    """Sniff, then ffprobe the file (allow-listed demuxers only) and judge what it holds.

    Args:
        path: the video file.
        limits: pixel/size limits, probe size and timeout.

    Returns:
        the :class:`ProbeResult` of the main video stream.

    Raises:
        IngestError: any sniff code, then ``container_unreadable``, ``not_a_video``,
            ``unsafe_input``, ``no_video_stream``, ``too_large``, ``unsupported_codec``,
            ``timeout`` (stage ``probe``).
    """
    path = Path(path)
    sniff(path, limits)
    size = path.stat().st_size
    tools = find_tools()
    args = [tools.ffprobe, "-hide_banner", "-v", "error", *input_args(path, limits),
            "-of", "json", "-show_format", "-show_streams"]
    run = run_tool(args, timeout_s=limits.probe_timeout_s, path=path, stage="probe",
                   limits=limits)
    try:
        data = json.loads(run.stdout or b"{}")
    except json.JSONDecodeError:
        data = {}
    if run.returncode != 0 or not data.get("format"):
        raise _probe_failure(path, run.stderr, run.first_error())
    _judge_format(path, str(data["format"].get("format_name", "")))
    return _build(path, data, size, limits)


# ----------------------------------------------------------------------------- decode
def _read_frames(stdout: IO[bytes], shape: tuple[int, int, int], blocks: list[np.ndarray],
                 per_block: int = 64) -> None:
    """Read whole raw frames from ``stdout`` into ``blocks`` until EOF (a partial frame at
    the end, left by a killed process, is dropped)."""
    frame_bytes = shape[0] * shape[1] * shape[2]
    while True:
        block = np.empty((per_block, *shape), np.uint8)
        flat = memoryview(block.reshape(-1))
        got = 0
        while got < len(flat):
            n = stdout.readinto(flat[got:])
            if not n:
                break
            got += n
        if got // frame_bytes:
            blocks.append(block[: got // frame_bytes])
        if got < len(flat):
            return


def _filters(fps: float, size: int | tuple[int, int]) -> tuple[str, int, int]:
    """The -vf chain and the output (width, height)."""
    rate = Fraction(fps).limit_denominator(1_000_000)
    chain = [f"fps={rate.numerator}/{rate.denominator}:start_time=0:round=up"]
    if isinstance(size, int):
        s = size
        # Short side to s on the display aspect (dar = iw*sar/ih), then a centred s x s crop.
        chain += [f"scale=w='if(gte(dar,1),ceil({s}*dar),{s})':"
                  f"h='if(gte(dar,1),{s},ceil({s}/dar))':flags=bilinear",
                  f"crop={s}:{s}"]
        width = height = s
    else:
        width, height = size
        chain.append(f"scale={width}:{height}:flags=bilinear")
    chain += ["setsar=1", "format=rgb24"]
    return ",".join(chain), width, height


def decode_frames(path: Path, start_s: float, end_s: float | None, fps: float,
                  size: int | tuple[int, int],
                  limits: Limits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """Decode RGB frames sampled by timestamp.

    Args:
        path: the video (probed and validated before).
        start_s: first sample time, seconds from the start of the video.
        end_s: samples are taken in ``[start_s, end_s)``; None = to the end of the video.
        fps: samples per second.
        size: int -> short side scaled to ``size`` then a centred ``size`` x ``size`` crop;
            ``(W, H)`` -> exactly W x H.
        limits: ``decode_timeout_s`` and the memory limit.

    Returns:
        ``(frames, timestamps)``: uint8 ``(N, H, W, 3)`` upright RGB (ffmpeg autorotate;
        10-bit/HDR converted to rgb24, no tone mapping) and float64 ``(N,)`` seconds, sample k
        at ``start_s + k / fps``. N is 0 when ``start_s`` is past the end.

    Raises:
        ValueError: on bad arguments.
        IngestError: ``decode_failed`` or ``timeout`` (stage ``decode``).
    """
    if not (fps > 0 and math.isfinite(fps)) or start_s < 0 or (
            end_s is not None and end_s <= start_s):
        raise ValueError(f"bad sampling window start={start_s!r} end={end_s!r} fps={fps!r}")
    if (isinstance(size, int) and size <= 0) or (
            not isinstance(size, int) and (len(size) != 2 or min(size) <= 0)):
        raise ValueError(f"bad output size {size!r}")
    path = Path(path)
    vf, width, height = _filters(fps, size)
    cap = frame_cap(start_s, end_s, fps, limits)
    args = [find_tools().ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            "-noaccurate_seek", "-ss", f"{start_s:.6f}", *input_args(path, limits),
            "-map", "0:V:0", "-an", "-sn", "-dn", "-vf", vf, "-frames:v", str(cap),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    if cap == 0:
        return np.empty((0, height, width, 3), np.uint8), np.empty(0, np.float64)
    blocks: list[np.ndarray] = []

    per_block = max(1, min(cap, 64, (32 << 20) // (width * height * 3)))

    def consume(stdout: IO[bytes]) -> None:
        _read_frames(stdout, (height, width, 3), blocks, per_block)

    run = run_tool(args, timeout_s=limits.decode_timeout_s, path=path, stage="decode",
                   limits=limits, consume=consume)
    if run.returncode != 0:
        raise IngestError("decode_failed", f"ffmpeg could not decode {path} from "
                          f"{start_s:g} s (exit {run.returncode}): {run.first_error()}",
                          "decode")
    if not blocks:
        frames = np.empty((0, height, width, 3), np.uint8)
    else:
        frames = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks))[:cap]
    stamps = start_s + np.arange(len(frames), dtype=np.float64) / fps
    return frames, stamps


# ----------------------------------------------------------------------------- subtitles
def extract_subtitles(path: Path, stream: SubtitleStream, limits: Limits = DEFAULT_LIMITS) -> str:
    """Convert one embedded text subtitle stream to WebVTT text.

    Args:
        path: the video file.
        stream: a :class:`SubtitleStream` from its :class:`ProbeResult`.
        limits: timeout (``probe_timeout_s``) and output bound.

    Returns:
        the WebVTT document.

    Raises:
        IngestError: ``subtitle_unreadable`` (bitmap codec, or ffmpeg fails), ``timeout``;
            stage ``text``.
    """
    path = Path(path)
    if not stream.text_based:
        raise IngestError("subtitle_unreadable", f"subtitle stream {stream.index} of {path} is "
                          f"bitmap ({stream.codec!r}); only text subtitles are read", "text")
    args = [find_tools().ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            *input_args(path, limits), "-map", f"0:{stream.index}", "-c:s", "webvtt",
            "-f", "webvtt", "pipe:1"]
    run = run_tool(args, timeout_s=limits.probe_timeout_s, path=path, stage="text",
                   limits=limits)
    if run.returncode != 0:
        raise IngestError("subtitle_unreadable", f"cannot convert subtitle stream "
                          f"{stream.index} ({stream.codec!r}) of {path}: {run.first_error()}",
                          "text")
    return run.stdout.decode("utf-8", "replace")
