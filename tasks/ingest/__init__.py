"""Ingest: scan folders and manifests, probe and validate videos, cut 1.5 s clips, read text.

Reads: video files, subtitle sidecars, embedded subtitles, caption manifests, speech (ASR).
Writes: warehouse tables videos, video_files, clips, text_sources, text_segments, ingest_errors.
"""
