"""``videobert serve``: the search page and its JSON API on this machine.

Registered on the main Typer app by ``videobert/cli.py``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

import typer

from videobert.cli_common import HomeOpt, err, fail
from warehouse.home import resolve_home


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default)")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port", min=1, max=65535)] = 8000,
    token: Annotated[str | None, typer.Option(
        envvar="VIDEOBERT_TOKEN", help="Require this token (?token=... or a bearer header) on "
                                       "every request but /api/health")] = None,
    home: HomeOpt = None,
) -> None:
    """Serve the search page (http://HOST:PORT/) and its JSON API (/docs) over the published
    catalog and indices; search works while flows write."""
    import uvicorn

    from videobert.serve import create_app
    from warehouse.store import Warehouse

    h = resolve_home(home)
    if not Warehouse(h).catalog_path.is_file():
        fail(f"no warehouse in {h}: run `videobert run` (or ingest, tokenize, ... index) "
             "first, or pass --home", code=2)
    if not _loopback(host) and not token:
        err.print(f"[yellow]warning:[/] serving on {host}: anyone who can reach this address "
                  "can search and watch your videos (the page has no login; --token adds one)")
    err.print(f"videobert: http://{host}:{port}/  (API docs: /docs; Ctrl-C stops)")
    uvicorn.run(create_app(h, token=token), host=host, port=port, log_level="warning")


def _loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
