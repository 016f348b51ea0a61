"""Caption manifests: JSONL or CSV rows of ``path, start, end, text`` (+ split, language, extras).

Each malformed row becomes one :class:`ManifestRowError` with its line number (code
``manifest_row_invalid``); the whole file is rejected with ``manifest_invalid`` only when it
cannot be a manifest at all. Paths are returned exactly as written: the ingest resolves them
safely (:func:`tasks.ingest.scan.resolve_inside`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.ingest.text import (
    MAX_MANIFEST_BYTES,
    _decode_strict,
    _read_capped,
    _short,
    sidecar_format,
)
from tasks.shared.errors import IngestError

_REQUIRED = ("path", "start", "end", "text")
_KNOWN = frozenset(_REQUIRED + ("split", "language"))
_ALIASES = {"start_s": "start", "end_s": "end"}
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_MANIFEST_LANG_RE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8})*")
_CLOCK_RE = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)")
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


@dataclass
class ManifestRow:
    """One valid caption-manifest row; ``line`` is its 1-based physical line."""

    line: int
    path: str
    start_s: float
    end_s: float
    text: str
    split: str | None = None
    language: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ManifestRowError:
    """One rejected manifest row (becomes one ``ingest_errors`` row)."""

    line: int
    code: str
    message: str
    raw: str


class _RowInvalid(ValueError):
    """Internal: why one manifest row is rejected."""


def _row_error(line: int, problem: str, raw: str) -> ManifestRowError:
    return ManifestRowError(line, "manifest_row_invalid", f"line {line}: {problem}", raw[:500])


def _time_from_str(text: str) -> float | None:
    m = _CLOCK_RE.fullmatch(text)
    if m:
        mins, secs = int(m[2]), float(m[3].replace(",", "."))
        return int(m[1] or 0) * 3600 + mins * 60 + secs if mins < 60 and secs < 60 else None
    try:
        return float(text)
    except ValueError:
        return None


def _parse_time(value: Any, name: str) -> float:
    """Seconds from a number or 'HH:MM:SS(.mmm)' / 'MM:SS.mmm' / '12.5'."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _RowInvalid(f"{name} must be a number or time string, got {_short(value)}")
    if isinstance(value, str):
        secs = _time_from_str(value.strip())
        if secs is None:
            raise _RowInvalid(f"{name} {_short(value)} is not a time (seconds or HH:MM:SS.mmm)")
    else:
        try:
            secs = float(value)
        except OverflowError:
            secs = math.inf
    if not math.isfinite(secs):
        raise _RowInvalid(f"{name} {_short(value)} is not finite")
    if secs < 0:
        raise _RowInvalid(f"{name} {_short(value)} is negative")
    return secs


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _optional_str(value: Any, name: str) -> str | None:
    if _is_blank(value):
        return None
    if not isinstance(value, str):
        raise _RowInvalid(f"{name} must be a string, got {_short(value)}")
    return value.strip()


def _build_row(line: int, record: dict[str, Any]) -> ManifestRow:
    """Validate one record (JSON object or CSV row as a dict) into a ManifestRow."""
    rec: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in record.items():
        name = _ALIASES.get(key, key)
        if name not in _KNOWN:
            meta[key] = value
        elif name in rec:
            raise _RowInvalid(f"{name!r} given twice (as {key!r} and its alias)")
        else:
            rec[name] = value
    missing = [k for k in _REQUIRED if _is_blank(rec.get(k))]
    if missing:
        raise _RowInvalid(f"missing or empty {', '.join(missing)}")
    path, text = rec["path"], rec["text"]
    if not isinstance(path, str) or "\x00" in path:
        raise _RowInvalid(f"path must be a string without NUL, got {_short(path)}")
    if not isinstance(text, str):
        raise _RowInvalid(f"text must be a string, got {_short(text)}")
    start, end = _parse_time(rec["start"], "start"), _parse_time(rec["end"], "end")
    if end <= start:
        raise _RowInvalid(f"end {end:g} is not after start {start:g}")
    split = _optional_str(rec.get("split"), "split")
    if split is not None and split.lower() not in _SPLITS:
        raise _RowInvalid(f"split {_short(split)} is not one of train/val/test")
    language = _optional_str(rec.get("language"), "language")
    if language is not None and (len(language) > 35 or not _MANIFEST_LANG_RE.fullmatch(language)):
        raise _RowInvalid(f"language {_short(language)} is not a language tag")
    return ManifestRow(line, path, start, end, text.strip(),
                       _SPLITS[split.lower()] if split else None, language, meta)


