"""``videobert run``'s no-op fast path: nothing changed since the last finished run.

A nightly run with no new data skips training by itself (``flows/nightly.py``), but getting
there costs a Prefect server start and the flow's bookkeeping: most of a no-op run. So after
each finished run, ``videobert run`` writes ``HOME/nightly-state.json``: the run's parameters,
a fingerprint of every source (each file's relative path, size and mtime, recursively) and the
live model. The next ``videobert run`` with the same parameters compares first and, only when
all of these hold, reports "skipped: no new data" without starting Prefect:

- the parameters (sources included) are the same, and neither ``--force`` nor ``--recluster``
  is given;
- every source still has exactly the same files, sizes and modification times;
- the live model is the one recorded, and no ingest run added data since it was trained
  (another process may have ingested in between).

Any doubt runs the flow: the check only ever skips what the flow itself would skip. Runs under
a deployment (``nightly-retrain``) always go through the flow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from warehouse.home import sample_corpus_dir

STATE_NAME = "nightly-state.json"


def source_paths(home: Path, sources: list[str]) -> list[Path]:
    """The folders/files a run ingests: its sources, or the built-in sample corpus."""
    return [Path(s).expanduser().resolve() for s in sources] or [sample_corpus_dir(home)]


def fingerprint(paths: list[Path]) -> str | None:
    """sha256 over (path, size, mtime_ns) of every file under ``paths``; None when a path is
    missing or unreadable (then nothing can be concluded)."""
    h = hashlib.sha256()
    for root in paths:
        if not root.exists():
            return None
        try:
            files = [root] if root.is_file() else sorted(
                Path(d) / f for d, _, names in os.walk(root) for f in names)
            for f in files:
                st = f.stat()
                h.update(json.dumps([str(f), st.st_size, st.st_mtime_ns]).encode())
        except OSError:
            return None
    return h.hexdigest()


def params_key(params: Mapping[str, Any]) -> str:
    """Stable hash of the run's parameters."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


def save(home: Path, params: Mapping[str, Any], live_run: str | None) -> None:
    """Record a finished run with these parameters (``sources`` among them; atomic write)."""
    fp = fingerprint(source_paths(home, params["sources"]))
    if fp is None or live_run is None:
        return
    state = {"params": params_key(params), "fingerprint": fp, "live_run": live_run}
    tmp = home / f".{STATE_NAME}.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, home / STATE_NAME)


def unchanged(home: Path, params: Mapping[str, Any]) -> str | None:
    """The live run when nothing changed since the recorded run (see the module docstring),
    else None."""
    try:
        state = json.loads((home / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if state.get("params") != params_key(params):
        return None
    if state.get("fingerprint") != fingerprint(source_paths(home, params["sources"])):
        return None
    from tasks.nightly.gate import data_since
    from tasks.shared import model_runs
    from warehouse.store import Warehouse, WarehouseError

    try:
        wh = Warehouse(home)
        live = model_runs.live_run(wh)
        if live is None or live[0] != state.get("live_run") or data_since(wh, live):
            return None
    except WarehouseError:
        return None
    return str(live[0])
