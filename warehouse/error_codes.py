"""The stable codes of ``ingest_errors.code``: a user-facing contract (add, never rename).

They live with the warehouse, which owns the table and checks its rows against them
(``warehouse/checks.py``); the ingest stage raises them through
:class:`tasks.shared.errors.IngestError`.
"""

from __future__ import annotations

CODES: dict[str, str] = {
    "empty_file": "the file has zero bytes",
    "io_error": "the file could not be read (permissions, vanished, broken link)",
    "not_a_video": "the detected format is not a video container (image, text, unknown bytes)",
    "container_unreadable": "a video container that ffprobe cannot open (truncated, no index)",
    "no_video_stream": "the container holds no video stream (audio-only, subtitles-only)",
    "unsupported_codec": "the installed ffmpeg has no decoder for the video codec",
    "too_large": "the file or its frame size is above the configured limit",
    "too_long": "the video is longer than the configured limit",
    "unsafe_input": "a playlist, manifest or other indirection posing as a video",
    "path_outside_root": "the path resolves outside the input root (symlink, ../, absolute)",
    "decode_failed": "ffmpeg failed while decoding the video stream",
    "timeout": "ffmpeg/ffprobe exceeded its wall-clock limit",
    "subtitle_unreadable": "a subtitle file or stream that cannot be parsed at all",
    "manifest_invalid": "a caption manifest that is not JSONL/CSV with path,start,end,text",
    "manifest_row_invalid": "one malformed caption-manifest row (the path names the line)",
    "orphan_subtitle": "a subtitle sidecar with no video of the same stem",
    "asr_failed": "speech recognition failed on the audio track",
    "audio_unreadable": "the audio track holds no decodable audio (stage asr; video kept)",
    "unsupported_audio_codec": "the installed ffmpeg has no decoder for the audio codec "
                               "(stage asr; video kept)",
}
