"""The nightly flow's pure pieces: its lock, crash cleanup, new-data check and promotion gate.

Kept out of ``flows/nightly.py`` so they are testable without Prefect. The promotion gate is
the one rule that keeps a bad night from replacing a good model: the candidate becomes live
only when its gate metric is at least the live model's on the same split (lower is better for
ranks: MdR, MnR). Every decision, promoted or not, is a ``promotions`` row with its reason;
``live_run`` (``warehouse/queries/live_run.sql``) reads the newest promoted row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.shared import model_runs
from warehouse import queries
from warehouse.store import Warehouse, rewrite_without, utcnow

PROCESS_STARTED = utcnow()
"""When this process imported the module: a ``running`` row older than this is stale after a
crash (the nightly lock guarantees no other nightly process is training)."""
LOWER_IS_BETTER = frozenset({"mdr", "mnr"})
LOCK_NAME = "nightly.lock"


class NightlyBusy(RuntimeError):
    """Another nightly run holds the data home's nightly lock."""


@contextlib.contextmanager
def nightly_lock(home: Path) -> Iterator[Path]:
    """Hold ``HOME/nightly.lock`` (flock, non-blocking) for the whole nightly run.

    Args:
        home: the data home.

    Yields:
        The lock file's path.

    Raises:
        NightlyBusy: another process holds it (named by the pid written in the file).
    """
    path = home / LOCK_NAME
    try:
        with model_runs.pid_lock(path, wait=False):
            yield path
    except model_runs.LockHeld as e:
        raise NightlyBusy(f"another nightly run (pid {e.holder}) is writing to {home}: "
                          f"{path} is locked; this run exits without changes") from e


def _stale(home: Path, row: dict[str, Any], started_before: dt.datetime) -> bool:
    gone = model_runs.orphaned(home, row["model_run"])
    if gone is None:
        return row["started_at"] is not None and row["started_at"] < started_before
    return gone


def crash_cleanup(wh: Warehouse, started_before: dt.datetime = PROCESS_STARTED,
                  wait_s: float = 120.0) -> list[str]:
    """Recover the warehouse and mark stale ``running`` training runs as ``failed``.

    Opening the writer runs :meth:`warehouse.store.Writer.recover` (staged, temporary and
    uncommitted files of a killed run). A ``running`` run is stale when no process holds its
    ``running.lock`` (:func:`tasks.shared.model_runs.orphaned`), or, for a run without a lock file,
    when it started before ``started_before``. ``failed`` pretraining runs stay resumable.

    Args:
        wh: the warehouse.
        started_before: lock-less runs started before this (UTC) are stale.
        wait_s: how long to wait for another writer.

    Returns:
        The model runs marked failed.
    """
    with wh.writer(wait_s=wait_s, purpose="nightly crash cleanup") as w:
        con = wh.connect()
        try:
            cur = con.execute(queries.load("running_runs"))
            cols = [d[0] for d in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
            rows = [r for r in rows if _stale(wh.home, r, started_before)]
        finally:
            con.close()
        if not rows:
            return []
        now = utcnow()
        ids = [r["model_run"] for r in rows]
        staged, old = rewrite_without(w, "model_runs", "model_run", ids)
        fixed = [r | {"status": "failed", "finished_at": now} for r in rows]
        w.commit([*staged, w.stage("model_runs", fixed)], remove=old,
                 message=f"nightly cleanup: {len(ids)} stale running run(s) marked failed")
    return ids


def data_since(wh: Warehouse, live: tuple | None) -> int:
    """Ingest runs that added videos or text after the live model's data was exported.

    The reference time is the start of the live fine-tune's pretraining parent (else of the
    fine-tune itself), so data ingested by a run that was killed before training still counts.

    Returns:
        The number of such ingest runs (0 when there is no live model: callers train anyway).
    """
    if live is None:
        return 0
    lineage = model_runs.one(wh, "model_run_lineage", [live[0]])
    if lineage is None:
        return 0
    since = lineage[4] or lineage[3]
    got = model_runs.one(wh, "pending_ingests", [since])
    return int(got[0]) if got else 0


def pretrain_parent(wh: Warehouse, live: tuple | None, codebook_id: str) -> str | None:
    """The pretraining run to continue from: the live fine-tune's parent, when it was trained
    on ``codebook_id`` (a new codebook means a new vocabulary: pretrain from scratch)."""
    if live is None or live[1] != codebook_id:
        return None
    lineage = model_runs.one(wh, "model_run_lineage", [live[0]])
    return lineage[1] if lineage else None


def gate_value(rows: list[dict[str, Any]], metric: str, *, encoder: str = "videobert",
               level: str = "clip", direction: str = "t2v", mode: str = "exact"
               ) -> float | None:
    """The gate metric from evaluation rows (None when the row is missing)."""
    for r in rows:
        if (r["encoder"], r["level"], r["direction"], r["mode"]) == (encoder, level,
                                                                     direction, mode):
            return float(r[metric])
    return None


@dataclass(frozen=True)
class Decision:
    """A promotion decision: whether the candidate becomes live, and why."""

    promoted: bool
    reason: str


def decide(metric: str, value: float | None, previous_run: str | None,
           previous_value: float | None) -> Decision:
    """The promotion rule: promote unless the candidate regresses on the gate metric.

    Args:
        metric: the gate metric's name (r1, r5, r10: higher is better; mdr, mnr: lower).
        value: the candidate's value (None: not measurable, e.g. an empty split).
        previous_run: the live model run, None on the first run.
        previous_value: the live model's value on the same split.

    Returns:
        The decision with a reason a person can read in the run's artifacts.
    """
    if previous_run is None:
        return Decision(True, "first model: nothing live yet")
    if value is not None and previous_value is None:
        return Decision(True, f"{previous_run} cannot be measured on the current data (e.g. "
                        f"its codebook was replaced); candidate {metric} {value:.2f}")
    if value is None or previous_value is None:
        return Decision(False, f"gate metric {metric} could not be measured (candidate "
                        f"{value}, live {previous_value}): {previous_run} stays live")
    lower = metric in LOWER_IS_BETTER
    ok = value <= previous_value if lower else value >= previous_value
    cmp = ("<=" if lower else ">=") if ok else (">" if lower else "<")
    if ok:
        return Decision(True, f"{metric} {value:.2f} {cmp} {previous_value:.2f} of "
                        f"{previous_run}: no regression")
    return Decision(False, f"{metric} {value:.2f} {cmp} {previous_value:.2f} of "
                    f"{previous_run}: regression, {previous_run} stays live")


def record_promotion(wh: Warehouse, *, model_run: str, previous_run: str | None, metric: str,
                     value: float | None, previous_value: float | None, decision: Decision,
                     flow_run_id: str | None = None, wait_s: float = 120.0) -> dict[str, Any]:
    """Write one ``promotions`` row (promoted or not) in a single commit; returns the row."""
    row = {"promotion_id": f"promotion-{uuid.uuid4().hex[:12]}", "model_run": model_run,
           "previous_run": previous_run, "promoted": decision.promoted, "metric": metric,
           "value": value, "previous_value": previous_value, "reason": decision.reason,
           "flow_run_id": flow_run_id, "at": utcnow()}
    with wh.writer(wait_s=wait_s, purpose="promotion") as w:
        w.commit([w.stage("promotions", [row])],
                 message=f"promotion {model_run}: {'promoted' if decision.promoted else 'kept'}"
                         f" ({decision.reason})")
    return row

