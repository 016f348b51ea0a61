"""Index folders: layout, verification before use, and reading the published pointer.

:func:`load_index` refuses a folder whose manifest, file sizes and hashes, FAISS header or
identity (encoder, model run, level, d) do not match, raising :class:`IndexCorrupt` or
:class:`IndexMismatch` with a message naming the file and what differed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.retrieval.index_spec import set_search_params
from warehouse.atomic import TMP_PREFIX, sha256_file

MANIFEST_FORMAT = 1
METRIC = "inner_product"
FILES = ("index.faiss", "ids.parquet")
POINTER = "current.json"
REBUILD_HINT = "rebuild it with `videobert index --rebuild`"
IDS_SCHEMA = pa.schema([("row", pa.int64()), ("item_id", pa.string()), ("video_id", pa.string())])


class IndexRefused(RuntimeError):
    """An index folder that must not be used; the message names the file and the mismatch."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}; {REBUILD_HINT}")
        self.path = Path(path)
        self.reason = reason


class IndexCorrupt(IndexRefused):
    """Missing, truncated or altered files, or a FAISS header that disagrees with the manifest."""


class IndexMismatch(IndexRefused):
    """An intact index built for another encoder, model run, level or dimension."""


def group_dir(dest_root: Path, encoder: str, model_run: str, level: str) -> Path:
    """The folder holding the index builds and ``current.json`` of one (encoder, run, level)."""
    parts = []
    for name, value in (("encoder", encoder), ("model_run", model_run), ("level", level)):
        safe = re.sub(r"[^A-Za-z0-9._=+-]", "_", value)
        if safe in ("", ".", "..") or safe.startswith(TMP_PREFIX):
            raise ValueError(f"{name} {value!r} cannot name an index folder")
        parts.append(safe)
    return Path(dest_root).joinpath(*parts)


@dataclass
class LoadedIndex:
    """A verified index in memory with its row -> item id map."""

    folder: Path
    manifest: dict[str, Any]
    index: Any
    item_ids: np.ndarray
    video_ids: np.ndarray

    @property
    def d(self) -> int:
        """Vector dimension."""
        return int(self.manifest["d"])

    @property
    def ntotal(self) -> int:
        """Vectors in the index."""
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        """flat, hnsw, ivf or ivfpq."""
        return str(self.manifest["kind"])

    def set_search_params(self, **params: int) -> None:
        """Override ``efSearch`` (HNSW) or ``nprobe`` (IVF) for later searches."""
        set_search_params(self.index, params)

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query.

        Args:
            queries: (q, d) or (d,) vectors; normalised here so scores are cosines.
            k: results per query.

        Returns:
            ``(scores (q, k) float32, rows (q, k) int64)``, best first; ``-1`` where fewer
            than k results exist.
        """
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if q.shape[1] != self.d:
            raise ValueError(f"queries have dimension {q.shape[1]}, the index {self.d}")
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        q = np.ascontiguousarray(q / np.where(norms > 0, norms, 1.0))
        return self.index.search(q, int(k))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k warehouse item ids per query.

        Args:
            queries: (q, d) or (d,) vectors.
            k: results per query.

        Returns:
            ``(scores (q, k) float32, item_ids (q, k) object)``; None where fewer than k exist.
        """
        scores, rows = self.search_rows(queries, k)
        ids = np.where(rows >= 0, self.item_ids[np.clip(rows, 0, None)], None)
        return scores, ids


def read_manifest_json(folder: Path) -> Any:
    """The parsed ``manifest.json`` of an index folder (FAISS or lexical).

    Raises:
        IndexCorrupt: missing or unreadable.
    """
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise IndexCorrupt(path, "manifest.json is missing") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexCorrupt(path, f"manifest.json is unreadable ({e})") from e


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    m = read_manifest_json(folder)
    need = ("format", "index_id", "kind", "type", "d", "ntotal", "metric", "files", "params",
            "encoder", "model_run", "level")
    missing = [k for k in need if not isinstance(m, dict) or k not in m]
    if missing:
        raise IndexCorrupt(path, f"manifest.json lacks {missing}")
    if m["format"] != MANIFEST_FORMAT or m["metric"] != METRIC:
        raise IndexCorrupt(path, f"manifest format {m['format']!r} / metric {m['metric']!r} "
                                 f"unsupported (expected {MANIFEST_FORMAT} / {METRIC})")
    if not isinstance(m["files"], dict) or not all(isinstance(m["files"].get(n), dict)
                                                   for n in FILES):
        raise IndexCorrupt(path, f"manifest.json must list {FILES} under files")
    return m


def _check_expect(folder: Path, m: Mapping[str, Any], expect: Mapping[str, Any] | None) -> None:
    allowed = ("encoder", "model_run", "level", "d", "kind", "type")
    for key, want in (expect or {}).items():
        if key not in allowed:
            raise ValueError(f"cannot expect {key!r}; expected keys are {allowed}")
        if want is not None and m[key] != want:
            raise IndexMismatch(folder / "manifest.json",
                                f"index built for {key}={m[key]!r}, expected {want!r}")


