"""Find the inputs of an ingest: walk a folder, or read a caption manifest, safely.

Rules (README "Ingest"):
- Files are judged by content later; here only subtitle (.srt/.vtt) and manifest
  (.jsonl/.csv) files are told apart by extension. Every other file is a video candidate.
- Hidden files and folders (names starting with ".") and the data home itself are skipped.
- Symbolic links are resolved; a link whose target is outside the root is rejected with
  ``path_outside_root``; a broken link with ``io_error``. Linked folders are not descended
  (their files, when inside the root, are found under their real path).
- Manifest paths are relative to the manifest's folder; ``../`` escapes and absolute paths
  outside the root are rejected with ``path_outside_root``, one error per row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tasks.ingest.text import MANIFEST_EXTENSIONS, SUBTITLE_EXTENSIONS, match_sidecars
from tasks.shared.errors import IngestError


@dataclass(frozen=True)
class Candidate:
    """One input file: the path as given, where it really is, and its stat."""

    path: str
    abs_path: str
    size: int
    mtime_ns: int
    kind: str  # video | subtitle | manifest


@dataclass
class ScanResult:
    """What a scan found, and the files it rejected before reading them."""

    root: Path
    videos: list[Candidate] = field(default_factory=list)
    subtitles: list[Candidate] = field(default_factory=list)
    manifests: list[Candidate] = field(default_factory=list)
    errors: list[tuple[str, str | None, IngestError]] = field(default_factory=list)
    manifest_only: bool = False

    @property
    def n_files(self) -> int:
        """Every file seen, accepted or not."""
        return len(self.videos) + len(self.subtitles) + len(self.manifests) + len(self.errors)


def is_inside(path: Path, root: Path) -> bool:
    """True when resolved ``path`` lies inside resolved ``root``."""
    return path == root or root in path.parents


def resolve_inside(root: Path, given: str, base: Path) -> Path:
    """Resolve ``given`` (relative to ``base``) and check it stays inside ``root``.

    Raises:
        IngestError: ``path_outside_root`` for escapes (``../``, absolute paths, symlinks).
    """
    raw = Path(given)
    target = (raw if raw.is_absolute() else base / raw).resolve()
    if not is_inside(target, root):
        raise IngestError("path_outside_root",
                          f"{given!r} resolves to {target}, outside the input root {root}", "scan")
    return target


def _kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in SUBTITLE_EXTENSIONS:
        return "subtitle"
    if suffix in MANIFEST_EXTENSIONS:
        return "manifest"
    return "video"


def _candidate(root: Path, entry: Path, rel: str) -> Candidate:
    if entry.is_symlink():
        try:
            target = entry.resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise IngestError("io_error", f"broken symbolic link {rel!r}: {e}", "scan") from e
        if not is_inside(target, root):
            raise IngestError("path_outside_root",
                              f"symbolic link {rel!r} points to {target}, outside {root}", "scan")
    else:
        target = entry.absolute()
    try:
        st = target.stat()
    except OSError as e:
        raise IngestError("io_error", f"cannot stat {rel!r}: {e}", "scan") from e
    return Candidate(rel, str(target), st.st_size, st.st_mtime_ns, _kind(entry.name))


def _add(result: ScanResult, cand: Candidate) -> None:
    {"video": result.videos, "subtitle": result.subtitles,
     "manifest": result.manifests}[cand.kind].append(cand)


def scan_folder(root: Path, exclude: list[Path] | None = None) -> ScanResult:
    """Walk ``root`` recursively (sorted, deterministic).

    Args:
        root: the folder to ingest.
        exclude: folders never to enter (the data home, when it lies inside the root).
    """
    result = ScanResult(root=root.resolve())
    _walk(result, result.root, {p.resolve() for p in exclude or []}, set())
    return result


def _walk(result: ScanResult, folder: Path, skip: set[Path], seen: set[str]) -> None:
    """Add every file under ``folder`` (paths relative to ``result.root``), skipping hidden
    names, the ``skip`` folders, linked folders and files already ``seen``."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and (here / d).resolve() not in skip
                             and not (here / d).is_symlink())
        for name in sorted(filenames):
            if not name.startswith("."):
                _add_path(result, here / name, seen)


def _add_path(result: ScanResult, entry: Path, seen: set[str]) -> None:
    """Add one file (once, however often it is named) or its scan error."""
    rel = entry.relative_to(result.root).as_posix()
    if rel in seen:
        return
    seen.add(rel)
    try:
        _add(result, _candidate(result.root, entry, rel))
    except IngestError as e:
        result.errors.append((rel, None, e))


def scan_paths(paths: list[Path], exclude: list[Path] | None = None) -> ScanResult:
    """Any mix of folders and files (videos, subtitles), as one input.

    The root is the deepest folder holding them all; paths are stored relative to it, and
    the folder rules apply (a linked file whose target is outside the root is rejected). A
    folder is walked as :func:`scan_folder` does; a video file comes with its sidecar
    subtitles (same stem, same folder), exactly as it would inside a walked folder.
    """
    given = [Path(os.path.abspath(p)) for p in paths]  # absolute, links not resolved
    folders = [p.resolve() if p.is_dir() else p.parent.resolve() for p in given]
    result = ScanResult(root=Path(os.path.commonpath(folders)))
    skip = {p.resolve() for p in exclude or []}
    seen: set[str] = set()
    for p in given:
        if p.is_dir():
            _walk(result, p.resolve(), skip, seen)
            continue
        entry = p.parent.resolve() / p.name  # the folder's real path, the file's own name
        _add_path(result, entry, seen)
        if _kind(p.name) == "video":
            for sub in match_sidecars(entry, [e for e in entry.parent.iterdir()
                                              if not e.name.startswith(".") and e.is_file()
                                              and _kind(e.name) == "subtitle"]):
                _add_path(result, sub, seen)
    return result


def scan_manifest(manifest: Path) -> ScanResult:
    """A manifest given directly: its folder is the root; it names the videos to ingest.

    Row-level problems (bad rows, paths outside the root, missing files) are reported by the
    ingest when it reads the rows; here the manifest itself and the sidecars next to the
    videos it names are collected.
    """
    manifest = manifest.resolve()
    root = manifest.parent
    result = ScanResult(root=root, manifest_only=True)
    try:
        _add(result, _candidate(root, manifest, manifest.name))
    except IngestError as e:
        result.errors.append((manifest.name, None, e))
    return result


def sidecar_candidates(root: Path, video_abs: Path) -> list[Candidate]:
    """Subtitle files in a video's folder (for manifest mode, where there is no walk)."""
    folder = video_abs.parent
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or _kind(entry.name) != "subtitle" or not entry.is_file():
            continue
        try:
            out.append(_candidate(root, entry, entry.relative_to(root).as_posix()))
        except (IngestError, ValueError):
            continue
    return out
