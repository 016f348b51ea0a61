"""Search by what is said: a BM25 index over each clip's words, and its fusion with dense search.

A *document* is one (clip, text segment) pair that overlap in time: the segment's words said
inside the clip (speech recognised with word times keeps only those words; a subtitle cue or
caption gives its whole text to every clip it overlaps), and each clip's caption from the
newest caption model (``generated_captions``), so a clip where nothing is said is found by what
the model says it shows. A clip's lexical score is the best
score of its documents. BM25 is ``bm25s`` (Lucene's variant, k1 1.5, b 0.75) over lower-cased
words with English stop words removed and Snowball stemming (PyStemmer), so "explains" finds
"explained".

The index lives beside the FAISS ones, ``HOME/indices/lexical/bm25/clip/<index_id>/``:
bm25s' files, ``docs.parquet`` (row -> clip, video, segment, text) and ``manifest.json`` with
every file's size and sha256, the warehouse parts it was built from, and the hybrid weights
tuned on validation. It is rebuilt, not extended (bm25s has no in-place add; 100k clips take
seconds), and published atomically like the FAISS indices. :func:`load_lexical` refuses a
folder whose files were altered (:class:`~tasks.retrieval.index_load.IndexCorrupt`);
:func:`check_fresh` refuses an index built from text the warehouse no longer has (a subtitle
edited or removed since: :class:`LexicalStale`); text added since only makes it incomplete.

Hybrid search fuses the two rankings' scores: ``(1 - w) x dense + w x lexical``, the dense
cosine min-max normalised over the candidates, the BM25 score divided by the query's best
(0 for a clip without a match). ``w`` is tuned on the validation split per dense encoder and
stored in the manifest (:data:`DEFAULT_WEIGHT` until there is one).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.retrieval.index import publish_index
from tasks.retrieval.index_load import (
    IndexCorrupt,
    IndexRefused,
    check_file,
    current_index,
    group_dir,
    read_manifest_json,
)
from warehouse import queries
from warehouse.atomic import TMP_PREFIX, sha256_file
from warehouse.parquet import write_parquet_atomic

MANIFEST_FORMAT = 1
GROUP = ("lexical", "bm25", "clip")  # (encoder, model_run, level) of its index folder group
BM25_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy",
              "vocab.index.json", "params.index.json")
DOCS = "docs.parquet"
FILES = (*BM25_FILES, DOCS)
INPUT_TABLES = ("clips", "text_segments", "generated_captions")
DOCS_SCHEMA = pa.schema([("row", pa.int64()), ("clip_id", pa.string()),
                         ("video_id", pa.string()), ("segment_id", pa.string()),
                         ("text", pa.string())])
DEFAULT_WEIGHT = 0.5
WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))


class LexicalStale(IndexRefused):
    """An intact lexical index built from text the warehouse no longer holds."""


@functools.cache
def _stemmer() -> Any:
    logging.getLogger("bm25s").setLevel(logging.WARNING)  # its DEBUG lines reach the terminal
    import Stemmer

    return Stemmer.Stemmer("english")


_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # bm25s' (and scikit-learn's) default token pattern


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Words as the index sees them: lower case, bm25s' English stop words out, Snowball
    stems (bm25s' own tokenizer, without its per-call progress-bar set-up: a search
    tokenizes the query and each hit's text)."""
    stem, stop = _stemmer().stemWords, _stopwords()
    return [stem([w for w in _TOKEN.findall(t.lower()) if w not in stop]) for t in texts]


def clip_documents(con: Any, clip_ids: Iterable[str] | None = None) -> pa.Table:
    """The documents (:data:`DOCS_SCHEMA`) of every clip with text (or of ``clip_ids``)."""
    keep = None if clip_ids is None else set(clip_ids)
    rows: dict[str, list] = {n: [] for n in DOCS_SCHEMA.names}
    for clip, video, c0, c1, seg, text, source, meta, _t0 in con.execute(
            queries.load("lexical_sources")).fetchall():
        if keep is not None and clip not in keep:
            continue
        words = _words(meta) if source == "asr" else None
        if words:
            text = " ".join(w for s, e, w in words if c0 <= (s + e) / 2 < c1)
        if not text.strip():
            continue
        for name, value in zip(DOCS_SCHEMA.names, (len(rows["row"]), clip, video, seg, text),
                               strict=True):
            rows[name].append(value)
    return pa.table(rows, schema=DOCS_SCHEMA)


def _words(meta: str | None) -> list[tuple[float, float, str]] | None:
    """ASR word timings from a segment's meta_json, or None."""
    try:
        words = json.loads(meta or "{}").get("words")
        return [(float(w[0]), float(w[1]), str(w[2])) for w in words] if words else None
    except (ValueError, TypeError, IndexError, AttributeError):
        return None


