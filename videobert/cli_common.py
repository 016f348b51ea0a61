"""What every ``videobert`` command shares: consoles, option types, output formats, failure.

Imports nothing heavy (no Prefect, no torch), so ``--help`` and ``sql`` start fast.
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

from videobert.prefect_env import configure_prefect_env, reap_orphan_prefect_servers

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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one error line on stderr and exit with ``code``."""
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


def with_runner(flow: Any, runner: str, workers: int | None, address: str | None) -> Any:
    """``flow`` set to run its tasks on the chosen task runner (exits on a bad choice)."""
    from flows.runners import with_task_runner

    try:
        return with_task_runner(flow, runner, workers=workers, address=address)
    except (ValueError, RuntimeError) as e:  # bad kind/address; prefect-dask not installed
        fail(str(e))


def start_flow_env(h: Path) -> None:
    """Prepare the environment for running a flow on data home ``h`` (before importing
    prefect): Prefect settings, and crash cleanup of servers a killed run left behind."""
    configure_prefect_env(h)
    reaped = reap_orphan_prefect_servers(h)
    if reaped:
        err.print(f"stopped {len(reaped)} Prefect server(s) left behind by a killed run")
