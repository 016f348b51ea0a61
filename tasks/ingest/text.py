"""The text side of videos: subtitle sidecars (SRT, WebVTT) and caption manifests (JSONL, CSV).

THE WRITTEN RULE for broken input
=================================
Nothing is dropped silently: every repair or drop is counted by name in ``ParsedText.problems``
(manifests: one :class:`ManifestRowError` per bad row, with its line number).

Decoding (:func:`decode_text`): a UTF-8 / UTF-16 LE / UTF-16 BE byte-order mark wins and is
stripped; then BOM-less UTF-16 (recognised by its NUL-byte pattern), strict UTF-8, cp1252 and
finally latin-1, which never fails. CRLF and CR become LF.

Parsing (blocks are separated by blank lines; a timing line is ``A --> B`` where each side is
``[-][H+:]MM:SS[,.]f`` with 0-3 fraction digits read as a decimal fraction, ``,5`` = 500 ms):

* ``malformed_block``: a block with no parsable timing line is skipped.
* ``stray_text``: lines before a block's timing line other than its index (SRT: a number) or
  identifier (VTT: one line of any text) are ignored.
* ``missing_blank_line``: a block holding several timing lines is split into several cues (a
  numeric line just before a timing line is that cue's index, not text).
* ``missing_header``: a .vtt without a ``WEBVTT`` first line is still parsed.
* ``vtt_in_srt_file``: a .srt whose content starts with ``WEBVTT`` is parsed as WebVTT.
* VTT NOTE/STYLE/REGION blocks are not problems; they are counted in ``n_skipped_blocks``.

Normalisation (:func:`normalize_cues`). A cue is dropped under the FIRST rule that matches,
counted once; cues that survive may be repaired (each repair counted):

1. ``non_finite_time``: start or end is NaN or infinite -> dropped.
2. ``negative_time_dropped``: a negative timestamp and end <= 0 -> dropped.
3. ``end_not_after_start``: end <= start -> dropped.
4. ``empty_text``: no text left after cleaning -> dropped.
5. ``after_video_end``: start >= duration_s -> dropped (only when the duration is known).
6. ``negative_time_clamped``: start < 0 < end -> start set to 0.
7. ``end_clamped_to_duration``: end > duration_s -> end set to duration_s.
8. ``duplicate``: same (start, end, text) as an earlier cue -> dropped.
9. ``overlapping``: a cue starting before an earlier cue ends is KEPT (two speakers are
   legitimate) and counted.

Output is sorted by (start, end, index). A subtitle is rejected whole with
``IngestError('subtitle_unreadable', stage='text')`` only when it is empty (or whitespace), larger
than :data:`MAX_SUBTITLE_BYTES`, or parsing yields no cue at all (binary garbage, an image renamed
.srt, a header-only WebVTT). A file with at least one parsed cue is never rejected, even when
normalisation then drops every cue (e.g. all after the end of the video).

Caption manifests (:func:`read_caption_manifest`): each malformed row becomes one
``ManifestRowError`` (code ``manifest_row_invalid``) naming its 1-based physical line; the other
rows are kept. The file is rejected whole (``IngestError('manifest_invalid', stage='manifest')``)
only when it cannot be a manifest at all: not UTF-8/UTF-16 text, larger than
:data:`MAX_MANIFEST_BYTES`, not named .jsonl/.csv, a CSV whose header row is missing, badly
quoted, repeats a column or lacks path,start,end,text, or a .jsonl in which no line is a JSON
object. A CSV row with bad quoting or the wrong field count is one row error (its message gives
the physical lines it spans). Paths are NOT resolved here.
"""

from __future__ import annotations

import codecs
import html
import math
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tasks.shared.errors import IngestError

