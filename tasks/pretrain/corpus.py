"""The pretraining corpus file: exported once from the warehouse, read by the batch sampler.

One Parquet file (``corpus-<codebook16>-<sha16>.parquet``), one row per video ordered by
video_id: ``video_id``, ``split``; the video's tokenized clips in time order as ``clip_start``,
``clip_end`` (seconds) and ``clip_token`` (visual token in ``[0, n_visual)``; clips without a
token under the codebook are left out); its text segments (all sources) in time order as
``seg_start``, ``seg_end``, ``seg_text`` (raw text: the tokenizer runs when the file is read);
optionally ``clip_feature``, every clip's feature vector flattened (``feature_dim`` floats per
clip, NaN where the clip has none). The schema's ``videobert`` metadata holds JSON: format,
codebook_id, n_visual, feature_encoder, feature_version, feature_dim. Tasks pass this file's
path, never the arrays; the name carries the file's own sha256, so an unchanged warehouse
exports to the same name and bytes.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse import queries
from warehouse.parquet import TMP_PREFIX, fsync_dir, write_parquet_atomic
from warehouse.store import Warehouse

CORPUS_FORMAT = "videobert-pretrain-corpus/1"

# --------------------------------------------------------------------------- export


def _grouped(video_ids: np.ndarray, row_vids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stable order grouping rows by video (in ``video_ids`` order) and per-video offsets."""
    idx = np.searchsorted(video_ids, row_vids)
    order = np.argsort(idx, kind="stable")
    counts = np.bincount(idx, minlength=len(video_ids))
    return order, np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


def _lists(offsets: np.ndarray, values: Any) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


def _large_lists(offsets: np.ndarray, values: Any) -> pa.LargeListArray:
    """Lists with 64-bit offsets (flattened feature vectors pass 2**31 floats on big corpora)."""
    return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def _features(con: Any, codebook_id: str, encoder: str, cb: tuple, clip_ids: np.ndarray
              ) -> tuple[np.ndarray, str]:
    """(n_clips, dim) float32 features aligned with ``clip_ids`` (NaN rows where missing)."""
    version = cb[2] if encoder == cb[1] else None
    if version is None:
        rows = con.execute(queries.load("pretrain_feature_version"), [encoder]).fetchall()
        if not rows:
            raise ValueError(f"no clip features of encoder {encoder!r} in the warehouse")
        version = rows[0][0]
    t = con.sql(queries.load("pretrain_features"),
                params=[codebook_id, encoder, version]).to_arrow_table()
    if t.num_rows == 0:
        raise ValueError(f"no {encoder!r} features (version {version!r}) for the clips of "
                         f"codebook {codebook_id!r}")
    vec = t.column("vector").combine_chunks()
    dims = np.diff(vec.offsets.to_numpy())
    if dims.min() != dims.max():
        raise ValueError(f"{encoder!r} features of version {version!r} have mixed dims "
                         f"{sorted(set(dims.tolist()))}")
    x = vec.flatten().to_numpy().astype(np.float32).reshape(len(dims), int(dims[0]))
    out = np.full((len(clip_ids), x.shape[1]), np.nan, np.float32)
    have = t.column("clip_id").to_numpy(zero_copy_only=False).astype(str)
    pos = np.searchsorted(have, clip_ids)
    found = (pos < len(have)) & (have[np.minimum(pos, len(have) - 1)] == clip_ids)
    out[found] = x[pos[found]]
    return out, version


def _corpus_table(con: Any, codebook_id: str, feature_encoder: str | None,
                  home: Path) -> pa.Table:
    """Read the warehouse into the one-row-per-video table (metadata included)."""
    found = con.execute(queries.load("pretrain_codebook"), [codebook_id]).fetchall()
    if not found:
        raise ValueError(f"unknown codebook {codebook_id!r} in {home}")
    cb = found[0]
    vids = con.sql(queries.load("pretrain_videos")).to_arrow_table()
    clips = con.sql(queries.load("pretrain_clips"), params=[codebook_id]).to_arrow_table()
    segs = con.sql(queries.load("pretrain_segments")).to_arrow_table()
    video_ids = vids.column("video_id").to_numpy(zero_copy_only=False).astype(str)
    vids = vids.take(pa.array(np.argsort(video_ids, kind="stable")))  # numpy's string order
    video_ids = np.sort(video_ids)
    c_order, c_off = _grouped(video_ids, clips.column("video_id").to_numpy(
        zero_copy_only=False).astype(str))
    s_order, s_off = _grouped(video_ids, segs.column("video_id").to_numpy(
        zero_copy_only=False).astype(str))
    clips, segs = clips.take(pa.array(c_order)), segs.take(pa.array(s_order))
    cols: dict[str, Any] = {
        "video_id": pa.array(video_ids, pa.string()), "split": vids.column("split"),
        "clip_start": _lists(c_off, clips.column("start_s").combine_chunks()),
        "clip_end": _lists(c_off, clips.column("end_s").combine_chunks()),
        "clip_token": _lists(c_off, clips.column("token").combine_chunks().cast(pa.int32())),
        "seg_start": _lists(s_off, segs.column("start_s").combine_chunks()),
        "seg_end": _lists(s_off, segs.column("end_s").combine_chunks()),
        "seg_text": _lists(s_off, segs.column("text").combine_chunks().cast(pa.string())),
    }
    meta = {"format": CORPUS_FORMAT, "codebook_id": codebook_id, "n_visual": int(cb[0]),
            "feature_encoder": feature_encoder, "feature_version": None, "feature_dim": 0}
    if feature_encoder is not None:
        clip_ids = clips.column("clip_id").to_numpy(zero_copy_only=False).astype(str)
        feats, meta["feature_version"] = _features(con, codebook_id, feature_encoder, cb,
                                                   clip_ids)
        meta["feature_dim"] = int(feats.shape[1])
        cols["clip_feature"] = _large_lists(c_off.astype(np.int64) * feats.shape[1],
                                            pa.array(feats.reshape(-1)))
    return pa.table(cols).replace_schema_metadata(
        {"videobert": json.dumps(meta, sort_keys=True)})


