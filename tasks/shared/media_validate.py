"""Input checks around ffmpeg: limits, the safe process runner, sniffing and validation.

:func:`sniff` runs before any ffmpeg process and judges a file by its bytes, never by its
name. :func:`run_tool` is the only way this package starts ffmpeg/ffprobe: an argument list
(no shell), stdin closed, stderr drained by a thread into a bounded tail (a full pipe never
blocks ffmpeg), a wall-clock watchdog, and a best-effort address-space limit.
:func:`validate` is the single demux pass described in :mod:`tasks.shared.media`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tasks.shared.errors import IngestError
from tasks.shared.ffbin import find_tools
from tasks.shared.media_types import ProbeResult

GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Resource limits applied to every file (see ``shared/reliability.md``).

    Sizes are bytes, durations seconds, ``analyzeduration_us`` microseconds.
    ``memory_bytes`` is the address-space limit of each ffmpeg/ffprobe process (0 = none).
    ``max_output_bytes`` bounds what a process may write to stdout outside decode_frames.
    """

    max_file_bytes: int = 64 * GiB
    max_pixels: int = 8192 * 4320
    max_duration_s: float = 6 * 3600
    probe_timeout_s: float = 60
    validate_timeout_s: float = 1800
    decode_timeout_s: float = 600
    probesize: int = 50_000_000
    analyzeduration_us: int = 20_000_000
    memory_bytes: int = 8 * GiB
    max_output_bytes: int = 256 << 20
    validate_mode: str = "decode"

    def __post_init__(self) -> None:
        if self.validate_mode not in ("decode", "demux"):
            raise ValueError(f"validate_mode must be 'decode' or 'demux', "
                             f"not {self.validate_mode!r}")


@dataclass
class Validation:
    """Outcome of :func:`validate`.

    ``status`` is ``"ok"`` or ``"partial"``; ``readable_duration_s`` is the measured
    duration of what could be read (it wins over any header); ``frames`` counts the video
    packets read; ``detail`` says why a file is partial (empty when ok).
    """

    status: str
    readable_duration_s: float
    frames: int
    detail: str = ""


# ----------------------------------------------------------------------------- runner
@dataclass
class ToolRun:
    """What a finished ffmpeg/ffprobe process left: exit status, stdout, stderr tail."""

    returncode: int
    stdout: bytes
    stderr: str

    def first_error(self) -> str:
        """The first stderr line (usually the cause), or ``"no message"``."""
        lines = [ln.strip() for ln in self.stderr.splitlines() if ln.strip()]
        return lines[0][:300] if lines else "no message"


def _drain(stream: IO[bytes], head: list[bytes], tail: collections.deque[bytes]) -> None:
    """Keep the first and the last lines of stderr; memory stays bounded whatever comes."""
    for line in iter(lambda: stream.readline(8192), b""):
        if len(head) < 20:
            head.append(line)
        else:
            tail.append(line)


def _limit_memory(pid: int, limit: int) -> None:
    # Set from the parent right after the spawn (preexec_fn is unsafe with threads): a tiny
    # window without the limit, acceptable for a guard against runaway allocations.
    if limit <= 0:
        return
    with contextlib.suppress(ImportError, OSError, ValueError, AttributeError):
        import resource

        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))


