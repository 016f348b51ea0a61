-- Ingest: every file name already ingested, with the stat that lets re-runs skip it.
SELECT abs_path, size_bytes, mtime_ns, video_id FROM video_files
