"""Retrieval commands of the ``videobert`` CLI: finetune, index, evaluate, search.

Registered on the main Typer app by ``videobert/cli.py``. ``search`` does not start Prefect:
it only reads the published catalog and index, so it answers while a flow is writing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from videobert.cli_common import Fmt, HomeOpt, err, fail_from, out, print_rows, start_flow_env
from videobert.prefect_env import local_flow_settings
from warehouse.home import resolve_home

MetricCols = ["encoder", "level", "direction", "mode", "r1", "r5", "r10", "mdr", "mnr"]


def finetune(
    from_run: Annotated[str | None, typer.Option(
        help="Pretraining run to start from (default: the newest finished one)")] = None,
    steps: Annotated[int, typer.Option(help="Maximum optimiser steps", min=1)] = 600,
    batch_size: Annotated[int, typer.Option(help="Caption-clip pairs per batch", min=2)] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate")] = 3e-4,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps", min=1)] = 50,
    patience: Annotated[int, typer.Option(help="Early stopping patience (validations)")] = 4,
    distill: Annotated[str | None, typer.Option(
        help="Teacher to distil from: concepts, or clip (with --clip-model)")] = None,
    clip_model: Annotated[str | None, typer.Option(
        help="CLIP weights (folder or hub id) for --distill clip")] = None,
    features: Annotated[str, typer.Option(
        help="Clip features added to the visual tokens: an encoder (i3d, clip, concepts) or "
             "none (visual tokens only)")] = "i3d",
    itm_weight: Annotated[float, typer.Option(
        help="Weight of the cross-encoder (re-ranking) term with hard negatives; 0: off",
        min=0)] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the batch order")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Fine-tune a pretrained VideoBERT for text-video retrieval (InfoNCE, early stopping on
    validation R@5) and write its clip, text and video embeddings to the warehouse."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.finetune import FinetuneParams, finetune_flow
    from warehouse.store import WarehouseError

    try:
        with local_flow_settings():
            summary = finetune_flow(FinetuneParams(
                home=str(h), from_run=from_run, steps=steps, batch_size=batch_size, lr=lr,
                eval_every=eval_every, patience=patience, distill=distill, seed=seed,
                clip_model=clip_model, device=device, itm_weight=itm_weight,
                features=None if features.lower() == "none" else features))
    except (WarehouseError, ValueError) as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    val = summary["val"]
    print_rows(["metric", "value"], [(k, f"{float(v):.4g}") for k, v in val.items()], Fmt.table,
               title=f"{summary['model_run']} (from {summary['parent_run']}): best val "
                     f"text->clip at step {summary['best_step']}")
    rr = summary.get("rerank")
    if rr:
        out.print(f"re-ranking: weight {rr['weight']:g} (val text->clip R@1 "
                  f"{rr['r1_dual']:.1f} -> {rr['r1_fused']:.1f})")
    out.print(f"checkpoint: {summary['checkpoint']}\nembeddings: {summary['embeddings']}")


def index(
    encoder: Annotated[list[str] | None, typer.Option(
        "--encoder", "-e", help="concepts, videobert, clip (repeatable; default: all)")] = None,
    model_run: Annotated[str | None, typer.Option(
        help="VideoBERT fine-tune run (default: the live one)")] = None,
    clip_model: Annotated[str | None, typer.Option(help="CLIP weights (text tower)")] = None,
    memory_budget_mb: Annotated[int, typer.Option(help="RAM an index may take (MiB)")] = 4096,
    rebuild: Annotated[bool, typer.Option(help="Rebuild instead of adding new items")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Embeddings for every available encoder, then FAISS clip and video indices for each."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.index import IndexParams, index_flow
    from warehouse.store import WarehouseError

    params: dict[str, Any] = {"home": str(h), "model_run": model_run, "clip_model": clip_model,
                              "memory_budget_mb": memory_budget_mb, "rebuild": rebuild,
                              "device": device}
    if encoder:
        params["encoders"] = encoder
    try:
        with local_flow_settings():
            summary = index_flow(IndexParams(**params))
    except (WarehouseError, ValueError) as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    rows = [(r["encoder"], r.get("model_run") or "", r["level"], r["action"], r.get("type", ""),
             str(r.get("ntotal", ""))) for r in summary["indices"]]
    print_rows(["encoder", "model run", "level", "action", "type", "vectors"], rows, Fmt.table,
               title="indices")


def evaluate(
    split: Annotated[str, typer.Option(help="Split of queries and candidates")] = "test",
    model_run: Annotated[str | None, typer.Option(
        help="VideoBERT fine-tune run (default: the live one)")] = None,
    rerank: Annotated[bool, typer.Option(help="Also evaluate alignment-head re-ranking")]
    = True,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table, csv or json")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Text<->video retrieval (R@1/5/10, MdR, MnR) for every encoder, exact and through the
    index; stored in eval_results, with a Markdown + PNG report under HOME/reports."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.evaluate import EvaluateParams, evaluate_flow
    from tasks.retrieval.evaluate import too_few_queries
    from warehouse.store import WarehouseError

    try:
        with local_flow_settings():
            summary = evaluate_flow(EvaluateParams(
                home=str(h), split=split, model_run=model_run, rerank=rerank, device=device))
    except (WarehouseError, ValueError, LookupError) as e:
        fail_from(e)
    rows = [tuple(_fmt(r[c]) for c in MetricCols) for r in summary["rows"]]
    print_rows(MetricCols, rows, fmt, title=f"retrieval on {split} ({summary['eval_id']})")
    note = too_few_queries(summary["rows"], split)
    if note:
        err.print(Text(note, style="yellow"), soft_wrap=True)
    if fmt is Fmt.table:
        out.print(f"report: {summary['report']}")


def _fmt(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def search(
    query: Annotated[str, typer.Argument(help="What to look for, in words")],
    k: Annotated[int, typer.Option("-k", help="Results", min=1)] = 10,
    encoder: Annotated[str | None, typer.Option(
        help="videobert, concepts or clip (default: the live model, else concepts)")] = None,
    model_run: Annotated[str | None, typer.Option(help="A specific fine-tune run")] = None,
    rerank: Annotated[bool, typer.Option(
        help="Re-rank the top candidates with VideoBERT as a cross-encoder (alignment head "
             "fused with the similarity)")] = False,
    rerank_top: Annotated[int, typer.Option(help="Candidates re-ranked", min=1)] = 20,
    mode: Annotated[str, typer.Option(
        help="hybrid (what is seen + what is said), dense (embeddings only), lexical (words "
             "only); default: hybrid when the lexical index has text, else dense")] = "auto",
    clip_model: Annotated[str | None, typer.Option(help="CLIP weights (for --encoder clip)")]
    = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table, csv or json")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Search the indexed videos: path, clip start-end, score, the text said there and the
    clip's generated caption (after `videobert caption --all`).

    JSON output (--format json) is an array of objects with rank, clip_id, video_id, path,
    start_s, end_s, score, text, caption (and align_logit and rerank_score with --rerank; mode,
    hybrid_score, lexical_score, dense_rank, lexical_rank and the matched words in hybrid and
    lexical mode)."""
    from tasks.retrieval.index_load import IndexRefused
    from tasks.retrieval.search import SearchUnavailable, open_searcher
    from tasks.retrieval.search import search as run_search

    h = resolve_home(home)
    try:
        t0 = time.perf_counter()
        s = open_searcher(Path(h), encoder, model_run=model_run, clip_model=clip_model,
                          rerank=rerank, mode=mode)
        t1 = time.perf_counter()
        hits = run_search(Path(h), s, query, k, rerank=rerank, rerank_top=rerank_top)
        t2 = time.perf_counter()
    except (SearchUnavailable, IndexRefused, ValueError, FileNotFoundError) as e:
        fail_from(e)
    if s.notice:
        err.print(Text(s.notice, style="yellow"), soft_wrap=True)
    cols = ["rank", "path", "start_s", "end_s", "score", "text"]
    if any(r.get("caption") for r in hits):
        cols.append("caption")
    if rerank:
        cols[5:5] = ["align_logit", "rerank_score"]
    if s.mode != "dense":
        cols[4:5] = (["hybrid_score", "score", "lexical_score"] if s.mode == "hybrid"
                     else ["score"])
        cols[-1:-1] = ["matched"]
        if fmt is not Fmt.json:
            hits = [r | {"matched": " ".join(r["matched"])} for r in hits]
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(hits) + "\n")
        return
    print_rows(cols, [tuple(r[c] for c in cols) for r in hits], fmt,
               title=f"{s.mode}: {s.encoder} / {s.model_run}: {query!r}")
    if fmt is Fmt.table:
        out.print(f"[dim]load {t1 - t0:.2f} s, query {t2 - t1:.3f} s[/dim]")


