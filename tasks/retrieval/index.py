"""FAISS indices over unit-length embeddings: type choice, build, verified load, add, publish.

Vectors are L2-normalised, so inner product = cosine (``METRIC_INNER_PRODUCT``). FAISS labels
are int64 row numbers ``0..ntotal-1`` (``add_with_ids``; Flat and HNSW wrapped in
``IndexIDMap``, IVF types store ids natively); ``ids.parquet`` maps a row to the warehouse
``item_id`` and ``video_id``. ``IndexIDMap`` rather than ``IndexIDMap2``: the latter's reverse
hash map costs tens of bytes per vector in RAM and we never reconstruct by id.

Layout under ``dest_root`` (normally ``<home>/indices``), one group per (encoder, model run,
level)::

    <encoder>/<model_run>/<level>/current.json   pointer to the published folder (atomic)
    <encoder>/<model_run>/<level>/<index_id>/    index.faiss, ids.parquet, manifest.json

A folder is written as ``.tmp-<uuid>`` beside its final place and renamed when complete, so a
reader never sees half an index; ``index_id`` is a hash of the folder's content. Publishing
rewrites ``current.json`` atomically, then removes the older folders. :func:`load_index`
refuses a folder whose manifest, hashes, FAISS header or identity do not match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.retrieval.index_load import (
    FILES,
    IDS_SCHEMA,
    MANIFEST_FORMAT,
    METRIC,
    POINTER,
    IndexCorrupt,
    IndexMismatch,
    IndexRefused,
    LoadedIndex,
    _read_manifest,
    _read_pointer,
    current_index,
    group_dir,
    load_current,
    load_index,
)
from tasks.retrieval.index_spec import (
    EXACT_BELOW,
    TUNE_TARGET,
    IndexSpec,
    bytes_per_vector,
    check_unit_vectors,
    choose_index,
    make_spec,
    set_search_params,
    tune_search,
)
from warehouse.atomic import TMP_PREFIX, fsync_dir, sha256_file, write_bytes_atomic
from warehouse.parquet import write_parquet_atomic

IVF_REGROW = 4.0
"""An IVF index grown past this multiple of the vectors it was trained on needs a rebuild."""
STALE_TMP_S = 24 * 3600
TUNE_HOLDOUT = 200
"""Rows held out of the index while efSearch/nprobe are tuned on them (then added)."""
Progress = Callable[[str], None]

__all__ = ["EXACT_BELOW", "IndexCorrupt", "IndexInfo", "IndexMismatch", "IndexRefused",
           "IndexSpec", "LoadedIndex", "add_to_index", "build_index", "bytes_per_vector",
           "choose_index", "current_index", "group_dir", "load_current", "load_index",
           "make_spec", "publish_index", "rebuild_reason", "set_search_params", "tune_search"]


@dataclass(frozen=True)
class IndexInfo:
    """A built index folder, as recorded in its manifest."""

    index_id: str
    path: Path
    kind: str
    factory: str
    d: int
    ntotal: int
    params: dict[str, Any]
    sha256: str
    ids_sha256: str
    encoder: str
    model_run: str
    level: str
    build_s: float
    built_at: str

    def row(self, home: Path | None = None) -> dict[str, Any]:
        """A row of the ``indices`` table; ``path`` relative to ``home`` when given."""
        path = self.path.relative_to(home) if home is not None else self.path
        return {"index_id": self.index_id, "encoder": self.encoder, "model_run": self.model_run,
                "level": self.level, "index_type": self.factory, "dim": self.d,
                "ntotal": self.ntotal, "path": str(path), "sha256": self.sha256,
                "params_json": json.dumps(self.params, sort_keys=True),
                "build_s": self.build_s,
                "built_at": dt.datetime.fromisoformat(self.built_at).replace(tzinfo=None)}


def _ids_table(item_ids: Sequence[str], video_ids: Sequence[str], start: int) -> pa.Table:
    if len(item_ids) != len(video_ids):
        raise ValueError(f"{len(item_ids)} item ids but {len(video_ids)} video ids")
    rows = np.arange(start, start + len(item_ids), dtype=np.int64)
    return pa.table([rows, pa.array(list(item_ids), pa.string()),
                     pa.array(list(video_ids), pa.string())], schema=IDS_SCHEMA)


def _gpu_resources() -> Any | None:
    return faiss.StandardGpuResources() if faiss.get_num_gpus() > 0 else None


def _train_add(x: np.ndarray, rows: np.ndarray, spec: IndexSpec, seed: int,
               progress: Progress) -> tuple[Any, str]:
    """A CPU index of ``spec`` trained on a sample of ``x`` holding ``x[rows]`` under ids
    ``rows``, and where it was built (cpu or gpu)."""
    index = faiss.index_factory(spec.d, spec.factory, faiss.METRIC_INNER_PRODUCT)
    if spec.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efConstruction = int(spec.params["efConstruction"])
    if spec.kind in ("flat", "hnsw"):
        index = faiss.IndexIDMap(index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.cp.niter, ivf.cp.seed = int(spec.params["niter"]), seed
        ivf.cp.max_points_per_centroid = 1 << 30  # we sample the training set ourselves
        if spec.kind == "ivfpq":  # polysemous codes are unused and their training is slow
            faiss.downcast_index(ivf).do_polysemous_training = False
    res = _gpu_resources() if spec.gpu else None
    if res is not None:
        opts = faiss.GpuClonerOptions()
        # IVF-PQ lookup tables of 64+ sub-quantizers exceed shared memory in float32; IVF-Flat
        # keeps float32 storage so the index copied back to the CPU is exact.
        opts.useFloat16 = spec.kind == "ivfpq"
        work = faiss.index_cpu_to_gpu(res, 0, index, opts)
    else:
        work = index
    if not work.is_trained:
        take = min(len(x), int(spec.params.get("train_size", len(x))))
        sample = np.sort(np.random.default_rng(seed).choice(len(x), take, replace=False))
        work.train(x[sample])
    progress("trained")
    for s in range(0, len(rows), 65536):
        chunk = rows[s : s + 65536]
        work.add_with_ids(x[chunk], chunk.astype(np.int64))
    progress("added")
    return (faiss.index_gpu_to_cpu(work) if res is not None else work), \
        ("gpu" if res is not None else "cpu")


def _holdout(n: int, spec: IndexSpec, tune_queries: np.ndarray | None, seed: int) -> np.ndarray:
    """Rows kept out of the index while tuning (added afterwards): out-of-sample queries."""
    if spec.kind == "flat" or tune_queries is not None:
        return np.empty(0, dtype=np.int64)
    size = min(TUNE_HOLDOUT, n // 10)
    return np.sort(np.random.default_rng(seed + 1).choice(n, size, replace=False))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_folder(index: Any, ids: pa.Table, meta: dict[str, Any], group: Path,
                  progress: Progress) -> IndexInfo:
    """Write index + ids + manifest into a temp folder, then rename it to its content id."""
    group.mkdir(parents=True, exist_ok=True)
    tmp = group / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        faiss.write_index(index, str(tmp / "index.faiss"))
        _fsync_file(tmp / "index.faiss")
        write_parquet_atomic(ids, tmp / "ids.parquet")
        files = {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                 for n in FILES}
        identity = {k: meta[k] for k in ("encoder", "model_run", "level", "params")}
        index_id = hashlib.sha256(json.dumps([files, identity], sort_keys=True).encode()
                                  ).hexdigest()[:20]
        manifest = {"format": MANIFEST_FORMAT, "index_id": index_id, **meta,
                    "d": int(index.d), "ntotal": int(index.ntotal), "metric": METRIC,
                    "files": files, "faiss_version": faiss.__version__}
        write_bytes_atomic(json.dumps(manifest, indent=2, sort_keys=True).encode(),
                           tmp / "manifest.json")
        progress("written")
        final = group / index_id
        if final.exists():  # the same content was built before: keep that folder
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
            fsync_dir(group)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _info(final, manifest)


def _info(folder: Path, m: Mapping[str, Any]) -> IndexInfo:
    return IndexInfo(index_id=m["index_id"], path=folder, kind=m["kind"], factory=m["type"],
                     d=m["d"], ntotal=m["ntotal"], params=m["params"],
                     sha256=m["files"]["index.faiss"]["sha256"],
                     ids_sha256=m["files"]["ids.parquet"]["sha256"], encoder=m["encoder"],
                     model_run=m["model_run"], level=m["level"], build_s=m["build_s"],
                     built_at=m["built_at"])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def build_index(vectors: np.ndarray, item_ids: Sequence[str], video_ids: Sequence[str],
                spec: IndexSpec, dest_root: Path, *, encoder: str, model_run: str, level: str,
                target_recall: float = TUNE_TARGET, tune_queries: np.ndarray | None = None,
                seed: int = 0, publish: bool = True,
                progress: Progress | None = None) -> IndexInfo:
    """Train and fill an index, write it as a new folder atomically, optionally publish it.

    Args:
        vectors: (n, d) unit-length float32 embeddings; row i gets FAISS id i.
        item_ids: warehouse ``item_id`` of each row (unique).
        video_ids: ``video_id`` of each row.
        spec: what to build (:func:`choose_index` or :func:`make_spec`).
        dest_root: the indices root (``<home>/indices``).
        encoder: encoder of the embeddings (recorded and checked at load).
        model_run: model run of the embeddings.
        level: clip or video.
        target_recall: recall@10 that efSearch/nprobe are tuned to (see :func:`tune_search`).
        tune_queries: optional query vectors for tuning; by default ``TUNE_HOLDOUT`` rows
            are held out of the index, used as queries, then added.
        seed: seed of training samples and tuning.
        publish: move the group's ``current.json`` to the new folder and remove older ones.
        progress: called with ``"trained"``, ``"added"``, ``"tuned"``, ``"written"``.

    Returns:
        The folder's :class:`IndexInfo` (``row()`` gives the ``indices`` table row).
    """
    x = check_unit_vectors(vectors, spec.d)
    if len(item_ids) != len(x) or len(set(item_ids)) != len(x):
        raise ValueError(f"need {len(x)} unique item ids, got {len(item_ids)} "
                         f"({len(set(item_ids))} unique)")
    ids = _ids_table(item_ids, video_ids, 0)
    report = progress or (lambda stage: None)
    group = group_dir(dest_root, encoder, model_run, level)
    t0 = time.perf_counter()
    hold = _holdout(len(x), spec, tune_queries, seed)
    index, device = _train_add(x, np.setdiff1d(np.arange(len(x)), hold), spec, seed, report)
    build_s = time.perf_counter() - t0
    params: dict[str, Any] = dict(spec.params) | {"train_n": len(x)}
    queries = x[hold] if tune_queries is None else tune_queries
    t1 = time.perf_counter()
    params |= tune_search(index, x, queries, spec, target_recall, absent=hold)
    index.add_with_ids(x[hold], hold)
    report("tuned")
    meta = {"kind": spec.kind, "type": spec.factory, "encoder": encoder, "model_run": model_run,
            "level": level, "params": params, "reason": spec.reason, "device": device,
            "build_s": round(build_s, 3), "tune_s": round(time.perf_counter() - t1, 3),
            "built_at": _now(), "parent": None}
    info = _write_folder(index, ids, meta, group, report)
    if publish:
        publish_index(info.path)
    return info


def rebuild_reason(manifest: Mapping[str, Any], n_new: int) -> str | None:
    """Why adding ``n_new`` vectors to this index calls for a rebuild, or None.

    Args:
        manifest: the index's manifest.
        n_new: vectors to add.

    Returns:
        A reason (type would change, budget exceeded, IVF grown past ``IVF_REGROW`` x its
        training size), or None when an incremental add is fine.
    """
    p, total = manifest["params"], int(manifest["ntotal"]) + n_new
    kind = manifest["kind"]
    if kind == "flat" and total >= p.get("exact_below", EXACT_BELOW):
        return f"{total} vectors reach the exact-search limit {p.get('exact_below', EXACT_BELOW)}"
    budget = p.get("memory_budget_bytes")
    need = total * bytes_per_vector(kind, total, int(manifest["d"]), p)
    if budget is not None and need > budget:
        return f"{total} vectors need ~{need:.0f} B, over the budget of {budget} B"
    if kind in ("ivf", "ivfpq") and total > IVF_REGROW * p.get("train_n", total):
        return f"{total} vectors > {IVF_REGROW:g} x the {p['train_n']} the quantizer saw"
    return None


def add_to_index(folder: Path, vectors: np.ndarray, item_ids: Sequence[str],
                 video_ids: Sequence[str], *, publish: bool = True,
                 progress: Progress | None = None) -> IndexInfo | None:
    """Add vectors to a copy of an index (no retraining); the copy is a new atomic folder.

    Args:
        folder: the index to extend (verified with :func:`load_index`).
        vectors: (m, d) unit-length embeddings; they get rows ntotal..ntotal+m-1.
        item_ids: their item ids (none may already be indexed).
        video_ids: their video ids.
        publish: publish the new folder (``current.json``) and remove older ones.
        progress: called with ``"added"`` and ``"written"``.

    Returns:
        The new folder's :class:`IndexInfo`, or None when :func:`rebuild_reason` says the
        index should be rebuilt instead.
    """
    old = load_index(folder)
    m = old.manifest
    if rebuild_reason(m, len(item_ids)) is not None:
        return None
    x = check_unit_vectors(vectors, old.d)
    if len(item_ids) != len(x) or len(set(item_ids)) != len(x):
        raise ValueError(f"need {len(x)} unique item ids, got {len(item_ids)}")
    dup = set(item_ids) & set(old.item_ids.tolist())
    if dup:
        raise ValueError(f"{len(dup)} item ids are already indexed, e.g. {sorted(dup)[0]!r}")
    report = progress or (lambda stage: None)
    t0, start = time.perf_counter(), old.ntotal
    old.index.add_with_ids(x, np.arange(start, start + len(x), dtype=np.int64))
    report("added")
    ids = pa.concat_tables([pq.read_table(Path(folder) / "ids.parquet"),
                            _ids_table(item_ids, video_ids, start)])
    meta = {k: m[k] for k in ("kind", "type", "encoder", "model_run", "level", "params",
                              "reason", "device") if k in m}
    meta |= {"build_s": round(time.perf_counter() - t0, 3), "built_at": _now(),
             "parent": m["index_id"]}
    info = _write_folder(old.index, ids.cast(IDS_SCHEMA), meta, Path(folder).parent, report)
    if publish:
        publish_index(info.path)
    return info


def publish_index(folder: Path,
                  read_manifest: Callable[[Path], Mapping[str, Any]] = _read_manifest) -> Path:
    """Point the group's ``current.json`` at ``folder``, then delete older builds.

    Removed: the previously published folder and other complete folders built before this
    one, plus temp folders older than a day (killed builders). Builds newer than ``folder``
    are kept (a concurrent builder is about to publish them).

    Args:
        folder: a complete index folder inside its group.
        read_manifest: reads and checks a folder's manifest (the lexical index has its own).

    Returns:
        The pointer file.
    """
    folder = Path(folder)
    m = read_manifest(folder)
    group = folder.parent
    pointer = group / POINTER
    previous = _read_pointer(pointer)
    write_bytes_atomic(json.dumps({"index_id": m["index_id"], "folder": folder.name,
                                   "published_at": _now()}).encode(), pointer)
    for p in group.iterdir():
        if not p.is_dir() or p.name == folder.name:
            continue
        if p.name.startswith(TMP_PREFIX):
            if time.time() - p.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
            continue
        try:
            older = read_manifest(p).get("built_at", "") <= m.get("built_at", "")
        except IndexCorrupt:
            older = True
        if older or p.name == previous:
            shutil.rmtree(p, ignore_errors=True)
    return pointer
