"""Index flow: embeddings for every available encoder -> FAISS indices per (encoder, run, level),
and a lexical (BM25) index over what is said in each clip for hybrid search.

Run it with ``videobert index`` or ``python -m flows.index [HOME]`` (deployment ``reindex``).
Embeddings are written for the concepts baseline (always, when its features exist), CLIP (when
its features exist and ``clip_model`` is given, for the query tower) and VideoBERT (the live
fine-tune run, or ``model_run``). Then one index per (encoder, model run, level clip/video):
the type comes from the collection size and the memory budget (``tasks/retrieval/index_spec.py``);
new items are added to the published index where its type allows, else it is rebuilt; every
build is published atomically and recorded in the ``indices`` table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.shared import model_runs
from warehouse import queries
from warehouse.home import resolve_home
from warehouse.store import Warehouse

LEVELS = ("clip", "video")


class IndexParams(BaseModel):
    """Parameters of the index flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    encoders: list[str] = Field(["concepts", "videobert", "clip"],
                                description="Encoders to embed and index (when available)")
    model_run: str | None = Field(None, description="VideoBERT fine-tune run (default: live)")
    clip_model: str | None = Field(None, description="CLIP weights for the text tower")
    memory_budget_mb: int = Field(4096, ge=1, description="RAM an index may take")
    rebuild: bool = Field(False, description="Rebuild even when new items could be added")
    lexical: bool = Field(True, description="Also build the lexical (BM25) index over what "
                          "is said in each clip, for hybrid search")
    device: str = Field("auto", description="auto, cpu, cuda, ...")


