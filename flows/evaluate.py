"""Evaluation flow: text <-> video retrieval for every available encoder on a held-out split.

Run it with ``videobert evaluate`` or ``python -m flows.evaluate [HOME]``. For each encoder
with embeddings (concepts zero-shot, CLIP when given, VideoBERT fine-tuned, and VideoBERT with
alignment-head re-ranking) it computes R@1/5/10, MdR and MnR in both directions at clip and
video level, exactly and through the published FAISS index (``tasks/retrieval/evaluate.py``);
lexical search alone and fused with each encoder get exact clip-level text->clip rows
(leave-one-out, ``tasks/retrieval/hybrid.py``). Results go to ``eval_results``, a Prefect
table artifact, and a report (Markdown + recall@K PNG) in ``<home>/reports/<eval_id>/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, Field

from tasks.shared import model_runs
from tasks.shared.errors import InputError
from warehouse.home import resolve_home
from warehouse.store import Warehouse, utcnow

METRICS = ("r1", "r5", "r10", "mdr", "mnr")


class EvaluateParams(BaseModel):
    """Parameters of the evaluation flow (shown as a form in Prefect's UI)."""

    home: str | None = Field(None, description="Data home (default: $VIDEOBERT_HOME or "
                             "./videobert-data)")
    split: str = Field("test", description="Split of queries and candidates")
    encoders: list[str] = Field(["concepts", "clip", "videobert"],
                                description="Encoders to evaluate (those with embeddings)")
    model_run: str | None = Field(None, description="VideoBERT fine-tune run (default: live)")
    rerank: bool = Field(True, description="Also evaluate alignment-head re-ranking")
    rerank_top: int = Field(20, ge=2, description="Candidates re-ranked per caption")
    lexical: bool = Field(True, description="Also evaluate lexical search and its fusion with "
                          "each encoder (leave-one-out: a caption's own text is not searched)")
    device: str = Field("auto", description="auto, cpu, cuda, ...")


def _targets(wh: Warehouse, p: EvaluateParams) -> list[tuple[str, str, tuple | None]]:
    """(encoder, model_run, videobert run row or None) for each evaluable encoder."""
    out = []
    for enc in p.encoders:
        if enc == "videobert":
            run = (model_runs.one(wh, "model_run_ckpt", [p.model_run]) if p.model_run
                   else model_runs.live_run(wh))
            if run is not None:
                out.append((enc, run[0], run))
        else:
            ver = model_runs.one(wh, "latest_embedded_run", [enc])
            if ver is not None:
                out.append((enc, ver[0], None))
    return out


@task(name="evaluate-encoder", cache_policy=NO_CACHE)
def evaluate_task(home: Path, split: str, encoder: str, model_run: str, run: tuple | None,
                  rerank: bool, rerank_top: int, device: str) -> list[dict[str, Any]]:
    """All metric rows of one encoder (exact, index, rerank), ranks kept for curves."""
    from tasks.retrieval import evaluate as ev
    from tasks.retrieval.index_load import load_current

    wh = Warehouse(home)
    es = ev.load_eval_set(wh, split)
    if not es.segment_ids:
        raise ValueError(f"no captioned clips in the {split!r} split of {home}")
    text = ev.vectors(wh, encoder, model_run, "text", es.segment_ids)
    clip = ev.vectors(wh, encoder, model_run, "clip", es.clip_ids)
    video = ev.vectors(wh, encoder, model_run, "video", es.video_ids)
    rows = [r | {"encoder": encoder} for r in ev.exact_rows(es, text, clip, video)]
    for level in ("clip", "video"):
        index = load_current(home / "indices", encoder, model_run, level)
        rows.append(ev.index_row(es, text, index, level) | {"encoder": encoder})
        if rerank and run is not None and level == "clip":
            rows.append(_rerank(wh, es, text, clip, index, run, rerank_top, device))
    return [r | {"model_run": model_run} for r in rows]


def _rerank(wh: Warehouse, es: Any, text: Any, clip: Any, index: Any, run: tuple, top: int,
            device: str) -> dict[str, Any]:
    from models.device import pick_device
    from models.videobert import VideoBert, text_tokenizer
    from tasks.retrieval import evaluate as ev
    from tasks.retrieval import rerank as rr
    from tasks.shared.clip_features import clip_features
    from warehouse import queries

    dev = str(pick_device(device))
    model = VideoBert.from_pretrained(wh.home / run[2], device=dev)
    con = wh.connect()
    tokens = dict(con.execute(queries.load("clip_tokens"), [run[1], es.clip_ids]).fetchall())
    texts = dict(con.execute(queries.load("segment_texts"), [es.segment_ids]).fetchall())
    con.close()
    cfg = model.config
    feats = clip_features(wh, cfg.feature_encoder) if rr.reads_features(model) else None
    row = ev.rerank_row(es, text, clip, index, model, text_tokenizer(),
                        [texts[s] for s in es.segment_ids],
                        [tokens.get(c, 0) for c in es.clip_ids],
                        rr.features_of(es.clip_ids, feats), top=top, device=dev)
    return row | {"encoder": "videobert+rerank"}


@task(name="evaluate-lexical", cache_policy=NO_CACHE)
def lexical_task(home: Path, split: str, dense: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Lexical search alone and fused with each dense encoder (its tuned weight), clip level
    text->clip, leave-one-out (:mod:`tasks.retrieval.hybrid`); none without a lexical index."""
    from tasks.retrieval import evaluate as ev
    from tasks.retrieval import hybrid
    from tasks.retrieval.index_load import IndexRefused
    from tasks.retrieval.lexical import load_current_lexical
    from warehouse import queries

    try:
        lex = load_current_lexical(home / "indices")
    except IndexRefused as e:
        get_run_logger().warning("lexical rows skipped: %s", e)
        return []
    wh = Warehouse(home)
    es = ev.load_eval_set(wh, split)
    if lex is None or not es.segment_ids:
        return []
    con = wh.connect()
    texts = dict(con.execute(queries.load("segment_texts"), [es.segment_ids]).fetchall())
    con.close()
    lexical = hybrid.lexical_sims(lex.docs, es.clip_ids, es.segment_ids,
                                  [texts[s] for s in es.segment_ids])
    out: list[dict[str, Any]] = []
    for enc, run in dense:
        sim = (ev.vectors(wh, enc, run, "text", es.segment_ids)
               @ ev.vectors(wh, enc, run, "clip", es.clip_ids).T)
        weight = lex.weight(enc, run)
        lexical_row, hybrid_row = hybrid.rows(sim, lexical, es.text_to_clips, weight)
        if not out:
            out.append(lexical_row | {"encoder": "lexical", "model_run": lex.manifest["index_id"]})
        out.append(hybrid_row | {"encoder": f"{enc}+lexical", "model_run": run,
                                 "hybrid_weight": weight})
    return out


def _report(home: Path, eval_id: str, split: str, rows: list[dict[str, Any]]) -> Path:
    """Markdown table + recall@K curves (t2v, clip level, exact) in <home>/reports/<eval_id>."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tasks.retrieval.metrics import recall_curve

    folder = home / "reports" / eval_id
    folder.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if r["level"] == "clip" and r["direction"] == "t2v" and r.get("ranks") is not None:
            ks = np.arange(1, min(50, r["n_candidates"]) + 1)
            ax.plot(ks, recall_curve(r["ranks"], ks), label=f"{r['encoder']} ({r['mode']})")
    ax.set(xlabel="K", ylabel="recall@K (%)", title=f"text -> clip, {split} split")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "recall_at_k.png", dpi=110)
    plt.close(fig)
    lines = [f"# Retrieval evaluation {eval_id}", "", f"Split: `{split}`. R@K in percent.", "",
             "| encoder | model run | level | direction | mode | R@1 | R@5 | R@10 | MdR | MnR "
             "| queries | candidates |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['encoder']} | {r['model_run']} | {r['level']} | {r['direction']} "
                     f"| {r['mode']} | {r['r1']:.1f} | {r['r5']:.1f} | {r['r10']:.1f} "
                     f"| {r['mdr']:.1f} | {r['mnr']:.1f} | {r['n_queries']} "
                     f"| {r['n_candidates']} |")
    lines += ["", "![recall@K](recall_at_k.png)", ""]
    (folder / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (folder / "results.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k != "ranks"} for r in rows], indent=1, default=str))
    return folder / "report.md"


@flow(name="evaluate")
def evaluate_flow(params: EvaluateParams) -> dict[str, Any]:
    """Evaluate every available encoder and record the results."""
    log = get_run_logger()
    home = resolve_home(params.home)
    wh = Warehouse(home)
    eval_id = model_runs.new_run_id("eval")
    targets = _targets(wh, params)
    if not targets:
        raise InputError(f"nothing to evaluate in {home}: no embeddings (run `videobert index`)")
    rows: list[dict[str, Any]] = []
    for enc, run_id, run in targets:
        rows += evaluate_task(home, params.split, enc, run_id, run, params.rerank,
                              params.rerank_top, params.device)
    if params.lexical:
        rows += lexical_task(home, params.split, [(enc, run_id) for enc, run_id, _ in targets])
    now = utcnow()
    table = [{"eval_id": eval_id, "split": params.split, "at": now,
              **{k: r[k] for k in ("encoder", "model_run", "level", "direction", "mode",
                                   "n_queries", "n_candidates", *METRICS)}} for r in rows]
    with wh.writer(wait_s=120, purpose="evaluate") as w:
        w.commit([w.stage("eval_results", table)], message=f"evaluate {eval_id}")
    report = _report(home, eval_id, params.split, rows)
    create_table_artifact([{k: (round(v, 2) if isinstance(v, float) else v)
                            for k, v in r.items() if k not in ("eval_id", "at")} for r in table],
                          key=f"{eval_id.lower()}", description=f"retrieval on {params.split}")
    create_markdown_artifact(report.read_text(encoding="utf-8"), key=f"{eval_id.lower()}-report",
                             description=f"report: {report}")
    log.info("evaluate %s: %d rows; report %s", eval_id, len(table), report)
    return {"eval_id": eval_id, "rows": [{k: v for k, v in r.items() if k != "at"}
                                         for r in table], "report": str(report)}


if __name__ == "__main__":
    evaluate_flow(EvaluateParams(home=sys.argv[1] if len(sys.argv) > 1 else None))