def bm25_index(docs: pa.Table) -> Any:
    """A bm25s index over the documents' text."""
    import bm25s

    bm = bm25s.BM25()
    bm.index(tokenize(docs.column("text").to_pylist()), show_progress=False)
    return bm


def doc_scores(bm: Any, query_words: list[str], n_docs: int) -> np.ndarray:
    """BM25 score of every document for one tokenized query (zeros when nothing matches)."""
    vocab = bm.vocab_dict
    known = [w for w in query_words if w in vocab]
    if not known or n_docs == 0:
        return np.zeros(n_docs, np.float32)
    return np.asarray(bm.get_scores(known), np.float32)


def clip_scores(scores: np.ndarray, doc_clip: np.ndarray, n_clips: int) -> np.ndarray:
    """Per clip, the best score of its documents (``doc_clip``: each doc's clip position)."""
    out = np.zeros(n_clips, np.float32)
    np.maximum.at(out, doc_clip, scores)
    return out


def fuse(dense: np.ndarray, lexical: np.ndarray, weight: float) -> np.ndarray:
    """Hybrid scores of candidates: ``(1 - w) x`` min-max(dense) ``+ w x`` lexical / max."""
    d = np.asarray(dense, np.float32)
    lo, hi = (float(d.min()), float(d.max())) if d.size else (0.0, 0.0)
    dn = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
    lx = np.asarray(lexical, np.float32)
    top = float(lx.max()) if lx.size else 0.0
    ln = lx / top if top > 0 else np.zeros_like(lx)
    return (1.0 - weight) * dn + weight * ln


def rank_hybrid(dense: Mapping[str, float], lex: Mapping[str, tuple[float, int]],
                cosines: Callable[[list[str]], Mapping[str, float]], weight: float, k: int
                ) -> list[tuple[str, float, float]]:
    """The best ``k`` of the union of two candidate lists, by :func:`fuse`.

    Args:
        dense: clip -> cosine, the dense side's candidates.
        lex: clip -> (BM25 score, doc row), the lexical side's.
        cosines: the cosine of clips only the lexical side found (a clip with none is
            dropped: it cannot be fused).
        weight: the lexical weight.
        k: results.

    Returns:
        ``(clip, hybrid score, cosine)``, best first (ties: the higher cosine first).
    """
    cands = list(dict.fromkeys([*dense, *lex]))
    cos = dict(dense) | dict(cosines([c for c in cands if c not in dense]))
    cands = [c for c in cands if c in cos]
    d = np.asarray([cos[c] for c in cands], np.float32)
    f = fuse(d, np.asarray([lex[c][0] if c in lex else 0.0 for c in cands], np.float32), weight)
    order = sorted(range(len(cands)), key=lambda i: (-f[i], -d[i]))[:k]
    return [(cands[i], float(f[i]), float(d[i])) for i in order]


# ------------------------------------------------------------------------------ the index


@dataclass
class LexicalIndex:
    """A verified lexical index in memory."""

    folder: Path
    manifest: dict[str, Any]
    bm: Any
    docs: pa.Table

    @functools.cached_property
    def doc_clip_ids(self) -> np.ndarray:
        """Each document's clip id."""
        return np.asarray(self.docs.column("clip_id").to_pylist(), dtype=object)

    def weight(self, encoder: str, model_run: str) -> float:
        """The hybrid weight tuned for this dense (encoder, run), else the default."""
        tuned = self.manifest.get("fusion", {}).get(f"{encoder}:{model_run}")
        return float(tuned["weight"]) if tuned else DEFAULT_WEIGHT

    def search(self, query: str, pool: int) -> dict[str, tuple[float, int]]:
        """Up to ``pool`` clips for ``query``: clip id -> (best BM25 score, its doc row)."""
        scores = doc_scores(self.bm, tokenize([query])[0], self.docs.num_rows)
        hits = np.flatnonzero(scores > 0)
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        out: dict[str, tuple[float, int]] = {}
        for row in hits:
            clip = str(self.doc_clip_ids[row])
            if clip not in out:
                out[clip] = (float(scores[row]), int(row))
                if len(out) >= pool:
                    break
        return out

    def matched_words(self, query: str, row: int) -> list[str]:
        """The query's words found (stemmed) in document ``row``."""
        have = set(tokenize([str(self.docs.column("text")[row])])[0])
        words = [w for w in query.split() if w.strip()]
        stems = tokenize(words)
        return [w.strip(".,;:!?\"'()") for w, s in zip(words, stems, strict=True)
                if s and s[0] in have]


def input_parts(manifest: Mapping[str, Any]) -> dict[str, list[str]]:
    """The committed warehouse parts a lexical index reads, per input table (part names)."""
    return {t: sorted(Path(p["file"]).name for p in manifest["tables"].get(t, []))
            for t in INPUT_TABLES}


