"""A new user's first ten minutes, as subprocesses: ingest what you name (files, several paths,
quoted patterns, sidecars), one-line errors with exit code 2, doctor's hints, and a sample
corpus run that says plainly when its evaluation is too small to mean anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import media_factory as mf
from tests.test_cli import _env, vb
from warehouse.store import Warehouse


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """a.mp4 (+ a.srt), b.mkv, c.mp4, sub/d.mp4 (+ sub/d.en.srt), distinct contents."""
    root = tmp_path_factory.mktemp("mine")
    (root / "sub").mkdir()
    for i, name in enumerate(("a.mp4", "b.mkv", "c.mp4", "sub/d.mp4")):
        mf.good_video(root / name, seconds=1.6 + 0.2 * i, size=(64, 48), audio=False)
    (root / "a.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello from a\n")
    (root / "sub" / "d.en.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello from d\n")
    return root


def _ingested(home: Path) -> tuple[set[str], set[str]]:
    """(video file paths, segment texts) in the warehouse of ``home``."""
    con = Warehouse(home).connect()
    paths = {r[0] for r in con.execute("SELECT path FROM video_files").fetchall()}
    texts = {r[0] for r in con.execute("SELECT text FROM text_segments").fetchall()}
    con.close()
    return paths, texts


def _one_line_error(p: subprocess.CompletedProcess, needle: str) -> None:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def test_ingest_one_video_file_with_its_sidecar(tmp_path: Path, folder: Path):
    home = tmp_path / "home"
    summary = json.loads(vb(home, "ingest", str(folder / "a.mp4"), "--format", "json")
                         .stdout.strip().splitlines()[-1])
    assert summary["n_ingested"] == 1 and summary["n_rejected"] == 0
    assert _ingested(home) == ({"a.mp4"}, {"hello from a"})


def test_ingest_files_and_a_folder_together(tmp_path: Path, folder: Path):
    home = tmp_path / "home"
    vb(home, "ingest", str(folder / "a.mp4"), str(folder / "b.mkv"), str(folder / "sub"))
    assert _ingested(home) == ({"a.mp4", "b.mkv", "sub/d.mp4"}, {"hello from a", "hello from d"})


def test_ingest_a_pattern_the_shell_did_not_expand(tmp_path: Path, folder: Path):
    home = tmp_path / "home"
    vb(home, "ingest", f"{folder}/*.mp4")  # no shell: the pattern reaches videobert as typed
    assert _ingested(home) == ({"a.mp4", "c.mp4"}, {"hello from a"})
    # the same files again are unchanged, not new
    again = json.loads(vb(home, "ingest", f"{folder}/*.mp4", "--format", "json")
                       .stdout.strip().splitlines()[-1])
    assert again["n_ingested"] == 0 and again["n_unchanged"] == 2


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, folder: Path):
    home = tmp_path / "home"
    _one_line_error(vb(home, "ingest", str(folder / "nope.mp4"), check=False), "does not exist")
    _one_line_error(vb(home, "ingest", f"{folder}/*.webm", check=False), "no file or folder")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    _one_line_error(vb(home, "ingest", str(tmp_path / "empty"), check=False), "nothing to ingest")
    _one_line_error(vb(home, "ingest", str(folder), "--validate", "bogus", check=False),
                    "validation")
    # nothing was started, so nothing was written
    assert not (home / "warehouse").exists()


def test_unexpected_error_is_one_line_naming_the_log(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    p = subprocess.run(
        [sys.executable, "-c", "import sys; from videobert.cli_common import report_error\n"
         "try:\n    {}['missing']\nexcept KeyError as e:\n"
         "    sys.exit(report_error(e, sys.argv[1:], False))", "--home", str(home)],
        capture_output=True, text=True, env=_env(home) | {"COLUMNS": "250"})
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 1 and len(lines) == 1 and "unexpected KeyError" in lines[0], p.stderr
    log = home / "logs" / "errors.log"
    assert str(log.resolve()) in lines[0] and "--debug" in lines[0]
    assert "Traceback" not in p.stderr and "Traceback" in log.read_text()


def test_debug_prints_the_traceback(tmp_path: Path):
    p = subprocess.run([sys.executable, "-m", "videobert.cli", "ingest", "--debug",
                        str(tmp_path / "nope")], capture_output=True, text=True,
                       env=_env(tmp_path / "home"))
    assert p.returncode == 2 and "Traceback" in p.stderr and "InputError" in p.stderr


def test_doctor_asr_hint_names_the_extra(tmp_path: Path):
    # the speech-to-text extra absent, as after `pip install -e .` (find_spec sees None)
    code = ("import sys; sys.modules['faster_whisper'] = sys.modules['ctranslate2'] = None; "
            "from videobert.cli import main; main(['doctor'])")
    env = _env(tmp_path) | {"COLUMNS": "250"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if "ASR (speech to text)" in x)
    assert 'pip install -e ".[asr]"' in line, line
    helptext = subprocess.run([sys.executable, "-m", "videobert.cli", "ingest", "--help"],
                              capture_output=True, text=True, env=env).stdout
    assert 'pip install -e ".[asr]"' in helptext


def test_subtitle_brackets_survive_the_table(tmp_path: Path, folder: Path):
    home = tmp_path / "home"
    vb(home, "ingest", str(folder / "a.mp4"))
    p = vb(home, "sql", "SELECT '[Music] ' || text AS t FROM text_segments")
    assert "[Music] hello from a" in p.stdout


def test_run_on_the_sample_corpus_says_its_evaluation_is_too_small(sample_run):
    out = sample_run["stdout"]
    last = [x for x in out.splitlines() if x.strip()][-1]
    assert last.startswith("too few captioned clips to evaluate: the test split"), out
    assert "retrieval on val" in out  # the table that is there is labelled as val
    assert "time: ingest" in out and (sample_run["home"] / "reports").is_dir()


def test_nothing_to_do_in_a_flow_is_one_line_too(tmp_path: Path):
    # raised inside a Prefect flow: Prefect's own traceback stays off the terminal
    p = vb(tmp_path / "home", "evaluate", check=False)
    _one_line_error(p, "nothing to evaluate")
    assert "leaked" not in p.stderr and "ERROR" not in p.stdout + p.stderr


def test_named_files_follow_the_folder_rules(tmp_path: Path, folder: Path):
    from tasks.ingest.scan import scan_paths

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "link.mp4").symlink_to(folder / "c.mp4")  # points out of the named files' folder
    (mine / ".hidden.mp4").write_bytes(b"x")
    res = scan_paths([mine / "link.mp4", folder / "a.mp4", folder / "a.mp4"])
    assert res.root == Path(os.path.commonpath([mine.resolve(), folder.resolve()]))
    # both folders lie under the common root, so the link is inside it and accepted
    assert sorted(Path(v.abs_path).name for v in res.videos) == ["a.mp4", "c.mp4"]
    alone = scan_paths([mine / "link.mp4"])
    assert alone.root == mine.resolve() and not alone.videos
    assert [e.code for _, _, e in alone.errors] == ["path_outside_root"]
    walked = scan_paths([mine])
    assert [e.code for _, _, e in walked.errors] == ["path_outside_root"]  # hidden: skipped
