"""A long-lived reader of the published catalog, for a process that answers many searches.

A search joins its hits with ``clips``, ``video_files``, ``text_segments`` and
``generated_captions``; through the
catalog's views that means opening the catalog (~20 ms on 2 cores) and planning and running
a join over Parquet parts (~15 ms) per query. :class:`CatalogReader` opens the catalog once
and keeps what a hit shows (its video, times, a path, the text said there, its caption) in
memory, keyed by
clip; it hands out catalog cursors (one per thread and query) for the rest. When a publish
replaces the catalog file (a flow committed), the next query reopens and reloads, so answers
follow the published state as the CLI's do. ``videobert serve`` uses one; a one-shot
``videobert search`` process does not (loading everything would cost more than it saves).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from warehouse.store import Warehouse


class CatalogReader:
    """Catalog cursors (``catalog()``) and hit details (``details()``) over the published
    catalog, renewed when the catalog file changes."""

    def __init__(self, wh: Warehouse) -> None:
        self.wh = wh
        self._key: tuple[int, int] | None = None
        self._cat: Any = None
        self._clips: dict[str, tuple[str, float, float]] = {}
        self._paths: dict[str, str] = {}
        self._said: dict[str, list[tuple[float, float, str]]] = {}
        self._captions: dict[str, str] = {}
        self._lock = threading.Lock()

    def _fresh(self) -> None:
        st = self.wh.catalog_path.stat()
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._key:
            return
        cat = self.wh.connect_published()
        clips = {c: (v, s, e) for c, v, s, e in cat.sql(
            "SELECT clip_id, video_id, start_s, end_s FROM clips").fetchall()}
        paths = dict(cat.sql("SELECT video_id, min(path) FROM video_files GROUP BY video_id")
                     .fetchall())
        said: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for video, start, end, text in cat.sql(
                "SELECT video_id, start_s, end_s, text FROM text_segments "
                "ORDER BY video_id, start_s, segment_id").fetchall():
            said[video].append((start, end, text))
        captions = dict(cat.sql(  # the newest caption of each clip wins
            "SELECT clip_id, text FROM generated_captions ORDER BY created_at, model_run")
            .fetchall())
        if self._cat is not None:
            self._cat.close()
        self._cat, self._clips, self._paths, self._said = cat, clips, paths, dict(said)
        self._captions = captions
        self._key = key

    def catalog(self) -> Any:
        """A cursor on the published catalog (every table)."""
        with self._lock:
            self._fresh()
            return self._cat.cursor()

    def details(self, clip_ids: Iterable[str]) -> dict[str, tuple]:
        """Per known clip: ``(clip_id, video_id, start_s, end_s, path, text, caption)``, as
        the ``search_clip_details`` query returns them (the text said over the clip, in time
        order, and its newest generated caption; None when there is none)."""
        with self._lock:
            self._fresh()
            clips, paths, said, caps = self._clips, self._paths, self._said, self._captions
        out = {}
        for c in clip_ids:
            if c in clips:
                v, s, e = clips[c]
                text = " ".join(t for a, b, t in said.get(v, ()) if a < e and b > s)
                out[c] = (c, v, s, e, paths.get(v), text or None, caps.get(c))
        return out