def probe(
    model_run: Annotated[str | None, typer.Option(
        help="Pretraining run (default: the newest finished one)")] = None,
    split: Annotated[str, typer.Option(help="Held-out split to probe")] = "test",
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table, csv or json")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Zero-shot probe: fill masked nouns and verbs of held-out captions from the visual tokens
    (top-1/top-5 among the corpus's words), against the same model given another clip's video
    and with the video hidden."""
    from tasks.pretrain.probe import probe_run

    try:
        res = probe_run(resolve_home(home), model_run, split, device)
    except ValueError as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(res) + "\n")
        return
    if not res["n_items"]:
        out.print(f"no caption of the {split} split names an object and a motion "
                  "(the probe needs the synthetic corpus's labels)")
        return
    rows = [(p, f"{len(res[p + 's'])}", *(f"{res[p][k]:.1f}" for k in (
        "video_top1", "video_top5", "other_top1", "other_top5", "text_top1", "text_top5",
        "chance_top1", "chance_top5"))) for p in ("noun", "verb")]
    print_rows(["probe", "words", "video top-1", "video top-5", "other video top-1",
                "other video top-5", "text-only top-1", "text-only top-5", "chance top-1",
                "chance top-5"], rows, fmt,
               title=f"zero-shot probe of {res['model_run']} on {res['n_items']} {split} clips")
