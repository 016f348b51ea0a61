-- A file ends ingested or as one error row, never both.
SELECT f.abs_path FROM video_files f JOIN ingest_errors e ON e.abs_path = f.abs_path AND e.path = f.path
