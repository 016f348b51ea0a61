"""Watch folders with Linux inotify: which files were opened or created (by any process).

Used to show that an ingest reads nothing outside its input folder and data home, including
from ffmpeg/ffprobe subprocesses, which no Python-level hook can see.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

IN_ACCESS = 0x001
IN_OPEN = 0x020
IN_CREATE = 0x100
IN_NONBLOCK = 0o4000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class FsWatch:
    """Record open/access/create events on files directly inside the watched folders."""

    def __init__(self, folders: list[Path], mask: int = IN_OPEN | IN_ACCESS | IN_CREATE) -> None:
        self.fd = _libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.wds: dict[int, Path] = {}
        for f in folders:
            wd = _libc.inotify_add_watch(self.fd, str(f).encode(), mask)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch failed for {f}")
            self.wds[wd] = f

    def events(self) -> list[tuple[str, Path]]:
        """Drain pending events as (kind, path)."""
        out: list[tuple[str, Path]] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            i = 0
            while i < len(buf):
                wd, mask, _cookie, size = struct.unpack_from("iIII", buf, i)
                name = buf[i + 16:i + 16 + size].rstrip(b"\0").decode(errors="replace")
                i += 16 + size
                kind = ("create" if mask & IN_CREATE else "open" if mask & IN_OPEN
                        else "access")
                out.append((kind, self.wds[wd] / name if name else self.wds[wd]))

    def close(self) -> None:
        """Stop watching."""
        os.close(self.fd)
