"""Tests for tasks.ingest.text: SRT/VTT parsing, the written rule, unreadable files, sidecars.

Byte decoding and subtitle encodings are in tests/test_subtitle_encodings.py; caption
manifests (tasks.ingest.manifests) in tests/test_manifests.py.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

import tasks.ingest.text as text_mod
from tasks.ingest.text import (
    MANIFEST_EXTENSIONS,
    SUBTITLE_EXTENSIONS,
    Cue,
    ParsedText,
    clean_text,
    match_sidecars,
    normalize_cues,
    parse_srt,
    parse_subtitle_bytes,
    parse_subtitle_file,
    parse_vtt,
    sidecar_format,
    sidecar_language,
)
from tasks.shared.errors import IngestError

GOOD_SRT = """1
00:00:01,000 --> 00:00:02,500
Hello

2
00:00:03,000 --> 00:00:04,000
World
"""

DROP_NAMES = {
    "non_finite_time", "negative_time_dropped", "end_not_after_start", "empty_text",
    "after_video_end", "duplicate",
}


def _texts(parsed: ParsedText) -> list[str]:
    return [c.text for c in parsed.cues]


def _unreadable(data: bytes, fmt: str = "srt") -> IngestError:
    with pytest.raises(IngestError) as info:
        parse_subtitle_bytes(data, fmt)
    assert info.value.code == "subtitle_unreadable"
    assert info.value.stage == "text"
    return info.value


# --------------------------------------------------------------------------------- SRT parsing
def test_parse_srt_basic_fields() -> None:
    parsed = parse_srt(GOOD_SRT)
    assert parsed.format == "srt" and parsed.n_blocks == 2
    assert parsed.cues == [Cue(1.0, 2.5, "Hello", 0, 2), Cue(3.0, 4.0, "World", 1, 6)]


@pytest.mark.parametrize(
    "timing,start,end",
    [
        ("00:00:01,000 --> 00:00:02,000", 1.0, 2.0),
        ("00:00:01.250 --> 00:00:02.5", 1.25, 2.5),  # '.' separator, 1-3 ms digits
        ("00:00:01,5 --> 00:00:01,75", 1.5, 1.75),
        ("01:02,003 --> 01:03,000", 62.003, 63.0),  # hours omitted
        ("123:00:00,000 --> 123:00:01,000", 442800.0, 442801.0),  # hours > 99
        ("1:02:03,004 --> 1:02:04,000", 3723.004, 3724.0),
        ("00:00:01 --> 00:00:02", 1.0, 2.0),  # no milliseconds
        ("-00:00:01,000 --> 00:00:02,000", -1.0, 2.0),
        ("  00:00:01,000-->00:00:02,000  X1:10 X2:20 Y1:1 Y2:2", 1.0, 2.0),
    ],
)
def test_parse_srt_timing_variants(timing: str, start: float, end: float) -> None:
    cues = parse_srt(f"7\n{timing}\ntext\n").cues
    assert len(cues) == 1
    assert math.isclose(cues[0].start_s, start) and math.isclose(cues[0].end_s, end)


def test_parse_srt_without_index_and_multiline_text() -> None:
    parsed = parse_srt("00:00:01,000 --> 00:00:02,000\nline one\n  line   two \n")
    assert _texts(parsed) == ["line one line two"] and parsed.problems == {}


def test_parse_srt_numeric_text_line_kept() -> None:
    parsed = parse_srt("1\n00:00:01,000 --> 00:00:02,000\n42\n")
    assert _texts(parsed) == ["42"]


def test_malformed_blocks_amid_good_ones() -> None:
    src = (
        "1\n00:00:01,000 --> 00:00:02,000\nfirst\n\n"
        "2\n00:00:03,000 -> 00:00:04,000\nbad arrow\n\n"
        "just some words\n\n"
        "4\n00:00:05,000 --> garbage\nbad end\n\n"
        "5\n00:00:06,000 --> 00:00:07,000\nlast\n"
    )
    parsed = parse_subtitle_bytes(src.encode(), "srt")
    assert _texts(parsed) == ["first", "last"]
    assert parsed.problems == {"malformed_block": 3}
    assert parsed.n_blocks == 5
    assert [c.line for c in parsed.cues] == [2, 16]


def test_missing_blank_line_splits_cues() -> None:
    src = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    parsed = parse_srt(src)
    assert _texts(parsed) == ["first", "second"]
    assert parsed.problems == {"missing_blank_line": 1}
    assert [c.index for c in parsed.cues] == [0, 1]


def test_stray_text_before_timing_counted() -> None:
    parsed = parse_srt("junk\n00:00:01,000 --> 00:00:02,000\ntext\n")
    assert _texts(parsed) == ["text"] and parsed.problems == {"stray_text": 1}
    parsed = parse_srt("junk\n3\n00:00:01,000 --> 00:00:02,000\ntext\n")
    assert parsed.problems == {"stray_text": 1}


def test_negative_timestamps_srt() -> None:
    src = (
        "1\n-00:00:01,000 --> 00:00:02,000\nclamped\n\n"
        "2\n-00:00:03,000 --> -00:00:01,000\ndropped\n\n"
        "3\n-00:00:01,000 --> 00:00:00,000\nalso dropped\n"
    )
    parsed = parse_subtitle_bytes(src.encode(), "srt")
    assert parsed.cues == [Cue(0.0, 2.0, "clamped", 0, 2)]
    assert parsed.problems == {"negative_time_clamped": 1, "negative_time_dropped": 2}


def test_tags_entities_and_ass_overrides_stripped() -> None:
    src = (
        "1\n00:00:01,000 --> 00:00:02,000\n"
        '{\\an8}<i>Hi</i> <b>there</b> <font color="#ff0000">red</font>\n'
        "Tom &amp; Jerry&nbsp;&nbsp;say &lt;i&gt; 1 &lt; 2 &gt; 0\n"
    )
    assert _texts(parse_srt(src)) == ["Hi there red Tom & Jerry say <i> 1 < 2 > 0"]


def test_clean_text_vtt_markup_and_plain_angles() -> None:
    assert clean_text(["<v Bob><c.loud.red>Hey</c> <00:00:01.500>you</v>"]) == "Hey you"
    assert clean_text(["<v.first.loud Esme Johns>It's</v>", "<ruby>漢<rt>kan</rt></ruby>"]) == (
        "It's 漢kan"
    )
    assert clean_text(["a < b and c > d", "x <3 y"]) == "a < b and c > d x <3 y"
    assert clean_text(["{\\pos(10,20)}{\\i1}moved"]) == "moved"


# --------------------------------------------------------------------------------- VTT parsing
VTT = """WEBVTT - a title
Kind: captions
Language: en