def run_tool(args: list[str], *, timeout_s: float, path: Path, stage: str, limits: Limits,
             consume: Callable[[IO[bytes]], None] | None = None) -> ToolRun:
    """Run one ffmpeg/ffprobe command safely.

    Args:
        args: the full argument list (``args[0]`` is the executable); never a shell string.
        timeout_s: wall-clock limit; past it the process is killed.
        path: the input file (named in errors).
        stage: pipeline stage for the :class:`IngestError`.
        limits: for the memory and stdout limits.
        consume: reads stdout itself (decode_frames); else stdout is collected, bounded by
            ``limits.max_output_bytes``.

    Returns:
        the :class:`ToolRun`.

    Raises:
        IngestError: ``timeout`` past ``timeout_s``.
        RuntimeError: the tool cannot be started at all (an installation problem).
    """
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as e:  # the installation is broken, not the file: stop the batch
        raise RuntimeError(f"cannot start {args[0]!r}: {e}") from e
    _limit_memory(proc.pid, limits.memory_bytes)
    head: list[bytes] = []
    tail: collections.deque[bytes] = collections.deque(maxlen=100)
    drainer = threading.Thread(target=_drain, args=(proc.stderr, head, tail), daemon=True)
    drainer.start()
    expired = threading.Event()

    def _expire() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            proc.kill()

    timer = threading.Timer(timeout_s, _expire)
    timer.daemon = True
    timer.start()
    out = b""
    try:
        assert proc.stdout is not None
        if consume is not None:
            consume(proc.stdout)
        else:
            out = proc.stdout.read(limits.max_output_bytes + 1)
            if len(out) > limits.max_output_bytes:
                proc.kill()
                raise IngestError("decode_failed", f"{args[0]} wrote more than "
                                  f"{limits.max_output_bytes} bytes for {path}", stage)
        returncode = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        drainer.join(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    if expired.is_set():
        raise IngestError("timeout", f"{Path(args[0]).name} exceeded {timeout_s:g} s on {path}",
                          stage)
    return ToolRun(returncode, out, b"".join([*head, *tail]).decode("utf-8", "replace"))


# Demuxers (names as in `ffprobe -demuxers`) that hold real video, passed to every ffmpeg and
# ffprobe as -format_whitelist (a component match is enough: "mov" admits
# "mov,mp4,m4a,3gp,3g2,mj2"). Re-checked on every open, so a file swapped after probing
# cannot turn into a playlist.
VIDEO_DEMUXERS: frozenset[str] = frozenset({
    "mov", "matroska", "webm", "avi", "mpeg", "mpegts", "mpegvideo", "m4v", "flv", "asf",
    "ogg", "h264", "hevc", "vvc", "ivf", "obu", "mxf", "nut", "dv", "rm", "wtv",
    "yuv4mpegpipe",
})


def input_args(path: Path, limits: Limits) -> list[str]:
    """Safe input options + ``-i file:ABS`` (the prefix stops ``-x``/``proto:`` parsing)."""
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(sorted(VIDEO_DEMUXERS)),
            "-probesize", str(limits.probesize),
            "-analyzeduration", str(limits.analyzeduration_us),
            "-i", "file:" + os.path.abspath(path)]


# ----------------------------------------------------------------------------- tool tables
_HW_DECODER = re.compile(r"_(v4l2m2m|cuvid|qsv|mediacodec|vaapi|vdpau|amf|rkmpp|mmal|omx|"
                         r"videotoolbox|vulkan|d3d11va|dxva2|nvdec|oh)$")
# Native decoders that only drive hardware (FFmpeg's own av1 decoder needs a hwaccel).
_HWACCEL_ONLY: frozenset[str] = frozenset({"av1"})
@functools.lru_cache(maxsize=4)
def software_decoders(ffmpeg: str) -> dict[str, tuple[str, ...]]:
    """codec name -> decoders of the installed ffmpeg that decode it in software.

    Parsed from ``ffmpeg -codecs`` (which maps codecs to decoder names, unlike ``-decoders``:
    AV1's decoders are libdav1d/libaom-av1/av1). Hardware wrappers and the native,
    hardware-only ``av1`` decoder do not count.
    """
    out = run_tool([ffmpeg, "-hide_banner", "-codecs"], timeout_s=30, path=Path(ffmpeg),
                   stage="probe", limits=Limits()).stdout.decode("utf-8", "replace")
    table: dict[str, tuple[str, ...]] = {}
    for line in out.splitlines():
        m = re.match(r"^ ([D.])[E.][VASDT.][I.][L.][S.] (\S+)\s+(.*)$", line)
        if not m or m.group(1) != "D":
            continue
        name, rest = m.group(2), m.group(3)
        listed = re.search(r"\(decoders: ([^)]*)\)", rest)
        decoders = listed.group(1).split() if listed else [name]
        soft = tuple(d for d in decoders if not _HW_DECODER.search(d) and d not in _HWACCEL_ONLY)
        if soft:
            table[name] = soft
    return table


