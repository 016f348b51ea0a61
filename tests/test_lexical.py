"""Search by what is said: the BM25 index over each clip's words (real bm25s, DuckDB, Parquet),
its fusion with dense search, leave-one-out evaluation, and the refusal of a corrupt or stale
index; end to end on real speech (tests/data/jfk.opus) through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tasks.retrieval import hybrid, lexical
from tasks.retrieval.index_load import IndexCorrupt, current_index
from tests import media_factory as mf
from tests.test_cli import vb
from warehouse.store import Warehouse

LEAD_S = 1.5


# ------------------------------------------------------------------------- units, in memory
def _con(segments: list[tuple], clips: list[tuple]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the tables the lexical index reads (no generated caption)."""
    con = duckdb.connect()
    con.execute("CREATE TABLE clips (clip_id VARCHAR, video_id VARCHAR, start_s DOUBLE, "
                "end_s DOUBLE)")
    con.execute("CREATE TABLE text_segments (segment_id VARCHAR, video_id VARCHAR, "
                "start_s DOUBLE, end_s DOUBLE, text VARCHAR, source VARCHAR, meta_json VARCHAR)")
    con.execute("CREATE TABLE generated_captions (clip_id VARCHAR, video_id VARCHAR, "
                "model_run VARCHAR, start_s DOUBLE, end_s DOUBLE, text VARCHAR, "
                "created_at TIMESTAMP)")
    con.executemany("INSERT INTO clips VALUES (?, ?, ?, ?)", clips)
    con.executemany("INSERT INTO text_segments VALUES (?, ?, ?, ?, ?, ?, ?)", segments)
    return con


def test_asr_words_go_to_the_clip_they_are_said_in():
    words = [[0.2, 0.5, "my", 0.9], [0.6, 1.0, "fellow", 0.9], [1.6, 2.2, "Americans", 0.9]]
    con = _con([("s1", "v", 0.1, 2.3, "my fellow Americans", "asr",
                 json.dumps({"words": words})),
                ("s2", "v", 0.0, 3.0, "a caption for both", "manifest", None)],
               [("c0", "v", 0.0, 1.5), ("c1", "v", 1.5, 3.0), ("c2", "v", 3.0, 4.5)])
    docs = lexical.clip_documents(con).to_pylist()
    got = {(d["clip_id"], d["segment_id"]): d["text"] for d in docs}
    assert got == {("c0", "s1"): "my fellow", ("c1", "s1"): "Americans",
                   ("c0", "s2"): "a caption for both", ("c1", "s2"): "a caption for both"}


def test_leave_one_out_never_finds_a_clip_by_its_own_words():
    con = _con([("s1", "v", 0.0, 1.5, "the red ball rolls", "manifest", None),
                ("s2", "v", 1.5, 3.0, "a red ball bounces", "manifest", None),
                ("s3", "v", 1.5, 3.0, "green garlic", "srt", None)],
               [("a", "v", 0.0, 1.5), ("b", "v", 1.5, 3.0)])
    docs = lexical.clip_documents(con)
    sims = hybrid.lexical_sims(docs, ["a", "b"], ["s1", "s3"], ["the red ball rolls",
                                                                "green garlic"])
    assert sims[0, 0] == 0 and sims[0, 1] > 0  # s1's own clip only through other text: none
    assert sims[1, 1] == 0  # clip b's other text has no garlic


def test_fusion_and_weight_tuning():
    f = lexical.fuse(np.array([0.9, 0.5, 0.1]), np.array([0.0, 2.0, 4.0]), 0.5)
    np.testing.assert_allclose(f, [0.5, 0.5 * 0.5 + 0.5 * 0.5, 0.5])
    assert np.array_equal(lexical.fuse(np.array([0.3, 0.3]), np.zeros(2), 0.5), np.zeros(2))
    eye = np.eye(4, dtype=np.float32)
    positives = [[0], [1], [2], [3]]
    # dense right, lexical wrong -> dense dominates; the other way round -> lexical does
    tuned = hybrid.tune_weight(eye, np.roll(eye, 1, axis=1), positives)
    assert tuned["weight"] < 0.5 and tuned["r1"][str(tuned["weight"])] == 100.0
    assert tuned["r1"]["0.6"] == 0.0 and tuned["n_queries"] == 4
    assert hybrid.tune_weight(np.roll(eye, 1, axis=1), eye, positives)["weight"] > 0.5


def test_a_damaged_index_is_refused(tmp_path: Path):
    con = _con([("s1", "v", 0.0, 1.5, "hello world", "srt", None)], [("a", "v", 0.0, 1.5)])
    parts = {"clips": ["part-1.parquet"], "text_segments": ["part-2.parquet"]}
    row = lexical.build_lexical(con, parts, tmp_path)
    folder = current_index(tmp_path, *lexical.GROUP)
    assert Path(row["path"]) == folder and lexical.load_lexical(folder).manifest["n_docs"] == 1
    data = folder / "vocab.index.json"
    good = data.read_text()
    data.write_text(good.replace("hello", "jello"))  # same size, other bytes
    with pytest.raises(IndexCorrupt, match="vocab.index.json sha256 differs"):
        lexical.load_lexical(folder)
    data.write_text(good)
    (folder / "docs.parquet").unlink()
    with pytest.raises(IndexCorrupt, match="docs.parquet is missing"):
        lexical.load_lexical(folder)


