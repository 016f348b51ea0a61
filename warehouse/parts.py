"""Staged Parquet parts: what any process may write without the writer's lock.

A task stages rows as a Parquet part in ``<home>/warehouse/staging`` (:func:`stage`), in its
table's exact Arrow schema (:func:`to_arrow`); only :class:`warehouse.store.Writer` commits
staged parts into the manifest.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from warehouse import schema as sch
from warehouse.parquet import write_parquet_atomic


class WarehouseError(RuntimeError):
    """A warehouse that is missing, locked by another writer, or newer than this code."""


@dataclass(frozen=True)
class StagedPart:
    """A Parquet part written to the staging folder, waiting for a commit."""

    table: str
    path: str
    rows: int
    bytes: int
    sha256: str


def to_arrow(table: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> pa.Table:
    """Rows (dicts) or an Arrow table -> an Arrow table in ``table``'s exact schema.

    Missing columns become NULL; unknown keys raise (a typo must not vanish silently).
    """
    target = sch.table(table).arrow
    if isinstance(rows, pa.Table):
        extra = set(rows.column_names) - set(target.names)
        if extra:
            raise ValueError(f"columns {sorted(extra)} are not in table {table!r}")
        cols = [rows.column(f.name).cast(f.type) if f.name in rows.column_names
                else pa.nulls(rows.num_rows, f.type) for f in target]
        return pa.Table.from_arrays(cols, schema=target)
    for row in rows:
        extra = set(row) - set(target.names)
        if extra:
            raise ValueError(f"columns {sorted(extra)} are not in table {table!r}")
    return pa.Table.from_pylist(list(rows), schema=target)


def stage(home: Path, table: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> StagedPart:
    """Write rows as a staged Parquet part (any process may call this; no lock needed).

    Args:
        home: the data home.
        table: warehouse table name.
        rows: the rows to add.

    Returns:
        The staged part, to pass to :meth:`Writer.commit`.
    """
    data = to_arrow(table, rows)
    dest = Path(home) / "warehouse" / "staging" / f"{table}-{uuid.uuid4().hex}.parquet"
    info = write_parquet_atomic(data, dest)
    return StagedPart(table, str(dest), info["rows"], info["bytes"], info["sha256"])
