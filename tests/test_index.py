"""FAISS indices: type choice, build/load/search, refusal of bad folders, add, atomic publish.

Real FAISS on small clustered data in temp folders.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from tasks.retrieval import index as ix
from warehouse import schema

N, D = 2000, 32
ENC, RUN, LEVEL = "videobert", "run-a", "clip"


def clustered(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    """Unit vectors from a fixed Gaussian mixture (ANN recall is meaningless on iid noise);
    ``seed`` picks the draws, not the mixture, so queries come from the data's distribution."""
    centres = np.random.default_rng(1234).standard_normal((40, d))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 40, n)] + 0.9 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def names(n: int, start: int = 0) -> tuple[list[str], list[str]]:
    return [f"clip-{i}" for i in range(start, start + n)], [f"video-{i // 8}"
                                                           for i in range(start, start + n)]


def brute_topk(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = q @ x.T
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, axis=1), order


def build(root: Path, x: np.ndarray, kind: str = "flat", run: str = RUN, **kw) -> ix.IndexInfo:
    items, videos = names(len(x))
    return ix.build_index(x, items, videos, ix.make_spec(kind, len(x), x.shape[1]), root,
                          encoder=ENC, model_run=run, level=LEVEL, **kw)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(N)


@pytest.fixture()
def flat(tmp_path: Path, data: np.ndarray) -> ix.IndexInfo:
    return build(tmp_path / "indices", data)


def test_flat_round_trip_is_exact(tmp_path: Path, data: np.ndarray) -> None:
    spec = ix.choose_index(N, D, memory_budget_bytes=1 << 30)
    assert spec.factory == "Flat"
    items, videos = names(N)
    info = ix.build_index(data, items, videos, spec, tmp_path, encoder=ENC, model_run=RUN,
                          level=LEVEL)
    loaded = ix.load_current(tmp_path, ENC, RUN, LEVEL, d=D)
    assert loaded.folder == info.path and loaded.ntotal == N and loaded.kind == "flat"
    q = clustered(25, seed=1)
    want_s, want_rows = brute_topk(data, q, 10)
    scores, found = loaded.search(q, 10)
    np.testing.assert_array_equal(found, np.array(items, dtype=object)[want_rows])
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    assert loaded.video_ids[want_rows[0, 0]] == videos[want_rows[0, 0]]
    row = info.row(tmp_path)
    assert set(row) == set(schema.table("indices").arrow.names)
    assert row["path"] == f"{ENC}/{RUN}/{LEVEL}/{info.index_id}" and row["ntotal"] == N


@pytest.mark.parametrize(("kind", "min_recall"), [("hnsw", 0.95), ("ivf", 0.95), ("ivfpq", 0.3)])
def test_ann_types_round_trip_with_tuned_params(tmp_path: Path, data: np.ndarray, kind: str,
                                                min_recall: float) -> None:
    spec = ix.make_spec(kind, N, D, **({"nlist": 32, "m": 8, "nbits": 6}
                                       if kind == "ivfpq" else {}))
    items, videos = names(N)
    info = ix.build_index(data, items, videos, spec, tmp_path, encoder=ENC, model_run=RUN,
                          level=LEVEL)
    name = "efSearch" if kind == "hnsw" else "nprobe"
    assert name in info.params and info.params["tune_queries"] == 200
    loaded = ix.load_index(info.path, {"encoder": ENC, "model_run": RUN, "d": D})
    if kind == "hnsw":
        applied = faiss.downcast_index(loaded.index.index).hnsw.efSearch
    else:
        applied = faiss.extract_index_ivf(loaded.index).nprobe
    assert applied == info.params[name]
    q = clustered(200, seed=2)
    _, want = brute_topk(data, q, 10)
    _, rows = loaded.search_rows(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, want, strict=True)])
    assert recall >= min_recall


def test_choose_index_by_size_and_budget() -> None:
    gb = 1 << 30
    assert ix.choose_index(50_000, 512, gb).kind == "flat"
    hnsw = ix.choose_index(1_000_000, 512, 4 * gb)
    assert (hnsw.factory, hnsw.params["efConstruction"]) == ("HNSW32", 80)
    assert 2200 < hnsw.bytes_per_vector < 2400  # anchors.md: ~2,300 B for 512-d
    ivf = ix.choose_index(1_000_000, 512, 4 * gb, gpu=True)  # FAISS GPU has no HNSW
    assert ivf.factory == "IVF4096,Flat" and ivf.gpu
    assert ix.choose_index(200_000, 512, 440_000_000).factory == "IVF2048,Flat"  # no HNSW
    pq = ix.choose_index(1_000_000, 512, gb)
    assert pq.factory == "IVF4096,PQ64x8" and 72 <= pq.bytes_per_vector < 90
    small = ix.choose_index(1_000_000, 512, 30_000_000)
    assert small.kind == "ivfpq" and small.params["m"] < 64 and 512 % small.params["m"] == 0
    assert ix.choose_index(50_000, 512, 20_000_000).kind == "ivfpq"  # Flat over budget
    with pytest.raises(ValueError, match="too small"):
        ix.choose_index(1_000_000, 512, 1_000_000)
    with pytest.raises(ValueError, match="too few to train"):
        ix.choose_index(5_000, 512, 1_000_000)
    assert ix.choose_index(10**8, 512, 10**13).kind == "hnsw"
    assert ix.make_spec("ivf", 10_000, 64).params["nlist"] <= 10_000 // 39


