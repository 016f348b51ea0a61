"""Atomic, verified Parquet writes.

A part is written to a temporary file in the destination folder, fsynced, verified by reading
its footer back (row count and schema), then renamed into place with ``os.replace`` and the
folder fsynced. A reader never sees a half-written part; a crash leaves at most a ``.tmp-``
file that the next writer removes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_parquet_atomic(data: pa.Table, dest: Path, *, compression: str = "zstd") -> dict:
    """Write ``data`` to ``dest`` atomically and return its manifest entry.

    Args:
        data: the rows, already in the table's Arrow schema.
        dest: final path of the part (its folder is created).
        compression: Parquet codec.

    Returns:
        ``{"rows", "bytes", "sha256"}`` of the verified file.

    Raises:
        OSError: when the write or the verification fails (the temp file is removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{dest.name}"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(data, f, compression=compression)
            f.flush()
            os.fsync(f.fileno())
        meta = pq.read_metadata(tmp)
        if meta.num_rows != data.num_rows:
            raise OSError(f"verification failed for {dest}: wrote {data.num_rows} rows, "
                          f"footer says {meta.num_rows}")
        if not pq.read_schema(tmp).equals(data.schema, check_metadata=False):
            raise OSError(f"verification failed for {dest}: schema differs after write")
        digest = sha256_file(tmp)
        size = tmp.stat().st_size
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"rows": data.num_rows, "bytes": size, "sha256": digest}


def write_bytes_atomic(data: bytes, dest: Path) -> None:
    """Write small bytes (JSON manifests) atomically with fsync and rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{dest.name}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
