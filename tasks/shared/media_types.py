"""What ffprobe found in one video file: its main video stream and its subtitle streams.

Plain dataclasses, shared by probing (:mod:`tasks.shared.media`) and validation
(:mod:`tasks.shared.media_validate`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SubtitleStream:
    """An embedded subtitle stream.

    ``index`` is the absolute stream index, ``position`` the N of ``0:s:N``; ``text_based`` is
    False for bitmap formats (dvd_subtitle, hdmv_pgs_subtitle, dvb_subtitle, ...).
    """

    index: int
    position: int
    codec: str
    language: str | None
    title: str | None
    text_based: bool


@dataclass
class ProbeResult:
    """What ffprobe says about a file's main video stream (first one that is not cover art).

    ``width``/``height`` are the upright display size (swapped for 90/270 rotation);
    ``rotation`` is clockwise degrees in {0, 90, 180, 270}; ``fps`` is ``avg_frame_rate``,
    ``r_fps`` ``r_frame_rate``; ``vfr`` is a header hint (they differ), decode_frames never
    relies on it. ``duration_s`` is the header's claim (None when absent); validate measures.
    """

    format_name: str
    duration_s: float | None
    fps: float
    r_fps: float
    vfr: bool
    width: int
    height: int
    coded_width: int
    coded_height: int
    codec: str
    pix_fmt: str | None
    bit_depth: int
    rotation: int
    has_audio: bool
    audio_codec: str | None
    subtitle_streams: list[SubtitleStream]
    nb_frames: int | None
    bit_rate: int | None
    size_bytes: int
    video_index: int = 0
    start_time_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self, include_raw: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict for storage (``raw`` left out unless asked)."""
        out = dataclasses.asdict(self)
        if not include_raw:
            out.pop("raw")
        return out
