"""Durable file writes and content hashes, shared by the warehouse, codebooks and weights.

A write goes to a temporary file in the destination folder, is fsynced, renamed over the
destination with ``os.replace``, and the folder is fsynced: readers see the old file or the
new one, never half of one, and a crash leaves at most a ``.tmp-`` file.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

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


def sha256_file(path: str | os.PathLike[str], chunk: int = 4 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tmp_path_for(dest: Path) -> Path:
    """A unique temporary name beside ``dest`` (same filesystem, so the rename is atomic)."""
    return dest.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}-{dest.name}"


def write_bytes_atomic(data: bytes, dest: Path, mode: int = 0o644) -> None:
    """Write ``data`` to ``dest`` atomically and durably (temp file, fsync, rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(dest)
    try:
        with open(tmp, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