def export_corpus(wh: Warehouse, codebook_id: str, dest: Path, *,
                  feature_encoder: str | None = None) -> Path:
    """Export the published warehouse into one corpus file for pretraining.

    Args:
        wh: the warehouse to read (its committed tables).
        codebook_id: visual tokens of this codebook are exported; clips without one are skipped.
        dest: a folder (the file is named ``corpus-<codebook16>-<sha16>.parquet`` inside it),
            or a ``.parquet`` file path; e.g. ``<home>/training``.
        feature_encoder: also export each clip's feature vector of this encoder (the
            codebook's encoder version when it is the codebook's encoder, else the newest).

    Returns:
        Path of the written file (atomic; the same warehouse gives the same bytes).

    Raises:
        ValueError: unknown codebook, or no features of ``feature_encoder``.
    """
    con = wh.connect()
    try:
        table = _corpus_table(con, codebook_id, feature_encoder, wh.home)
    finally:
        con.close()
    dest = Path(dest)
    folder = dest.parent if dest.suffix == ".parquet" else dest
    tmp = folder / f"{TMP_PREFIX}{uuid.uuid4().hex}-corpus.parquet"
    info = write_parquet_atomic(table, tmp)
    final = dest if dest.suffix == ".parquet" else (
        folder / f"corpus-{codebook_id[:16]}-{info['sha256'][:16]}.parquet")
    os.replace(tmp, final)  # the verified file moves under its content-named name
    fsync_dir(folder)
    return final


# --------------------------------------------------------------------------- reading


@dataclass
class Corpus:
    """One split of a corpus file as flat arrays (clips and segments grouped by video)."""

    meta: dict[str, Any]
    video_ids: list[str]
    clip_off: np.ndarray  # (V+1,) clips of video v: clip_off[v]:clip_off[v+1]
    clip_video: np.ndarray  # (C,) video index of each clip
    clip_start: np.ndarray  # (C,) seconds
    clip_end: np.ndarray  # (C,)
    clip_token: np.ndarray  # (C,) visual token
    seg_video: np.ndarray  # (S,) video index of each segment
    seg_start: np.ndarray  # (S,)
    seg_end: np.ndarray  # (S,)
    tok: np.ndarray  # flat wordpieces of all segments (each capped at max_text)
    tok_off: np.ndarray  # (S+1,) wordpieces of segment s: tok[tok_off[s]:tok_off[s+1]]
    feats: np.ndarray | None  # (C, feature_dim) float32, NaN rows where missing


def _flat(t: pa.Table, name: str, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """Per-element video index, per-video offsets and the values of the kept videos."""
    col = t.column(name).combine_chunks()
    counts = np.diff(col.offsets.to_numpy())
    owner = np.repeat(np.arange(len(counts)), counts)
    sel = keep[owner]
    remap = np.cumsum(keep) - 1
    off = np.concatenate([[0], np.cumsum(counts[keep])]).astype(np.int64)
    return remap[owner[sel]], off, col.flatten().filter(pa.array(sel))


def _tokenize(tokenizer: Any, texts: list[str], cap: int) -> tuple[np.ndarray, np.ndarray]:
    pieces: list[list[int]] = []
    for s in range(0, len(texts), 4096):
        ids = tokenizer(texts[s:s + 4096], add_special_tokens=False)["input_ids"]
        pieces += [x[:cap] for x in ids]
    lens = np.fromiter((len(x) for x in pieces), np.int64, len(pieces))
    flat = np.fromiter((i for x in pieces for i in x), np.int64, int(lens.sum()))
    return flat, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)


def load_corpus(path: Path, split: str, tokenizer: Any, max_text: int) -> Corpus:
    """Read one split of a corpus file and tokenize its text.

    Args:
        path: a file written by :func:`export_corpus`.
        split: ``train``, ``val`` or ``test``.
        tokenizer: a Hugging Face BERT tokenizer (``text_tokenizer()``).
        max_text: wordpieces kept per segment.

    Returns:
        The split's flat arrays.
    """
    t = pq.read_table(path)
    meta = json.loads((t.schema.metadata or {}).get(b"videobert", b"{}"))
    if meta.get("format") != CORPUS_FORMAT:
        raise ValueError(f"{path} is not a pretraining corpus ({meta.get('format')!r})")
    keep = t.column("split").to_numpy(zero_copy_only=False).astype(str) == split
    vids = t.column("video_id").to_numpy(zero_copy_only=False).astype(str)[keep]
    cv, c_off, start = _flat(t, "clip_start", keep)
    _, _, end = _flat(t, "clip_end", keep)
    _, _, token = _flat(t, "clip_token", keep)
    sv, _, s_start = _flat(t, "seg_start", keep)
    _, _, s_end = _flat(t, "seg_end", keep)
    _, _, text = _flat(t, "seg_text", keep)
    tok, tok_off = _tokenize(tokenizer, text.to_pylist(), max_text)
    feats = None
    if meta.get("feature_dim"):
        _, _, fv = _flat(t, "clip_feature", keep)
        feats = fv.to_numpy().astype(np.float32).reshape(-1, int(meta["feature_dim"]))
    return Corpus(meta, vids.tolist(), c_off, cv, start.to_numpy(), end.to_numpy(),
                  token.to_numpy().astype(np.int64), sv, s_start.to_numpy(), s_end.to_numpy(),
                  tok, tok_off, feats)
