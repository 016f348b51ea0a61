"""Captioning commands of the ``videobert`` CLI: ``caption train``, ``caption evaluate``,
``caption VIDEO`` and ``caption --all``.

Registered by ``videobert/cli.py`` as the ``caption`` group; a first argument that is not one
of its commands goes to ``describe`` (so ``videobert caption talk.mp4 --format srt`` and
``videobert caption --all`` read as the issue's users type them). ``caption VIDEO`` starts no
Prefect server: it reads the warehouse and the model, like ``search``.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from videobert.cli_common import Fmt, HomeOpt, fail, fail_from, out, print_rows, start_flow_env
from videobert.prefect_env import local_flow_settings
from warehouse.home import resolve_home

DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")]
BeamsOpt = Annotated[int, typer.Option(help="Beam width (1: greedy)", min=1)]


class CapFmt(StrEnum):
    """Output formats of ``caption VIDEO``."""

    table = "table"
    json = "json"
    srt = "srt"
    vtt = "vtt"


def _scores_table(ev: dict[str, Any]) -> None:
    cols = ["system", "run", "bleu1", "bleu4", "meteor", "rouge_l", "cider", "object_acc",
            "motion_acc", "all_acc"]
    rows = []
    for name, r in ev["results"].items():
        rows.append((name, ev["runs"][name], *(
            "-" if r.get(c) is None else (f"{r[c]:.3f}" if c == "cider" else f"{r[c]:.2f}")
            for c in cols[2:])))
    print_rows(cols, rows, Fmt.table, title=f"captioning on {ev['split']} ({ev['eval_id']})")
    out.print(f"report: {ev['report']}")


def caption_train(
    from_run: Annotated[str | None, typer.Option(
        help="VideoBERT run to start from (default: the live fine-tune, else the newest "
             "pretraining run)")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps", min=1)] = 1500,
    batch_size: Annotated[int, typer.Option(help="Clip-caption pairs per step", min=1)] = 32,
    lr: Annotated[float, typer.Option(
        help="Peak learning rate (the decoder's; the encoder: 0.1 x)")] = 2e-3,
    eval_every: Annotated[int, typer.Option(help="Validate every N steps", min=1)] = 100,
    patience: Annotated[int, typer.Option(help="Validations without gain before stopping",
                                          min=1)] = 4,
    denoise_steps: Annotated[int, typer.Option(
        help="BART-style text-infilling warm-up steps before captioning (part of --steps, at "
             "most a fifth of them)", min=0)] = 300,
    encoder_lr_scale: Annotated[float, typer.Option(
        help="The pretrained encoder's learning rate as a share of the decoder's", min=0)] = 0.1,
    context: Annotated[int, typer.Option(help="Neighbouring clips each side", min=0)] = 0,
    baselines: Annotated[bool, typer.Option(
        help="Also train the features-only baseline and score everything on the test split")]
    = True,
    beams: BeamsOpt = 4,
    seed: Annotated[int, typer.Option(help="Seed")] = 0,
    device: DeviceOpt = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Train a caption model on VideoBERT (teacher forcing, early stopping on validation
    CIDEr-D), then its baselines, and score them on the test split."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.caption import CaptionTrainParams, caption_train_flow

    try:
        with local_flow_settings():
            summary = caption_train_flow(CaptionTrainParams(
                home=str(h), from_run=from_run, steps=steps, batch_size=batch_size, lr=lr,
                eval_every=eval_every, patience=patience, denoise_steps=denoise_steps,
                context=context, baselines=baselines, encoder_lr_scale=encoder_lr_scale,
                beams=beams, seed=seed, device=device))
    except ValueError as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    v = summary["val"]
    out.print(f"{summary['model_run']} (encoder from {summary['parent_run']}): best val "
              f"CIDEr-D {v['cider']:.3f} at step {summary['best_step']} "
              f"({summary['steps_done']} steps, {summary['seconds']:.0f} s)")
    if "evaluation" in summary:
        _scores_table(summary["evaluation"])


def caption_evaluate(
    model_run: Annotated[str | None, typer.Option(help="Caption run (default: newest)")] = None,
    baseline_run: Annotated[str | None, typer.Option(
        help="Features-only baseline run (default: the newest)")] = None,
    split: Annotated[str, typer.Option(help="Split to score")] = "test",
    beams: BeamsOpt = 4,
    device: DeviceOpt = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Score a caption model and the baselines (BLEU, METEOR, ROUGE-L, CIDEr-D)."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.caption import CaptionEvalParams, caption_eval_flow

    try:
        with local_flow_settings():
            ev = caption_eval_flow(CaptionEvalParams(home=str(h), model_run=model_run,
                                                     baseline_run=baseline_run, split=split,
                                                     beams=beams, device=device))
    except ValueError as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(ev, default=str) + "\n")
    else:
        _scores_table(ev)


def _fill(h: Path, model_run: str | None, beams: int, chunk: int, device: str) -> None:
    start_flow_env(h)
    from flows.caption import CaptionFillParams, caption_fill_flow

    try:
        with local_flow_settings():
            r = caption_fill_flow(CaptionFillParams(home=str(h), model_run=model_run,
                                                    beams=beams, chunk=chunk, device=device))
    except ValueError as e:
        fail_from(e)
    out.print(f"generated_captions ({r['model_run']}): {r['added']} written, "
              f"{r['skipped']} already there")


def caption_describe(
    video: Annotated[str | None, typer.Argument(
        help="An ingested video: its path, or its video id (a unique prefix will do)")] = None,
    all_clips: Annotated[bool, typer.Option(
        "--all", help="Caption every clip without a caption into generated_captions")] = False,
    fmt: Annotated[CapFmt, typer.Option("--format", "-f", help="table, json, srt or vtt")]
    = CapFmt.table,
    output: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Write to this file instead of standard output")] = None,
    model_run: Annotated[str | None, typer.Option(help="Caption run (default: newest)")] = None,
    beams: BeamsOpt = 4,
    chunk: Annotated[int, typer.Option(help="With --all: clips per commit", min=1)] = 512,
    device: DeviceOpt = "auto",
    home: HomeOpt = None,
) -> None:
    """Describe a video's clips in words (timestamped; --format srt/vtt for a player), or
    with --all fill generated_captions for every clip."""
    from tasks.shared.errors import InputError

    h = resolve_home(home)
    if all_clips:
        if video:
            fail("give a video or --all, not both", code=2)
        _fill(h, model_run, beams, chunk, device)
        return
    if not video:
        fail("name a video (path or id), or give --all", code=2)
    try:
        rows, vid, path = _video_rows(h, video, model_run, beams, device)
    except (InputError, ValueError, FileNotFoundError) as e:
        fail_from(e)
    text = _render(rows, fmt)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        out.print(f"{len(rows)} clips of {path or vid[:12]} -> {output}")
    elif fmt is CapFmt.table:
        print_rows(["start_s", "end_s", "text", "score"],
                   [(r["start_s"], r["end_s"], r["text"], f"{r['score']:.3f}") for r in rows],
                   Fmt.table, title=f"{path or vid[:12]}")
    else:
        sys.stdout.write(text)


def _video_rows(h: Path, video: str, model_run: str | None, beams: int,
                device: str) -> tuple[list[dict[str, Any]], str, str]:
    from flows.caption import caption_run, load_captioner
    from models.caption_decoding import Decoding
    from models.device import pick_device
    from models.videobert import text_tokenizer
    from tasks.caption.video import resolve_video, video_captions
    from warehouse.store import Warehouse

    wh = Warehouse(h)
    vid, path = resolve_video(wh, video)
    run = caption_run(wh, model_run)
    dev = pick_device(device)
    model, clips = load_captioner(h, run, dev)
    rows = video_captions(wh, clips, vid, model, text_tokenizer(), run[0],
                          Decoding(beams=beams, max_len=model.config.max_caption), device=dev)
    return rows, vid, path


def _render(rows: list[dict[str, Any]], fmt: CapFmt) -> str:
    from tasks.caption.describe import to_srt, to_vtt
    from tasks.caption.video import video_cues

    if fmt is CapFmt.srt:
        return to_srt(video_cues(rows))
    if fmt is CapFmt.vtt:
        return to_vtt(video_cues(rows))
    if fmt is CapFmt.json:
        return json.dumps(rows) + "\n"
    return "".join(f"{r['start_s']:8.2f} {r['end_s']:8.2f}  {r['text']}\n" for r in rows)
