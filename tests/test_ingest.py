"""Ingest of a messy folder covering every item of reliability.md's bad-input checklist."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests import media_factory as mf
from tests.fs_watch import FsWatch
from warehouse.atomic import sha256_file
from warehouse.checks import run_checks
from warehouse.store import Warehouse

GOOD_SRT = (
    "\ufeff1\n00:00:00,000 --> 00:00:01,000\nhello <i>world</i>\n\n"
    "2\n00:00:00,500 --> 00:00:01,200\nan overlapping cue\n\n"
    "3\n00:00:02,000 --> 00:00:01,000\nends before it starts\n\n"
    "4\n-00:00:01,000 --> 00:00:00,800\nnegative start\n\n"
    "this block has no timing\n\n"
    "5\n00:00:01,500 --> 00:00:02,500\nthe last cue\n"
)

# file (relative to the input root) -> expected outcome: "ok", "partial", or an error code
EXPECTED: dict[str, str] = {
    "good.mp4": "ok",
    "copy of good.mp4": "dup",
    "sub/ünïcödé clip.mp4": "ok",
    "-leading dash.mp4": "ok",
    "a;b|c$(d).mp4": "ok",
    "new\nline.mp4": "ok",
    "empty.mp4": "empty_file",
    "truncated.mp4": "container_unreadable",
    "cut_faststart.mp4": "partial",
    "audio_only.mp4": "no_video_stream",
    "image.mp4": "not_a_video",
    "text.mp4": "not_a_video",
    "hls.mp4": "unsafe_input",
    "ffconcat.mp4": "unsafe_input",
    "dash.mp4": "unsafe_input",
    "huge.mkv": "too_large",
    "false_duration.mkv": "ok|partial",
    "vfr.mkv": "ok",
    "rotated.mp4": "ok",
    "tenbit.mp4": "ok",
    "unsupported.mkv": "unsupported_codec",
    "embedded.mkv": "ok",
    "outside_link.mp4": "path_outside_root",
    "broken_link.mp4": "io_error",
    "orphan.srt": "orphan_subtitle",
    "good.en.srt": "attached",
    "sub/ünïcödé clip.vtt": "attached",
    "rotated.srt": "subtitle_unreadable",
}


@pytest.fixture(scope="session")
def messy_src(tmp_path_factory) -> Path:
    """The messy folder, built once per session (tests copy it)."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "videos"
    (root / "sub").mkdir(parents=True)
    outside = base / "outside"
    outside.mkdir()
    secret = outside / "secret.mp4"
    mf.good_video(secret, seconds=1)
    mf.good_video(root / "good.mp4", seconds=3)
    mf.copy_as(root / "good.mp4", root / "copy of good.mp4")
    (root / "good.en.srt").write_text(GOOD_SRT, encoding="utf-8")
    mf.good_video(root / "sub/ünïcödé clip.mp4", seconds=2, size=(128, 96))
    (root / "sub/ünïcödé clip.vtt").write_bytes(
        "WEBVTT\n\n00:00.000 --> 00:01.500\ncaf\xe9 \x93quoted\x94\n".encode("latin-1"))
    for i, name in enumerate(["-leading dash.mp4", "a;b|c$(d).mp4", "new\nline.mp4"]):
        mf.good_video(root / name, seconds=1.6 + 0.2 * i, size=(96, 64), audio=False)
    (root / "empty.mp4").write_bytes(b"")
    mf.truncated_moov_at_end(root / "truncated.mp4")
    mf.cut_faststart(root / "cut_faststart.mp4", keep=0.5, seconds=4)
    mf.audio_only(root / "audio_only.mp4")
    mf.image_as_mp4(root / "image.mp4")
    mf.text_as_mp4(root / "text.mp4")
    mf.hls_as_mp4(root / "hls.mp4", target=str(secret))
    mf.ffconcat_as_mp4(root / "ffconcat.mp4", target=str(secret))
    mf.dash_as_mp4(root / "dash.mp4")
    mf.huge_resolution(root / "huge.mkv")
    mf.false_duration(root / "false_duration.mkv")
    mf.vfr_video(root / "vfr.mkv")
    mf.rotated_video(root / "rotated.mp4", degrees=90)
    (root / "rotated.srt").write_bytes(os.urandom(64) + b"\x00\x01binary garbage")
    mf.ten_bit_video(root / "tenbit.mp4")
    mf.unsupported_codec(root / "unsupported.mkv")
    mf.with_embedded_subs(root / "embedded.mkv", [(0.2, 1.0, "an embedded line"),
                                                  (1.2, 2.5, "a second one")])
    os.symlink(secret, root / "outside_link.mp4")
    os.symlink(base / "missing.mp4", root / "broken_link.mp4")
    (root / "orphan.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nnobody\n")
    return root


