"""A long-lived reader of the published catalog, for a process that answers many searches.

A search joins its hits with ``clips``, ``video_files`` and ``text_segments``; through the
catalog's views that means opening the catalog (~20 ms on 2 cores) and scanning Parquet parts
(~15 ms) per query. :class:`CatalogReader` opens the catalog once and copies those three
tables into an in-memory DuckDB, then hands out cursors (one per thread and query). When a
publish replaces the catalog file (a flow committed), the next query reopens and recopies, so
answers follow the published state as the CLI's do. ``videobert serve`` uses one; a one-shot
``videobert search`` process does not (the copy would cost more than it saves).
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb

from warehouse.store import Warehouse

HOT_TABLES = ("clips", "video_files", "text_segments")


class CatalogReader:
    """Cursors over the published catalog (``catalog()``) and over in-memory copies of the
    tables search joins with (``hot()``), renewed when the catalog file changes."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self._key: tuple[int, int] | None = None
        self._cat: duckdb.DuckDBPyConnection | None = None
        self._mem: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def _fresh(self) -> None:
        st = self.wh.catalog_path.stat()
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._key:
            return
        cat = self.wh.connect_published()
        mem = duckdb.connect()
        for table in HOT_TABLES:
            data = cat.sql(f'SELECT * FROM "{table}"').to_arrow_table()  # noqa: F841
            mem.execute(f'CREATE TABLE "{table}" AS SELECT * FROM data')
        for con in (self._cat, self._mem):
            if con is not None:
                con.close()
        self._cat, self._mem, self._key = cat, mem, key

    def catalog(self) -> Any:
        """A cursor on the published catalog (every table)."""
        with self._lock:
            self._fresh()
            return self._cat.cursor()

    def hot(self) -> Any:
        """A cursor on the in-memory copies of :data:`HOT_TABLES`."""
        with self._lock:
            self._fresh()
            return self._mem.cursor()
