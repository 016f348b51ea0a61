"""``videobert pretrain``: VideoBERT pretraining on the warehouse's text and visual tokens.

Registered on the main Typer app by ``videobert/cli.py``.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from videobert.cli_common import Fmt, HomeOpt, fail_from, out, print_rows, start_flow_env
from videobert.prefect_env import local_flow_settings
from warehouse.home import resolve_home


def pretrain(
    preset: Annotated[str, typer.Option(
        help="tiny (tests), small (CPU), mini (MiniLM init), base, large")] = "tiny",
    steps: Annotated[int, typer.Option(help="Optimiser steps", min=1)] = 1000,
    resume: Annotated[bool, typer.Option(
        help="Continue the newest unfinished run of this preset from its last checkpoint")]
    = False,
    batch_size: Annotated[int, typer.Option(help="Sequences per batch (per GPU)", min=1)] = 32,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default per preset)")]
    = None,
    seed: Annotated[int, typer.Option(help="Seed of init, dropout, data order, masking")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model")]
    = False,
    codebook: Annotated[str | None, typer.Option(help="Codebook id (default: the newest)")]
    = None,
    continue_from: Annotated[str | None, typer.Option(
        help="Start from this model run's weights")] = None,
    eval_every: Annotated[int, typer.Option(help="Evaluate every N steps", min=1)] = 100,
    ckpt_every: Annotated[int, typer.Option(help="Checkpoint every N steps", min=1)] = 100,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch")] = None,
    positive_share: Annotated[float, typer.Option(
        help="Share of the first steps on matched text-video pairs only", min=0, max=1)] = 0.5,
    align_weight: Annotated[float, typer.Option(
        help="Weight of the text-video alignment loss (masked words/tokens weigh 1)", min=0)]
    = 1.0,
    features: Annotated[str, typer.Option(
        help="Clip features read beside the visual tokens: auto (i3d when present), none, "
             "or an encoder")] = "auto",
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="table or json summary")] = Fmt.table,
    home: HomeOpt = None,
) -> None:
    """Pretrain VideoBERT on the warehouse's text and visual tokens (GPU when present;
    torchrun on several GPUs); checkpoints, metrics and a loss curve under HOME/models."""
    h = resolve_home(home)
    start_flow_env(h)
    from flows.pretrain import PretrainParams, pretrain_flow
    from warehouse.store import WarehouseError

    try:
        params = PretrainParams(
            home=str(h), preset=preset, steps=steps, resume=resume, batch_size=batch_size,
            lr=lr, seed=seed, device=device, compile=compile_, codebook=codebook,
            continue_from=continue_from, eval_every=eval_every, ckpt_every=ckpt_every,
            threads=threads, positive_share=positive_share, features=features,
            align_weight=align_weight,
            progress=sys.stderr.isatty())
        with local_flow_settings():
            summary = pretrain_flow(params)
    except (WarehouseError, ValueError) as e:
        fail_from(e)
    if fmt is Fmt.json:
        sys.stdout.write(json.dumps(summary, default=str) + "\n")
        return
    rows = [(split, k, f"{v:.4g}") for split, vals in sorted(summary["metrics"].items())
            for k, v in sorted(vals.items())]
    out.print(f"[bold]{summary['model_run']}[/]: step {summary['steps']} on "
              f"{summary['device']}")
    print_rows(["split", "metric", "value"], rows, Fmt.table)
    out.print(f"checkpoint: {summary['checkpoint']}\nloss curve: {summary['loss_png']}")
