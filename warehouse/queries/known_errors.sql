-- Ingest: every rejection, oldest first (the first rejection of a content is the one reused).
SELECT path, root, abs_path, size_bytes, mtime_ns, sha256, code, message, stage
FROM ingest_errors ORDER BY "at"