@pytest.fixture()
def messy(messy_src: Path, tmp_path: Path) -> Path:
    """A private copy of the messy folder (symlinks preserved, outside target kept)."""
    dst = tmp_path / "videos"
    shutil.copytree(messy_src, dst, symlinks=True)
    return dst


def _run(source: Path, home: Path, **kw) -> dict:
    from flows.ingest import IngestParams, ingest_flow

    return ingest_flow(IngestParams(source=str(source), home=str(home), batch_size=3, **kw))


def _outcomes(home: Path) -> dict[str, str]:
    con = Warehouse(home).connect()
    res: dict[str, str] = {}
    for path, status in con.execute(
            "SELECT f.path, v.status FROM video_files f JOIN videos v USING (video_id)").fetchall():
        res[path] = status
    for path, code in con.execute("SELECT path, code FROM ingest_errors").fetchall():
        assert path not in res, f"{path!r} both ingested and rejected"
        res[path] = code
    for path in [r[0] for r in con.execute(
            "SELECT path FROM text_sources WHERE path IS NOT NULL").fetchall()]:
        res.setdefault(path, "attached")
    return res


def _snapshot(home: Path) -> dict[str, list]:
    """Every table's rows, without the columns that legitimately differ between runs."""
    con = Warehouse(home).connect()
    volatile = {"ingested_at", "run_id", "first_seen_at", "at", "started_at", "finished_at"}
    snap = {}
    for table in ("videos", "video_files", "clips", "text_sources", "text_segments",
                  "ingest_errors", "splits"):
        cols = [c for c in con.sql(f'SELECT * FROM "{table}" LIMIT 0').columns
                if c not in volatile]
        q = ", ".join(f'"{c}"' for c in cols)
        snap[table] = sorted(con.sql(f'SELECT {q} FROM "{table}"').fetchall(), key=repr)
    return snap


def test_messy_folder_every_file_ends_once(prefect_harness, messy: Path, home: Path):
    secret_dir = Path(os.readlink(messy / "outside_link.mp4")).parent
    watch = FsWatch([secret_dir, messy.parent])
    summary = _run(messy, home)
    events = watch.events()
    watch.close()
    got = _outcomes(home)
    for path, want in EXPECTED.items():
        if want == "dup":
            assert got.get(path) == "ok", path
        else:
            assert got.get(path) in want.split("|"), (path, got.get(path))
    assert set(got) == set(EXPECTED), set(got) ^ set(EXPECTED)
    # nothing outside the input folder and data home was read or created
    touched = {p for kind, p in events if p.parent == secret_dir}
    assert not touched, f"read outside the input folder: {touched}"
    created = {p.name for kind, p in events if kind == "create" and p.parent == messy.parent}
    assert created <= {"home"}, created
    assert summary["n_ingested"] == 11 and summary["n_duplicates"] == 1
    assert all(v == 0 for v in run_checks(Warehouse(home)).values()), run_checks(Warehouse(home))


def test_ingested_rows_are_right(prefect_harness, messy: Path, home: Path):
    _run(messy, home)
    con = Warehouse(home).connect()
    q = ("SELECT v.* FROM videos v JOIN video_files f USING (video_id) WHERE f.path = ?")

    def video(path: str) -> dict:
        rel = con.execute(q, [path])
        return dict(zip([d[0] for d in rel.description], rel.fetchall()[0], strict=True))

    good = video("good.mp4")
    assert good["video_id"] == sha256_file(messy / "good.mp4")
    assert abs(good["duration_s"] - 3.0) < 0.1 and good["has_audio"]
    assert con.execute("SELECT count(*) FROM video_files WHERE video_id = ?",
                       [good["video_id"]]).fetchall() == [(2,)]
    clips = con.execute("SELECT start_s, end_s FROM clips WHERE video_id = ? ORDER BY start_s",
                        [good["video_id"]]).fetchall()
    assert clips == [(0.0, 1.5), (1.5, 3.0)]
    rot = video("rotated.mp4")
    assert rot["rotation"] in (90, 270) and (rot["width"], rot["height"]) == (120, 160)
    assert video("tenbit.mp4")["bit_depth"] == 10
    assert video("vfr.mkv")["vfr"] and not good["vfr"] and not video("-leading dash.mp4")["vfr"]
    assert not video("embedded.mkv")["vfr"]
    part = video("cut_faststart.mp4")
    assert part["status"] == "partial" and part["duration_s"] < part["probed_duration_s"]
    assert part["status_detail"]
    lie = video("false_duration.mkv")
    assert lie["duration_s"] < 10 and lie["probed_duration_s"] > 1000
    # sidecar parsed by the written rule, problems counted, not dropped silently
    src = con.execute("SELECT n_cues, problems_json, language, encoding FROM text_sources "
                      "WHERE path = 'good.en.srt'").fetchall()[0]
    problems = json.loads(src[1])
    assert src[0] == 4 and src[2] == "en" and "utf-8" in src[3]
    assert problems["end_not_after_start"] == 1 and problems["malformed_block"] == 1
    assert problems["overlapping"] >= 1 and problems["negative_time_clamped"] == 1
    texts = [r[0] for r in con.execute(
        "SELECT s.text FROM text_segments s JOIN text_sources t USING (text_source_id) "
        "WHERE t.path = 'good.en.srt' ORDER BY s.start_s").fetchall()]
    assert texts[0] in ("hello world", "negative start") and "hello world" in texts
    latin = con.execute("SELECT s.text, t.encoding FROM text_segments s JOIN text_sources t "
                        "USING (text_source_id) WHERE t.source = 'vtt'").fetchall()
    assert latin[0][0] == "café \u201cquoted\u201d" and latin[0][1] == "cp1252"
    emb = con.execute("SELECT text FROM text_segments WHERE source = 'embedded' "
                      "ORDER BY start_s").fetchall()
    assert [r[0] for r in emb] == ["an embedded line", "a second one"]
    assert con.execute("SELECT count(*) FROM splits").fetchall()[0][0] == 11