MAX_SUBTITLE_BYTES = 20 * 1024 * 1024
MAX_MANIFEST_BYTES = 200 * 1024 * 1024
SUBTITLE_EXTENSIONS = frozenset({".srt", ".vtt", ".webvtt"})
MANIFEST_EXTENSIONS = frozenset({".jsonl", ".csv"})
_FORMATS = {".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt", ".jsonl": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Cue:
    """One subtitle cue; ``index`` is its 0-based position in the source, ``line`` the 1-based
    line of its timing line (0 if not applicable)."""

    start_s: float
    end_s: float
    text: str
    index: int
    line: int = 0


@dataclass
class ParsedText:
    """A parsed subtitle: cues plus counted problems (zero counts omitted)."""

    format: str
    encoding: str
    cues: list[Cue] = field(default_factory=list)
    problems: dict[str, int] = field(default_factory=dict)
    n_blocks: int = 0
    n_skipped_blocks: int = 0

    def count(self, problem: str, n: int = 1) -> None:
        """Add ``n`` to the counter of ``problem``."""
        _count(self.problems, problem, n)


def _count(problems: dict[str, int], name: str, n: int = 1) -> None:
    if n:
        problems[name] = problems.get(name, 0) + n


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------- decoding
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "utf-16-be"),
)


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _guess_utf16(data: bytes) -> str | None:
    """BOM-less UTF-16 of mostly-ASCII text: NUL bytes on one side of each code unit."""
    head = data[:4096]
    if len(head) < 4 or len(data) % 2 or b"\x00" not in head:
        return None
    even, odd, half = head[0::2].count(0), head[1::2].count(0), len(head) // 2
    if odd > 0.3 * half and odd > 3 * even:
        return "utf-16-le"
    if even > 0.3 * half and even > 3 * odd:
        return "utf-16-be"
    return None


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode subtitle bytes; never fails.

    Args:
        data: raw file content.

    Returns:
        ``(text, encoding)``: text with LF line ends and no BOM; encoding is one of
        ``utf-8-sig``, ``utf-16-le``, ``utf-16-be``, ``utf-8``, ``cp1252``, ``latin-1``.
    """
    for bom, name, codec in _BOMS:
        if data.startswith(bom):
            return _newlines(data[len(bom):].decode(codec, errors="replace")), name
    guess = _guess_utf16(data)
    for codec in ([guess] if guess else []) + ["utf-8", "cp1252"]:
        try:
            return _newlines(data.decode(codec)), codec
        except UnicodeDecodeError:
            continue
    return _newlines(data.decode("latin-1")), "latin-1"


def _decode_strict(data: bytes) -> str | None:
    """BOM-honouring strict decode for manifests (UTF-8 / UTF-16); None when undecodable."""
    for bom, _name, codec in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom):], codec
            break
    else:
        encoding = "utf-8"
    try:
        return _newlines(data.decode(encoding))
    except UnicodeDecodeError:
        return None


# ------------------------------------------------------------------------------------ parsing
_TS = r"(-?)(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,3}))?"
_TIMING_RE = re.compile(rf"^\s*{_TS}\s*-->\s*{_TS}(?:\s.*)?$")
_TAG_RE = re.compile(r"</?[A-Za-z][^<>\n]*>|</>|<\d+(?::\d+)*(?:[.,]\d+)?>")
_ASS_RE = re.compile(r"\{\\[^{}]*\}")
_WS_RE = re.compile(r"\s+")
_INDEX_RE = re.compile(r"^\s*\d+\s*$")
_VTT_HEADER_RE = re.compile(r"^WEBVTT(?:[ \t].*)?$")
_VTT_SKIP_RE = re.compile(r"^(NOTE|STYLE|REGION)(?:[ \t].*)?$")

_Block = list[tuple[int, str]]


def _seconds(sign: str, hours: str | None, mins: str, secs: str, frac: str | None) -> float:
    millis = ((int(hours or 0) * 60 + int(mins)) * 60 + int(secs)) * 1000
    millis += int((frac or "0").ljust(3, "0"))
    return -millis / 1000 if sign else millis / 1000


def parse_timing(line: str) -> tuple[float, float] | None:
    """Parse ``A --> B`` (SRT or VTT style, settings after B ignored); None if not a timing."""
    m = _TIMING_RE.match(line)
    if m is None:
        return None
    g = m.groups()
    return _seconds(*g[:5]), _seconds(*g[5:])


def clean_text(lines: Iterable[str]) -> str:
    """Strip tags, ASS overrides and entities; join lines with a space; collapse whitespace."""
    joined = _ASS_RE.sub("", _TAG_RE.sub("", " ".join(lines)))
    return _WS_RE.sub(" ", html.unescape(joined)).strip()


def _split_blocks(text: str) -> list[_Block]:
    blocks: list[_Block] = []
    current: _Block = []
    for number, line in enumerate(_newlines(text.removeprefix("\ufeff")).split("\n"), 1):
        if line.strip():
            current.append((number, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _parse_block(block: _Block, fmt: str, out: ParsedText) -> None:
    """Turn one block into zero or more cues (see the written rule)."""
    timed = [(i, t) for i, (_, line) in enumerate(block) if (t := parse_timing(line)) is not None]
    if not timed:
        out.count("malformed_block")
        return
    if len(timed) > 1:
        out.count("missing_blank_line")
    lead = timed[0][0]
    has_id = lead > 0 and (fmt == "vtt" or _INDEX_RE.match(block[lead - 1][1]) is not None)
    if lead > int(has_id):
        out.count("stray_text")
    for k, (pos, (start, end)) in enumerate(timed):
        stop = timed[k + 1][0] if k + 1 < len(timed) else len(block)
        body = [line for _, line in block[pos + 1 : stop]]
        if k + 1 < len(timed) and body and _INDEX_RE.match(body[-1]):
            body.pop()
        out.cues.append(Cue(start, end, clean_text(body), len(out.cues), block[pos][0]))


def parse_srt(text: str) -> ParsedText:
    """Tolerantly parse SubRip text (already decoded).

    Args:
        text: the file content (a leading BOM and CR/CRLF line ends are tolerated).

    Returns:
        A :class:`ParsedText` with cues in source order (not yet normalised); ``encoding`` is
        empty (set by :func:`parse_subtitle_bytes`).
    """
    out = ParsedText("srt", "")
    blocks = _split_blocks(text)
    out.n_blocks = len(blocks)
    for block in blocks:
        _parse_block(block, "srt", out)
    return out


def _skippable(block: _Block, out: ParsedText) -> _Block | None:
    """For a VTT header/NOTE/STYLE/REGION block: the cue lines it swallowed (missing blank line)."""
    for i, (_, line) in enumerate(block):
        if parse_timing(line) is not None:
            out.count("missing_blank_line")
            return block[i:]
    return None


def parse_vtt(text: str) -> ParsedText:
    """Tolerantly parse WebVTT text (already decoded).

    Args:
        text: the file content (a leading BOM and CR/CRLF line ends are tolerated).

    Returns:
        A :class:`ParsedText` with cues in source order (not yet normalised).
    """
    out = ParsedText("vtt", "")
    blocks = _split_blocks(text)
    out.n_blocks = len(blocks)
    if not blocks or not _VTT_HEADER_RE.match(blocks[0][0][1].strip()):
        out.count("missing_header")
    for i, block in enumerate(blocks):
        first = block[0][1].strip()
        is_header = i == 0 and _VTT_HEADER_RE.match(first) is not None
        if is_header or _VTT_SKIP_RE.match(first):
            out.n_skipped_blocks += 0 if is_header else 1
            rest = _skippable(block, out)
            if rest is None:
                continue
            block = rest
        _parse_block(block, "vtt", out)
    return out


# ------------------------------------------------------------------------------ normalisation
def _drop_reason(cue: Cue, duration_s: float | None) -> str | None:
    start, end = cue.start_s, cue.end_s
    if not (math.isfinite(start) and math.isfinite(end)):
        return "non_finite_time"
    if (start < 0 or end < 0) and end <= 0:
        return "negative_time_dropped"
    if end <= start:
        return "end_not_after_start"
    if not cue.text.strip():
        return "empty_text"
    if duration_s is not None and start >= duration_s:
        return "after_video_end"
    return None


def normalize_cues(
    cues: list[Cue], duration_s: float | None, problems: dict[str, int]
) -> list[Cue]:
    """Apply THE WRITTEN RULE (module docstring) to parsed cues, counting into ``problems``.

    Args:
        cues: cues as parsed.
        duration_s: video duration in seconds, or None when unknown (no end checks).
        problems: counters to update in place (zero counts never added).

    Returns:
        The kept (possibly clamped) cues sorted by (start, end, index).

    Raises:
        ValueError: ``duration_s`` is not a positive finite number.
    """
    if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive finite number, got {duration_s!r}")
    kept: list[Cue] = []
    for cue in cues:
        reason = _drop_reason(cue, duration_s)
        if reason is not None:
            _count(problems, reason)
            continue
        if cue.start_s < 0:
            _count(problems, "negative_time_clamped")
            cue = replace(cue, start_s=0.0)
        if duration_s is not None and cue.end_s > duration_s:
            _count(problems, "end_clamped_to_duration")
            cue = replace(cue, end_s=float(duration_s))
        kept.append(cue)
    kept.sort(key=lambda c: (c.start_s, c.end_s, c.index))
    result: list[Cue] = []
    seen: set[tuple[float, float, str]] = set()
    max_end = -math.inf
    for cue in kept:
        key = (cue.start_s, cue.end_s, cue.text)
        if key in seen:
            _count(problems, "duplicate")
            continue
        seen.add(key)
        if cue.start_s < max_end:
            _count(problems, "overlapping")
        max_end = max(max_end, cue.end_s)
        result.append(cue)
    return result


# --------------------------------------------------------------------------------- file entry
_PARSERS: dict[str, Callable[[str], ParsedText]] = {
    "srt": parse_srt, "vtt": parse_vtt, "webvtt": parse_vtt,
}


def parse_subtitle_bytes(data: bytes, fmt: str, duration_s: float | None = None) -> ParsedText:
    """Decode, parse and normalise one subtitle.

    Args:
        data: raw bytes of the file or stream.
        fmt: ``srt`` or ``vtt`` (``webvtt`` accepted).
        duration_s: video duration for the end-of-video rules, or None.

    Returns:
        The :class:`ParsedText` with normalised cues, ``encoding`` set.

    Raises:
        IngestError: ``subtitle_unreadable`` (stage ``text``) when empty or without any cue.
        ValueError: unknown ``fmt``.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in _PARSERS:
        raise ValueError(f"unknown subtitle format {fmt!r} (expected 'srt' or 'vtt')")
    if not data:
        raise IngestError("subtitle_unreadable", "empty subtitle (0 bytes)", stage="text")
    text, encoding = decode_text(data)
    if not text.strip():
        raise IngestError("subtitle_unreadable",
                          f"subtitle holds only whitespace ({len(data)} bytes)", stage="text")
    mismatch = fmt == "srt" and text.lstrip().startswith("WEBVTT")
    parsed = _PARSERS["vtt" if mismatch else fmt](text)
    if mismatch:
        parsed.count("vtt_in_srt_file")
    if not parsed.cues:
        raise IngestError(
            "subtitle_unreadable",
            f"no parsable cue in {parsed.n_blocks} block(s) of {len(data)} bytes "
            f"(decoded as {encoding}); starts with {_short(text[:40])}",
            stage="text",
        )
    parsed.encoding = encoding
    parsed.cues = normalize_cues(parsed.cues, duration_s, parsed.problems)
    return parsed


