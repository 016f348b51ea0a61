"""Tests for tasks.ingest.manifests: JSONL and CSV caption manifests, row and whole-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.ingest.manifests as manifests_mod
from tasks.ingest.manifests import ManifestRow, read_caption_manifest
from tasks.shared.errors import IngestError


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
