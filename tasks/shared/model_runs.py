"""The ``model_runs`` registry: ids, upserts, and which run is live.

The live (promoted) model is the newest ``promotions`` row with ``promoted = true``; before any
promotion, the newest finished fine-tune serves search.

While a run trains, its process holds ``HOME/models/<run>/running.lock`` (an flock, released by
the kernel when the process dies, however it dies): :func:`orphaned` tells a run whose process
is gone from one still training, so crash cleanup never fails a live run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from warehouse import queries
from warehouse.store import Warehouse, rewrite_without, utcnow


def new_run_id(kind: str) -> str:
    """``<kind>-YYYYmmdd-HHMMSS-<6 hex>``: sortable by time, unique, a valid folder name."""
    return f"{kind}-{utcnow().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


RUNNING_LOCK = "running.lock"


def _lock_path(home: Path, model_run: str) -> Path:
    return Path(home) / "models" / model_run / RUNNING_LOCK


@contextlib.contextmanager
def running(home: Path, model_run: str) -> Iterator[Path]:
    """Hold the run's ``running.lock`` for the duration of its training.

    Args:
        home: the data home.
        model_run: the run id (its folder under ``HOME/models``).

    Yields:
        The lock file's path (it holds the pid of the process that trains).
    """
    with pid_lock(_lock_path(home, model_run), wait=True) as path:
        yield path


@contextlib.contextmanager
def pid_lock(path: Path, *, wait: bool) -> Iterator[Path]:
    """Hold an exclusive flock on ``path`` (created with its folder) and write our pid in it.

    Args:
        path: the lock file.
        wait: block until the lock is free; else raise at once.

    Yields:
        ``path``.

    Raises:
        LockHeld: ``wait`` is False and another process holds it (``holder``: its pid text).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise LockHeld(holder) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock


class LockHeld(RuntimeError):
    """Another process holds a :func:`pid_lock`; ``holder`` is the pid written in the file."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by pid {holder}")
        self.holder = holder


def orphaned(home: Path, model_run: str) -> bool | None:
    """Whether a ``running`` run's process is gone: True when nobody holds its lock, False
    while a process does, None when the run has no lock file (a run from before locks)."""
    path = _lock_path(home, model_run)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


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


def set_status(wh: Warehouse, model_run: str, status: str, *, purpose: str) -> None:
    """Change one run's ``status`` (e.g. ``rejected`` by a gate), keeping the rest of its row."""
    con = wh.connect()
    try:
        cur = con.execute("SELECT * FROM model_runs WHERE model_run = ?", [model_run])
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
    finally:
        con.close()
    if row is None:
        raise KeyError(f"no model run {model_run!r}")
    upsert(wh, dict(zip(names, row, strict=True)) | {"status": status}, purpose=purpose)


def one(wh: Warehouse, name: str, args: list[Any], *, published: bool = False) -> tuple | None:
    """First row of a named query (None when empty); ``published`` reads the published catalog
    (:meth:`Warehouse.connect_published`) instead of the manifest."""
    con = wh.connect_published() if published else wh.connect()
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
