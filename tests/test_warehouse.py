"""The warehouse: schema files, atomic commits, crash recovery, migrations, one writer."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from warehouse import migrations
from warehouse import schema as sch
from warehouse.checks import run_checks
from warehouse.parquet import write_parquet_atomic
from warehouse.store import Warehouse, WarehouseError, rewrite_without, stage, utcnow

VID = "ab" * 32


def _video(vid: str = VID, duration: float = 3.0) -> dict:
    return {"video_id": vid, "duration_s": duration, "status": "ok", "ingested_at": utcnow()}


def test_every_table_documents_every_column():
    names = set(sch.tables())
    assert {"videos", "video_files", "clips", "text_segments", "ingest_errors"} <= names
    for t in sch.tables().values():
        assert t.comment, t.name
        assert all(c.comment.strip() for c in t.columns), t.name
        assert t.key, f"{t.name} has no primary key"
    assert sch.table("videos").key == ("video_id",)
    assert "at" in sch.table("ingest_errors").column_names


def test_commit_is_visible_in_published_catalog(home: Path):
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()]),
                  w.stage("clips", [{"clip_id": "c0", "video_id": VID, "clip_index": 0,
                                     "start_s": 0.0, "end_s": 1.5, "clip_s": 1.5}])])
    con = duckdb.connect(str(wh.catalog_path), read_only=True)
    assert con.sql("SELECT video_id, duration_s FROM videos").fetchall() == [(VID, 3.0)]
    assert con.sql("SELECT count(*) FROM clips").fetchall() == [(1,)]
    # empty tables are typed views with the schema's columns
    cols = [r[0] for r in con.sql("DESCRIBE text_segments").fetchall()]
    assert cols == sch.table("text_segments").column_names
    comment = con.sql("SELECT comment FROM duckdb_columns() WHERE table_name = 'videos' "
                      "AND column_name = 'video_id'").fetchall()[0][0]
    assert "sha256" in comment


def test_unknown_column_is_refused(home: Path):
    with Warehouse(home).writer() as w, pytest.raises(ValueError, match="not in table"):
        w.stage("videos", [{"video_id": VID, "duraton_s": 1.0}])


def test_uncommitted_parts_are_invisible_and_cleaned(home: Path):
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])])
    # a killed writer leaves a staged part, a moved-but-uncommitted part and a temp file
    stage(home, "videos", [_video("cd" * 32)])
    orphan = wh.tables_dir / "videos" / "part-orphan.parquet"
    write_parquet_atomic(pa.Table.from_pylist([_video("ef" * 32)],
                                              schema=sch.table("videos").arrow), orphan)
    tmp = wh.root / ".tmp-deadbeef-manifest.json"
    tmp.write_text("{")
    assert wh.connect().sql("SELECT count(*) FROM videos").fetchall() == [(1,)]
    with wh.writer():
        pass
    assert not orphan.exists() and not tmp.exists()
    assert not any(wh.staging_dir.glob("*")) if wh.staging_dir.exists() else True
    assert wh.connect().sql("SELECT count(*) FROM videos").fetchall() == [(1,)]


def test_failed_part_write_leaves_no_file(home: Path, monkeypatch):
    """A write error (disk full) while writing Parquet loses nothing committed."""
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])])

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with wh.writer() as w, pytest.raises(OSError, match="No space"):
        w.stage("videos", [_video("cd" * 32)])
    monkeypatch.undo()
    assert not list((wh.staging_dir).glob(".tmp-*"))
    assert wh.connect().sql("SELECT count(*) FROM videos").fetchall() == [(1,)]


def test_rewrite_without_and_replace(home: Path):
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video(), _video("cd" * 32)])])
        parts, remove = rewrite_without(w, "videos", "video_id", [VID])
        w.commit(parts, remove=remove)
    assert wh.connect().sql("SELECT video_id FROM videos").fetchall() == [("cd" * 32,)]
    assert len(wh.manifest()["tables"]["videos"]) == 1


def test_migrations_run_once_in_order(home: Path, monkeypatch):
    wh = Warehouse(home)
    with wh.writer():
        pass
    assert wh.manifest()["schema_version"] == sch.SCHEMA_VERSION
    calls = []
    nxt = sch.SCHEMA_VERSION + 1

    def step(writer):
        calls.append(nxt)
        return [migrations.add_columns_part(writer, "splits")]

    monkeypatch.setitem(migrations.MIGRATIONS, nxt, step)
    monkeypatch.setattr(sch, "SCHEMA_VERSION", nxt)
    with wh.writer():
        pass
    with wh.writer():
        pass
    assert calls == [nxt]
    assert wh.manifest()["schema_version"] == nxt
    monkeypatch.setattr(sch, "SCHEMA_VERSION", nxt - 1)
    with pytest.raises(WarehouseError, match="newer than this"), wh.writer():
        pass


def _hold_lock(home: str, ready, release) -> None:
    with Warehouse(home).writer(purpose="test holder"):
        ready.set()
        release.wait(30)


def test_single_writer_lock(home: Path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold_lock, args=(str(home), ready, release))
    p.start()
    try:
        assert ready.wait(180)  # a spawned child imports duckdb/pyarrow: slow on a busy machine
        with pytest.raises(WarehouseError, match="test holder"), Warehouse(home).writer(wait_s=0.3):
            pass
    finally:
        release.set()
        p.join(30)
    with Warehouse(home).writer(wait_s=5):
        pass


def test_lock_released_when_writer_is_killed(home: Path):
    code = ("import sys, time; from warehouse.store import Warehouse\n"
            "with Warehouse(sys.argv[1]).writer():\n print('held', flush=True); time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait()
    with Warehouse(home).writer(wait_s=5):
        pass


def test_readers_never_see_a_lock_while_writing(home: Path):
    """Many commits in a child process; reads in this process never fail."""
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])])
    code = ("import sys; from warehouse.store import Warehouse, utcnow\n"
            "wh = Warehouse(sys.argv[1])\n"
            "with wh.writer() as w:\n"
            " for i in range(25):\n"
            "  w.commit([w.stage('videos', [{'video_id': f'{i:064x}', 'duration_s': 1.0,"
            " 'ingested_at': utcnow()}])])\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(home)])
    counts = []
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:
        con = duckdb.connect(str(wh.catalog_path), read_only=True)
        counts.append(con.sql("SELECT count(*) FROM videos").fetchall()[0][0])
        con.close()
    assert p.wait() == 0
    assert len(counts) > 3
    assert counts == sorted(counts)  # snapshots only move forward
    con = duckdb.connect(str(wh.catalog_path), read_only=True)
    assert con.sql("SELECT count(*) FROM videos").fetchall() == [(26,)]


def test_a_moved_home_reads_its_own_files(home: Path, tmp_path: Path):
    """The catalog names parts by absolute path: after moving the home, readers get views
    over the new location's parts, not the old (now missing) files."""
    import shutil

    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])])
    assert wh.connect_catalog().sql("SELECT count(*) FROM videos").fetchall() == [(1,)]
    moved = tmp_path / "moved-home"
    shutil.move(str(home), moved)
    con = Warehouse(moved).connect_catalog()
    assert con.sql("SELECT video_id FROM videos").fetchall() == [(VID,)]