@functools.lru_cache(maxsize=4)
def pix_fmt_depths(ffprobe: str) -> dict[str, int]:
    """pixel format -> bits per component (the largest), from ``ffprobe -pix_fmts``."""
    out = run_tool([ffprobe, "-hide_banner", "-pix_fmts"], timeout_s=30, path=Path(ffprobe),
                   stage="probe", limits=Limits()).stdout.decode("utf-8", "replace")
    depths: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"^[I.][O.][H.][P.][B.]\S*\s+(\S+)\s+\d+\s+\d+\s+([\d-]+)\s*$", line)
        if m:
            depths[m.group(1)] = max(int(d) for d in m.group(2).split("-"))
    return depths


# ----------------------------------------------------------------------------- sniffing
# Magic numbers of the video containers we accept (offset, bytes).
_CONTAINER_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (4, b"ftyp", "ISO-BMFF/QuickTime"), (4, b"moov", "QuickTime"), (4, b"mdat", "QuickTime"),
    (4, b"wide", "QuickTime"), (4, b"free", "QuickTime"), (4, b"skip", "QuickTime"),
    (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"\x00\x00\x01\xba", "MPEG-PS"),
    (0, b"\x00\x00\x01\xb3", "MPEG video"), (0, b"FLV\x01", "FLV"),
    (0, bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"), "ASF/WMV"), (0, b"OggS", "Ogg"),
    (0, b"DKIF", "IVF"), (0, b"nut/multimedia container", "NUT"), (0, b".RMF", "RealMedia"),
    (0, bytes.fromhex("060e2b34"), "MXF"),
)
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF-", "PDF"),
    (b"RIFF", "WEBP"), (b"qoif", "QOI"),
)
_SNIFF_BYTES = 64 * 1024
_MEDIA_EXT = (r"\.(mp4|m4v|mkv|webm|mov|avi|ts|m2ts|mts|mpe?g|flv|wmv|asf|ogv|ogg|3gp|m3u8?|"
              r"mpd|mp3|aac|wav|flac|txt|srt|vtt)\b")
_URL = re.compile(r"\b(file|https?|rtmp[a-z]*|rtsps?|rtp|srtp|udp|tcp|tls|srt|ftp|sftp|smb|mmsh?|"
                  r"gophers?|ipfs|ipns|icecast|concatf?|subfile|crypto|cache|async|pipe|fd|hls|"
                  r"data|unix|zmq|librist|bluray):\S", re.IGNORECASE)
_PATH_LINE = re.compile(r"^(/|\.{1,2}[/\\]|~[/\\]|[A-Za-z]:[/\\]|\\\\)|" + _MEDIA_EXT + r"\s*$",
                        re.IGNORECASE)
_INDIRECTION: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"#EXTM3U|#EXT-X-|#EXTINF", re.I), "an HLS/M3U playlist"),
    (re.compile(r"<MPD\b|urn:mpeg:dash", re.I), "a DASH MPD manifest"),
    (re.compile(r"ffconcat\s+version", re.I), "an ffconcat script"),
    (re.compile(r"^\s*file\s+\S", re.I | re.M), "a concat-style file list"),
    (re.compile(r"\A\s*v=0\s*$.*^[oscm]=", re.M | re.S), "an SDP session description"),
    (re.compile(r"^\s*\[playlist\]", re.I | re.M), "a PLS playlist"),
    (re.compile(r"<asx\b", re.I), "an ASX playlist"),
    (re.compile(r"<playlist\b|xspf\.org", re.I), "an XSPF playlist"),
    (re.compile(r"<smil\b", re.I), "a SMIL presentation"),
)