def flip_byte(path: Path, at: float = 0.5) -> None:
    raw = bytearray(path.read_bytes())
    raw[int(len(raw) * at)] ^= 0x10
    path.write_bytes(bytes(raw))


def edit_manifest(folder: Path, **changes: object) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m.update(changes)
    (folder / "manifest.json").write_text(json.dumps(m))


def refused(folder: Path, exc: type[ix.IndexRefused], *fragments: str, **kw) -> str:
    with pytest.raises(exc) as err:
        ix.load_index(folder, **kw)
    msg = str(err.value)
    for f in (*fragments, "videobert index --rebuild"):
        assert f in msg, msg
    return msg


def test_truncated_index_is_refused(flat: ix.IndexInfo) -> None:
    path = flat.path / "index.faiss"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    refused(flat.path, ix.IndexCorrupt, "index.faiss", f"has {size // 2} bytes",
            f"says {size}")


def test_truncated_index_is_refused_by_faiss_even_without_hashes(flat: ix.IndexInfo) -> None:
    path = flat.path / "index.faiss"
    path.write_bytes(path.read_bytes()[:1000])
    entry = json.loads((flat.path / "manifest.json").read_text())["files"]
    entry["index.faiss"]["bytes"] = 1000
    edit_manifest(flat.path, files=entry)
    refused(flat.path, ix.IndexCorrupt, "cannot read the index files", check_sha256=False)


@pytest.mark.parametrize("name", ["index.faiss", "ids.parquet"])
def test_bit_flip_is_refused(flat: ix.IndexInfo, name: str) -> None:
    flip_byte(flat.path / name)
    refused(flat.path, ix.IndexCorrupt, name, "sha256 differs")


def test_missing_files_are_refused(flat: ix.IndexInfo) -> None:
    (flat.path / "ids.parquet").unlink()
    refused(flat.path, ix.IndexCorrupt, "ids.parquet is missing")
    (flat.path / "manifest.json").write_text("{not json")
    refused(flat.path, ix.IndexCorrupt, "manifest.json is unreadable")
    (flat.path / "manifest.json").unlink()
    refused(flat.path, ix.IndexCorrupt, "manifest.json is missing")


def test_manifest_d_or_encoder_mismatch_is_refused(flat: ix.IndexInfo) -> None:
    edit_manifest(flat.path, d=64)
    refused(flat.path, ix.IndexCorrupt, "index.faiss has d=32", "manifest.json says d=64")
    refused(flat.path, ix.IndexMismatch, "d=64", "expected 32", expect={"d": 32})
    edit_manifest(flat.path, d=D, encoder="clip")
    refused(flat.path, ix.IndexMismatch, "manifest.json", "encoder='clip'",
            f"expected {ENC!r}", expect={"encoder": ENC})
    edit_manifest(flat.path, encoder=ENC, ntotal=N + 1)
    refused(flat.path, ix.IndexCorrupt, "ids.parquet has 2000 rows")


def test_index_of_another_model_run_is_refused(tmp_path: Path, data: np.ndarray) -> None:
    info = build(tmp_path, data, run="run-a")
    refused(info.path, ix.IndexMismatch, "model_run='run-a'", "expected 'run-b'",
            expect={"model_run": "run-b"})
    # Someone copies run-a's files into run-b's place and points run-b at them.
    other = ix.group_dir(tmp_path, ENC, "run-b", LEVEL)
    other.mkdir(parents=True)
    shutil.copytree(info.path, other / info.index_id)
    ix.publish_index(other / info.index_id)
    with pytest.raises(ix.IndexMismatch, match="model_run='run-a', expected 'run-b'"):
        ix.load_current(tmp_path, ENC, "run-b", LEVEL)
    assert ix.load_current(tmp_path, ENC, "run-a", LEVEL).ntotal == N
    with pytest.raises(ix.IndexMismatch, match="level='clip', expected 'video'"):
        ix.load_index(info.path, {"level": "video"})
    with pytest.raises(FileNotFoundError, match="videobert index"):
        ix.load_current(tmp_path, ENC, "run-c", LEVEL)


