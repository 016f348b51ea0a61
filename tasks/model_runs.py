"""The ``model_runs`` registry: ids, upserts, and which run is live.

The live (promoted) model is the newest ``promotions`` row with ``promoted = true``; before any
promotion, the newest finished fine-tune serves search.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from warehouse import queries
from warehouse.store import Warehouse, rewrite_without, utcnow


def new_run_id(kind: str) -> str:
    """``<kind>-YYYYmmdd-HHMMSS-<6 hex>``: sortable by time, unique, a valid folder name."""
    return f"{kind}-{utcnow().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def rel(home: Path, path: str | Path) -> str:
    """``path`` relative to the data home when it is inside it."""
    p = Path(path)
    return str(p.relative_to(home)) if p.is_absolute() and p.is_relative_to(home) else str(p)


def upsert(wh: Warehouse, row: Mapping[str, Any], *, purpose: str, wait_s: float = 120.0
           ) -> None:
    """Insert or replace one ``model_runs`` row in a single atomic commit."""
    with wh.writer(wait_s=wait_s, purpose=purpose) as w:
        staged, old = rewrite_without(w, "model_runs", "model_run", [row["model_run"]])
        w.commit([*staged, w.stage("model_runs", [dict(row)])], remove=old,
                 message=f"{purpose} {row['model_run']}: {row['status']}")


def one(wh: Warehouse, name: str, args: list[Any]) -> tuple | None:
    """First row of a named query (None when empty)."""
    con = wh.connect()
    try:
        return con.execute(queries.load(name), args).fetchone()
    finally:
        con.close()


def latest_done(wh: Warehouse, kind: str) -> tuple | None:
    """Newest finished run of a kind: (model_run, codebook_id, checkpoint_path, preset)."""
    return one(wh, "latest_done_run", [kind])


def live_run(wh: Warehouse) -> tuple | None:
    """The fine-tune run that serves search: the promoted one, else the newest finished one.

    Returns:
        (model_run, codebook_id, checkpoint_path, preset) or None when there is none.
    """
    return one(wh, "live_run", [])
