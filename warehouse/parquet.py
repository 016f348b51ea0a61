"""Atomic, verified Parquet writes.

A part is written to a temporary file in the destination folder, fsynced, verified by reading
its footer back (row count and schema), then renamed into place with ``os.replace`` and the
folder fsynced. A reader never sees a half-written part; a crash leaves at most a ``.tmp-``
file that the next writer removes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse.atomic import (  # noqa: F401 - re-exported for the warehouse
    TMP_PREFIX,
    fsync_dir,
    sha256_file,
    tmp_path_for,
    write_bytes_atomic,
)


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
    tmp = tmp_path_for(dest)
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
