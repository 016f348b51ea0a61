"""``videobert run``: the nightly flow once, on your folders or the built-in sample corpus.

Registered on the main Typer app by ``videobert/cli.py``. Offline and CPU-friendly by default:
a tiny model, a few hundred steps, and on the sample corpus a small codebook.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.text import Text

from videobert.cli_common import (
    Fmt,
    HomeOpt,
    fail,
    is_user_error,
    out,
    print_rows,
    start_flow_env,
)
from videobert.prefect_env import local_flow_settings
from warehouse.home import resolve_home

Cols = ["encoder", "level", "direction", "mode", "r1", "r5", "r10", "mdr", "mnr"]


def run_nightly(
    source: Annotated[list[str] | None, typer.Option(
        "--source", "-s", help="Folder, video file, pattern ('videos/*.mp4') or caption "
        "manifest to ingest (repeatable; default: the built-in sample corpus)")] = None,
    preset: Annotated[str, typer.Option(help="Pretraining preset: tiny, mini, base, large")]
    = "tiny",
    pretrain_steps: Annotated[int, typer.Option(help="Pretraining steps", min=1)] = 200,
    finetune_steps: Annotated[int, typer.Option(help="Fine-tuning steps (maximum)", min=1)]
    = 100,
    levels: Annotated[int | None, typer.Option(
        help="Codebook depth (default: 2 on the sample corpus, else 4)")] = None,
    branching: Annotated[int | None, typer.Option(
        help="Codebook children per node (default: 4 on the sample corpus, else 12)")] = None,
    min_points_per_token: Annotated[int | None, typer.Option(
        help="Clips per visual token (default: 2 on the sample corpus, else 39)")] = None,
    recluster: Annotated[bool, typer.Option(help="Fit a new codebook")] = False,
    force: Annotated[bool, typer.Option(help="Train even when there is no new data")] = False,
    clip_model: Annotated[str | None, typer.Option(help="CLIP weights (folder or hub id)")]
    = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Ingest -> tokens -> pretraining -> fine-tuning -> index -> evaluation, with the
    promotion gate: the nightly flow once. Ends with the test-split retrieval table, where the
    report is, and whether the new model went live. A run with no new data skips training."""
    from tasks.ingest.sources import plan_sources
    from tasks.nightly import run_state

    h = resolve_home(home)
    for s in source or []:
        plan_sources([s])  # a missing path or empty folder: one line, exit 2, before Prefect
    options = dict(
        home=str(h), sources=list(source or []), pretrain_preset=preset,
        pretrain_steps=pretrain_steps, finetune_steps=finetune_steps, levels=levels,
        branching=branching, min_points_per_token=min_points_per_token, recluster=recluster,
        force=force, clip_model=clip_model, device=device)
    live = None if force or recluster else run_state.unchanged(h, options)
    if live is not None:  # nothing changed since the last finished run: no Prefect needed
        result: dict[str, Any] = {
            "home": str(h), "status": "skipped: no new data", "live_run": live, "ingest": [],
            "note": f"sources, parameters and live model unchanged since the last run "
                    f"({run_state.STATE_NAME}); Prefect not started"}
    else:
        result = _run_flow(h, options)
        run_state.save(h, options, result.get("live_run"))
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    _print_result(result)


def _run_flow(h: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The nightly flow on Prefect (temporary server unless one is configured)."""
    start_flow_env(h)
    from flows.nightly import NightlyParams, nightly_flow
    from tasks.ingest.samples import SampleMediaMissing
    from tasks.nightly.gate import NightlyBusy
    from warehouse.store import WarehouseError

    try:
        with local_flow_settings():
            return nightly_flow(NightlyParams(**options))
    except (NightlyBusy, WarehouseError, SampleMediaMissing, ValueError) as e:
        fail(str(e), code=2 if is_user_error(e) else 1)


def _print_result(result: dict[str, Any]) -> None:
    """The run's status, evaluation table, report and promotion decision."""
    ingested = sum(s.get("n_ingested", 0) for s in result.get("ingest", []))
    out.print(f"ingest: {ingested} new video(s)")
    if result["status"].startswith("skipped"):
        out.print(f"{result['status']}: {result['live_run']} stays live (training, indexing "
                  "and evaluation skipped)")
        if result.get("note"):
            out.print(result["note"])
        return
    from tasks.retrieval.evaluate import too_few_queries

    ev = result.get("evaluation")
    if ev:
        rows = [tuple(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in Cols)
                for r in ev["rows"]]
        print_rows(Cols, rows, Fmt.table, title=f"retrieval on {ev['split']} ({ev['eval_id']})")
        out.print(f"report: {ev['report']}")
    if result.get("seconds"):
        out.print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items()))
    gate = result["gate"]
    verdict = "promoted" if gate["promoted"] else "NOT promoted"
    out.print(f"candidate {gate['model_run']} {verdict}: {gate['reason']}")
    out.print(f"live model: {result['live_run']}")
    note = (too_few_queries(ev["rows"], ev["split"], ev.get("requested_split")) if ev else
            "too few captioned clips to evaluate: no split has captioned clips, so there is "
            "no evaluation table")
    if note:  # the last line: a small table must not read as a result
        out.print(Text(note, style="yellow"), soft_wrap=True)