# ------------------------------------------------------------------- end to end, real speech
@pytest.fixture(scope="module")
def spoken(tmp_path_factory) -> dict:
    """talk.mp4 (speech, no subtitles) and two subtitled distractors, ingested with ASR,
    tokenized and indexed through the CLI."""
    base = tmp_path_factory.mktemp("spoken")
    folder = base / "videos"
    folder.mkdir()
    mf.talking_video(folder / "talk.mp4", lead_s=LEAD_S)
    for i, line in enumerate(("my fellow citizens of the world", "a country road at night")):
        mf.good_video(folder / f"other{i}.mp4", seconds=6 + i, size=(64, 48), audio=False)
        (folder / f"other{i}.srt").write_text(f"1\n00:00:00,000 --> 00:00:05,000\n{line}\n")
    home = base / "home"
    vb(home, "ingest", str(folder), "--asr", "auto", timeout=600)
    vb(home, "tokenize", "--min-points-per-token", "2", timeout=900)
    vb(home, "index", timeout=600)
    return {"home": home, "folder": folder}


def _search(home: Path, query: str, *args: str, check: bool = True):
    p = vb(home, "search", query, "--format", "json", *args, check=check)
    return p, (json.loads(p.stdout) if p.returncode == 0 else None)


def _said_at(home: Path, *words: str) -> tuple[float, float]:
    """When ``words`` are said in talk.mp4, from the stored ASR word timings."""
    meta = Warehouse(home).connect().execute(
        "SELECT s.meta_json FROM text_segments s JOIN video_files f USING (video_id) "
        "WHERE f.path = 'talk.mp4' AND s.source = 'asr' ORDER BY s.start_s").fetchall()
    times = [(w[0], w[1]) for m in meta for w in json.loads(m[0])["words"]
             if w[2].strip(".,!?").lower() in words]
    assert len(times) == len(words), times
    return min(t[0] for t in times), max(t[1] for t in times)


def test_spoken_phrase_is_found_at_the_moment_it_is_said(spoken):
    home = spoken["home"]
    _, hits = _search(home, "my fellow Americans", "--mode", "hybrid", "-k", "3")
    top = hits[0]
    start, end = _said_at(home, "my", "fellow", "americans")
    assert top["path"] == "talk.mp4" and top["mode"] == "hybrid", hits
    assert top["start_s"] < end and top["end_s"] > start, (top, start, end)
    assert top["lexical_rank"] == 1 and {"fellow", "Americans"} <= set(top["matched"])
    assert {"dense_rank", "hybrid_score", "lexical_score"} <= set(top)
    # auto mode is hybrid here (the corpus has text); dense alone ranks by what is seen
    _, auto = _search(home, "my fellow Americans", "-k", "3")
    assert auto[0]["mode"] == "hybrid" and auto[0]["clip_id"] == top["clip_id"]
    _, dense = _search(home, "my fellow Americans", "--mode", "dense", "-k", "3")
    assert "mode" not in dense[0]


def test_search_works_while_a_writer_holds_the_warehouse(spoken):
    home = spoken["home"]
    with Warehouse(home).writer(purpose="a flow writing"):
        _, hits = _search(home, "my fellow Americans", "--mode", "hybrid", "-k", "1")
    assert hits[0]["path"] == "talk.mp4"


def test_corrupt_and_stale_lexical_indices_are_refused(spoken, tmp_path: Path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(spoken["home"], home, ignore=shutil.ignore_patterns("prefect"))
    folder = current_index(home / "indices", *lexical.GROUP)
    good = (folder / "data.csc.index.npy").read_bytes()
    (folder / "data.csc.index.npy").write_bytes(good[:-8] + bytes(8))
    p, _ = _search(home, "my fellow Americans", "--mode", "lexical", check=False)
    assert p.returncode == 1 and "data.csc.index.npy" in p.stderr and "sha256" in p.stderr
    p, hits = _search(home, "my fellow Americans")  # default mode: dense, with a notice
    assert "lexical index refused" in p.stderr and "mode" not in hits[0]
    (folder / "data.csc.index.npy").write_bytes(good)
    # an edited subtitle replaces its text: the index was built from text that is gone
    srt = spoken["folder"] / "other1.srt"
    before = srt.read_text()
    try:
        srt.write_text(before.replace("country road", "garlic farm"))
        vb(home, "ingest", str(spoken["folder"]), "--asr", "never")  # into the copy's home
    finally:
        srt.write_text(before)
    p, _ = _search(home, "garlic farm", "--mode", "hybrid", check=False)
    assert p.returncode == 1 and "no longer has" in p.stderr, p.stderr
    vb(home, "index")
    _, hits = _search(home, "garlic farm", "--mode", "lexical", "-k", "1")
    assert hits[0]["path"] == "other1.mp4" and hits[0]["matched"] == ["garlic", "farm"]


def test_tuning_weighs_known_item_search_too():
    eye = np.eye(4, dtype=np.float32)
    wrong, positives = np.roll(eye, 1, axis=1), [[0], [1], [2], [3]]
    # captions that describe (words wrong) and words that are said (words right): the weight
    # that serves both keeps dense in charge where they disagree, words where they agree
    tuned = hybrid.tune_weight(eye, wrong, positives, known_item=eye)
    assert tuned["weight"] < 0.5 and tuned["r1_known_item"]["0.0"] == 100.0
    only_words = hybrid.tune_weight(wrong, wrong, positives, known_item=eye)
    assert only_words["r1_known_item"]["1.0"] == 100.0 and only_words["weight"] > 0.5
