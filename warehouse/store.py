"""The warehouse: Parquet parts committed through a manifest, published as a DuckDB catalog.

Layout under ``<home>/warehouse``::

    manifest.json         the commit point: every committed Parquet part of every table
    tables/<table>/*.parquet
    staging/              parts written by tasks, not yet committed (removed by the next writer)
    catalog.duckdb        published read-only catalog: one view per table over its parts
    .writer.lock          held (flock) by the one process allowed to commit

Why this shape: DuckDB allows one writing process per database file, and while it writes every
other process (even ``read_only=True``) fails to open the file. Here no process ever opens the
published catalog for writing: a writer commits Parquet parts by atomically replacing
``manifest.json``, then builds a fresh catalog in a temporary file and renames it over
``catalog.duckdb``. Readers (``videobert sql``, search, a user's ``duckdb`` shell) open the
catalog read-only and never meet a lock; they see the last published snapshot. A commit of
several tables is atomic (one manifest rename), and a killed writer leaves only uncommitted
files, which the next writer deletes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from warehouse import schema as sch
from warehouse.migrations import MIGRATIONS
from warehouse.parquet import TMP_PREFIX, fsync_dir, write_bytes_atomic
from warehouse.parts import StagedPart as StagedPart  # re-exported: the store's API
from warehouse.parts import WarehouseError as WarehouseError
from warehouse.parts import stage as stage
from warehouse.parts import to_arrow as to_arrow

MANIFEST_FORMAT = 1
LOG_KEEP = 200
PUBLISH_INTERVAL_S = 2.0
"""``publish="auto"`` commits rebuild the catalog at most this often (and at writer exit)."""


def utcnow() -> dt.datetime:
    """Current UTC time as a naive datetime (the warehouse stores UTC TIMESTAMPs)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Warehouse:
    """Paths and read access for the warehouse of one data home."""

    def __init__(self, home: Path | str) -> None:
        self.home = Path(home).expanduser().resolve()
        self.root = self.home / "warehouse"
        self.manifest_path = self.root / "manifest.json"
        self.catalog_path = self.root / "catalog.duckdb"
        self.tables_dir = self.root / "tables"
        self.staging_dir = self.root / "staging"
        self.lock_path = self.root / ".writer.lock"

    def exists(self) -> bool:
        """True once a first commit has been made."""
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        """The committed manifest (an empty one before the first commit)."""
        if not self.manifest_path.is_file():
            return {"format": MANIFEST_FORMAT, "version": 0, "schema_version": 0,
                    "tables": {}, "log": []}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def part_paths(self, table: str, manifest: Mapping[str, Any] | None = None) -> list[Path]:
        """Absolute paths of the committed parts of ``table``."""
        m = manifest if manifest is not None else self.manifest()
        return [self.tables_dir / p["file"] for p in m["tables"].get(table, [])]

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per committed table.

        Reads the manifest, never the catalog file, so it works inside a writer too.
        """
        con = duckdb.connect()
        create_views(con, self, self.manifest())
        return con

    def connect_catalog(self) -> duckdb.DuckDBPyConnection:
        """Open the published catalog read-only (what ``videobert sql`` and search use).

        The catalog's views name their Parquet parts by absolute path; a data home that was
        moved or copied since the last publish gets :meth:`connect` instead (views over this
        home's committed parts), never the old location's files.

        Raises:
            WarehouseError: when nothing has been published in this data home yet.
        """
        if not self.catalog_path.is_file():
            raise WarehouseError(
                f"no warehouse in {self.home}: run `videobert ingest PATH` (or `videobert run`) "
                "first, or pass --home / set VIDEOBERT_HOME to your data home")
        con = duckdb.connect(str(self.catalog_path), read_only=True)
        try:
            rows = con.execute("SELECT home FROM warehouse_info").fetchall()
        except duckdb.Error:
            rows = []
        home = rows[0][0] if rows else None
        if home == str(self.home):
            return con
        con.close()
        return self.connect()

    def connect_published(self) -> duckdb.DuckDBPyConnection:
        """A reader for code that runs in a fresh process (search): the published catalog when
        there is one (no schema parsing), else :meth:`connect`."""
        return self.connect_catalog() if self.catalog_path.is_file() else self.connect()

    @contextlib.contextmanager
    def writer(self, wait_s: float = 0.0, purpose: str = "") -> Iterator[Writer]:
        """Hold the single-writer lock and yield a :class:`Writer`.

        Re-entrant within a process: nested calls share the lock and the writer.

        Args:
            wait_s: how long to wait for another process's writer to finish.
            purpose: shown to a process that finds the lock taken.

        Raises:
            WarehouseError: when another process holds the lock after ``wait_s``.
        """
        key = str(self.root)
        with _REGISTRY_LOCK:
            held = _WRITERS.get(key)
            if held is not None:
                held[1] += 1
        if held is not None:
            try:
                yield held[0]
            finally:
                with _REGISTRY_LOCK:
                    held[1] -= 1
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = _acquire_lock(self.lock_path, wait_s, purpose)
        w = Writer(self)
        with _REGISTRY_LOCK:
            _WRITERS[key] = [w, 1]
        try:
            w.recover()
            yield w
            if w.dirty:
                w.publish()
        finally:
            with _REGISTRY_LOCK:
                _WRITERS.pop(key, None)
            os.close(fd)  # closing the descriptor releases the flock


_WRITERS: dict[str, list[Any]] = {}
_REGISTRY_LOCK = threading.Lock()


def _acquire_lock(path: Path, wait_s: float, purpose: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                raise WarehouseError(
                    f"another videobert process is writing to {path.parent} "
                    f"({holder or 'unknown'}); wait for it to finish, or pass a longer --wait"
                ) from None
            time.sleep(0.2)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} {purpose}".encode(), 0)
    return fd


class Writer:
    """Commits staged parts for one data home. Only obtained through :meth:`Warehouse.writer`."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self._lock = threading.Lock()
        self.dirty = False  # committed but not yet published
        self._published_at = 0.0
        self.publish_interval_s = PUBLISH_INTERVAL_S

    def recover(self) -> None:
        """Crash cleanup: remove staged, temporary and uncommitted files; migrate the schema."""
        shutil.rmtree(self.wh.staging_dir, ignore_errors=True)
        committed = {str(p) for t in self.wh.manifest()["tables"]
                     for p in self.wh.part_paths(t)}
        for folder in (self.wh.root, *self.wh.tables_dir.glob("*")):
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                stale_tmp = f.name.startswith(TMP_PREFIX)
                orphan = (folder != self.wh.root and f.suffix == ".parquet"
                          and str(f) not in committed)
                if f.is_file() and (stale_tmp or orphan):
                    f.unlink(missing_ok=True)
        self.migrate()
        if not self.wh.catalog_path.is_file():
            self.publish()

    def migrate(self, target: int | None = None) -> list[int]:
        """Apply the missing schema migrations up to ``target`` (default: the code's version).

        Each step of :data:`warehouse.migrations.MIGRATIONS` runs once, in order, and commits
        with its version.

        Returns:
            The versions applied (empty when already current).

        Raises:
            WarehouseError: when the warehouse was written by a newer schema.
        """
        target = sch.SCHEMA_VERSION if target is None else target
        current = int(self.wh.manifest()["schema_version"])
        if current > target:
            raise WarehouseError(
                f"the warehouse in {self.wh.home} has schema v{current}, newer than this "
                f"videobert (v{target}): upgrade videobert")
        applied = []
        for version in range(current + 1, target + 1):
            step = MIGRATIONS.get(version)
            if step is None:
                raise WarehouseError(f"no migration to schema v{version}")
            self.commit(step(self), schema_version=version,
                        message=f"migrate to schema v{version}", publish=False)
            applied.append(version)
        return applied

    def stage(self, table: str, rows: Sequence[Mapping[str, Any]] | pa.Table) -> StagedPart:
        """Stage rows for ``table`` (see :func:`stage`)."""
        return stage(self.wh.home, table, rows)

    def commit(self, parts: Sequence[StagedPart], *, remove: Mapping[str, Sequence[str]] = {},
               message: str = "", schema_version: int | None = None,
               publish: bool | str = True) -> int:
        """Atomically add staged parts (and drop committed parts) across tables.

        Args:
            parts: staged parts to add; empty parts are discarded.
            remove: committed part file names (as in the manifest) to drop, per table.
            message: a note kept in the manifest's log.
            schema_version: set by migrations only.
            publish: rebuild the read-only catalog after the commit: True, False, or
                ``"auto"`` (at most every ``publish_interval_s``; the writer publishes
                whatever is left when it exits). Readers see committed data either way only
                once published.

        Returns:
            The new manifest version.
        """
        with self._lock:
            m = self.wh.manifest()
            moved: list[tuple[str, dict[str, Any]]] = []
            for part in parts:
                sch.table(part.table)  # unknown table -> KeyError before anything moves
                src = Path(part.path)
                if part.rows == 0 and schema_version is None:
                    src.unlink(missing_ok=True)
                    continue
                dest = self.wh.tables_dir / part.table / f"part-{uuid.uuid4().hex}.parquet"
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dest)
                moved.append((part.table, {"file": f"{part.table}/{dest.name}", "rows": part.rows,
                                           "bytes": part.bytes, "sha256": part.sha256}))
            for folder in {self.wh.tables_dir / t for t, _ in moved}:
                fsync_dir(folder)
            dropped: list[Path] = []
            for table, files in remove.items():
                keep = [p for p in m["tables"].get(table, []) if p["file"] not in set(files)]
                dropped += [self.wh.tables_dir / p["file"] for p in m["tables"].get(table, [])
                            if p["file"] in set(files)]
                m["tables"][table] = keep
            for table, entry in moved:
                m["tables"].setdefault(table, []).append(entry)
            m["version"] = int(m["version"]) + 1
            if schema_version is not None:
                m["schema_version"] = schema_version
            m["updated_at"] = utcnow().isoformat()
            counts: dict[str, int] = {}
            for t, e in moved:
                counts[t] = counts.get(t, 0) + e["rows"]
            m["log"] = (m.get("log", []) + [{"version": m["version"], "at": m["updated_at"],
                                              "message": message, "added_rows": counts,
                                              "removed_parts": sum(map(len, remove.values()))}]
                        )[-LOG_KEEP:]
            write_bytes_atomic(json.dumps(m, indent=1).encode(), self.wh.manifest_path)
            for p in dropped:
                p.unlink(missing_ok=True)
            self.dirty = True
            due = time.monotonic() - self._published_at >= self.publish_interval_s
            if publish is True or (publish == "auto" and due):
                self.publish(m)
            return int(m["version"])

    def replace_rows(self, table: str, rows: pa.Table, *, message: str = "") -> int:
        """Replace every committed row of ``table`` by ``rows`` in one commit (small tables)."""
        old = [p["file"] for p in self.wh.manifest()["tables"].get(table, [])]
        return self.commit([self.stage(table, rows)], remove={table: old}, message=message)

    def publish(self, manifest: Mapping[str, Any] | None = None) -> None:
        """Build the read-only catalog from the manifest and rename it into place."""
        m = manifest if manifest is not None else self.wh.manifest()
        tmp = self.wh.root / f"{TMP_PREFIX}{uuid.uuid4().hex}-catalog.duckdb"
        try:
            con = duckdb.connect(str(tmp))
            create_views(con, self.wh, m, comments=True)
            con.execute("CREATE TABLE warehouse_info AS SELECT ? AS home, ? AS version, "
                        "? AS schema_version, ?::TIMESTAMP AS published_at",
                        [str(self.wh.home), int(m["version"]), int(m["schema_version"]),
                         utcnow()])
            con.execute("CHECKPOINT")
            con.close()
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.wh.catalog_path)
            fsync_dir(self.wh.root)
            self.dirty = False
            self._published_at = time.monotonic()
        finally:
            tmp.unlink(missing_ok=True)
            Path(str(tmp) + ".wal").unlink(missing_ok=True)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def create_views(con: duckdb.DuckDBPyConnection, wh: Warehouse, manifest: Mapping[str, Any],
                 *, comments: bool = False) -> None:
    """Create one view per table over its committed parts, with the schema's column order.

    Tables with no committed part yet get an empty view of the right types.
    """
    stmts = []
    for name, t in sch.tables().items():
        files = [str(p) for p in wh.part_paths(name, manifest)]
        cols = ", ".join(f'"{c}"' for c in t.column_names)
        if files:
            src = ("read_parquet([" + ", ".join(_sql_str(f) for f in files)
                   + "], union_by_name = true)")
            stmts.append(f'CREATE OR REPLACE VIEW "{name}" AS SELECT {cols} FROM {src}')
        else:
            typed = ", ".join(f'CAST(NULL AS {c.type}) AS "{c.name}"' for c in t.columns)
            stmts.append(f'CREATE OR REPLACE VIEW "{name}" AS SELECT {typed} WHERE false')
        if comments:
            stmts.append(f'COMMENT ON VIEW "{name}" IS {_sql_str(t.comment)}')
            stmts += [f'COMMENT ON COLUMN "{name}"."{c.name}" IS {_sql_str(c.comment)}'
                      for c in t.columns]
    # one script, one transaction: per-statement round trips dominated publishing
    con.execute("BEGIN TRANSACTION;\n" + ";\n".join(stmts) + ";\nCOMMIT;")


def rewrite_without(writer: Writer, table: str, column: str,
                    values: Sequence[Any]) -> tuple[list[StagedPart], dict[str, list[str]]]:
    """Stage ``table`` minus the rows whose ``column`` is in ``values``.

    Returns the staged replacement and the parts it replaces, for one atomic
    :meth:`Writer.commit` together with the run's new parts. Nothing to do -> ([], {}).
    """
    if not values:
        return [], {}
    m = writer.wh.manifest()
    old = [p["file"] for p in m["tables"].get(table, [])]
    if not old:
        return [], {}
    con = duckdb.connect()
    create_views(con, writer.wh, m)
    con.execute("CREATE TEMP TABLE _drop(v VARCHAR)")
    con.executemany("INSERT INTO _drop VALUES (?)", [[str(v)] for v in values])
    kept = con.sql(f'SELECT * FROM "{table}" WHERE CAST("{column}" AS VARCHAR) '
                   "NOT IN (SELECT v FROM _drop)").to_arrow_table()
    con.close()
    return [writer.stage(table, kept)], {table: old}