def container_magic(head: bytes, size: int | None = None) -> str | None:
    """Name of the video container whose magic ``head`` starts with, else None.

    ``size`` (the file size) makes the QuickTime atom check strict: the first box must fit.
    """
    for offset, magic, name in _CONTAINER_MAGIC:
        if head[offset:offset + len(magic)] != magic:
            continue
        if offset == 4:  # an ISO-BMFF box: 32-bit size (1 = 64-bit size follows) then type
            box = int.from_bytes(head[:4], "big")
            if not (box == 1 or 8 <= box <= (size if size is not None else 1 << 32)):
                continue
        return name
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX", b"AMV "):
        return "AVI"
    # MPEG-TS: a sync byte every 188 bytes (192 for M2TS, which has a 4-byte prefix).
    for start, step in ((0, 188), (4, 192)):
        syncs = [start + k * step for k in range(3) if start + k * step < len(head)]
        if len(syncs) >= 2 and all(head[i] == 0x47 for i in syncs):
            return "MPEG-TS"
    return None


def _image_magic(head: bytes) -> str | None:
    """Name of the image/document format ``head`` starts with, else None."""
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic) and (name != "WEBP" or head[8:12] == b"WEBP"):
            return name
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # BMP: reserved words zero
        return "BMP"
    return None