@task(name="embeddings", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def embeddings_task(home: Path, encoder: str, p: IndexParams) -> dict[str, Any]:
    """Embed new clips/texts/videos of one encoder; returns its model_run (None: unavailable)."""
    from models.device import pick_device
    from tasks.retrieval import embed

    wh = Warehouse(home)
    dev = str(pick_device(p.device))
    if encoder == "videobert":
        live = (model_runs.one(wh, "model_run_ckpt", [p.model_run]) if p.model_run
                else model_runs.live_run(wh))
        if live is None:
            return {"encoder": encoder, "model_run": None, "why": "no finished fine-tune run"}
        from models.videobert import VideoBert, text_tokenizer

        model = VideoBert.from_pretrained(home / live[2], device=dev)
        with wh.writer(wait_s=120, purpose="embeddings") as w:
            return embed.videobert_embeddings(w, model, text_tokenizer(), live[0], live[1],
                                              device=dev)
    if encoder == "clip":
        if not p.clip_model:
            return {"encoder": encoder, "model_run": None, "why": "no clip_model given"}
        from models.clip import ClipEncoder

        text_fn = ClipEncoder.from_pretrained(p.clip_model, device=dev).encode_text
    else:
        from models.concepts import concepts_encoder

        text_fn = concepts_encoder(dev).embed_text
    with wh.writer(wait_s=120, purpose="embeddings") as w:
        return embed.feature_encoder_embeddings(w, encoder, text_fn)


def _vectors(wh: Warehouse, encoder: str, model_run: str, level: str
             ) -> tuple[list[str], list[str], np.ndarray]:
    con = wh.connect()
    rows = con.execute(queries.load("index_vectors"), [encoder, model_run, level]).fetchall()
    con.close()
    if not rows:
        return [], [], np.zeros((0, 0), np.float32)
    return ([r[0] for r in rows], [r[1] for r in rows],
            np.asarray([r[2] for r in rows], dtype=np.float32))


@task(name="build-index", cache_policy=NO_CACHE)
def index_task(home: Path, encoder: str, model_run: str, level: str, memory_budget_mb: int,
               rebuild: bool) -> dict[str, Any]:
    """Build, extend or keep the published index of (encoder, model_run, level)."""
    import faiss

    from tasks.retrieval.index import add_to_index, build_index
    from tasks.retrieval.index_load import current_index, load_index
    from tasks.retrieval.index_spec import choose_index

    wh = Warehouse(home)
    ids, vids, x = _vectors(wh, encoder, model_run, level)
    if not ids:
        return {"encoder": encoder, "level": level, "action": "none (no embeddings)"}
    root = home / "indices"
    cur = current_index(root, encoder, model_run, level)
    info, action = None, "built"
    if cur is not None and not rebuild:
        have = set(load_index(cur).item_ids.tolist())
        new = [i for i, item in enumerate(ids) if item not in have]
        if not new and len(have) == len(ids):
            return {"encoder": encoder, "level": level, "action": "unchanged",
                    "ntotal": len(ids), "path": str(cur)}
        if len(have) + len(new) == len(ids):  # nothing removed: try an in-place extension
            info = add_to_index(cur, x[new], [ids[i] for i in new], [vids[i] for i in new])
            action = f"added {len(new)}"
    if info is None:
        spec = choose_index(len(ids), x.shape[1], memory_budget_mb << 20,
                            gpu=faiss.get_num_gpus() > 0)
        info = build_index(x, ids, vids, spec, root, encoder=encoder, model_run=model_run,
                           level=level)
        action = "built"
    with wh.writer(wait_s=120, purpose="index") as w:
        w.commit([w.stage("indices", [info.row(home)])],
                 message=f"index {encoder}/{model_run}/{level}")
    return {"encoder": encoder, "model_run": model_run, "level": level, "action": action,
            "type": info.factory, "ntotal": info.ntotal, "path": str(info.path),
            "build_s": info.build_s}


@task(name="lexical-index", cache_policy=NO_CACHE)
def lexical_task(home: Path, dense: list[tuple[str, str]], rebuild: bool) -> dict[str, Any]:
    """Build (or keep) the lexical index, with the hybrid weight of each dense (encoder, run)
    tuned on the validation split when it has captions."""
    import duckdb

    from tasks.retrieval import lexical
    from tasks.retrieval.index_load import IndexRefused, current_index
    from warehouse.store import create_views

    wh = Warehouse(home)
    root = home / "indices"
    manifest = wh.manifest()
    con = duckdb.connect()
    create_views(con, wh, manifest)  # the documents and their recorded parts: one version
    try:
        parts = lexical.input_parts(manifest)
        cur = None
        folder = current_index(root, *lexical.GROUP)
        if folder is not None:
            try:
                cur = lexical.load_lexical(folder)
            except IndexRefused:
                cur = None  # damaged: rebuilt below
        same = cur is not None and not rebuild and cur.manifest["inputs"] == parts
        fusion = _tune_fusion(wh, con, dense, cur if same else None)
        if same and cur.manifest["fusion"] == fusion:
            return {"encoder": "lexical", "level": "clip", "action": "unchanged",
                    "ntotal": cur.manifest["n_docs"], "path": str(cur.folder)}
        row = lexical.build_lexical(con, parts, root, fusion, log=get_run_logger().info)
    finally:
        con.close()
    row["path"] = str(Path(row["path"]).relative_to(home))
    with wh.writer(wait_s=120, purpose="index") as w:
        w.commit([w.stage("indices", [row])], message="index lexical/bm25/clip")
    return {"encoder": "lexical", "level": "clip", "action": "built", "type": "bm25",
            "ntotal": row["ntotal"], "path": str(home / row["path"]), "build_s": row["build_s"],
            "fusion": fusion}


def _tune_fusion(wh: Warehouse, con: Any, dense: list[tuple[str, str]], cur: Any
                 ) -> dict[str, Any]:
    """Per dense ``encoder:run``, the hybrid weight tuned on the val split (kept from the
    current index when its text and that run are unchanged)."""
    from tasks.retrieval import evaluate as ev
    from tasks.retrieval import hybrid, lexical

    es = ev.load_eval_set(wh, "val")
    if len(es.segment_ids) < ev.MIN_MEANINGFUL_QUERIES:  # a handful of captions is noise:
        return {}  # search then fuses with the default weight
    out: dict[str, Any] = {}
    docs = None
    texts = dict(con.execute(queries.load("segment_texts"), [es.segment_ids]).fetchall())
    for enc, run in dense:
        key = f"{enc}:{run}"
        if cur is not None and key in cur.manifest["fusion"]:
            out[key] = cur.manifest["fusion"][key]
            continue
        try:
            sim = (ev.vectors(wh, enc, run, "text", es.segment_ids)
                   @ ev.vectors(wh, enc, run, "clip", es.clip_ids).T)
        except LookupError:
            continue
        docs = docs if docs is not None else lexical.clip_documents(con)
        queries_ = [texts[s] for s in es.segment_ids]
        lex = hybrid.lexical_sims(docs, es.clip_ids, es.segment_ids, queries_)
        known = hybrid.lexical_sims(docs, es.clip_ids, es.segment_ids, queries_,
                                    leave_one_out=False)
        out[key] = hybrid.tune_weight(sim, lex, es.text_to_clips, known) | {"split": "val"}
    return out


@flow(name="reindex")
def index_flow(params: IndexParams) -> dict[str, Any]:
    """Embeddings for every available encoder, then clip and video indices for each."""
    log = get_run_logger()
    home = resolve_home(params.home)
    out: dict[str, Any] = {"home": str(home), "embeddings": [], "indices": []}
    dense: list[tuple[str, str]] = []
    for enc in params.encoders:
        got = embeddings_task(home, enc, params)
        out["embeddings"].append(got)
        if got.get("model_run") is None:
            log.info("index: %s skipped (%s)", enc, got.get("why", "no features"))
            continue
        for level in LEVELS:
            res = index_task(home, enc, got["model_run"], level, params.memory_budget_mb,
                             params.rebuild)
            out["indices"].append(res)
            log.info("index %s/%s: %s", enc, level, res["action"])
        dense.append((enc, got["model_run"]))
    if params.lexical:
        res = lexical_task(home, dense, params.rebuild)
        out["indices"].append(res)
        log.info("index lexical/clip: %s", res["action"])
    return out


if __name__ == "__main__":
    index_flow(IndexParams(home=sys.argv[1] if len(sys.argv) > 1 else None))
