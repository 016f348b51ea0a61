"""What ``videobert ingest PATH...`` names: patterns expanded, paths checked, runs grouped.

Users type ``videobert ingest talk.mp4``, ``ingest a.mp4 b.mkv videos/`` or quote a pattern
the shell did not expand (``ingest 'videos/*.mp4'``). Every path must exist (a pattern must
match something) and there must be at least one file to read: anything else is an
:class:`~tasks.shared.errors.InputError`, raised before any flow starts. Folders and files
are ingested together as one input (:func:`tasks.ingest.scan.scan_paths`); a caption manifest
names its own videos, so each manifest is an ingest of its own.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

from tasks.ingest.text import MANIFEST_EXTENSIONS
from tasks.shared.errors import InputError


def expand_sources(given: Sequence[str | Path]) -> list[Path]:
    """The paths named by ``given``, patterns (``*``, ``?``, ``[...]``, ``**``) expanded.

    Returns:
        Absolute paths in the order given (a pattern's matches sorted), each once.

    Raises:
        InputError: nothing given, a path that does not exist, or a pattern that matches
            nothing.
    """
    if not given:
        raise InputError("no path given: name folders, video files or caption manifests")
    found: list[Path] = []
    for item in given:
        text = os.path.expanduser(str(item))
        if os.path.lexists(text):
            matches = [text]
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{item}: no file or folder matches this pattern")
        else:
            raise InputError(f"{item} does not exist")
        for m in matches:
            p = Path(os.path.abspath(m))
            if p not in found:
                found.append(p)
    return found


def is_manifest(path: Path) -> bool:
    """A caption manifest given directly (ingested as its own run)."""
    return path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS


def group_sources(paths: Sequence[Path]) -> list[list[Path]]:
    """The ingest runs for ``paths``: all folders and files together, then each manifest.

    Raises:
        InputError: when no named folder holds a file (nothing to ingest).
    """
    rest = [p for p in paths if not is_manifest(p)]
    if rest and not any(_has_file(p) for p in rest):
        names = ", ".join(str(p) for p in rest)
        raise InputError(f"nothing to ingest: {names} holds no files")
    return ([rest] if rest else []) + [[p] for p in paths if is_manifest(p)]


def plan_sources(given: Sequence[str | Path]) -> list[list[str]]:
    """:func:`expand_sources` then :func:`group_sources`, as strings (flow parameters)."""
    return [[str(p) for p in group] for group in group_sources(expand_sources(given))]


def _has_file(path: Path) -> bool:
    """True when ``path`` is a file, or a folder with a visible file somewhere below it."""
    if not path.is_dir():
        return path.exists() or path.is_symlink()  # a broken link still gets its error row
    for _here, dirnames, filenames in os.walk(path):
        if any(not n.startswith(".") for n in filenames):
            return True
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return False
