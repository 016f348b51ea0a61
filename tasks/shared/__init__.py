"""What several stages share: media probing and decoding, ffmpeg, ingest errors, model runs.

Reads: video files (through ffmpeg/ffprobe), warehouse model_runs.
Writes: nothing by itself; the stages write what these helpers compute.
"""