def _as_text(head: bytes) -> str | None:
    """Decode ``head`` when it looks like a text file, else None."""
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"),
                     (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom):].decode(enc, "replace")
    if b"\x00" in head:
        return None
    text = head.decode("utf-8", "replace")
    bad = sum(1 for ch in text if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\r\n\f"))
    if bad > max(2, len(text) // 50):
        text = head.decode("latin-1")
        bad = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f")
    return text if bad <= max(2, len(text) // 50) else None


def _indirection(text: str) -> str | None:
    """What kind of playlist/manifest/URL list ``text`` is, or None."""
    for pattern, what in _INDIRECTION:
        if pattern.search(text):
            return what
    match = _URL.search(text)
    if match:
        return f"a text file with a {match.group(1).lower()}: URL"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if lines and sum(1 for ln in lines if _PATH_LINE.search(ln)) * 2 >= len(lines):
        return "an M3U-style list of paths"
    return None


def sniff(path: Path, limits: Limits = Limits()) -> None:
    """Checks done before any ffmpeg process runs, judged by content, never by extension.

    Args:
        path: the file to check.
        limits: for ``max_file_bytes``.

    Raises:
        IngestError: ``io_error`` (missing, unreadable, not a regular file), ``empty_file``,
            ``too_large``, ``unsafe_input`` (playlists, manifests, URL indirections), or
            ``not_a_video`` (other text, known image/document magics). Stage ``scan``.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise IngestError("io_error", f"{path} is not a regular file", "scan")
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except IngestError:
        raise
    except OSError as e:
        raise IngestError("io_error", f"cannot read {path}: {e.strerror or e}", "scan") from e
    if st.st_size == 0:
        raise IngestError("empty_file", f"{path} has zero bytes", "scan")
    if st.st_size > limits.max_file_bytes:
        raise IngestError("too_large", f"{path} is {st.st_size} bytes, above the limit of "
                          f"{limits.max_file_bytes}", "scan")
    image = _image_magic(head)
    if image:
        raise IngestError("not_a_video", f"{path} is a {image} file, not a video", "scan")
    if container_magic(head, st.st_size):
        return
    text = _as_text(head)
    if text is None:
        return  # binary without a known magic: ffprobe (with a demuxer allow-list) decides
    what = _indirection(text)
    if what:
        raise IngestError("unsafe_input", f"{path} is {what}, not a video; indirections are "
                          "never opened", "scan")
    raise IngestError("not_a_video", f"{path} is a text file ({text[:40]!r}...), not a video",
                      "scan")


# ----------------------------------------------------------------------------- validation
COVERAGE_OK = 0.98
MIN_READABLE_S = 1.0


def _progress(stdout: bytes) -> tuple[int, float | None]:
    """Last ``frame=`` and ``out_time_us=`` values of ffmpeg's ``-progress`` output."""
    frames, out_us = 0, None
    for line in stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition("=")
        if key == "frame" and value.strip().isdigit():
            frames = int(value)
        elif key == "out_time_us" and value.strip().lstrip("-").isdigit():
            out_us = int(value)
    return frames, (out_us / 1e6 if out_us is not None and out_us >= 0 else None)


def validate(path: Path, probe: ProbeResult, limits: Limits = Limits()) -> Validation:
    """One pass over the video stream: every frame decoded (``validate_mode="decode"``, the
    default: catches corrupt frames and decoder errors at ingest, ``-xerror`` stops at the
    first) or only demuxed (``"demux"``: ``-c copy``, 5-15x faster, catches truncation only;
    decode errors then surface when features are extracted).

    Args:
        path: the file (already probed).
        probe: its :class:`~tasks.shared.media.ProbeResult`.
        limits: ``max_duration_s`` caps the pass (``-t``), ``validate_timeout_s`` its wall time.

    Returns:
        a :class:`Validation` (``ok`` or ``partial``, rule in :mod:`tasks.shared.media`).

    Raises:
        IngestError: ``too_long``, ``decode_failed`` (less than 1 s readable), ``timeout``;
            stage ``validate``.
    """
    tools = find_tools()
    cap = limits.max_duration_s + 1
    args = [tools.ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-xerror",
            *input_args(path, limits), "-map", f"0:{probe.video_index}",
            *(["-c", "copy"] if limits.validate_mode == "demux" else ["-fps_mode", "passthrough"]),
            "-t", f"{cap:g}", "-f", "null", "-", "-progress", "pipe:1", "-nostats"]
    run = run_tool(args, timeout_s=limits.validate_timeout_s, path=path, stage="validate",
                   limits=limits)
    if run.returncode < 0:  # killed by a signal (memory limit, OOM): not a data problem
        raise IngestError("decode_failed", f"ffmpeg was killed by signal {-run.returncode} "
                          f"while reading {path}", "validate")
    frames, out_time = _progress(run.stdout)
    if frames == 0 or out_time is None:
        raise IngestError("decode_failed", f"no video packet could be read from {path} "
                          f"(exit {run.returncode}: {run.first_error()})", "validate")
    # out_time is the last *dts* muxed, plus its duration when the demuxer knows it: it lags
    # the true end by up to the B-frame delay and one frame. Add back at most 4 frame periods,
    # and only as far as the packet count supports (VFR can't be overestimated by more).
    frame_s = 1.0 / probe.fps if probe.fps and probe.fps > 0 else 0.0
    measured = max(out_time, min(frames * frame_s, out_time + 4 * frame_s))
    if probe.duration_s and measured > probe.duration_s >= out_time:
        measured = probe.duration_s
    if measured > limits.max_duration_s:
        raise IngestError("too_long", f"{path} runs past {measured:.1f} s (read until the cap), "
                          f"above the limit of {limits.max_duration_s:g} s", "validate")
    if probe.nb_frames:
        coverage, basis = frames / probe.nb_frames, f"{frames} of {probe.nb_frames} frames"
    elif probe.duration_s:
        coverage = measured / probe.duration_s
        basis = f"{measured:.2f} of {probe.duration_s:.2f} s"
    else:
        coverage, basis = 1.0, f"{measured:.2f} s (no duration in the header)"
    errors = run.first_error() if run.returncode != 0 or run.stderr.strip() else ""
    if coverage >= COVERAGE_OK:
        detail = f"error near the end ignored: {errors}" if errors else ""
        return Validation("ok", round(measured, 3), frames, detail)
    if measured < MIN_READABLE_S:
        raise IngestError("decode_failed", f"only {measured:.2f} s of {path} is readable "
                          f"({basis}; {errors or 'clean end of data'})", "validate")
    why = errors or "the data ends early, or the header claims more than the file holds"
    detail = f"read {basis} ({coverage:.0%}): {why}"
    return Validation("partial", round(measured, 3), frames, detail)


def frame_cap(start_s: float, end_s: float | None, fps: float, limits: Limits) -> int:
    """How many samples ``[start_s, end_s)`` at ``fps`` may hold (half-open, capped)."""
    span = (end_s if end_s is not None else limits.max_duration_s + 1) - start_s
    return max(0, math.ceil(span * fps - 1e-9))
