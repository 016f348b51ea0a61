"""The ``videobert`` command line: the Typer app and the one table of its commands.

Every command takes ``--home`` (else ``VIDEOBERT_HOME``, else ``./videobert-data``). The
commands live in ``cli_data`` (samples, ingest, tokenize, codebook, weights), ``cli_warehouse``
(sql, doctor, warehouse), ``cli_pretrain``, ``cli_retrieval`` (finetune, index, evaluate,
search, probe) and ``cli_run``; they are registered here, explicitly, and import nothing from
this module. Heavy modules (Prefect, torch) are imported inside the commands that need them, so
``--help`` and ``sql`` start fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from videobert import (
    __version__,
    cli_caption,
    cli_data,
    cli_pretrain,
    cli_retrieval,
    cli_run,
    cli_serve,
    cli_warehouse,
)
from videobert.cli_common import out, report_error

# (group or "" for top level, command name, function): the whole command tree, in help order.
COMMANDS: list[tuple[str, str, Callable[..., Any]]] = [
    ("", "sql", cli_warehouse.sql),
    ("", "doctor", cli_warehouse.doctor),
    ("", "samples", cli_data.samples),
    ("", "ingest", cli_data.ingest),
    ("", "tokenize", cli_data.tokenize),
    ("", "pretrain", cli_pretrain.pretrain),
    ("", "finetune", cli_retrieval.finetune),
    ("", "index", cli_retrieval.index),
    ("", "evaluate", cli_retrieval.evaluate),
    ("", "search", cli_retrieval.search),
    ("", "probe", cli_retrieval.probe),
    ("", "serve", cli_serve.serve),
    ("caption", "train", cli_caption.caption_train),
    ("caption", "evaluate", cli_caption.caption_evaluate),
    ("caption", "describe", cli_caption.caption_describe),
    ("", "run", cli_run.run_nightly),
    ("codebook", "show", cli_data.codebook_show),
    ("weights", "install", cli_data.weights_install),
    ("warehouse", "info", cli_warehouse.warehouse_info),
    ("warehouse", "check", cli_warehouse.warehouse_check),
    ("warehouse", "publish", cli_warehouse.warehouse_publish),
]

GROUPS: dict[str, str] = {
    "caption": "Describe clips in words: train the caption model, score it, caption videos "
               "(`videobert caption VIDEO --format srt`, `videobert caption --all`).",
    "warehouse": "Inspect and maintain the warehouse.",
    "weights": "Install and list model weights.",
    "codebook": "Look at the visual-token codebook.",
}


class _DescribeByDefault(TyperGroup):
    """A group whose first argument, when it names none of its commands, goes to
    ``describe``: ``videobert caption VIDEO`` and ``videobert caption --all``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["describe", *args]
        return super().parse_args(ctx, args)


DEFAULT_COMMAND: dict[str, type[TyperGroup]] = {"caption": _DescribeByDefault}


def _version(value: bool) -> None:
    if value:
        out.print(f"videobert {__version__}")
        raise typer.Exit()


def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Print the full traceback of an unexpected error (also accepted after "
                        "the command; VIDEOBERT_DEBUG=1 does the same).")] = False,
) -> None:
    """videobert: ingest -> visual tokens -> VideoBERT -> retrieval, as Prefect flows."""


def build_app() -> typer.Typer:
    """The Typer app with every command of :data:`COMMANDS` registered."""
    root = typer.Typer(
        name="videobert", no_args_is_help=True, rich_markup_mode="rich", add_completion=False,
        help="Turn your video collection into a searchable, continuously retrained VideoBERT "
             "model.")
    root.callback()(main_callback)
    groups = {name: typer.Typer(no_args_is_help=True, help=text,
                                cls=DEFAULT_COMMAND.get(name, TyperGroup))
              for name, text in GROUPS.items()}
    for name, sub in groups.items():
        root.add_typer(sub, name=name)
    for group, name, fn in COMMANDS:
        (groups[group] if group else root).command(name)(fn)
    return root


app = build_app()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: the one error path of the CLI.

    A user's mistake (:class:`~tasks.shared.errors.InputError`: a missing path, a bad value,
    nothing to do) is one line on stderr and exit code 2; usage errors are Click's, also 2.
    Anything unexpected is one line naming the log file that holds its traceback, exit code
    1; ``--debug`` (anywhere on the line) prints the traceback too.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("VIDEOBERT_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="videobert")
    except Exception as e:  # noqa: BLE001 - the one place every escaped error is reported
        sys.exit(report_error(e, args, debug))


if __name__ == "__main__":
    main()