def check_file(folder: Path, name: str, entry: Mapping[str, Any], check_sha: bool) -> None:
    """``folder/name`` exists with the manifest's size (and sha256 when ``check_sha``)."""
    path = folder / name
    if not path.is_file():
        raise IndexCorrupt(path, f"{name} is missing")
    size = path.stat().st_size
    if size != entry.get("bytes"):
        raise IndexCorrupt(path, f"{name} has {size} bytes, manifest.json says "
                                 f"{entry.get('bytes')} (truncated or replaced)")
    if check_sha and sha256_file(path) != entry.get("sha256"):
        raise IndexCorrupt(path, f"{name} sha256 differs from manifest.json (altered file)")


def load_index(folder: Path, expect: Mapping[str, Any] | None = None, *,
               check_sha256: bool = True) -> LoadedIndex:
    """Verify an index folder and load it with its search parameters set.

    Checks, in order: ``manifest.json`` exists, parses and has every field; ``expect`` (any
    of encoder, model_run, level, d, kind, type) matches; both files exist with the recorded
    size and sha256; ``ids.parquet`` has rows ``0..ntotal-1``; the FAISS file reads and its
    d, ntotal and metric equal the manifest's.

    Args:
        folder: the index folder.
        expect: identity the caller requires; None values are not checked.
        check_sha256: hash both files (the default; skip only for a folder just verified).

    Returns:
        The :class:`LoadedIndex`.

    Raises:
        IndexCorrupt: damaged or inconsistent files. IndexMismatch: wrong identity.
    """
    folder = Path(folder)
    m = _read_manifest(folder)
    _check_expect(folder, m, expect)
    for name in FILES:
        check_file(folder, name, m["files"][name], check_sha256)
    try:
        ids = pq.read_table(folder / "ids.parquet", columns=list(IDS_SCHEMA.names))
        index = faiss.read_index(str(folder / "index.faiss"))
    except (RuntimeError, OSError, pa.ArrowException) as e:
        raise IndexCorrupt(folder, f"cannot read the index files ({e})") from e
    rows = ids.column("row").to_numpy()
    if len(rows) != m["ntotal"] or not np.array_equal(rows, np.arange(len(rows))):
        raise IndexCorrupt(folder / "ids.parquet", f"ids.parquet has {len(rows)} rows, not "
                                                   f"rows 0..{m['ntotal'] - 1}")
    for what, got in (("d", index.d), ("ntotal", index.ntotal)):
        if got != m[what]:
            raise IndexCorrupt(folder / "index.faiss", f"index.faiss has {what}={got} but "
                                                       f"manifest.json says {what}={m[what]}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise IndexCorrupt(folder / "index.faiss", "index.faiss is not an inner-product index")
    set_search_params(index, m["params"])
    return LoadedIndex(folder=folder, manifest=m, index=index,
                       item_ids=np.asarray(ids.column("item_id").to_pylist(), dtype=object),
                       video_ids=np.asarray(ids.column("video_id").to_pylist(), dtype=object))


def _read_pointer(pointer: Path) -> str | None:
    try:
        return str(json.loads(pointer.read_text(encoding="utf-8"))["folder"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def current_index(dest_root: Path, encoder: str, model_run: str, level: str) -> Path | None:
    """The published folder of a group, or None when nothing was published yet."""
    group = group_dir(dest_root, encoder, model_run, level)
    name = _read_pointer(group / POINTER)
    return group / name if name else None


def load_current(dest_root: Path, encoder: str, model_run: str, level: str, *,
                 d: int | None = None, attempts: int = 3) -> LoadedIndex:
    """Load and verify the published index of (encoder, model run, level).

    A publish that lands between reading the pointer and opening the files is retried.

    Args:
        dest_root: the indices root.
        encoder: required encoder.
        model_run: required model run.
        level: required level.
        d: required dimension, when known.
        attempts: pointer reads before giving up.

    Returns:
        The :class:`LoadedIndex`.

    Raises:
        FileNotFoundError: nothing published. IndexRefused: the published index is unusable.
    """
    expect = {"encoder": encoder, "model_run": model_run, "level": level, "d": d}
    for attempt in range(attempts):
        folder = current_index(dest_root, encoder, model_run, level)
        if folder is None:
            raise FileNotFoundError(f"no published index for encoder={encoder!r} "
                                    f"model_run={model_run!r} level={level!r} under "
                                    f"{dest_root}; build one with `videobert index`")
        try:
            return load_index(folder, expect)
        except IndexCorrupt:
            moved = current_index(dest_root, encoder, model_run, level) != folder
            if not moved or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")