def test_incremental_add_equals_rebuild_for_flat(tmp_path: Path, data: np.ndarray) -> None:
    first = build(tmp_path / "inc", data[:1500])
    items, videos = names(500, start=1500)
    added = ix.add_to_index(first.path, data[1500:], items, videos)
    assert added is not None and added.ntotal == N and added.index_id != first.index_id
    assert not first.path.exists()  # the old folder is gone once the pointer moved
    inc = ix.load_current(tmp_path / "inc", ENC, RUN, LEVEL)
    assert inc.folder == added.path and inc.manifest["parent"] == first.index_id
    full = ix.load_index(build(tmp_path / "full", data).path)
    q = clustered(50, seed=3)
    s1, i1 = inc.search(q, 10)
    s2, i2 = full.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert inc.item_ids.tolist() == full.item_ids.tolist()


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_add_to_ann_index_finds_new_items(tmp_path: Path, data: np.ndarray, kind: str) -> None:
    info = build(tmp_path, data[:1600], kind)
    items, videos = names(400, start=1600)
    added = ix.add_to_index(info.path, data[1600:], items, videos)
    assert added is not None and added.params[
        "efSearch" if kind == "hnsw" else "nprobe"] == info.params[
        "efSearch" if kind == "hnsw" else "nprobe"]
    _, found = ix.load_current(tmp_path, ENC, RUN, LEVEL).search(data[1600:], 1)
    assert np.mean(found[:, 0] == np.array(items, dtype=object)) > 0.95


def test_add_asks_for_a_rebuild_when_due(tmp_path: Path, data: np.ndarray) -> None:
    items, videos = names(N)
    spec = ix.choose_index(1500, D, 1 << 30, exact_below=1600)
    info = ix.build_index(data[:1500], items[:1500], videos[:1500], spec, tmp_path / "f",
                          encoder=ENC, model_run=RUN, level=LEVEL)
    assert "exact-search limit" in ix.rebuild_reason(
        ix.load_index(info.path).manifest, 200)  # type: ignore[operator]
    assert ix.add_to_index(info.path, data[1500:1700], items[1500:1700],
                           videos[1500:1700]) is None
    assert ix.current_index(tmp_path / "f", ENC, RUN, LEVEL) == info.path  # unchanged
    ivf = build(tmp_path / "i", data[:400], "ivf")
    assert ix.add_to_index(ivf.path, data[400:], items[400:], videos[400:]) is None
    with pytest.raises(ValueError, match="already indexed"):
        ix.add_to_index(ivf.path, data[:10], items[:10], videos[:10])


def test_failed_build_leaves_nothing_visible(tmp_path: Path, data: np.ndarray) -> None:
    good = build(tmp_path, data[:1000])
    group = good.path.parent

    def fail_at(stage: str):
        def progress(s: str) -> None:
            if s == stage:
                raise RuntimeError(f"killed at {s}")
        return progress

    for stage in ("trained", "written"):
        with pytest.raises(RuntimeError, match=f"killed at {stage}"):
            build(tmp_path, data, progress=fail_at(stage))
        assert sorted(p.name for p in group.iterdir()) == sorted([good.index_id, "current.json"])
        assert ix.load_current(tmp_path, ENC, RUN, LEVEL).ntotal == 1000
    empty = tmp_path / "empty"
    with pytest.raises(RuntimeError):
        build(empty, data, progress=fail_at("written"))
    assert ix.current_index(empty, ENC, RUN, LEVEL) is None
    assert not any(p.is_file() or p.name.startswith(".tmp-") for p in empty.rglob("*"))


def test_publish_moves_the_pointer_then_removes_old(tmp_path: Path, data: np.ndarray) -> None:
    a = build(tmp_path, data[:1000])
    reader = ix.load_current(tmp_path, ENC, RUN, LEVEL)
    b = build(tmp_path, data, publish=False)
    assert ix.current_index(tmp_path, ENC, RUN, LEVEL) == a.path and b.path.exists()
    ix.publish_index(b.path)
    assert ix.current_index(tmp_path, ENC, RUN, LEVEL) == b.path and not a.path.exists()
    assert reader.search(data[:1], 1)[1][0, 0] == "clip-0"  # loaded copy lives in memory
    again = build(tmp_path, data)  # same content and identity: the same folder, kept
    assert again.path == b.path and b.path.exists()
    assert sorted(p.name for p in b.path.parent.iterdir()) == sorted([b.index_id,
                                                                      "current.json"])


def test_bad_inputs_are_named(tmp_path: Path, data: np.ndarray) -> None:
    items, videos = names(N)
    spec = ix.make_spec("flat", N, D)
    with pytest.raises(ValueError, match="row 3 has norm"):
        bad = data.copy()
        bad[3] *= 2
        ix.build_index(bad, items, videos, spec, tmp_path, encoder=ENC, model_run=RUN,
                       level=LEVEL)
    with pytest.raises(ValueError, match="unique item ids"):
        ix.build_index(data, items[:-1] + items[:1], videos, spec, tmp_path, encoder=ENC,
                       model_run=RUN, level=LEVEL)
    with pytest.raises(ValueError, match=r"\(n, 64\)"):
        ix.build_index(data, items, videos, ix.make_spec("flat", N, 64), tmp_path,
                       encoder=ENC, model_run=RUN, level=LEVEL)
    with pytest.raises(ValueError, match="cannot name an index folder"):
        ix.group_dir(tmp_path, "..", RUN, LEVEL)
    assert not any(tmp_path.iterdir())
