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
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from videobert.prefect_env import configure_prefect_env, reap_orphan_prefect_servers

# soft_wrap: a message is never broken at the console width (80 columns when piped), so a
# path or a command in it stays whole for copy-paste and scripts; tables still fit the width
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

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
    """Print ``message`` as one error line on stderr and exit with ``code``: 2 for a user's
    mistake (a bad path or option value, nothing to do), 1 when the work itself failed."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def one_line(e: BaseException) -> str:
    """An exception as one line: pydantic's validation errors as ``field: problem; ...``."""
    errors = getattr(e, "errors", None)
    if callable(errors):
        try:
            items = errors()
            return "; ".join(f"{'.'.join(str(x) for x in i.get('loc', ())) or 'value'}: "
                             f"{i.get('msg', '')}" for i in items)
        except Exception:  # noqa: BLE001 - fall back to the plain message
            pass
    return " ".join(str(e).split()) or type(e).__name__


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
            t.add_row(*[Text("" if v is None else str(v)) for v in r])  # "[Music]" stays
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
        fail(one_line(e), code=2)


def start_flow_env(h: Path) -> None:
    """Prepare the environment for running a flow on data home ``h`` (before importing
    prefect): Prefect settings, and crash cleanup of servers a killed run left behind."""
    configure_prefect_env(h)
    reaped = reap_orphan_prefect_servers(h)
    if reaped:
        err.print(f"stopped {len(reaped)} Prefect server(s) left behind by a killed run")


def is_user_error(e: BaseException) -> bool:
    """A mistake in what was asked (exit 2: a bad path or option value, nothing to do), not a
    failure of the work (exit 1)."""
    from pydantic import ValidationError

    from tasks.shared.errors import InputError

    return isinstance(e, InputError | ValidationError)


def fail_from(e: BaseException) -> NoReturn:
    """:func:`fail` with ``e`` as one line; exit 2 for a user's mistake, else 1."""
    _release_frames(e)
    fail(one_line(e), code=2 if is_user_error(e) else 1)


def _release_frames(e: BaseException) -> None:
    """Drop the locals of the frames ``e`` went through: Prefect keeps a failed run's
    exception until exit, and the DuckDB connections in those frames then outlive the module
    (nanobind prints a "leaked" report at exit)."""
    import traceback

    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__


def report_error(e: BaseException, args: list[str], debug: bool) -> int:
    """Report an exception that escaped a command as one line on stderr; returns the exit
    code. Unexpected errors write their traceback to a log file (and print it with debug)."""
    import traceback

    if is_user_error(e):
        if debug:
            traceback.print_exception(e, file=sys.stderr)
        _release_frames(e)
        err.print(f"[bold red]error:[/] {escape(one_line(e))}", soft_wrap=True)
        return 2
    text = "".join(traceback.format_exception(e))
    _release_frames(e)
    log = _error_log(args, text)
    if debug:
        sys.stderr.write(text)
    where = f"the traceback is in {log}" if log else "the traceback could not be saved"
    err.print(f"[bold red]error:[/] unexpected {type(e).__name__}: {escape(one_line(e))} "
              f"({escape(where)}; --debug prints it)", soft_wrap=True)
    return 1


def _error_log(args: list[str], text: str) -> Path | None:
    """Append ``text`` to ``HOME/logs/errors.log`` (the data home of ``args``, when it
    exists; else the system's temporary folder). Returns the file, or None."""
    import os
    import tempfile
    import time

    home = os.environ.get("VIDEOBERT_HOME") or "videobert-data"
    for i, a in enumerate(args):
        if a == "--home" and i + 1 < len(args):
            home = args[i + 1]
        elif a.startswith("--home="):
            home = a.split("=", 1)[1]
    folder = Path(home) / "logs" if Path(home).is_dir() else Path(tempfile.gettempdir())
    log = folder / ("errors.log" if folder.name == "logs" else "videobert-errors.log")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with log.open("a", encoding="utf-8") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} videobert {' '.join(args)}\n")
            f.write(text)
    except OSError:
        return None
    return log.resolve()
