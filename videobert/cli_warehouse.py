"""Warehouse commands of the ``videobert`` CLI: sql, doctor, warehouse info/check/publish.

Registered on the main Typer app by ``videobert/cli.py``. None of them starts Prefect.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from videobert import __version__
from videobert.cli_common import Fmt, HomeOpt, fail, fail_from, out, print_rows
from warehouse.home import resolve_home


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
        fail_from(e)
    try:
        rel = con.sql(query)
        if rel is None:
            fail("the statement returned no rows (the warehouse is read-only here)")
        columns, rows = rel.columns, rel.fetchall()
    except duckdb.Error as e:
        fail(f"{type(e).__name__}: {e}")
    print_rows(columns, rows, fmt)


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
        t.add_row(Text(item["name"]), mark, Text(item["detail"]))  # ".[asr]" is no markup
    out.print(t)
    if any(i["status"] == "missing" and i.get("required") for i in report["checks"]):
        raise typer.Exit(1)


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


def warehouse_check(home: HomeOpt = None) -> None:
    """Run the data tests (queries that must return zero rows)."""
    from warehouse.checks import run_checks
    from warehouse.store import Warehouse

    results = run_checks(Warehouse(resolve_home(home)))
    print_rows(["check", "failing rows"], sorted(results.items()), Fmt.table)
    if any(results.values()):
        raise typer.Exit(1)


def warehouse_publish(home: HomeOpt = None,
                      wait: Annotated[float, typer.Option(help="Seconds to wait for a writer")]
                      = 60.0) -> None:
    """Rebuild the read-only catalog (after moving the data home, for example)."""
    from warehouse.store import Warehouse

    wh = Warehouse(resolve_home(home))
    with wh.writer(wait_s=wait, purpose="publish") as w:
        w.publish()
    out.print(f"published {wh.catalog_path}")