NOTE this is a comment
that spans lines

STYLE
::cue { color: lime }

REGION
id:fred width:40%

intro
00:01.000 --> 00:02.500 align:start position:10% line:0
<v Roger>Hello</v>

00:00:03.000 --> 00:00:04.000
no identifier

42
01:00:00.000 --> 01:00:01.000 region:fred
hour
"""


def test_parse_vtt_full() -> None:
    parsed = parse_subtitle_bytes(VTT.encode(), "vtt")
    assert parsed.format == "vtt" and parsed.encoding == "utf-8"
    assert [(c.start_s, c.end_s, c.text, c.line) for c in parsed.cues] == [
        (1.0, 2.5, "Hello", 15),
        (3.0, 4.0, "no identifier", 18),
        (3600.0, 3601.0, "hour", 22),
    ]
    assert parsed.problems == {}
    assert parsed.n_skipped_blocks == 3 and parsed.n_blocks == 7


def test_parse_vtt_missing_header_counted_still_parsed() -> None:
    parsed = parse_vtt("00:01.000 --> 00:02.000\nhi\n\nNOTE x\n\n00:03.000 --> 00:04.000\nyo\n")
    assert _texts(parsed) == ["hi", "yo"]
    assert parsed.problems == {"missing_header": 1} and parsed.n_skipped_blocks == 1


def test_parsers_accept_str_with_bom_and_crlf() -> None:
    parsed = parse_vtt("\ufeffWEBVTT\r\n\r\n00:01.000 --> 00:02.000\r\nhi\r\n")
    assert _texts(parsed) == ["hi"] and parsed.problems == {}
    parsed = parse_srt("\ufeff" + GOOD_SRT.replace("\n", "\r"))
    assert _texts(parsed) == ["Hello", "World"] and parsed.problems == {}


def test_parse_vtt_header_glued_to_cue() -> None:
    parsed = parse_vtt("WEBVTT\n00:01.000 --> 00:02.000\nhi\n")
    assert _texts(parsed) == ["hi"] and parsed.problems == {"missing_blank_line": 1}


def test_parse_vtt_webvttfoo_is_not_a_header() -> None:
    assert parse_vtt("WEBVTTX\n\n00:01.000 --> 00:02.000\nhi\n").problems == {
        "missing_header": 1, "malformed_block": 1}


def test_vtt_header_only_is_unreadable() -> None:
    assert "no parsable cue" in _unreadable(b"WEBVTT\n\nNOTE nothing here\n", "vtt").message


def test_vtt_content_in_srt_file() -> None:
    parsed = parse_subtitle_bytes(b"WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n", "srt")
    assert parsed.format == "vtt" and parsed.problems == {"vtt_in_srt_file": 1}


def test_srt_content_in_vtt_file_parsed() -> None:
    parsed = parse_subtitle_bytes(GOOD_SRT.encode(), "webvtt")
    assert _texts(parsed) == ["Hello", "World"]
    assert parsed.problems == {"missing_header": 1}


# ------------------------------------------------------------------------- the written rule
def _cue(start: float, end: float, text: str = "t", index: int = 0) -> Cue:
    return Cue(start, end, text, index, index + 1)


@pytest.mark.parametrize(
    "cue,duration,expected,problem",
    [
        (_cue(-1, 2), None, _cue(0, 2), "negative_time_clamped"),
        (_cue(-3, -1), None, None, "negative_time_dropped"),
        (_cue(-3, 0), None, None, "negative_time_dropped"),
        (_cue(3, -1), None, None, "negative_time_dropped"),
        (_cue(2, 2), None, None, "end_not_after_start"),
        (_cue(0, 0), None, None, "end_not_after_start"),
        (_cue(3, 2), None, None, "end_not_after_start"),
        (_cue(1, 2, ""), None, None, "empty_text"),
        (_cue(1, 2, "  "), None, None, "empty_text"),
        (_cue(10, 12), 10.0, None, "after_video_end"),
        (_cue(11, 12), 10.0, None, "after_video_end"),
        (_cue(8, 12), 10.0, _cue(8, 10), "end_clamped_to_duration"),
        (_cue(math.nan, 1), None, None, "non_finite_time"),
        (_cue(0, math.inf), None, None, "non_finite_time"),
    ],
)
def test_normalize_each_rule(cue: Cue, duration: float | None, expected: Cue | None,
                             problem: str) -> None:
    problems: dict[str, int] = {}
    out = normalize_cues([cue], duration, problems)
    assert out == ([] if expected is None else [expected])
    assert problems == {problem: 1}


def test_normalize_clean_input_untouched() -> None:
    problems: dict[str, int] = {}
    cues = [_cue(0, 1, "a", 0), _cue(1, 2, "b", 1)]
    assert normalize_cues(cues, 5.0, problems) == cues and problems == {}


def test_normalize_overlapping_kept_and_counted() -> None:
    problems: dict[str, int] = {}
    cues = [_cue(0, 5, "speaker A", 0), _cue(1, 2, "speaker B", 1), _cue(3, 6, "C", 2),
            _cue(6, 7, "touching is not overlapping", 3)]
    assert normalize_cues(cues, None, problems) == cues
    assert problems == {"overlapping": 2}


def test_normalize_duplicates_dropped_not_adjacent() -> None:
    problems: dict[str, int] = {}
    cues = [_cue(1, 2, "x", 0), _cue(1, 2, "y", 1), _cue(1, 2, "x", 2), _cue(1, 2, "x", 3)]
    out = normalize_cues(cues, None, problems)
    assert [c.index for c in out] == [0, 1]
    assert problems == {"duplicate": 2, "overlapping": 1}


def test_normalize_sorted_by_start_end_index() -> None:
    cues = [_cue(5, 6, "a", 0), _cue(1, 3, "b", 1), _cue(1, 2, "c", 2), _cue(1, 2, "d", 3)]
    out = normalize_cues(cues, None, {})
    assert [c.index for c in out] == [2, 3, 1, 0]


def test_normalize_drop_counted_once_under_first_rule() -> None:
    problems: dict[str, int] = {}
    normalize_cues([_cue(-5, -2, ""), _cue(4, 3, ""), _cue(20, 25, "")], 10.0, problems)
    assert problems == {"negative_time_dropped": 1, "end_not_after_start": 1, "empty_text": 1}


def test_normalize_adds_to_existing_counts() -> None:
    problems = {"malformed_block": 2, "empty_text": 1}
    normalize_cues([_cue(1, 2, "")], None, problems)
    assert problems == {"malformed_block": 2, "empty_text": 2}


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_normalize_rejects_bad_duration(bad: float) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        normalize_cues([], bad, {})


def test_normalize_random_cues_nothing_lost_silently() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        cues = [
            _cue(rng.choice([-2, -1, 0, 1, 2, 3, 9, 10, 11]) + rng.choice([0, 0.5]),
                 rng.choice([-1, 0, 1, 2, 3, 4, 10, 12]), rng.choice(["", "a", "b"]), i)
            for i in range(rng.randint(0, 12))
        ]
        duration = rng.choice([None, 10.0])
        problems: dict[str, int] = {}
        out = normalize_cues(cues, duration, problems)
        dropped = sum(n for name, n in problems.items() if name in DROP_NAMES)
        assert len(out) + dropped == len(cues)
        assert all(v > 0 for v in problems.values())
        assert out == sorted(out, key=lambda c: (c.start_s, c.end_s, c.index))
        for c in out:
            assert 0 <= c.start_s < c.end_s and c.text
            assert duration is None or c.end_s <= duration
        assert len({(c.start_s, c.end_s, c.text) for c in out}) == len(out)


def test_parse_subtitle_bytes_duration_applied() -> None:
    parsed = parse_subtitle_bytes(GOOD_SRT.encode(), "srt", duration_s=3.5)
    assert [(c.start_s, c.end_s) for c in parsed.cues] == [(1.0, 2.5), (3.0, 3.5)]
    assert parsed.problems == {"end_clamped_to_duration": 1}
    parsed = parse_subtitle_bytes(GOOD_SRT.encode(), "srt", duration_s=0.5)
    assert parsed.cues == [] and parsed.problems == {"after_video_end": 2}


def test_everything_dropped_is_not_unreadable() -> None:
    parsed = parse_subtitle_bytes(b"1\n00:00:02,000 --> 00:00:01,000\nbackwards\n", "srt")
    assert parsed.cues == [] and parsed.problems == {"end_not_after_start": 1}


# ----------------------------------------------------------------------- unreadable subtitles
def test_empty_file_unreadable() -> None:
    assert "empty" in _unreadable(b"").message


def test_whitespace_only_unreadable() -> None:
    assert "whitespace" in _unreadable(b" \r\n\n\t\n").message


def test_png_renamed_srt_unreadable() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06" + bytes(64)
    assert "no parsable cue" in _unreadable(png).message


@pytest.mark.parametrize("seed", range(5))
def test_random_garbage_unreadable(seed: int) -> None:
    _unreadable(random.Random(seed).randbytes(2000), random.choice(["srt", "vtt"]))


def test_plain_prose_unreadable() -> None:
    err = _unreadable(b"Dear diary,\n\ntoday I renamed a letter to .srt\n")
    assert "2 block(s)" in err.message and "Dear diary" in err.message


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="'ass'"):
        parse_subtitle_bytes(GOOD_SRT.encode(), "ass")


# ------------------------------------------------------------------------------- subtitle files
def test_parse_subtitle_file_by_extension(tmp_path: Path) -> None:
    (tmp_path / "a.SRT").write_bytes(GOOD_SRT.encode())
    (tmp_path / "b.vtt").write_bytes(VTT.encode())
    (tmp_path / "c.webvtt").write_bytes(VTT.encode())
    assert parse_subtitle_file(tmp_path / "a.SRT").format == "srt"
    assert parse_subtitle_file(tmp_path / "b.vtt").format == "vtt"
    parsed = parse_subtitle_file(tmp_path / "c.webvtt", duration_s=3.5)
    assert len(parsed.cues) == 2 and parsed.problems == {"end_clamped_to_duration": 1,
                                                         "after_video_end": 1}


def test_parse_subtitle_file_too_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "MAX_SUBTITLE_BYTES", 10)
    (tmp_path / "big.srt").write_bytes(GOOD_SRT.encode())
    with pytest.raises(IngestError) as info:
        parse_subtitle_file(tmp_path / "big.srt")
    assert info.value.code == "subtitle_unreadable" and "too big" in info.value.message


def test_parse_subtitle_file_io_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.srt").mkdir()
    for path in (tmp_path / "missing.srt", tmp_path / "dir.srt"):
        with pytest.raises(IngestError) as info:
            parse_subtitle_file(path)
        assert (info.value.code, info.value.stage) == ("io_error", "text")
        assert path.name in info.value.message


def test_parse_subtitle_file_empty_and_wrong_extension(tmp_path: Path) -> None:
    (tmp_path / "empty.srt").write_bytes(b"")
    (tmp_path / "subs.txt").write_bytes(GOOD_SRT.encode())
    for name in ("empty.srt", "subs.txt"):
        with pytest.raises(IngestError) as info:
            parse_subtitle_file(tmp_path / name)
        assert info.value.code == "subtitle_unreadable"


# ------------------------------------------------------------------------------------ sidecars
def test_extension_sets_and_sidecar_format() -> None:
    assert {".srt", ".vtt", ".webvtt"} <= SUBTITLE_EXTENSIONS
    assert MANIFEST_EXTENSIONS == {".jsonl", ".csv"}
    assert [sidecar_format(Path(p)) for p in ("a.srt", "a.VTT", "a.webvtt", "m.jsonl", "m.CSV",
                                              "a.mp4", "srt")] == [
        "srt", "vtt", "vtt", "jsonl", "csv", None, None]


def test_match_sidecars() -> None:
    folder = Path("/media/in")
    video = folder / "talk.mp4"
    names = [
        "talk.srt", "talk.en.srt", "talk.pt-BR.vtt", "talk.forced.en.srt", "talk.mp4.srt",
        "talk.zh_Hans.webvtt", "talk.en.SRT", "talk.en.sdh.srt",
        # not sidecars of talk.mp4
        "talk2.srt", "talk-en.srt", "talkative.en.srt", "talk.part2.srt", "Talk.srt",
        "talk.txt", "talk.mp4", "talk.en.srt.bak", "talk.a.b.c.d.srt", "talk..srt",
        "talk.english language.srt",
    ]
    candidates = [folder / n for n in names] + [Path("/other/talk.srt"), Path("talk.srt")]
    expected = sorted(folder / n for n in names[:8])
    assert match_sidecars(video, candidates) == expected
    assert match_sidecars(video, iter(candidates)) == expected  # any iterable


def test_match_sidecars_dotted_video_stem() -> None:
    video = Path("d/my.talk.v2.mkv")
    cands = [Path("d/my.talk.v2.srt"), Path("d/my.talk.v2.de.vtt"), Path("d/my.talk.srt")]
    assert match_sidecars(video, cands) == [Path("d/my.talk.v2.de.vtt"), Path("d/my.talk.v2.srt")]


@pytest.mark.parametrize(
    "name,lang",
    [("talk.srt", None), ("talk.en.srt", "en"), ("talk.pt-BR.vtt", "pt-BR"),
     ("talk.forced.en.srt", "en"), ("talk.en.forced.srt", "en"), ("talk.forced.srt", None),
     ("talk.mp4.fr.srt", "fr"), ("talk2.en.srt", None), ("talk.part2.srt", None)],
)
def test_sidecar_language(name: str, lang: str | None) -> None:
    assert sidecar_language(Path("x/talk.mp4"), Path("x") / name) == lang
