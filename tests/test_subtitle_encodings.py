"""Tests for tasks.ingest.text's byte decoding: BOMs, UTF-16, cp1252/latin-1 fallback, newlines.

decode_text on its own, then whole SRT files in each encoding through parse_subtitle_bytes.
"""

from __future__ import annotations

import random

import pytest

from tasks.ingest.text import decode_text, parse_subtitle_bytes
from tests.test_text import GOOD_SRT, _texts


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