def test_second_run_adds_nothing(prefect_harness, messy: Path, home: Path):
    _run(messy, home)
    before = _snapshot(home)
    summary = _run(messy, home)
    assert summary["n_ingested"] == 0 and summary["n_rejected"] == 0
    assert summary["n_duplicates"] == 0 and summary["n_text_sources"] == 0
    assert _snapshot(home) == before


def test_incremental_new_files_and_edited_sidecar(prefect_harness, messy: Path, home: Path):
    _run(messy, home)
    mf.good_video(messy / "later.mp4", seconds=2, size=(64, 48), audio=False)
    mf.copy_as(messy / "good.mp4", messy / "another name.mp4")
    (messy / "good.en.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\nedited\n")
    s = _run(messy, home)
    assert s["n_ingested"] == 1 and s["n_duplicates"] == 1
    con = Warehouse(home).connect()
    texts = [r[0] for r in con.execute(
        "SELECT s.text FROM text_segments s JOIN text_sources t USING (text_source_id) "
        "WHERE t.path = 'good.en.srt'").fetchall()]
    assert texts == ["edited"]


def test_too_long_by_configured_limit(prefect_harness, tmp_path: Path, home: Path):
    folder = tmp_path / "long"
    folder.mkdir()
    mf.good_video(folder / "three_seconds.mp4", seconds=3, audio=False)
    _run(folder, home, max_duration_s=2.0)
    assert _outcomes(home) == {"three_seconds.mp4": "too_long"}


def test_manifest_rows_and_escapes(prefect_harness, tmp_path: Path, home: Path):
    root = tmp_path / "corpus"
    (root / "v").mkdir(parents=True)
    mf.good_video(root / "v/a.mp4", seconds=3, audio=False)
    mf.good_video(root / "v/b.mp4", seconds=2, size=(96, 64), audio=False)
    mf.good_video(tmp_path / "outside.mp4", seconds=1, audio=False)
    rows = [
        {"path": "v/a.mp4", "start": 0, "end": 1.5, "text": "first", "split": "test",
         "object": "cat"},
        {"path": "v/a.mp4", "start": "00:00:01.500", "end": 3.0, "text": "second"},
        "{not json",
        {"path": "v/b.mp4", "start": 2, "end": 1, "text": "backwards"},
        {"path": "../outside.mp4", "start": 0, "end": 1, "text": "escape"},
        {"path": "/etc/hostname", "start": 0, "end": 1, "text": "absolute"},
        {"path": "v/b.mp4", "start": 0, "end": 1, "text": "fine"},
        {"path": "v/missing.mp4", "start": 0, "end": 1, "text": "missing"},
    ]
    manifest = root / "captions.jsonl"
    manifest.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    _run(manifest, home)
    con = Warehouse(home).connect()
    errs = dict(con.execute("SELECT path, code FROM ingest_errors").fetchall())
    assert errs == {"captions.jsonl:3": "manifest_row_invalid",
                    "captions.jsonl:4": "manifest_row_invalid",
                    "captions.jsonl:5": "path_outside_root",
                    "captions.jsonl:6": "path_outside_root",
                    "captions.jsonl:8": "io_error"}
    segs = con.execute("SELECT f.path, s.text, s.meta_json FROM text_segments s "
                       "JOIN video_files f USING (video_id) ORDER BY f.path, s.start_s").fetchall()
    assert [(p, t) for p, t, _ in segs] == [("v/a.mp4", "first"), ("v/a.mp4", "second"),
                                            ("v/b.mp4", "fine")]
    assert json.loads(segs[0][2]) == {"object": "cat"}
    splits = dict(con.execute("SELECT f.path, s.split || '/' || s.assigned_by FROM splits s "
                              "JOIN video_files f USING (video_id)").fetchall())
    assert splits["v/a.mp4"] == "test/manifest" and splits["v/b.mp4"].endswith("/hash")
