"""``videobert search``: text -> the matching moments of the indexed videos.

The query is embedded by the live model (the promoted fine-tune run; before any promotion the
newest finished one; or the concepts baseline when no VideoBERT run exists), searched in that
run's published clip index, and each hit is joined with the warehouse: a path the video was
seen under, the clip's start and end, and the text said there. ``rerank`` re-scores the
candidates with VideoBERT's alignment head. Everything read is published and immutable, so
search works while a flow is writing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.retrieval.index_load import IndexRefused, LoadedIndex, load_current
from tasks.shared import model_runs
from tasks.shared.errors import InputError
from warehouse import queries
from warehouse.store import Warehouse


@dataclass
class Searcher:
    """A loaded query encoder and its index; reusable across queries.

    ``embed`` maps a list of queries to unit-length vectors. For VideoBERT on CPU it is the
    NumPy text tower (:mod:`models.text_numpy`, no torch import); the torch model, which the
    alignment-head re-ranking needs, is loaded on first use from ``checkpoint``.
    """

    encoder: str
    model_run: str
    index: LoadedIndex
    embed: Any
    model: Any = None
    tokenizer: Any = None
    codebook_id: str | None = None
    checkpoint: Path | None = None
    device: str = "cpu"
    mode: str = "dense"
    lexical: Any = None
    notice: str | None = None
    reader: Any = None  # a CatalogReader (tasks/retrieval/reader.py) in a long-lived process

    def torch_model(self) -> tuple[Any, Any]:
        """(VideoBert, tokenizer), loaded once; for re-ranking."""
        if self.model is None and self.checkpoint is not None:
            from models.videobert import VideoBert, text_tokenizer

            self.model = VideoBert.from_pretrained(self.checkpoint, device=self.device)
            self.tokenizer = text_tokenizer()
        return self.model, self.tokenizer


MODES = ("auto", "hybrid", "dense", "lexical")
POOL = 100  # candidates each side of a hybrid search contributes


class SearchUnavailable(InputError):
    """Nothing to search yet (no embeddings or index): the message says what to run."""


def open_searcher(home: Path, encoder: str | None = None, *, model_run: str | None = None,
                  clip_model: str | None = None, device: str = "cpu",
                  rerank: bool = False, mode: str = "auto") -> Searcher:
    """Load the query encoder, the published clip index and (``mode`` other than dense) the
    lexical index.

    ``mode``: ``auto`` is hybrid when a usable lexical index with text exists, else dense (a
    refused lexical index then leaves a ``notice``); ``hybrid`` and ``lexical`` refuse to
    run without one; ``dense`` never reads it. ``--rerank`` re-scores dense results only.
    """
    if mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if rerank and mode in ("hybrid", "lexical"):
        raise InputError("--rerank re-scores dense results: use --mode dense (or leave "
                         "--mode out)")
    s = _open_dense(home, encoder, model_run=model_run, clip_model=clip_model, device=device,
                    rerank=rerank)
    if mode == "dense" or (mode == "auto" and rerank):
        return s
    from tasks.retrieval.lexical import check_fresh, load_current_lexical

    try:
        lex = load_current_lexical(home / "indices")
        added = [] if lex is None else check_fresh(lex, Warehouse(home).manifest())
    except IndexRefused as e:
        if mode == "auto":
            s.notice = f"lexical index refused, searching by embedding only: {e}"
            return s
        raise
    if lex is None or lex.manifest["n_docs"] == 0:
        if mode == "auto":
            return s
        raise SearchUnavailable(f"no clip in {home} has text to search by words" if lex
                                else f"no lexical index in {home}: run `videobert index`")
    s.lexical, s.mode = lex, ("hybrid" if mode == "auto" else mode)
    if added:
        s.notice = (f"{len(added)} warehouse part(s) were added since the lexical index was "
                    "built: their words are found after the next `videobert index`")
    return s


def _open_dense(home: Path, encoder: str | None, *, model_run: str | None,
                clip_model: str | None, device: str, rerank: bool) -> Searcher:
    """Load the query encoder and the published clip index.

    Args:
        home: data home.
        encoder: ``videobert``, ``concepts`` or ``clip``; None = the live model, else concepts.
        model_run: a specific VideoBERT fine-tune run (default: the live one).
        clip_model: CLIP weights (folder or hub id), required for ``clip``.
        device: where the query encoder runs. On ``cpu`` VideoBERT and concepts queries are
            embedded in NumPy (same vectors, ~1e-7; a cold process skips importing torch).
        rerank: load the torch VideoBERT now too (re-ranking needs its alignment head).

    Raises:
        SearchUnavailable: when the encoder has no embeddings/index yet.
    """
    wh = Warehouse(home)
    live = None if encoder not in (None, "videobert") else (
        model_runs.one(wh, "model_run_ckpt", [model_run], published=True) if model_run
        else model_runs.one(wh, "live_run", [], published=True))
    if live is not None:
        return _videobert(home, live, device, rerank)
    if encoder == "videobert":
        raise SearchUnavailable(f"no finished VideoBERT fine-tune in {home}: run "
                                "`videobert finetune` (or `videobert run`)")
    enc = encoder or "concepts"
    ver = model_runs.one(wh, "latest_feature_version", [enc], published=True)
    if ver is None:
        raise SearchUnavailable(f"no {enc} features in {home}: run `videobert tokenize`")
    index = _load(home, enc, ver[0])
    if enc == "clip":
        if not clip_model:
            raise SearchUnavailable("--clip-model is needed to embed queries with CLIP")
        from models.clip import ClipEncoder

        clip = ClipEncoder.from_pretrained(clip_model, device=device)
        return Searcher("clip", ver[0], index, clip.encode_text)
    if device == "cpu":
        from models.text_numpy import MiniLMSentenceEncoder

        return Searcher(enc, ver[0], index, MiniLMSentenceEncoder().encode)
    from models.concepts import concepts_encoder

    return Searcher(enc, ver[0], index, concepts_encoder(device).embed_text, device=device)


def _load(home: Path, encoder: str, model_run: str) -> LoadedIndex:
    try:
        return load_current(home / "indices", encoder, model_run, "clip")
    except FileNotFoundError as e:
        raise SearchUnavailable(f"no published {encoder} clip index for {model_run} in "
                                f"{home}: run `videobert index`") from e


def _videobert(home: Path, live: tuple, device: str, rerank: bool) -> Searcher:
    run, codebook_id, ckpt, _preset = live
    index = _load(home, "videobert", run)
    s = Searcher("videobert", run, index, None, codebook_id=codebook_id,
                 checkpoint=home / ckpt, device=device)
    if device == "cpu":
        from models.text_numpy import VideoBertTextTower

        s.embed = VideoBertTextTower(home / ckpt).embed
        if rerank:
            s.torch_model()
        return s
    from tasks.retrieval.finetune import embed_texts

    model, tok = s.torch_model()
    s.embed = lambda texts: embed_texts(model, tok, texts, device=device)
    return s


def search(home: Path, s: Searcher, query: str, k: int = 10, *, rerank: bool = False,
           rerank_top: int = 20) -> list[dict[str, Any]]:
    """The top ``k`` clips for ``query``, best first, with path, times, score and text.

    Args:
        home: data home.
        s: from :func:`open_searcher`.
        query: free text.
        k: results.
        rerank: re-score the top ``rerank_top`` candidates: similarity + the model's tuned
            ``rerank_weight`` x the alignment head's log-odds (VideoBERT only; weight 1 for a
            model whose weight was never tuned).
        rerank_top: candidates re-scored.

    Returns:
        Rows ``{rank, clip_id, video_id, path, start_s, end_s, score, text}`` (plus
        ``align_logit`` and the fused ``rerank_score`` when reranked; ``score`` stays the
        similarity).
    """
    if not query.strip():
        raise InputError("empty query")
    if s.mode != "dense":
        return _details(Warehouse(home), _by_words(Warehouse(home), s, query, k), s.reader)
    if rerank and s.checkpoint is None:
        raise ValueError(f"--rerank needs a VideoBERT model; the {s.encoder} encoder has no "
                         "alignment head")
    q = np.asarray(s.embed([query]), dtype=np.float32)
    depth = min(s.index.ntotal, max(k, rerank_top if rerank else k))
    scores, ids = s.index.search(q, depth)
    hits = [(str(i), float(sc)) for i, sc in zip(ids[0], scores[0], strict=True)
            if i is not None and str(i) not in ("", "None")]
    wh = Warehouse(home)
    extra: dict[str, float] = {}
    fused: dict[str, float] = {}
    if rerank:
        extra = _align(wh, s, query, [h[0] for h in hits[:rerank_top]])
        weight = s.model.config.rerank_weight
        weight = 1.0 if weight is None else float(weight)
        fused = {c: sc + weight * extra[c] for c, sc in hits if c in extra}
        # re-scored candidates first, by fused score; the rest keep their order behind them
        hits.sort(key=lambda h: (h[0] not in fused, -fused.get(h[0], 0.0)))
    rows = []
    for clip_id, score in hits[:k]:
        row: dict[str, Any] = {"clip_id": clip_id, "score": round(score, 6)}
        if rerank:
            row["align_logit"] = round(extra.get(clip_id, float("nan")), 6)
            row["rerank_score"] = round(fused.get(clip_id, float("nan")), 6)
        rows.append(row)
    return _details(wh, rows, s.reader)


def _details(wh: Warehouse, rows: list[dict[str, Any]], reader: Any = None
             ) -> list[dict[str, Any]]:
    """Ranked hits with their video, path, times, the text said there and the generated
    caption (``""`` when none)."""
    ids = [r["clip_id"] for r in rows]
    if reader is not None:
        details = reader.details(ids)
    else:
        con = wh.connect_published()
        details = {r[0]: r for r in con.execute(queries.load("search_clip_details"),
                                                [ids]).fetchall()}
        con.close()
    out = []
    for rank, hit in enumerate(rows, 1):
        clip_id = hit["clip_id"]
        _c, video_id, start, end, path, text, caption = details.get(
            clip_id, (clip_id, None, None, None, None, None, None))
        row = {"rank": rank, "clip_id": clip_id, "video_id": video_id, "path": path,
               "start_s": start, "end_s": end, "score": hit["score"], "text": text or "",
               "caption": caption or ""}
        out.append(row | {k: v for k, v in hit.items() if k not in row})
    return out


def _by_words(wh: Warehouse, s: Searcher, query: str, k: int) -> list[dict[str, Any]]:
    """Hybrid or lexical hits: ``score`` is the cosine similarity (hybrid) or the BM25 score
    (lexical); with ``hybrid_score``, ``lexical_score``, ``dense_rank``, ``lexical_rank`` (None:
    not among that side's top :data:`POOL`) and the query's ``matched`` words."""
    from tasks.retrieval.lexical import rank_hybrid

    pool = max(k, POOL)
    lex = s.lexical.search(query, pool)
    dense: dict[str, float] = {}
    if s.mode == "hybrid":
        q = np.asarray(s.embed([query]), dtype=np.float32)
        scores, ids = s.index.search(q, min(s.index.ntotal, pool))
        dense = {str(i): float(x) for i, x in zip(ids[0], scores[0], strict=True)
                 if i is not None and str(i) not in ("", "None")}
        ranked = rank_hybrid(dense, lex, lambda cs: _cosines(wh, s, q[0], cs),
                             s.lexical.weight(s.encoder, s.model_run), k)
    else:
        ranked = [(c, None, sc) for c, (sc, _) in list(lex.items())[:k]]
    lex_rank = {c: i for i, c in enumerate(lex, 1)}
    dense_rank = {c: i for i, c in enumerate(dense, 1)}
    rows = []
    for c, fused, score in ranked:
        row: dict[str, Any] = {"clip_id": c, "score": round(score, 6)}
        if fused is not None:
            row["hybrid_score"] = round(fused, 6)
        rows.append(row | {
            "lexical_score": round(lex[c][0], 6) if c in lex else None,
            "dense_rank": dense_rank.get(c), "lexical_rank": lex_rank.get(c),
            "matched": s.lexical.matched_words(query, lex[c][1]) if c in lex else [],
            "mode": s.mode})
    return rows


def _cosines(wh: Warehouse, s: Searcher, q: np.ndarray, clip_ids: list[str]) -> dict[str, float]:
    """Cosine of the query with clips outside the dense pool (from their stored vectors)."""
    if not clip_ids:
        return {}
    con = s.reader.catalog() if s.reader is not None else wh.connect_published()
    rows = con.execute(queries.load("clip_embeddings_of"),
                       [s.encoder, s.model_run, clip_ids]).fetchall()
    con.close()
    qn = q / max(float(np.linalg.norm(q)), 1e-12)
    return {c: float(_unit(v) @ qn) for c, v in rows}


def _align(wh: Warehouse, s: Searcher, query: str, clip_ids: list[str]) -> dict[str, float]:
    """Alignment log-odds of ``[CLS] query [>] clip [SEP]`` per candidate clip (with the
    clip's feature when the model reads features)."""
    from tasks.retrieval import rerank as rr

    model, tokenizer = s.torch_model()
    con = wh.connect_published()
    tokens = dict(con.execute(queries.load("clip_tokens"), [s.codebook_id, clip_ids]).fetchall())
    feats = None
    if rr.reads_features(model):
        rows = con.execute(queries.load("clip_feature_vectors"),
                           [model.config.feature_encoder, clip_ids]).fetchall()
        feats = {c: _unit(v) for c, v in rows}
    con.close()
    have = [c for c in clip_ids if c in tokens]
    if not have:
        return {}
    device = next(model.parameters()).device
    scores = rr.alignment_scores(model, tokenizer, [query] * len(have),
                                 [(int(tokens[c]),) for c in have],
                                 None if feats is None else [[feats.get(c)] for c in have],
                                 device=device)
    return dict(zip(have, scores.tolist(), strict=True))


def _unit(v: Any) -> np.ndarray:
    x = np.asarray(v, np.float32)
    return x / max(float(np.linalg.norm(x)), 1e-12)