def build_lexical(con: Any, parts: Mapping[str, list[str]], dest_root: Path,
                  fusion: Mapping[str, Any] | None = None,
                  log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Build the lexical index from the warehouse behind ``con`` (whose input parts are
    ``parts``), publish it, and return its ``indices`` row (``path`` absolute)."""
    t0 = time.perf_counter()
    docs = clip_documents(con)
    bm = bm25_index(docs)
    group = group_dir(dest_root, *GROUP)
    group.mkdir(parents=True, exist_ok=True)
    tmp = group / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        bm.save(str(tmp), show_progress=False)
        write_parquet_atomic(docs, tmp / DOCS)
        files = {n: {"bytes": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)}
                 for n in FILES}
        index_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()
                                  + json.dumps(fusion or {}, sort_keys=True).encode()
                                  ).hexdigest()[:16]
        manifest = {"format": MANIFEST_FORMAT, "index_id": index_id, "kind": "bm25",
                    "n_docs": docs.num_rows,
                    "n_clips": len(set(docs.column("clip_id").to_pylist())),
                    "vocabulary": len(bm.vocab_dict), "files": files, "inputs": parts,
                    "params": {"k1": bm.k1, "b": bm.b, "method": bm.method,
                               "stopwords": "en", "stemmer": "snowball-english"},
                    "fusion": dict(fusion or {}),
                    "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        final = group / index_id
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_index(final, read_manifest=read_manifest)
    build_s = time.perf_counter() - t0
    log(f"lexical index: {manifest['n_docs']} documents of {manifest['n_clips']} clips, "
        f"{manifest['vocabulary']} words ({build_s:.1f} s)")
    return {"index_id": index_id, "encoder": GROUP[0], "model_run": GROUP[1],
            "level": GROUP[2], "index_type": "bm25", "dim": manifest["vocabulary"],
            "ntotal": manifest["n_docs"], "path": str(final),
            "sha256": files["data.csc.index.npy"]["sha256"],
            "params_json": json.dumps({"params": manifest["params"], "fusion": manifest["fusion"]}),
            "build_s": build_s,
            "built_at": dt.datetime.fromisoformat(manifest["built_at"]).replace(tzinfo=None)}


def read_manifest(folder: Path) -> dict[str, Any]:
    """A lexical index folder's manifest, checked for shape.

    Raises:
        IndexCorrupt: missing, unreadable or incomplete.
    """
    path = Path(folder) / "manifest.json"
    m = read_manifest_json(folder)
    need = ("format", "index_id", "kind", "n_docs", "files", "inputs", "fusion", "built_at")
    missing = [k for k in need if not isinstance(m, dict) or k not in m]
    if missing or m.get("kind") != "bm25" or m.get("format") != MANIFEST_FORMAT:
        raise IndexCorrupt(path, f"not a lexical index manifest (missing {missing})")
    return m


def load_lexical(folder: Path, *, check_sha256: bool = True) -> LexicalIndex:
    """Verify a lexical index folder (sizes, hashes, document count) and load it.

    Raises:
        IndexCorrupt: damaged or inconsistent files.
    """
    import bm25s

    folder = Path(folder)
    m = read_manifest(folder)
    for name in FILES:
        check_file(folder, name, m["files"].get(name) or {}, check_sha256)
    try:
        bm = bm25s.BM25.load(str(folder), show_progress=False)
        docs = pq.read_table(folder / DOCS, schema=DOCS_SCHEMA)
    except Exception as e:  # noqa: BLE001 - any read failure of verified files is corruption
        raise IndexCorrupt(folder, f"cannot read the lexical index ({e})") from e
    if docs.num_rows != m["n_docs"] or bm.scores.get("num_docs") != m["n_docs"]:
        raise IndexCorrupt(folder / DOCS, f"{docs.num_rows} documents, manifest.json says "
                                          f"{m['n_docs']}")
    return LexicalIndex(folder, m, bm, docs)


def check_fresh(lex: LexicalIndex, manifest: Mapping[str, Any]) -> list[str]:
    """Refuse an index built from warehouse parts that are gone from the committed
    ``manifest`` (text edited or removed since); returns the input parts added since (text
    not indexed yet: the next ``videobert index`` includes it).

    Raises:
        LexicalStale: a part the index was built from is no longer in the warehouse.
    """
    now = input_parts(manifest)
    added = []
    for table in INPUT_TABLES:
        gone = sorted(set(lex.manifest["inputs"].get(table, [])) - set(now[table]))
        if gone:
            raise LexicalStale(lex.folder / "manifest.json",
                               f"built from {table} parts the warehouse no longer has "
                               f"({gone[0]}{' and more' if len(gone) > 1 else ''}): its text "
                               "changed since")
        added += sorted(set(now[table]) - set(lex.manifest["inputs"].get(table, [])))
    return added


def load_current_lexical(dest_root: Path) -> LexicalIndex | None:
    """The published lexical index, verified; None when none was built yet."""
    folder = current_index(dest_root, *GROUP)
    return None if folder is None else load_lexical(folder)
