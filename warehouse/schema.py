"""Table schemas, read from the ``schema/*.sql`` files (one file per table).

The SQL files are the single source of truth: each holds a ``CREATE TABLE`` (types, NOT NULL,
PRIMARY KEY) and a ``COMMENT ON COLUMN`` for every column. They are executed in an in-memory
DuckDB to derive the Arrow schema used for every Parquet part, the key columns, and the
comments copied onto the published catalog's views.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import duckdb
import pyarrow as pa

SCHEMA_VERSION = 4
"""Current warehouse schema version (see :mod:`warehouse.migrations`)."""


@dataclass(frozen=True)
class Column:
    """One column of a table: name, DuckDB type, documentation comment."""

    name: str
    type: str
    comment: str
    not_null: bool


@dataclass(frozen=True)
class TableSchema:
    """A table's definition as derived from its schema file."""

    name: str
    comment: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    arrow: pa.Schema
    ddl: str

    @property
    def column_names(self) -> list[str]:
        """Column names in declaration order."""
        return [c.name for c in self.columns]


def _schema_files() -> dict[str, str]:
    folder = resources.files("warehouse") / "schema"
    return {f.name[:-4]: f.read_text(encoding="utf-8")
            for f in folder.iterdir() if f.name.endswith(".sql")}


def _table_from_ddl(con: duckdb.DuckDBPyConnection, name: str, ddl: str) -> TableSchema:
    con.execute(ddl)
    rows = con.execute(
        "SELECT column_name, data_type, comment, NOT is_nullable FROM duckdb_columns() "
        "WHERE table_name = ? ORDER BY column_index", [name]).fetchall()
    if not rows:
        raise ValueError(f"schema file {name}.sql does not create a table named {name!r}")
    missing = [r[0] for r in rows if not r[2]]
    if missing:
        raise ValueError(f"schema file {name}.sql has columns without a comment: {missing}")
    comment = con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = ?",
                          [name]).fetchall()[0][0] or ""
    keys = con.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND constraint_type = 'PRIMARY KEY'", [name]).fetchall()
    key_row = keys[0] if keys else None
    arrow = con.sql(f'SELECT * FROM "{name}" LIMIT 0').to_arrow_table().schema
    return TableSchema(
        name=name, comment=comment,
        columns=tuple(Column(r[0], r[1], r[2], bool(r[3])) for r in rows),
        key=tuple(key_row[0]) if key_row else (), arrow=arrow, ddl=ddl)


@functools.cache
def tables() -> dict[str, TableSchema]:
    """All table schemas by name (cached)."""
    con = duckdb.connect()  # one in-memory database for all of them: ~0.03 s per connection
    try:
        return {name: _table_from_ddl(con, name, ddl)
                for name, ddl in sorted(_schema_files().items())}
    finally:
        con.close()


def table(name: str) -> TableSchema:
    """The schema of one table.

    Raises:
        KeyError: for an unknown table name (the message lists the known ones).
    """
    try:
        return tables()[name]
    except KeyError:
        raise KeyError(f"unknown warehouse table {name!r}; known: {sorted(tables())}") from None