def test_checks_find_violations(home: Path):
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()]),
                  w.stage("clips", [{"clip_id": "c0", "video_id": VID, "clip_index": 0,
                                     "start_s": 0.0, "end_s": 9.0, "clip_s": 1.5}])])
    res = run_checks(wh)
    assert res["clips_inside_video"] == 1
    assert res["every_video_has_split"] == 1
    assert res["files_reference_videos"] == 1
    assert res["videos_key_unique"] == 0


def test_manifest_is_valid_json_with_log(home: Path):
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])], message="hello")
    m = json.loads(wh.manifest_path.read_text())
    assert m["log"][-1]["message"] == "hello" and m["log"][-1]["added_rows"] == {"videos": 1}
    for part in m["tables"]["videos"]:
        assert (wh.tables_dir / part["file"]).stat().st_size == part["bytes"]
    assert os.access(wh.catalog_path, os.R_OK)


def test_v1_warehouse_migrates_forward(home: Path, monkeypatch):
    """A warehouse written by schema v1 gains the v2 tables when opened by current code."""
    monkeypatch.setattr(sch, "SCHEMA_VERSION", 1)
    wh = Warehouse(home)
    with wh.writer() as w:
        w.commit([w.stage("videos", [_video()])])
    assert wh.manifest()["schema_version"] == 1
    monkeypatch.undo()
    with wh.writer():
        pass
    assert wh.manifest()["schema_version"] == sch.SCHEMA_VERSION >= 2
    con = duckdb.connect(str(wh.catalog_path), read_only=True)
    assert con.sql("SELECT count(*) FROM visual_tokens").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM videos").fetchall() == [(1,)]