def _read_capped(path: Path, limit: int, code: str, stage: str) -> bytes:
    """Read a regular file of at most ``limit`` bytes, mapping failures to IngestError."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise IngestError("io_error", f"{path.name!r} is not a regular file", stage=stage)
        if info.st_size > limit:
            raise IngestError(code, f"{path.name!r} is too big: {info.st_size} bytes "
                              f"(limit {limit})", stage=stage)
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise IngestError("io_error", f"cannot read {path.name!r}: {exc.strerror or exc}",
                          stage=stage) from exc
    if len(data) > limit:
        raise IngestError(code, f"{path.name!r} is too big: over {limit} bytes", stage=stage)
    return data


def sidecar_format(path: Path) -> str | None:
    """``srt``, ``vtt``, ``jsonl`` or ``csv`` by (case-insensitive) extension, else None."""
    return _FORMATS.get(path.suffix.lower())


def parse_subtitle_file(path: Path, duration_s: float | None = None) -> ParsedText:
    """Read and parse a subtitle file, choosing the format by extension.

    Args:
        path: a ``.srt``, ``.vtt`` or ``.webvtt`` file.
        duration_s: video duration for the end-of-video rules, or None.

    Returns:
        The normalised :class:`ParsedText`.

    Raises:
        IngestError: ``io_error`` when unreadable; ``subtitle_unreadable`` when not a subtitle
            extension, too big, empty or without any cue (all stage ``text``).
    """
    fmt = sidecar_format(path)
    if fmt not in ("srt", "vtt"):
        raise IngestError("subtitle_unreadable",
                          f"{path.name!r} has no subtitle extension (.srt, .vtt)", stage="text")
    return parse_subtitle_bytes(_read_capped(path, MAX_SUBTITLE_BYTES, "subtitle_unreadable",
                                             "text"), fmt, duration_s)


# ----------------------------------------------------------------------------------- sidecars
_LANG_RE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
_MODIFIERS = frozenset({"forced", "sdh", "cc", "default", "full"})


def _sidecar_tags(video: Path, sub: Path) -> list[str] | None:
    """Tags between the video's stem (or full name) and the subtitle extension; None: no match."""
    if sub.suffix.lower() not in SUBTITLE_EXTENSIONS or sub.parent != video.parent:
        return None
    stem = sub.name[: -len(sub.suffix)]
    for base in (video.stem, video.name):
        if stem == base:
            return []
        if stem.startswith(base + "."):
            parts = stem[len(base) + 1 :].split(".")
            if len(parts) <= 3 and all(
                p.lower() in _MODIFIERS or _LANG_RE.fullmatch(p) for p in parts
            ):
                return parts
    return None


def match_sidecars(video: Path, candidates: Iterable[Path]) -> list[Path]:
    """Subtitle sidecars of ``video`` among ``candidates``.

    A sidecar sits in the same folder (paths compared as given) and is named ``<stem>.<ext>``,
    ``<stem>.<tags>.<ext>`` or ``<video name>[.<tags>].<ext>`` where tags are up to three
    language tags (``en``, ``pt-BR``) or modifiers (``forced``, ``sdh``, ``cc``, ``default``).
    Stems compare case-sensitively, extensions case-insensitively.

    Args:
        video: the video file.
        candidates: any paths (non-subtitles are ignored).

    Returns:
        The matching subtitle paths, sorted.
    """
    return sorted({c for c in candidates if c != video and _sidecar_tags(video, c) is not None})


def sidecar_language(video: Path, sub: Path) -> str | None:
    """The language tag of sidecar ``sub`` (``talk.forced.en.srt`` -> ``en``), else None."""
    tags = _sidecar_tags(video, sub) or []
    langs = [t for t in tags if t.lower() not in _MODIFIERS]
    return langs[-1] if langs else None
