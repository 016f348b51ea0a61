"""Tests for tasks.text: decoding, SRT/VTT parsing, the written rule, sidecars, manifests."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

import tasks.manifests as manifests_mod
import tasks.text as text_mod
from tasks.errors import IngestError
from tasks.manifests import ManifestRow, read_caption_manifest
from tasks.text import (
    MANIFEST_EXTENSIONS,
    SUBTITLE_EXTENSIONS,
    Cue,
    ParsedText,
    clean_text,
    decode_text,
    match_sidecars,
    normalize_cues,
    parse_srt,
    parse_subtitle_bytes,
    parse_subtitle_file,
    parse_vtt,
    sidecar_format,
    sidecar_language,
)

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


# ------------------------------------------------------------------------------------ decoding
def test_decode_utf8_bom_stripped() -> None:
    assert decode_text(b"\xef\xbb\xbfcaf\xc3\xa9") == ("café", "utf-8-sig")


@pytest.mark.parametrize("codec,name", [("utf-16-le", "utf-16-le"), ("utf-16-be", "utf-16-be")])
def test_decode_utf16_bom(codec: str, name: str) -> None:
    bom = b"\xff\xfe" if codec.endswith("le") else b"\xfe\xff"
    assert decode_text(bom + "café ✓".encode(codec)) == ("café ✓", name)


def test_decode_plain_utf8() -> None:
    assert decode_text("naïve — ok".encode()) == ("naïve — ok", "utf-8")


def test_decode_cp1252_cafe_and_curly_quotes() -> None:
    data = "café “quoted” – it’s".encode("cp1252")
    assert decode_text(data) == ("café “quoted” – it’s", "cp1252")


def test_decode_latin1_fallback_never_fails() -> None:
    # 0x81 and 0x8d are undefined in cp1252 and invalid UTF-8
    assert decode_text(b"a\x81b\x8d\xe9") == ("a\x81b\x8dé", "latin-1")
    for seed in range(20):
        text, enc = decode_text(random.Random(seed).randbytes(300))
        assert isinstance(text, str) and enc


def test_decode_bomless_utf16_detected() -> None:
    assert decode_text("00:00:01,000 --> x".encode("utf-16-le")) == ("00:00:01,000 --> x",
                                                                      "utf-16-le")
    assert decode_text("WEBVTT\n".encode("utf-16-be"))[1] == "utf-16-be"


def test_decode_normalises_crlf_and_cr() -> None:
    assert decode_text(b"a\r\nb\rc\n")[0] == "a\nb\nc\n"


def test_srt_with_utf8_bom_first_cue_kept() -> None:
    parsed = parse_subtitle_bytes(b"\xef\xbb\xbf" + GOOD_SRT.encode(), "srt")
    assert parsed.encoding == "utf-8-sig"
    assert _texts(parsed) == ["Hello", "World"]
    assert parsed.problems == {}


def test_srt_utf16_with_bom_and_crlf() -> None:
    data = "\ufeff".encode("utf-16-le") + GOOD_SRT.replace("\n", "\r\n").encode("utf-16-le")
    parsed = parse_subtitle_bytes(data, "srt")
    assert parsed.encoding == "utf-16-le"
    assert _texts(parsed) == ["Hello", "World"] and parsed.problems == {}


def test_srt_cp1252_text() -> None:
    data = "1\n00:00:01,000 --> 00:00:02,000\nCafé “ouvert”\n".encode("cp1252")
    parsed = parse_subtitle_bytes(data, "srt")
    assert parsed.encoding == "cp1252" and _texts(parsed) == ["Café “ouvert”"]


def test_srt_latin1_text() -> None:
    data = b"1\n00:00:01,000 --> 00:00:02,000\nol\xe9 \x81\n"
    parsed = parse_subtitle_bytes(data, "srt")
    assert parsed.encoding == "latin-1" and _texts(parsed) == ["olé \x81"]


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


# ----------------------------------------------------------------------------------- manifests
def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def _manifest_error(path: Path) -> IngestError:
    with pytest.raises(IngestError) as info:
        read_caption_manifest(path)
    assert info.value.stage == "manifest"
    return info.value


def test_jsonl_good_rows_meta_split_language(tmp_path: Path) -> None:
    lines = [
        {"path": "a.mp4", "start": 0, "end": 2.5, "text": " hi ", "split": "train"},
        {"path": "sub dir/b c.mp4", "start": "00:01:02.500", "end": "01:03", "text": "x",
         "split": "VALIDATION", "language": "pt-BR", "speaker": "Ann", "tags": ["a", 1]},
        {"path": "../c.mp4", "start_s": "1.5", "end_s": 2, "text": "y", "split": None,
         "language": ""},
    ]
    content = json.dumps(lines[0]) + "\n\n   \n" + "\n".join(json.dumps(r) for r in lines[1:])
    rows, errors = read_caption_manifest(_write(tmp_path, "m.jsonl", content))
    assert errors == []
    assert [r.line for r in rows] == [1, 4, 5]
    assert [(r.path, r.start_s, r.end_s, r.text) for r in rows] == [
        ("a.mp4", 0.0, 2.5, "hi"), ("sub dir/b c.mp4", 62.5, 63.0, "x"),
        ("../c.mp4", 1.5, 2.0, "y")]
    assert [r.split for r in rows] == ["train", "val", None]
    assert [r.language for r in rows] == [None, "pt-BR", None]
    assert rows[1].meta == {"speaker": "Ann", "tags": ["a", 1]} and rows[0].meta == {}
    json.dumps([r.meta for r in rows])


BAD_JSONL = [
    ('{"path": "a.mp4", "start": 0, "end": 1, "text": "ok"}', None),
    ('{"path": "a.mp4", "start": 0, "end": 1, "text": "ok"', "invalid JSON"),
    ('["a.mp4", 0, 1, "x"]', "expected a JSON object, got array"),
    ('"just a string"', "got string"),
    ('{"start": 0, "end": 1, "text": "x"}', "missing or empty path"),
    ('{"path": "", "start": 0, "end": 1, "text": "x"}', "missing or empty path"),
    ('{"path": 7, "start": 0, "end": 1, "text": "x"}', "path must be a string"),
    ('{"path": "a", "start": "soon", "end": 1, "text": "x"}', "start 'soon' is not a time"),
    ('{"path": "a", "start": "00:61:00", "end": 9999, "text": "x"}', "is not a time"),
    ('{"path": "a", "start": -1, "end": 1, "text": "x"}', "start -1 is negative"),
    ('{"path": "a", "start": "-0.5", "end": 1, "text": "x"}', "is negative"),
    ('{"path": "a", "start": NaN, "end": 1, "text": "x"}', "start nan is not finite"),
    ('{"path": "a", "start": 0, "end": Infinity, "text": "x"}', "end inf is not finite"),
    ('{"path": "a", "start": 0, "end": 1e400, "text": "x"}', "not finite"),
    ('{"path": "a", "start": 0, "end": "inf", "text": "x"}', "not finite"),
    ('{"path": "a", "start": true, "end": 1, "text": "x"}', "start must be a number"),
    ('{"path": "a", "start": 0, "end": [1], "text": "x"}', "end must be a number"),
    ('{"path": "a", "start": 2, "end": 2, "text": "x"}', "end 2 is not after start 2"),
    ('{"path": "a", "start": 3, "end": 2, "text": "x"}', "end 2 is not after start 3"),
    ('{"path": "a", "start": 0, "end": 1}', "missing or empty text"),
    ('{"path": "a", "start": 0, "end": 1, "text": "  "}', "missing or empty text"),
    ('{"path": "a", "start": 0, "end": 1, "text": 5}', "text must be a string"),
    ('{"path": "a", "start": 0, "end": 1, "text": "x", "split": "holdout"}',
     "split 'holdout' is not one of train/val/test"),
    ('{"path": "a", "start": 0, "end": 1, "text": "x", "split": 1}', "split must be a string"),
    ('{"path": "a", "start": 0, "end": 1, "text": "x", "language": 3}', "language must be"),
    ('{"path": "a", "start": 0, "end": 1, "text": "x", "language": "en us!"}',
     "not a language tag"),
    ('{"path": "a", "start": 0, "start_s": 0, "end": 1, "text": "x"}', "given twice"),
    ("{" * 100000 + "}" * 100000, "invalid JSON"),
    ('{"path": "z.mp4", "start": "1:00:00", "end": "1:00:01,5", "text": "late"}', None),
]


def test_jsonl_every_bad_row_rejected_with_line(tmp_path: Path) -> None:
    content = "\n".join(line for line, _ in BAD_JSONL) + "\n"
    rows, errors = read_caption_manifest(_write(tmp_path, "m.jsonl", content))
    good = [n for n, (_, why) in enumerate(BAD_JSONL, 1) if why is None]
    assert [r.line for r in rows] == good
    assert rows[-1].start_s == 3600.0 and rows[-1].end_s == 3601.5
    bad = [(n, why) for n, (_, why) in enumerate(BAD_JSONL, 1) if why is not None]
    assert [e.line for e in errors] == [n for n, _ in bad]
    for err, (n, why) in zip(errors, bad, strict=True):
        assert err.code == "manifest_row_invalid"
        assert err.message.startswith(f"line {n}: ") and why in err.message, err.message
        assert err.raw == BAD_JSONL[n - 1][0][:500] and len(err.raw) <= 500


def test_jsonl_crlf_bom_and_unicode_line_separators(tmp_path: Path) -> None:
    row = {"path": "ü.mp4", "start": 0, "end": 1, "text": "a\u2028b\u0085c"}
    data = b"\xef\xbb\xbf" + (json.dumps(row, ensure_ascii=False) + "\r\n").encode() * 2
    rows, errors = read_caption_manifest(_write(tmp_path, "m.jsonl", data))
    assert errors == [] and [r.line for r in rows] == [1, 2] and rows[0].path == "ü.mp4"


def test_jsonl_utf16_bom(tmp_path: Path) -> None:
    data = '{"path": "a", "start": 0, "end": 1, "text": "x"}\n'.encode("utf-16")
    rows, errors = read_caption_manifest(_write(tmp_path, "m.jsonl", data))
    assert len(rows) == 1 and errors == []


def test_jsonl_all_rows_invalid_objects_is_not_file_error(tmp_path: Path) -> None:
    rows, errors = read_caption_manifest(_write(tmp_path, "m.jsonl", '{"a": 1}\n{"b": 2}\n'))
    assert rows == [] and [e.line for e in errors] == [1, 2]


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("m.jsonl", "", "no line is a JSON object"),
        ("m.jsonl", "\n\n", "no line is a JSON object"),
        ("m.jsonl", "not json\n[1, 2]\n", "no line is a JSON object"),
        ("m.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xd8", "not UTF-8"),
        ("m.jsonl", b'{"path": "caf\xe9"}', "not UTF-8"),
        ("m.csv", "", "no header"),
        ("m.csv", "a.mp4,0,1,hello\n", "lacks column"),
        ("m.csv", "path,start,text\na,0,x\n", "lacks column(s) ['end']"),
        ("m.csv", "path,start,end,text,text\n", "repeats column(s) ['text']"),
        ("m.csv", 'path,"start"x,end,text\na,0,1,x\n', "unreadable CSV header"),
        ("m.json", '{"path": "a", "start": 0, "end": 1, "text": "x"}', ".jsonl or .csv"),
    ],
)
def test_manifest_whole_file_rejected(tmp_path: Path, name: str, content: str | bytes,
                                      needle: str) -> None:
    err = _manifest_error(_write(tmp_path, name, content))
    assert err.code == "manifest_invalid" and needle in err.message, err.message


def test_manifest_too_big(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifests_mod, "MAX_MANIFEST_BYTES", 20)
    err = _manifest_error(_write(tmp_path, "m.jsonl", '{"path": "a", "text": "long enough"}'))
    assert err.code == "manifest_invalid" and "too big" in err.message


def test_manifest_missing_file_is_io_error(tmp_path: Path) -> None:
    err = _manifest_error(tmp_path / "nope.csv")
    assert err.code == "io_error" and "nope.csv" in err.message


def test_csv_good_rows_extra_columns_meta(tmp_path: Path) -> None:
    content = (
        "\ufeffPath, Start_S ,END_s,Text,split,language,speaker,\n"
        "a.mp4,0,1.5,hello,train,en,Ann,\n"
        "\n"
        '"b, c.mp4",00:00:02.000,00:03.5,"multi\nline, text",Test,,Bob,\n'
        "d.mp4,1,2,x,,,,\n"
    )
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert errors == []
    assert [r.line for r in rows] == [2, 4, 6]
    assert rows[0] == ManifestRow(2, "a.mp4", 0.0, 1.5, "hello", "train", "en",
                                           {"speaker": "Ann", "column_8": ""})
    assert (rows[1].path, rows[1].start_s, rows[1].end_s) == ("b, c.mp4", 2.0, 3.5)
    assert rows[1].text == "multi\nline, text" and rows[1].split == "test"
    assert rows[1].language is None and rows[2].split is None


def test_csv_every_bad_row_rejected_with_line(tmp_path: Path) -> None:
    content = (
        "path,start,end,text,split\n"           # 1
        "ok.mp4,0,1,fine,\n"                    # 2
        ",0,1,no path,\n"                       # 3
        "a.mp4,zero,1,bad start,\n"             # 4
        "a.mp4,-2,1,negative,\n"                # 5
        "a.mp4,nan,1,nan,\n"                    # 6
        "a.mp4,5,5,equal,\n"                    # 7
        "a.mp4,0,1,,\n"                         # 8
        "a.mp4,0,1,bad split,later\n"           # 9
        "a.mp4,0,1,too,many,fields\n"           # 10
        "a.mp4,0,1\n"                           # 11
        '"q.mp4",0,1,"multi\nline",bogus\n'     # 12-13
        "ok2.mp4,1:00,1:01,fine too,val\n"      # 14
    )
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert [r.line for r in rows] == [2, 14]
    assert [e.line for e in errors] == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    msgs = [e.message for e in errors]
    for msg, want in zip(msgs, ["missing or empty path", "start 'zero' is not a time",
                                "start '-2' is negative", "start 'nan' is not finite",
                                "end 5 is not after start 5", "missing or empty text",
                                "split 'later'", "has 6 fields, header has 5",
                                "has 3 fields, header has 5", "split 'bogus'"], strict=True):
        assert want in msg, msg
    assert errors[-1].raw == '"q.mp4",0,1,"multi\nline",bogus'
    assert errors[1].raw == "a.mp4,zero,1,bad start,"


def test_csv_unbalanced_quote_reports_span(tmp_path: Path) -> None:
    content = 'path,start,end,text\na,0,1,"open quote\nb,0,1,x\nc,0,1,y\n'
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert rows == [] and len(errors) == 1
    assert errors[0].line == 2 and "spans lines 2-4" in errors[0].message
    assert "unexpected end of data" in errors[0].message
    assert errors[0].raw == 'a,0,1,"open quote\nb,0,1,x\nc,0,1,y'


def test_csv_bad_quoting_is_one_row_error(tmp_path: Path) -> None:
    content = 'path,start,end,text\na,0,1,"x"y\nb,0,1,fine\n'
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert [r.line for r in rows] == [3] and [e.line for e in errors] == [2]


def test_csv_huge_field_is_one_row_error(tmp_path: Path) -> None:
    content = "path,start,end,text\n" + f"a,0,1,{'x' * 200_000}\n" + "b,0,1,fine\n"
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert [r.line for r in rows] == [3]
    assert [e.line for e in errors] == [2] and len(errors[0].raw) == 500
    assert "CSV error" in errors[0].message


def test_csv_semicolon_and_tab_delimiters(tmp_path: Path) -> None:
    for delim in ";\t":
        content = delim.join(["path", "start", "end", "text"]) + "\n"
        content += delim.join(["a,b.mp4", "0", "1", "x, y"]) + "\n"
        rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
        assert errors == [] and rows[0].path == "a,b.mp4" and rows[0].text == "x, y"


def test_csv_header_after_blank_lines_keeps_physical_lines(tmp_path: Path) -> None:
    content = "\n\npath,start,end,text\r\na,0,1,x\r\n"
    rows, errors = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert errors == [] and [r.line for r in rows] == [4]


def test_manifest_paths_not_resolved(tmp_path: Path) -> None:
    content = "path,start,end,text\n/etc/passwd,0,1,x\n../../up.mp4,0,1,y\n"
    rows, _ = read_caption_manifest(_write(tmp_path, "m.csv", content))
    assert [r.path for r in rows] == ["/etc/passwd", "../../up.mp4"]