def _read_jsonl(text: str, name: str) -> tuple[list[ManifestRow], list[ManifestRowError]]:
    rows: list[ManifestRow] = []
    errors: list[ManifestRowError] = []
    objects = 0
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            errors.append(_row_error(number, f"invalid JSON: {getattr(exc, 'msg', exc)}", raw))
            continue
        if not isinstance(record, dict):
            kind = _JSON_TYPES.get(type(record), type(record).__name__)
            errors.append(_row_error(number, f"expected a JSON object, got {kind}", raw))
            continue
        objects += 1
        try:
            rows.append(_build_row(number, record))
        except _RowInvalid as exc:
            errors.append(_row_error(number, str(exc), raw))
    if objects == 0:
        raise IngestError("manifest_invalid", f"{name!r}: no line is a JSON object "
                          f"({len(errors)} unparsable line(s))", stage="manifest")
    return rows, errors


def _csv_header(fields: list[str], name: str) -> list[str]:
    header = [_ALIASES.get(f.strip().lower(), f.strip().lower()) or f"column_{i + 1}"
              for i, f in enumerate(fields)]
    dupes = sorted({h for h in header if header.count(h) > 1})
    missing = [k for k in _REQUIRED if k not in header]
    if missing or dupes:
        why = f"lacks column(s) {missing}" if missing else f"repeats column(s) {dupes}"
        raise IngestError("manifest_invalid", f"{name!r}: CSV header {_short(fields, 200)} {why} "
                          "(needs path,start,end,text)", stage="manifest")
    return header


def _read_csv(text: str, name: str) -> tuple[list[ManifestRow], list[ManifestRowError]]:
    lines = text.split("\n")
    first = next((ln for ln in lines if ln.strip()), "")
    delimiter = max(",;\t", key=first.count)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[ManifestRow] = []
    errors: list[ManifestRowError] = []
    previous = 0
    while True:
        number = previous + 1
        try:
            fields: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            fields, problem = None, f"CSV error: {exc}"
        previous = reader.line_num
        raw = "\n".join(lines[number - 1 : previous])
        span = f" (spans lines {number}-{previous})" if previous > number else ""
        if fields is None and header is None:
            raise IngestError("manifest_invalid", f"{name!r}: unreadable CSV header: {problem}",
                              stage="manifest")
        if fields is None:
            errors.append(_row_error(number, problem + span, raw))
        elif not any(f.strip() for f in fields):
            continue
        elif header is None:
            header = _csv_header(fields, name)
        elif len(fields) != len(header):
            errors.append(_row_error(
                number, f"has {len(fields)} fields, header has {len(header)}{span}", raw))
        else:
            try:
                rows.append(_build_row(number, dict(zip(header, fields, strict=True))))
            except _RowInvalid as exc:
                errors.append(_row_error(number, str(exc), raw))
    if header is None:
        raise IngestError("manifest_invalid", f"{name!r}: CSV has no header row", stage="manifest")
    return rows, errors


def read_caption_manifest(path: Path) -> tuple[list[ManifestRow], list[ManifestRowError]]:
    """Read a caption manifest (.jsonl or .csv), rejecting bad rows one by one.

    Args:
        path: the manifest file. Row paths are returned exactly as given (not resolved).
            JSONL keys are case-sensitive; CSV header names are stripped and lower-cased (an
            empty one becomes ``column_<n>``). ``start_s``/``end_s`` are aliases of start/end;
            any other key or column goes to ``meta``. A CSV may use ``,``, ``;`` or tab (the
            most frequent in the header line).

    Returns:
        ``(rows, errors)``: valid rows and one :class:`ManifestRowError` per malformed row, both
        in file order.

    Raises:
        IngestError: ``manifest_invalid`` (stage ``manifest``) when the file cannot be a
            manifest at all; ``io_error`` when it cannot be read.
    """
    fmt = sidecar_format(path)
    if fmt not in ("jsonl", "csv"):
        raise IngestError("manifest_invalid", f"{path.name!r}: a caption manifest must be "
                          ".jsonl or .csv", stage="manifest")
    data = _read_capped(path, MAX_MANIFEST_BYTES, "manifest_invalid", "manifest")
    text = _decode_strict(data)
    if text is None:
        raise IngestError("manifest_invalid", f"{path.name!r} is not UTF-8/UTF-16 text",
                          stage="manifest")
    return _read_jsonl(text, path.name) if fmt == "jsonl" else _read_csv(text, path.name)
